"""Dapr resource files: every kind from the reference parses; every problem names file and path."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.dapr.app_configuration import DEFAULT_LATENCY_BUCKETS, load_configuration
from config.dapr.component import SecretRef
from config.dapr.configuration import load_tracing
from config.dapr.duration import parse_go_duration
from config.dapr.errors import DaprResourceError
from config.dapr.resources import Resources, load_resources
from config.dapr.subscription import BulkSubscribe, RouteRule

# The reference's §7.1 example, verbatim.
COMPONENT = """\
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: statestore            # the {store}/{pubsub}/{binding} name used in URLs
  namespace: default          # optional; ignored standalone unless set
spec:
  type: state.redis
  version: v1
  initTimeout: 5s             # default 5s
  ignoreErrors: false         # continue startup if init fails
  metadata:
  - name: redisHost
    value: localhost:6379
  - name: redisPassword
    secretKeyRef: {name: redis-secret, key: password}   # resolved via auth.secretStore
  - name: actorStateStore
    value: "true"
  - name: keyPrefix
    value: appid
  - name: other
    envRef: SOME_ENV_VAR      # read value from daprd env
auth:
  secretStore: my-secrets
scopes: [app1, app2]          # only these app ids load it
"""

# The reference's §7.2 example, verbatim (its "…" placeholders included).
CONFIGURATION = """\
apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata: {name: appconfig}
spec:
  tracing:
    samplingRate: "1"
    stdout: true
    zipkin: {endpointAddress: "http://localhost:9411/api/v2/spans"}
    otel: {endpointAddress: "localhost:4317", isSecure: false, protocol: grpc, headers: ["k=v"], timeout: 10s}
  metric:
    enabled: true
    recordErrorCodes: false
    latencyDistributionBuckets: [1,2,3,4,5,6,8,10,13,16,20,25,30,40,50,65,80,100,130,160,200,250,300,400,500,650,800,1000,2000,5000,10000,20000,50000,100000]
    http: {increasedCardinality: true, pathMatching: ["/orders/{id}"], excludeVerbs: false}
    rules: [{name: dapr_runtime_service_invocation_req_sent_total, labels: [{name: method, regex: {"orders/": "orders/.+"}}]}]
  mtls: {enabled: true, workloadCertTTL: "24h", allowedClockSkew: "15m", sentryAddress: "…", controlPlaneTrustDomain: "…", tokenValidators: [{name: jwks, options: {…}}]}
  accessControl:
    defaultAction: deny
    trustDomain: public
    policies:
    - appId: app1
      defaultAction: deny
      trustDomain: public
      namespace: default
      operations:
      - {name: /op1, httpVerb: [POST, GET], action: allow}
      - {name: /op2/*, httpVerb: ["*"], action: allow}
  api:
    allowed: [{name: state, version: v1.0, protocol: http}]
  secrets: {scopes: [{storeName: local, defaultAccess: deny, allowedSecrets: [a]}]}
  components: {deny: [bindings.smtp]}
  nameResolution: {component: mdns, version: v1, configuration: {}}
  httpPipeline: {handlers: [{name: oauth2, type: middleware.http.oauth2}]}
  appHttpPipeline: {handlers: [{name: ratelimit, type: middleware.http.ratelimit}]}
  features: [{name: HotReload, enabled: true}]
  logging: {apiLogging: {enabled: false, obfuscateURLs: false, omitHealthChecks: false}}
"""  # noqa: E501

# The reference's §3.4 example, verbatim.
SUBSCRIPTION_V2 = """\
apiVersion: dapr.io/v2alpha1
kind: Subscription
metadata: {name: order-sub}
spec:
  pubsubname: pubsub          # required in practice
  topic: orders
  routes:
    rules: [{match: 'event.type == "order.v2"', path: /orders/v2}]
    default: /orders
  deadLetterTopic: poison     # optional
  metadata: {rawPayload: "false"}
  bulkSubscribe: {enabled: false, maxMessagesCount: 100, maxAwaitDurationMs: 40}
scopes: [app1, app2]
"""

SUBSCRIPTION_V1 = """\
apiVersion: dapr.io/v1alpha1
kind: Subscription
metadata: {name: legacy}
spec: {pubsubname: pubsub, topic: audit, route: /audit}
"""

# §7.4 gives the shape; this is it filled in.
HTTP_ENDPOINT = """\
apiVersion: dapr.io/v1alpha1
kind: HTTPEndpoint
metadata: {name: github}
spec:
  baseUrl: https://api.example.com
  headers:
  - {name: Accept, value: application/json}
  - name: Authorization
    secretKeyRef: {name: gh-token}
  clientTLS:
    rootCA: {value: "-----BEGIN CERTIFICATE-----"}
    renegotiation: OnceAsClient
auth: {secretStore: vault}
"""


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


def load(folder: Path, app_id: str = "app1", **env: str) -> Resources:
    return load_resources([folder], app_id, environ=env)


def problems_of(folder: Path, app_id: str = "app1", **env: str) -> list[tuple[str, str, str]]:
    with pytest.raises(DaprResourceError) as info:
        load(folder, app_id, **env)
    return [(Path(p.source).name, p.path, p.message) for p in info.value.problems]


def warnings_of(folder: Path, app_id: str = "app1") -> list[tuple[str, str, str]]:
    """The warnings of a load that fails (see problems_of)."""
    with pytest.raises(DaprResourceError) as info:
        load(folder, app_id)
    return [(Path(p.source).name, p.path, p.message) for p in info.value.warnings]


def test_the_reference_component_parses(tmp_path: Path) -> None:
    write(tmp_path, "statestore.yaml", COMPONENT)
    (component,) = load(tmp_path, SOME_ENV_VAR="from-env").components
    assert (component.name, component.namespace, component.type, component.version) == (
        "statestore",
        "default",
        "state.redis",
        "v1",
    )
    assert component.category == "state"
    assert (component.init_timeout, component.ignore_errors) == (5.0, False)
    assert component.metadata == {
        "redisHost": "localhost:6379",
        "actorStateStore": "true",
        "keyPrefix": "appid",
        "other": "from-env",
    }
    assert component.secret_refs == {"redisPassword": SecretRef("redis-secret", "password")}
    assert component.secret_store == "my-secrets"
    assert component.scopes == ("app1", "app2")


def test_metadata_scalars_become_strings_like_dapr_gives_them(tmp_path: Path) -> None:
    write(
        tmp_path,
        "c.yaml",
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: c}\n"
        "spec:\n  type: pubsub.redis\n  version: v1\n  initTimeout: 1m30s\n  metadata:\n"
        "  - {name: flag, value: true}\n  - {name: disabled, value: false}\n"
        "  - {name: count, value: 5}\n"
        "  - {name: ratio, value: 1.5}\n  - {name: empty}\n  - {name: nothing, value: null}\n"
        "  - {name: self, secretKeyRef: {name: only-name}}\n  - {name: unset, envRef: NOPE}\n"
        "auth: {secretstore: lower-case-spelling}\n",
    )
    (component,) = load(tmp_path).components
    assert component.metadata == {
        "flag": "true",
        "disabled": "false",
        "count": "5",
        "ratio": "1.5",
        "empty": "",
        "nothing": "",
        "unset": "",
    }
    assert component.secret_refs == {"self": SecretRef("only-name", "only-name")}
    assert component.init_timeout == 90.0
    assert component.secret_store == "lower-case-spelling"
    assert component.category == "pubsub"


def test_the_reference_configuration_parses(tmp_path: Path) -> None:
    write(tmp_path, "config.yaml", CONFIGURATION)
    (config,) = load(tmp_path).configurations
    assert config.name == "appconfig"
    assert config.tracing is not None
    assert config.tracing.sampling_rate == 1.0
    assert config.tracing.telemetry.service_name == "app1"
    assert config.tracing.telemetry.otlp is not None
    assert config.tracing.telemetry.otlp.endpoint == "http://localhost:4317"
    assert config.metric.enabled is True
    assert config.metric.latency_buckets_ms == DEFAULT_LATENCY_BUCKETS
    assert config.metric.increased_cardinality is True
    assert config.metric.path_matching == ("/orders/{id}",)
    assert (config.mtls.enabled, config.mtls.workload_cert_ttl) == (True, 86400.0)
    assert config.mtls.allowed_clock_skew == 900.0
    acl = config.access_control
    assert acl is not None
    assert (acl.default_action, acl.trust_domain) == ("deny", "public")
    (policy,) = acl.policies
    assert (policy.app_id, policy.default_action, policy.trust_domain, policy.namespace) == (
        "app1",
        "deny",
        "public",
        "default",
    )
    assert [(op.name, op.http_verbs, op.action) for op in policy.operations] == [
        ("/op1", ("POST", "GET"), "allow"),
        ("/op2/*", ("*",), "allow"),
    ]
    assert [(r.name, r.version, r.protocol) for r in config.api.allowed] == [
        ("state", "v1.0", "http")
    ]
    assert config.api.denied == ()
    assert config.name_resolution is not None
    assert (config.name_resolution.component, config.name_resolution.version) == ("mdns", "v1")
    assert config.features == {"HotReload": True}
    assert config.unmodelled == (
        "secrets",
        "components",
        "httpPipeline",
        "appHttpPipeline",
        "logging",
    )


def test_configuration_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", "apiVersion: dapr.io/v1alpha1\nkind: Configuration\n"
                 "metadata: {name: bare}\nspec: {}\n")  # fmt: skip
    config = load_configuration(path)
    assert config.tracing is None
    assert config.access_control is None
    assert (config.metric.enabled, config.metric.increased_cardinality) == (True, True)
    assert (config.mtls.enabled, config.mtls.workload_cert_ttl, config.mtls.allowed_clock_skew) == (
        False,
        86400.0,
        900.0,
    )
    assert config.name_resolution is None
    assert config.features == {}


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ("{}", None),
        ("{trustDomain: corp}", ("allow", "corp")),
        (
            "{policies: [{appId: a, trustDomain: public, namespace: default}]}",
            ("deny", "public"),
        ),
        ("{defaultAction: Allow}", ("allow", "public")),
    ],
)
def test_access_control_defaults_follow_daprd(
    tmp_path: Path, section: str, expected: tuple[str, str] | None
) -> None:
    text = "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata: {name: c}\n"
    text += f"spec: {{accessControl: {section}}}\n"
    acl = load_configuration(write(tmp_path, "c.yaml", text)).access_control
    assert (None if acl is None else (acl.default_action, acl.trust_domain)) == expected


def test_configuration_files_are_env_expanded_but_components_are_not(tmp_path: Path) -> None:
    write(
        tmp_path,
        "all.yaml",
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: c}\n"
        "spec: {type: state.in-memory, version: v1, metadata: [{name: x, value: $RATE}]}\n"
        "---\n"
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata: {name: cfg}\n"
        'spec:\n  tracing: {samplingRate: "${RATE}"}\n  mtls: {enabled: $MTLS}\n',
    )
    resources = load(tmp_path, RATE="0.5", MTLS="true")
    assert resources.components[0].metadata == {"x": "$RATE"}
    (config,) = resources.configurations
    assert config.tracing is not None
    assert config.tracing.sampling_rate == 0.5
    assert config.mtls.enabled is True


def test_load_configuration_expands_env_and_load_tracing_still_works(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "c.yaml",
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata: {name: c}\n"
        "spec:\n  tracing:\n    zipkin: {endpointAddress: 'http://${HOST}:9411/api/v2/spans'}\n",
    )
    config = load_configuration(path, "orders", environ={"HOST": "zipkin.test"})
    assert config.tracing is not None
    assert config.tracing.telemetry.zipkin is not None
    assert config.tracing.telemetry.zipkin.endpoint == "http://zipkin.test:9411/api/v2/spans"
    assert load_tracing(path).telemetry.zipkin is not None


def test_subscriptions_of_both_versions(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", SUBSCRIPTION_V2)
    write(tmp_path, "b.yaml", SUBSCRIPTION_V1)
    modern, legacy = load(tmp_path).subscriptions
    assert (modern.name, modern.pubsub_name, modern.topic) == ("order-sub", "pubsub", "orders")
    assert modern.rules == (RouteRule('event.type == "order.v2"', "/orders/v2"),)
    assert modern.default_route == "/orders"
    assert modern.dead_letter_topic == "poison"
    assert modern.metadata == {"rawPayload": "false"}
    assert modern.bulk_subscribe == BulkSubscribe(False, 100, 40)
    assert (legacy.rules, legacy.default_route, legacy.topic) == ((), "/audit", "audit")
    assert legacy.bulk_subscribe == BulkSubscribe()
    assert legacy.dead_letter_topic is None


def test_http_endpoint(tmp_path: Path) -> None:
    write(tmp_path, "e.yaml", HTTP_ENDPOINT)
    (endpoint,) = load(tmp_path).http_endpoints
    assert (endpoint.name, endpoint.base_url) == ("github", "https://api.example.com")
    assert endpoint.headers == {"Accept": "application/json"}
    assert endpoint.header_secret_refs == {"Authorization": SecretRef("gh-token", "gh-token")}
    assert endpoint.client_tls is not None
    assert endpoint.client_tls.root_ca is not None
    assert endpoint.client_tls.root_ca.value == "-----BEGIN CERTIFICATE-----"
    assert endpoint.client_tls.renegotiation == "OnceAsClient"
    assert endpoint.secret_store == "vault"


def test_multi_document_files_and_file_order(tmp_path: Path) -> None:
    write(tmp_path, "b.yml", COMPONENT.replace("statestore", "second"))
    write(tmp_path, "a.yaml", "---\n" + COMPONENT + "---\n# nothing here\n---\n" + HTTP_ENDPOINT)
    write(tmp_path, "notes.txt", "not: [a resource")
    resources = load(tmp_path)
    assert [c.name for c in resources.components] == ["statestore", "second"]
    assert resources.component("second") is not None
    assert resources.component("missing") is None
    assert [e.name for e in resources.http_endpoints] == ["github"]


def test_scopes_and_namespaces_decide_what_loads(tmp_path: Path) -> None:
    write(tmp_path, "scoped.yaml", COMPONENT)  # scopes: [app1, app2]
    write(tmp_path, "sub.yaml", SUBSCRIPTION_V2)  # scopes: [app1, app2]
    elsewhere = COMPONENT.replace("statestore", "prod").replace("scopes: [app1, app2]", "")
    write(tmp_path, "ns.yaml", elsewhere.replace("namespace: default", "namespace: production"))
    assert [c.name for c in load(tmp_path, "app2").components] == ["statestore"]
    other = load(tmp_path, "app3")
    assert (other.components, other.subscriptions) == ((), ())
    production = load_resources([tmp_path], "app1", "production", environ={})
    assert [(c.name, c.namespace) for c in production.components] == [("prod", "production")]


def test_a_resource_scoped_away_is_not_checked(tmp_path: Path) -> None:
    write(tmp_path, "c.yaml", COMPONENT.replace("type: state.redis", "type: nonsense"))
    assert load(tmp_path, "someone-else").components == ()
    assert problems_of(tmp_path)[0][1] == "$.spec.type"


def test_every_problem_is_collected_with_file_and_path(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", COMPONENT)
    write(
        tmp_path,
        "b.yaml",
        COMPONENT.replace("initTimeout: 5s", "initTimeout: 5 seconds")
        + "---\napiVersion: dapr.io/v1alpha1\nkind: Widget\nmetadata: {name: w}\n"
        + "---\napiVersion: dapr.io/v2alpha1\nkind: Component\nmetadata: {name: v}\n"
        + "---\napiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {}\n"
        + "spec:\n  typ: state.redis\n  version: v1\n  metadata:\n"
        + "  - {name: a, value: x, envRef: Y}\n  - {value: 1}\n"
        + "---\n- just a list\n",
    )
    write(tmp_path, "c.yaml", "apiVersion: dapr.io/v1alpha1\nkind: [\n")
    assert problems_of(tmp_path) == [
        ("b.yaml#1", "$.spec.initTimeout", "expected a Go duration such as 5s, 500ms, 1.5s or "
         "1h30m, got '5 seconds'"),
        ("b.yaml#1", "$.metadata.name", "Component 'statestore' is already defined in "
         f"{tmp_path / 'a.yaml'}"),
        ("b.yaml#2", "$.kind", "unknown kind 'Widget'; one of Component, Configuration, "
         "Resiliency, Subscription, HTTPEndpoint"),
        ("b.yaml#3", "$.apiVersion", "expected dapr.io/v1alpha1 for a Component, "
         "got 'dapr.io/v2alpha1'"),
        ("b.yaml#4", "$.metadata.name", "missing required field 'name'"),
        ("b.yaml#4", "$.spec.type", "missing required field 'type'"),
        ("b.yaml#4", "$.spec.metadata[0]", "set only one of value, secretKeyRef, envRef; "
         "got ['value', 'envRef']"),
        ("b.yaml#4", "$.spec.metadata[1].name", "missing required field 'name'"),
        ("b.yaml#5", "$", "expected a Dapr resource (an object), got list"),
        ("c.yaml", "$", "invalid YAML at line 3: expected the node content, but found "
         "'<stream end>'"),
    ]  # fmt: skip
    assert warnings_of(tmp_path) == [
        ("b.yaml#4", "$.spec.typ", "unknown field (ignored; did you mean 'type'?)"),
    ]


def test_the_error_lists_one_problem_per_line(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", SUBSCRIPTION_V1.replace("route: /audit", "routes: {}"))
    with pytest.raises(DaprResourceError) as info:
        load(tmp_path)
    lines = str(info.value).splitlines()
    assert lines == [f"{tmp_path / 'a.yaml'}: $.spec.route: missing required field 'route'"]
    assert [str(w) for w in info.value.warnings] == [
        f"{tmp_path / 'a.yaml'}: $.spec.routes: unknown field (ignored; did you mean 'route'?)"
    ]


def test_value_problems_in_each_kind(tmp_path: Path) -> None:
    write(tmp_path, "e.yaml", HTTP_ENDPOINT.replace("https://api.example.com", "ftp://x"))
    subscription = SUBSCRIPTION_V2.replace("maxMessagesCount: 100", "maxMessagesCount: 0")
    subscription = subscription.replace("default: /orders", "")
    write(tmp_path, "s.yaml", subscription.replace("rules: [{match", "rules: [{matc"))
    write(tmp_path, "c.yaml", CONFIGURATION.replace("defaultAction: deny\n    trust",
                                                    "defaultAction: maybe\n    trust")
          .replace("workloadCertTTL: \"24h\"", "workloadCertTTL: \"1d\"")
          .replace("- {name: /op1, httpVerb: [POST, GET], action: allow}", "- {name: /op1}")
          .replace("tracing:", "tracin:"))  # fmt: skip
    assert problems_of(tmp_path) == [
        ("c.yaml", "$.spec.accessControl.defaultAction",
         "must be one of allow, deny, got 'maybe'"),
        ("c.yaml", "$.spec.accessControl.policies[0].operations[0].action",
         "missing required field 'action' (allow or deny)"),
        ("c.yaml", "$.spec.mtls.workloadCertTTL",
         "expected a Go duration such as 5s, 500ms, 1.5s or 1h30m, got '1d'"),
        ("e.yaml", "$.spec.baseUrl", "expected an http:// or https:// URL, got 'ftp://x'"),
        ("s.yaml", "$.spec.routes.rules[0].match", "missing required field 'match'"),
        ("s.yaml", "$.spec.bulkSubscribe.maxMessagesCount", "must be at least 1, got 0"),
    ]  # fmt: skip
    assert warnings_of(tmp_path) == [
        ("c.yaml", "$.spec.tracin", "unknown field (ignored; did you mean 'tracing'?)"),
        ("s.yaml", "$.spec.routes.rules[0].matc", "unknown field (ignored; did you mean 'match'?)"),
    ]


def test_a_missing_resources_path_is_a_problem(tmp_path: Path) -> None:
    with pytest.raises(DaprResourceError, match="no such file or directory"):
        load_resources([tmp_path / "absent"], "app1", environ={})


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1h30m", 5400.0),
        ("500ms", 0.5),
        ("5s", 5.0),
        ("1.5s", 1.5),
        ("2m", 120.0),
        ("0", 0.0),
        (0, 0.0),
        ("1m0.5s", 60.5),
        ("250us", 0.00025),
        ("100ns", 1e-7),
        (".5h", 1800.0),
    ],
)
def test_go_durations(text: str | int, seconds: float) -> None:
    assert parse_go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("5", "a number needs a unit"),
        ("", "got an empty string"),
        ("-5s", "must not be negative"),
        ("5 s", "expected a Go duration"),
        ("1d", "expected a Go duration"),
        ("s", "expected a Go duration"),
        (5, "expected a Go duration"),
        (True, "expected a Go duration"),
        (None, "expected a Go duration"),
    ],
)
def test_bad_go_durations(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_go_duration(value)
