"""Unknown fields in Dapr resources are warnings (daprd ignores them); `survey_resources`."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.dapr.app_configuration import load_configuration, read_configuration
from config.dapr.errors import DaprResourceError
from config.dapr.resources import load_resources, survey_resources

HEAD = "apiVersion: dapr.io/{version}\nkind: {kind}\nmetadata: {{name: {name}}}\n"

# Each kind with an unknown field at several depths, and the warnings it must give.
TYPOS = {
    "Component": (
        "v1alpha1",
        "colour: blue\n"
        "spec:\n  type: state.in-memory\n  version: v1\n  initTimeot: 5s\n"
        "  metadata: [{name: a, value: b, secretKeyRf: {name: x}}]\n"
        "auth: {secretStore: vault, store: x}\n",
        [
            ("$.colour", "unknown field (ignored)"),
            ("$.spec.initTimeot", "unknown field (ignored; did you mean 'initTimeout'?)"),
            (
                "$.spec.metadata[0].secretKeyRf",
                "unknown field (ignored; did you mean 'secretKeyRef'?)",
            ),
            ("$.auth.store", "unknown field (ignored; did you mean 'secretstore'?)"),
        ],
    ),
    "Configuration": (
        "v1alpha1",
        "spec:\n  tracing:\n    samplingRate: '1'\n    zipkn: {endpointAddress: http://z:9411}\n"
        "    otel: {endpointAddress: o:4317, isSecure: false, protocl: grpc}\n"
        "  apiSpec: {maxRequestBodySize: 128}\n"
        "  mtls: {enabled: true, workloadCertTtl: 24h}\n",
        [
            ("$.spec.apiSpec", "unknown field (ignored; did you mean 'api'?)"),
            ("$.spec.tracing.zipkn", "unknown field (ignored; did you mean 'zipkin'?)"),
            ("$.spec.tracing.otel.protocl", "unknown field (ignored; did you mean 'protocol'?)"),
            (
                "$.spec.mtls.workloadCertTtl",
                "unknown field (ignored; did you mean 'workloadCertTTL'?)",
            ),
        ],
    ),
    "Resiliency": (
        "v1alpha1",
        "spec:\n  policies:\n    retries: {r: {maxRetries: 1, backoff: 2s}}\n"
        "  targets: {apps: {b: {retry: r, retires: r}}}\n",
        [
            ("$.spec.policies.retries.r.backoff", "unknown field (ignored)"),
            ("$.spec.targets.apps.b.retires", "unknown field (ignored; did you mean 'retry'?)"),
        ],
    ),
    "Subscription": (
        "v2alpha1",
        "spec:\n  pubsubname: pubsub\n  topic: t\n  deadLetter: dead\n"
        "  routes: {default: /t, rules: [{match: 'true', path: /p, when: x}]}\n",
        [
            ("$.spec.deadLetter", "unknown field (ignored; did you mean 'deadLetterTopic'?)"),
            ("$.spec.routes.rules[0].when", "unknown field (ignored)"),
        ],
    ),
    "HTTPEndpoint": (
        "v1alpha1",
        "spec:\n  baseUrl: https://api.example.com\n  baseURL: https://other\n"
        "  clientTLS: {renegotiation: Never, rootCa: {value: x}}\n",
        [
            ("$.spec.baseURL", "unknown field (ignored; did you mean 'baseUrl'?)"),
            ("$.spec.clientTLS.rootCa", "unknown field (ignored; did you mean 'rootCA'?)"),
        ],
    ),
}


def resource(kind: str, body: str, name: str = "r", version: str = "v1alpha1") -> str:
    return HEAD.format(version=version, kind=kind, name=name) + body


@pytest.mark.parametrize("kind", list(TYPOS))
def test_unknown_fields_load_with_a_warning_each(tmp_path: Path, kind: str) -> None:
    version, body, expected = TYPOS[kind]
    (tmp_path / "r.yaml").write_text(resource(kind, body, version=version))
    loaded = load_resources([tmp_path], "app1", environ={})
    found = [(w.source, w.path, w.message) for w in loaded.warnings]
    assert found == [(str(tmp_path / "r.yaml"), path, message) for path, message in expected]


def test_subscription_v1alpha1_has_its_own_known_fields(tmp_path: Path) -> None:
    body = "spec: {pubsubname: p, topic: t, route: /t, routes: {default: /t}}\n"
    (tmp_path / "s.yaml").write_text(resource("Subscription", body))
    (subscription,) = (loaded := load_resources([tmp_path], "a", environ={})).subscriptions
    assert subscription.default_route == "/t"
    assert [(w.path, w.message) for w in loaded.warnings] == [
        ("$.spec.routes", "unknown field (ignored; did you mean 'route'?)")
    ]


def test_a_configuration_file_gives_its_warnings_and_still_loads(tmp_path: Path) -> None:
    _, body, _ = TYPOS["Configuration"]
    path = tmp_path / "config.yaml"
    path.write_text(resource("Configuration", body))
    configuration, warnings = read_configuration(path)
    assert configuration.mtls.enabled
    assert str(warnings[1]) == (
        f"{path}: $.spec.tracing.zipkn: unknown field (ignored; did you mean 'zipkin'?)"
    )
    assert load_configuration(path).mtls.enabled  # the plain loader drops the warnings


def test_a_broken_configuration_keeps_its_warnings(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        resource("Configuration", "spec:\n  mtls: {enabld: true, workloadCertTTL: 1d}\n")
    )
    with pytest.raises(DaprResourceError) as info:
        read_configuration(path)
    assert [p.path for p in info.value.problems] == ["$.spec.mtls.workloadCertTTL"]
    assert [w.path for w in info.value.warnings] == ["$.spec.mtls.enabld"]


def test_the_survey_checks_every_app_and_namespace_file_by_file(tmp_path: Path) -> None:
    """`load_resources` skips what another app or namespace would load; the survey does not."""
    other_app = resource("Subscription", "spec: {pubsubname: p, topic: t}\nscopes: [other]\n")
    other_namespace = (
        "apiVersion: dapr.io/v1alpha1\nkind: Resiliency\n"
        "metadata: {name: r, namespace: prod}\nspec: {policies: {timeouts: {t: soon}}}\n"
    )
    (tmp_path / "a.yaml").write_text(other_app + "---\n" + other_namespace)
    (tmp_path / "b.yaml").write_text(resource("Component", "spec: {type: state.in-memory}\n"))
    (tmp_path / "notes.txt").write_text("not a resource")
    assert not load_resources([tmp_path / "a.yaml"], "app1", environ={}).subscriptions

    surveyed = survey_resources([tmp_path, tmp_path / "absent"], environ={})
    assert list(surveyed) == [str(tmp_path), str(tmp_path / "absent")]
    reports = surveyed[str(tmp_path)]
    assert [r.path for r in reports] == [str(tmp_path / "a.yaml"), str(tmp_path / "b.yaml")]
    assert [(p.source, p.path) for p in reports[0].problems] == [
        (f"{tmp_path / 'a.yaml'}#1", "$.spec.route"),
        (f"{tmp_path / 'a.yaml'}#2", "$.spec.policies.timeouts.t"),
    ]
    assert [p.path for p in reports[1].problems] == ["$.spec.version"]
    (absent,) = surveyed[str(tmp_path / "absent")]
    assert [str(p) for p in absent.problems] == [
        f"{tmp_path / 'absent'}: $: no such file or directory"
    ]


def test_the_survey_allows_one_name_for_apps_that_never_load_both(tmp_path: Path) -> None:
    component = "spec: {type: state.in-memory, version: v1}\n"
    store = resource("Component", component, name="store")
    (tmp_path / "a.yaml").write_text(store + "scopes: [app1]\n")
    (tmp_path / "b.yaml").write_text(store + "scopes: [app2]\n")
    (tmp_path / "c.yaml").write_text(store.replace("name: store", "name: store, namespace: prod"))
    (tmp_path / "d.yaml").write_text(store + "scopes: [app2, app3]\n")
    (reports,) = survey_resources([tmp_path], environ={}).values()
    assert [len(r.resources) for r in reports] == [1, 1, 1, 0]
    assert [str(p) for r in reports for p in r.problems] == [
        f"{tmp_path / 'd.yaml'}: $.metadata.name: Component 'store' is already defined in "
        f"{tmp_path / 'b.yaml'}"
    ]


def test_a_file_named_twice_is_read_once(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(resource("Component", "spec: {type: state.in-memory, version: v1}\n"))
    surveyed = survey_resources([tmp_path, path], environ={})
    assert surveyed[str(tmp_path)] == surveyed[str(path)]
    assert surveyed[str(path)][0].problems == ()  # not "already defined" by itself
