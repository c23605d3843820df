"""The OpenTelemetry Resource every span and metric of one meshwire process carries."""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource

from config import schema
from proxy.version import VERSION


def build_resource(config: schema.Telemetry) -> Resource:
    """service.name from config (it always wins), service.version, then config.resource.

    `Resource.create` also merges OTEL_RESOURCE_ATTRIBUTES and the telemetry.sdk.* attributes;
    the explicit values here take precedence over the environment.
    """
    attributes: dict[str, str] = {SERVICE_VERSION: VERSION}
    attributes.update(config.resource)
    attributes[SERVICE_NAME] = config.service_name
    return Resource.create(attributes)


def signal_url(base: str, signal: str) -> str:
    """OTLP/HTTP: the base URL plus /v1/<signal>; a URL already naming a signal is rebased."""
    url = base.rstrip("/")
    for known in ("/v1/traces", "/v1/metrics", "/v1/logs"):
        if url.endswith(known):
            url = url[: -len(known)]
            break
    return f"{url}/v1/{signal}"


def otlp_exporter_kwargs(otlp: schema.OtlpExporter, signal: str) -> dict[str, Any]:
    """Constructor arguments shared by the OTLP trace and metric exporters of either protocol."""
    common: dict[str, Any] = {"headers": dict(otlp.headers), "timeout": float(otlp.timeout)}
    if otlp.protocol == "grpc":
        return {"endpoint": otlp.endpoint, "insecure": otlp.insecure, **common}
    return {"endpoint": signal_url(otlp.endpoint, signal), **common}
