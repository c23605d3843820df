"""A Dapr `Configuration` resource as a whole: tracing, metrics, mTLS, ACL, API lists, features."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from config.dapr.access_control import AccessControl, parse_access_control
from config.dapr.configuration import DaprConfigError, DaprTracing, tracing_from_resource
from config.dapr.documents import read_documents
from config.dapr.errors import DaprResourceError, ResourceProblem
from config.dapr.fields import Fields, ResourceMeta, read_meta
from config.walk import child, kind

__all__ = [
    "ApiRule",
    "ApiSpec",
    "DaprConfiguration",
    "MetricSpec",
    "MtlsSpec",
    "NameResolution",
    "load_configuration",
    "parse_configuration",
    "read_configuration",
]

# Milliseconds: daprd's default latency histogram buckets.
DEFAULT_LATENCY_BUCKETS = (
    1, 2, 3, 4, 5, 6, 8, 10, 13, 16, 20, 25, 30, 40, 50, 65, 80, 100, 130, 160, 200, 250, 300,
    400, 500, 650, 800, 1000, 2000, 5000, 10000, 20000, 50000, 100000,
)  # fmt: skip
MODELLED = ("tracing", "metric", "metrics", "mtls", "accessControl", "api", "nameResolution")
# Sections daprd knows that meshwire reads but does not act on (listed in `unmodelled`).
UNMODELLED = (
    "secrets",
    "components",
    "httpPipeline",
    "appHttpPipeline",
    "logging",
    "wasm",
    "workflow",
)
# What daprd's TracingSpec (and its zipkin and otel parts) decodes.
TRACING_KEYS = ("samplingRate", "stdout", "zipkin", "otel")
ZIPKIN_KEYS = ("endpointAddress",)
OTEL_KEYS = ("endpointAddress", "isSecure", "protocol", "headers", "timeout")


@dataclass(frozen=True, slots=True)
class NameResolution:
    component: str
    version: str
    configuration: dict[str, object]


@dataclass(frozen=True, slots=True)
class MtlsSpec:
    enabled: bool = False
    workload_cert_ttl: float = 24 * 3600.0  # seconds
    allowed_clock_skew: float = 15 * 60.0
    sentry_address: str = ""
    control_plane_trust_domain: str = ""


@dataclass(frozen=True, slots=True)
class MetricSpec:
    enabled: bool = True
    record_error_codes: bool = False
    latency_buckets_ms: tuple[float, ...] = DEFAULT_LATENCY_BUCKETS
    increased_cardinality: bool = True  # daprd's default is still true
    path_matching: tuple[str, ...] = ()
    exclude_verbs: bool = False


@dataclass(frozen=True, slots=True)
class ApiRule:
    name: str  # e.g. state, invoke, publish
    version: str  # e.g. v1.0, v1.0-alpha1
    protocol: str | None  # http or grpc; None: both


@dataclass(frozen=True, slots=True)
class ApiSpec:
    allowed: tuple[ApiRule, ...] = ()  # empty: every API (unless denied)
    denied: tuple[ApiRule, ...] = ()  # wins over allowed


@dataclass(frozen=True, slots=True)
class DaprConfiguration:
    name: str
    namespace: str
    scopes: tuple[str, ...]
    tracing: DaprTracing | None  # None when the resource has no tracing section
    access_control: AccessControl | None  # None: no ACL, every caller allowed
    mtls: MtlsSpec = MtlsSpec()
    metric: MetricSpec = MetricSpec()
    api: ApiSpec = ApiSpec()
    name_resolution: NameResolution | None = None
    features: dict[str, bool] = field(default_factory=dict)
    unmodelled: tuple[str, ...] = ()  # sections present that meshwire does not act on


def parse_configuration(
    doc: dict[str, object],
    spec: dict[str, object],
    meta: ResourceMeta,
    fields: Fields,
    service_name: str = "meshwire",
) -> DaprConfiguration:
    """The Configuration in `doc` (whose `spec` is given); problems go to `fields`."""
    fields.known_keys(spec, "$.spec", (*MODELLED, "features", *UNMODELLED))
    tracing: DaprTracing | None = None
    _tracing_keys(spec, fields)
    if spec.get("tracing") is not None:
        try:
            tracing = tracing_from_resource(doc, service_name)
        except DaprConfigError as exc:
            # kind and apiVersion are the caller's to check; keep the tracing section's problems.
            fields.problems.extend(p for p in exc.problems if p.path.startswith("$.spec"))
    features: dict[str, bool] = {}
    for i, item in enumerate(fields.items(spec, "features", "$.spec")):
        where = child("$.spec.features", i)
        raw = fields.as_mapping(item, where)
        fields.known_keys(raw, where, ("name", "enabled"))
        features[fields.required_text(raw, "name", where)] = fields.flag(
            raw, "enabled", where, False
        )
    return DaprConfiguration(
        name=meta.name,
        namespace=meta.namespace,
        scopes=meta.scopes,
        tracing=tracing,
        access_control=parse_access_control(spec, fields),
        mtls=_mtls(spec, fields),
        metric=_metric(spec, fields),
        api=_api(spec, fields),
        name_resolution=_name_resolution(spec, fields),
        features=features,
        unmodelled=tuple(key for key in UNMODELLED if spec.get(key) is not None),
    )


def _tracing_keys(spec: dict[str, object], fields: Fields) -> None:
    """Warn of unknown keys in spec.tracing; its values are read by `tracing_from_resource`."""
    tracing = spec.get("tracing")
    if not isinstance(tracing, dict):
        return  # a wrong type is tracing_from_resource's to report
    fields.known_keys(tracing, "$.spec.tracing", TRACING_KEYS)
    for key, known in (("zipkin", ZIPKIN_KEYS), ("otel", OTEL_KEYS)):
        section = tracing.get(key)
        if isinstance(section, dict):
            fields.known_keys(section, child("$.spec.tracing", key), known)


def _mtls(spec: dict[str, object], fields: Fields) -> MtlsSpec:
    raw, where = fields.section(spec, "mtls", "$.spec"), "$.spec.mtls"
    keys = ("enabled", "workloadCertTTL", "allowedClockSkew", "sentryAddress")
    fields.known_keys(raw, where, (*keys, "controlPlaneTrustDomain", "tokenValidators"))
    return MtlsSpec(
        enabled=fields.flag(raw, "enabled", where, False),
        workload_cert_ttl=fields.duration(raw, "workloadCertTTL", where, 24 * 3600.0),
        allowed_clock_skew=fields.duration(raw, "allowedClockSkew", where, 15 * 60.0),
        sentry_address=fields.text(raw, "sentryAddress", where),
        control_plane_trust_domain=fields.text(raw, "controlPlaneTrustDomain", where),
    )


def _metric(spec: dict[str, object], fields: Fields) -> MetricSpec:
    key = "metric" if spec.get("metric") is not None else "metrics"  # daprd accepts both
    raw, where = fields.section(spec, key, "$.spec"), child("$.spec", key)
    keys = ("enabled", "recordErrorCodes", "latencyDistributionBuckets", "http", "rules")
    fields.known_keys(raw, where, keys)
    buckets: list[float] = []
    for i, item in enumerate(fields.items(raw, "latencyDistributionBuckets", where)):
        if isinstance(item, int | float) and not isinstance(item, bool) and item > 0:
            buckets.append(item)
        else:
            bucket_path = child(child(where, "latencyDistributionBuckets"), i)
            fields.report(bucket_path, f"expected a positive number of ms, got {kind(item)}")
    http, http_path = fields.section(raw, "http", where), child(where, "http")
    fields.known_keys(http, http_path, ("increasedCardinality", "pathMatching", "excludeVerbs"))
    return MetricSpec(
        enabled=fields.flag(raw, "enabled", where, True),
        record_error_codes=fields.flag(raw, "recordErrorCodes", where, False),
        latency_buckets_ms=tuple(sorted(buckets)) or DEFAULT_LATENCY_BUCKETS,
        increased_cardinality=fields.flag(http, "increasedCardinality", http_path, True),
        path_matching=tuple(fields.strings(http, "pathMatching", http_path)),
        exclude_verbs=fields.flag(http, "excludeVerbs", http_path, False),
    )


def _api(spec: dict[str, object], fields: Fields) -> ApiSpec:
    raw, where = fields.section(spec, "api", "$.spec"), "$.spec.api"
    fields.known_keys(raw, where, ("allowed", "denied"))
    lists: dict[str, tuple[ApiRule, ...]] = {}
    for key in ("allowed", "denied"):
        rules: list[ApiRule] = []
        for i, item in enumerate(fields.items(raw, key, where)):
            rule_path = child(child(where, key), i)
            rule = fields.as_mapping(item, rule_path)
            fields.known_keys(rule, rule_path, ("name", "version", "protocol"))
            protocol = fields.choice(rule, "protocol", rule_path, ("http", "grpc"), "")
            rules.append(
                ApiRule(
                    fields.required_text(rule, "name", rule_path),
                    fields.required_text(rule, "version", rule_path),
                    protocol or None,
                )
            )
        lists[key] = tuple(rules)
    return ApiSpec(lists["allowed"], lists["denied"])


def _name_resolution(spec: dict[str, object], fields: Fields) -> NameResolution | None:
    if spec.get("nameResolution") is None:
        return None
    raw, where = fields.section(spec, "nameResolution", "$.spec"), "$.spec.nameResolution"
    fields.known_keys(raw, where, ("component", "version", "configuration"))
    return NameResolution(
        component=fields.required_text(raw, "component", where),
        version=fields.text(raw, "version", where, "v1"),
        configuration=fields.section(raw, "configuration", where),
    )


def read_configuration(
    path: str | Path,
    service_name: str = "meshwire",
    *,
    namespace: str = "default",
    environ: Mapping[str, str] | None = None,
) -> tuple[DaprConfiguration, list[ResourceProblem]]:
    """The first Configuration in a file (env-expanded) and its warnings (unknown fields, which
    daprd ignores); DaprResourceError lists every problem, and the warnings too."""
    documents, problems = read_documents(Path(path), environ)
    for document in documents:
        if isinstance(document.data, dict) and document.data.get("kind") == "Configuration":
            doc, fields = document.data, Fields()
            meta = read_meta(doc, fields, namespace)
            if meta.api_version != "dapr.io/v1alpha1":
                fields.report(
                    "$.apiVersion", f"expected dapr.io/v1alpha1, got {meta.api_version!r}"
                )
            spec = fields.section(doc, "spec", "$")
            configuration = parse_configuration(doc, spec, meta, fields, service_name)
            problems.extend(
                ResourceProblem(document.source, p.path, p.message) for p in fields.problems
            )
            warnings = [
                ResourceProblem(document.source, p.path, p.message) for p in fields.warnings
            ]
            if problems:
                raise DaprResourceError(problems, warnings)
            return configuration, warnings
    problems.append(ResourceProblem(str(path), "$", "the file holds no Configuration resource"))
    raise DaprResourceError(problems)


def load_configuration(
    path: str | Path,
    service_name: str = "meshwire",
    *,
    namespace: str = "default",
    environ: Mapping[str, str] | None = None,
) -> DaprConfiguration:
    """The first Configuration in a file (env-expanded); DaprResourceError lists every problem.
    Warnings are dropped: `read_configuration` has them, for whoever logs them."""
    configuration, _ = read_configuration(path, service_name, namespace=namespace, environ=environ)
    return configuration
