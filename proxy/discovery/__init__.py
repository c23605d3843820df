"""Name resolution for sidecar-to-sidecar invocation (static, sqlite, dns) and outlier detection."""

from __future__ import annotations

from proxy.discovery.base import Instance, ResolutionError, Resolver, build_resolver
from proxy.discovery.outlier import OutlierDetector

__all__ = ["Instance", "OutlierDetector", "ResolutionError", "Resolver", "build_resolver"]
