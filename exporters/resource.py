"""The OpenTelemetry Resource every span and metric of one meshwire process carries."""

from __future__ import annotations

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
