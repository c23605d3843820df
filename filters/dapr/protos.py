"""Dapr's generated message modules (dapr.proto.*_pb2), imported without grpcio."""

from __future__ import annotations

import importlib
import importlib.machinery
import sys
import types
from typing import TYPE_CHECKING

__all__ = ["appcallback_pb2", "common_pb2", "dapr_pb2", "import_messages"]

# The packages above the generated modules. Their __init__ files are what `import dapr.proto.x`
# would run first: dapr/proto/__init__.py imports grpcio (~16 MB) and every *_pb2_grpc stub, and
# dapr/__init__.py importlib.metadata; meshwire speaks gRPC over its own HTTP/2 (proxy/grpc/)
# and needs none of them, only the messages and descriptors the *_pb2 modules define.
_PACKAGES = (
    "dapr",
    "dapr.proto",
    "dapr.proto.common",
    "dapr.proto.common.v1",
    "dapr.proto.runtime",
    "dapr.proto.runtime.v1",
)


def import_messages(*names: str) -> tuple[types.ModuleType, ...]:
    """The generated modules `names` (e.g. "dapr.proto.runtime.v1.dapr_pb2"), with the imports
    among them, run with the `dapr` packages stood in for by empty ones that have the real
    search paths. The stand-ins are gone afterwards and the modules stay in sys.modules, so a
    later real `import dapr.proto…` (the Dapr SDK, in tests) runs the __init__ files as usual
    and finds these same modules. When the real packages are already imported, they are used.
    """
    placed: list[str] = []
    try:
        for package in _PACKAGES:
            if package in sys.modules:
                continue
            parent, _, _ = package.rpartition(".")
            path = sys.modules[parent].__path__ if parent else None
            spec = importlib.machinery.PathFinder.find_spec(package, path)
            if spec is None or spec.submodule_search_locations is None:
                raise ImportError(f"{package} is not installed", name=package)
            stand_in = types.ModuleType(package)
            stand_in.__path__ = list(spec.submodule_search_locations)
            sys.modules[package] = stand_in
            placed.append(package)
        return tuple(importlib.import_module(name) for name in names)
    finally:
        for package in reversed(placed):
            del sys.modules[package]


if TYPE_CHECKING:
    from dapr.proto.common.v1 import common_pb2
    from dapr.proto.runtime.v1 import appcallback_pb2, dapr_pb2
else:
    common_pb2, appcallback_pb2, dapr_pb2 = import_messages(
        "dapr.proto.common.v1.common_pb2",
        "dapr.proto.runtime.v1.appcallback_pb2",
        "dapr.proto.runtime.v1.dapr_pb2",
    )
