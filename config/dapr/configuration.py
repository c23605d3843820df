"""Dapr `Configuration` resources (dapr.io/v1alpha1): the tracing section, mapped to meshwire's."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import msgspec
import yaml

from config import schema
from config.dapr.documents import expand_env
from config.walk import Problem

__all__ = [
    "API_VERSION",
    "DEFAULT_SAMPLING_RATE",
    "DaprConfigError",
    "DaprTracing",
    "expand_env",
    "load_tracing",
    "tracing_from_resource",
    "with_dapr_tracing",
]

API_VERSION = "dapr.io/v1alpha1"
DEFAULT_SAMPLING_RATE = 0.0001  # Dapr's value for an empty or unparsable samplingRate


class DaprConfigError(Exception):
    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(f"{p.path}: {p.message}" for p in problems))
        self.problems = problems


@dataclass(frozen=True)
class DaprTracing:
    """What a Configuration's spec.tracing means to meshwire."""

    telemetry: schema.Telemetry
    sampling_rate: float
    ignored: tuple[str, ...]  # spec sections meshwire does not act on yet, for a log line


def _sampling_rate(raw: object) -> float:
    try:
        rate = float(str(raw).strip())
    except ValueError:
        return DEFAULT_SAMPLING_RATE
    return min(max(rate, 0.0), 1.0)


def _otlp(
    otel: dict[str, object], path: str, problems: list[Problem]
) -> schema.OtlpExporter | None:
    before = len(problems)
    address = str(otel.get("endpointAddress") or "")
    if not address:
        problems.append(Problem(f"{path}.endpointAddress", "an OTLP endpoint address is required"))
    protocol = str(otel.get("protocol") or "grpc").lower()
    if protocol not in ("grpc", "http"):
        problems.append(Problem(f"{path}.protocol", f"must be grpc or http, got {protocol!r}"))
    secure = otel.get("isSecure", True)
    if not isinstance(secure, bool):
        problems.append(Problem(f"{path}.isSecure", f"expected true or false, got {secure!r}"))
    headers: dict[str, str] = {}
    raw_headers = otel.get("headers") or []
    items = raw_headers.split(",") if isinstance(raw_headers, str) else raw_headers
    if not isinstance(items, list):
        problems.append(Problem(f"{path}.headers", "expected a list of key=value strings"))
        items = []
    for i, item in enumerate(items):
        key, sep, value = str(item).partition("=")
        if not sep or not key.strip():
            problems.append(Problem(f"{path}.headers[{i}]", f"expected key=value, got {item!r}"))
        else:
            headers[key.strip()] = value.strip()
    timeout = schema.Duration(10.0)
    try:
        timeout = schema.Duration.parse(otel.get("timeout", "10s"))
    except ValueError as exc:
        problems.append(Problem(f"{path}.timeout", str(exc)))
    if len(problems) > before:
        return None
    if "://" not in address:
        address = f"{'https' if secure else 'http'}://{address}"
    return schema.OtlpExporter(
        endpoint=address,
        protocol="grpc" if protocol == "grpc" else "http/protobuf",
        headers=headers,
        insecure=not secure,
        timeout=timeout,
    )


def tracing_from_resource(doc: object, service_name: str = "meshwire") -> DaprTracing:
    """Map one parsed Configuration document; every problem is reported with its path."""
    problems: list[Problem] = []
    if not isinstance(doc, dict):
        raise DaprConfigError([Problem("$", "expected a Configuration resource (a mapping)")])
    if doc.get("kind") != "Configuration":
        problems.append(Problem("$.kind", f"expected Configuration, got {doc.get('kind')!r}"))
    if doc.get("apiVersion") != API_VERSION:
        problems.append(
            Problem("$.apiVersion", f"expected {API_VERSION}, got {doc.get('apiVersion')!r}")
        )
    spec = doc.get("spec") or {}
    if not isinstance(spec, dict):
        raise DaprConfigError([*problems, Problem("$.spec", "expected a mapping")])
    tracing = spec.get("tracing") or {}
    if not isinstance(tracing, dict):
        raise DaprConfigError([*problems, Problem("$.spec.tracing", "expected a mapping")])
    zipkin = None
    zipkin_cfg = tracing.get("zipkin") or {}
    if isinstance(zipkin_cfg, dict) and zipkin_cfg.get("endpointAddress"):
        zipkin = schema.ZipkinExporter(endpoint=str(zipkin_cfg["endpointAddress"]))
    otlp = None
    otel_cfg = tracing.get("otel")
    if isinstance(otel_cfg, dict) and otel_cfg:
        otlp = _otlp(otel_cfg, "$.spec.tracing.otel", problems)
    if problems:
        raise DaprConfigError(problems)
    telemetry = schema.Telemetry(
        service_name=service_name,
        zipkin=zipkin,
        otlp=otlp,
        console=bool(tracing.get("stdout", False)),
    )
    rate = _sampling_rate(tracing.get("samplingRate", "")) if tracing else 0.0
    ignored = tuple(sorted(k for k in spec if k not in ("tracing", "metric", "metrics")))
    return DaprTracing(telemetry=telemetry, sampling_rate=rate, ignored=ignored)


def load_tracing(path: str | Path, service_name: str = "meshwire") -> DaprTracing:
    """Read a Configuration file (env-expanded, first Configuration document of a stream)."""
    try:
        text = expand_env(Path(path).read_text())
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except (OSError, yaml.YAMLError) as exc:
        raise DaprConfigError([Problem("$", f"cannot read {path}: {exc}")]) from exc
    for doc in docs:
        if isinstance(doc, dict) and doc.get("kind") == "Configuration":
            return tracing_from_resource(doc, service_name)
    raise DaprConfigError([Problem("$", f"{path} holds no Configuration resource")])


def with_dapr_tracing(config: schema.Config, tracing: DaprTracing) -> schema.Config:
    """The config with the Dapr tracing applied: its exporters, and a tracing filter first in
    every listener's chain (replacing one that is there) with the Configuration's sampling rate."""
    listeners = []
    for listener in config.listeners:
        kept = [f for f in listener.filters if not isinstance(f, schema.TracingFilter)]
        tracing_filter = schema.TracingFilter(sampling_rate=tracing.sampling_rate)
        listeners.append(msgspec.structs.replace(listener, filters=[tracing_filter, *kept]))
    return msgspec.structs.replace(config, telemetry=tracing.telemetry, listeners=listeners)
