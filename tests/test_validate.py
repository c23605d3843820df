"""`meshwire validate` on meshwire configs and Dapr resources: problems with paths, warnings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from proxy.cli import main

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "config" / "examples"
DAPR = EXAMPLES / "dapr"

STATESTORE = """\
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: statestore
spec:
  type: state.redis
  version: v1
  metadata:
    - name: redisHost
      value: localhost:6379
    - name: redisDB
      value: zero
"""
CONFIGURATION = """\
apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata: {name: tracing}
spec:
  tracing:
    samplingRate: "1"
    zipkn: {endpointAddress: "http://127.0.0.1:9411/api/v2/spans"}
"""
SUBSCRIPTION_V1 = """\
apiVersion: dapr.io/v1alpha1
kind: Subscription
metadata: {name: audit}
spec: {pubsubname: pubsub, topic: orders, route: /audit}
scopes: [auditor]
"""
HTTP_ENDPOINT = """\
apiVersion: dapr.io/v1alpha1
kind: HTTPEndpoint
metadata: {name: payments}
spec:
  baseUrl: https://payments.example.com
  headers: [{name: x-api-version, value: "2"}]
"""


def validate(*argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str], list[str]]:
    """Exit code, stdout lines and stderr lines of `meshwire validate ARGV`."""
    code = main(["validate", *argv])
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err.splitlines()


def write(folder: Path, name: str, text: str) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)
    return str(folder / name)


def test_every_shipped_example_validates_as_a_process() -> None:
    configs = sorted(str(p) for p in EXAMPLES.glob("*.yaml") if p.name != "invalid.yaml")
    resources = sorted(str(p) for p in (DAPR / "resources").glob("*.yaml"))
    argv = [*configs, str(DAPR / "config.yaml"), *resources, "--resources-path"]
    result = subprocess.run(
        [sys.executable, "-m", "proxy", "validate", *argv, str(DAPR / "resources")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    expected = [*configs, str(DAPR / "config.yaml"), *resources, *resources]
    assert result.stdout.splitlines() == [f"{name}: ok" for name in expected]


def test_a_dapr_problem_exits_2_with_its_file_and_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = write(tmp_path / "resources", "statestore.yaml", STATESTORE)
    code, out, err = validate(store, capsys=capsys)
    assert (code, out) == (2, [])
    assert err == [f"{store}: $.spec.metadata[1].value: expected an integer, got 'zero'"]


def test_a_typo_in_the_tracing_section_is_a_warning_and_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write(tmp_path, "config.yaml", CONFIGURATION)
    code, out, err = validate(config, capsys=capsys)
    assert (code, out) == (0, [f"{config}: ok"])
    assert err == [
        f"{config}: warning: $.spec.tracing.zipkn: unknown field (ignored; did you mean 'zipkin'?)"
    ]


def test_meshwire_configs_still_refuse_unknown_fields(capsys: pytest.CaptureFixture[str]) -> None:
    invalid = str(EXAMPLES / "invalid.yaml")
    code, out, err = validate(invalid, str(DAPR / "config.yaml"), capsys=capsys)
    assert code == 2
    assert out == [f"{DAPR / 'config.yaml'}: ok"]
    assert f"{invalid}: $.listeners[0].routes[0].retries: unknown field 'retries'" in err
    assert not any("warning" in line for line in err)


def test_a_multi_document_file_names_the_document_at_fault(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = SUBSCRIPTION_V1.replace("route: /audit", "routes: {default: /audit}")
    both = write(tmp_path, "all.yaml", f"{HTTP_ENDPOINT}---\n{STATESTORE}---\n{broken}")
    code, _, err = validate(both, capsys=capsys)
    assert code == 2
    assert err == [
        f"{both}#2: $.spec.metadata[1].value: expected an integer, got 'zero'",
        f"{both}#3: warning: $.spec.routes: unknown field (ignored; did you mean 'route'?)",
        f"{both}#3: $.spec.route: missing required field 'route'",
    ]


def test_a_folder_is_checked_like_run_loads_it_and_each_file_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "resources"
    write(folder, "a.yaml", HTTP_ENDPOINT + "---\n" + SUBSCRIPTION_V1)
    write(folder, "b.yml", HTTP_ENDPOINT)
    write(folder, "notes.txt", "not a resource")
    empty = tmp_path / "empty"
    empty.mkdir()
    argv = ["--resources-path", str(folder), "--components-path", str(empty)]  # daprd's alias
    code, out, err = validate(*argv, capsys=capsys)
    assert code == 2
    assert out == [f"{folder / 'a.yaml'}: ok", f"{empty}: ok (no .yaml or .yml files)"]
    assert err == [
        f"{folder / 'b.yml'}: $.metadata.name: HTTPEndpoint 'payments' is already defined in "
        f"{folder / 'a.yaml'}#1"
    ]


def test_resources_for_other_apps_and_namespaces_are_checked_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """run skips them (they are not its app's), but another app's run would not."""
    other = SUBSCRIPTION_V1.replace("route: /audit", "route: ''").replace(
        "name: audit", "name: audit, namespace: prod"
    )
    path = write(tmp_path, "s.yaml", other)
    code, _, err = validate(path, capsys=capsys)
    assert (code, err) == (2, [f"{path}: $.spec.route: missing required field 'route'"])


def test_components_are_checked_as_start_up_would_without_connecting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def component(name: str, type_: str, extra: str = "") -> str:
        head = f"apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {{name: {name}}}\n"
        return head + f"spec:\n  type: {type_}\n  version: v1\n{extra}"

    actor_entry = "{name: actorStateStore, value: 'true'}"
    actor = f"  metadata: [{actor_entry}]\n"
    database = tmp_path / "state.db"
    sqlite = f"  metadata: [{{name: connectionString, value: '{database}'}}, {actor_entry}]\n"
    bad_prefix = "  metadata: [{name: keyPrefix, value: a||b}]\n"
    path = write(
        tmp_path,
        "components.yaml",
        "---\n".join(
            [
                component("kafka", "pubsub.kafka"),
                component("nats", "pubsub.jetstream"),
                component("mongo", "state.mongodb", "  ignoreErrors: true\n"),
                component("prefix", "state.in-memory", bad_prefix),
                component("one", "state.in-memory", actor),
                component("two", "state.sqlite", sqlite),
                component("secrets", "secretstores.local.file"),  # nothing opens it at start-up
            ]
        ),
    )
    code, out, err = validate(path, capsys=capsys)
    assert (code, out) == (2, [])
    assert err == [
        f"{path}#1: $.spec.type: unknown pubsub type 'pubsub.kafka'; one of pubsub.in-memory, "
        "pubsub.jetstream, pubsub.mqtt3, pubsub.rabbitmq, pubsub.redis, pubsub.sqlite",
        f"{path}#2: $.spec.metadata: natsURL: required (e.g. nats://localhost:4222)",
        f"{path}#3: warning: $.spec.type: unknown state store type 'state.mongodb'; one of "
        "state.in-memory, state.postgres, state.postgresql, state.redis, state.sqlite "
        "(ignoreErrors: start-up leaves it out)",
        f"{path}#4: $.spec.metadata[0].value: input key/keyPrefix 'a||b' can't contain '||'",
        f"{path}#6: $.spec.metadata[1].value: only one state store may set actorStateStore: "
        "true; 'one' does too",
    ]
    assert not database.exists()  # the state.sqlite store was built, never opened


def test_a_folder_given_as_a_file_points_to_resources_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = validate(str(tmp_path), capsys=capsys)
    assert code == 2
    assert err == [
        f"{tmp_path}: $: a folder; give its files, or --resources-path for a folder of Dapr "
        "resources"
    ]


def test_nothing_to_validate_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert validate(capsys=capsys) == (
        2,
        [],
        ["meshwire validate: give a FILE or --resources-path DIR"],
    )


CLIENT_LIBRARIES = ("redis", "nats", "aio_pika", "aiormq", "paho")


def test_components_on_client_libraries_are_checked_without_importing_them(
    tmp_path: Path,
) -> None:
    """Their metadata is read as start-up reads it, by modules that import no client library
    (filters/*/…_settings.py), so validating costs no Redis, NATS, AMQP or MQTT client."""

    def component(name: str, type_: str, *metadata: tuple[str, str]) -> str:
        head = f"apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {{name: {name}}}\n"
        entries = "".join(f"    - {{name: {k}, value: '{v}'}}\n" for k, v in metadata)
        return head + f"spec:\n  type: {type_}\n  version: v1\n  metadata:\n{entries}"

    path = write(
        tmp_path,
        "components.yaml",
        "---\n".join(
            [
                component("cache", "state.redis", ("redisHost", "localhost:port")),
                component("events", "pubsub.redis", ("redisHost", "h:6379"), ("redisDB", "-1")),
                component(
                    "stream",
                    "pubsub.jetstream",
                    ("natsURL", "nats://h:4222"),
                    ("deliverPolicy", "sometimes"),
                ),
                component("queue", "pubsub.rabbitmq", ("exchangeKind", "broadcast")),
                component("mqtt", "pubsub.mqtt3", ("url", "tcp://h:1883"), ("qos", "3")),
            ]
        ),
    )
    script = (
        "import sys\nfrom proxy.cli import main\ncode = main(['validate', sys.argv[1]])\n"
        f"print(code, sorted(m for m in sys.modules if m.split('.')[0] in {CLIENT_LIBRARIES}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, path], capture_output=True, text=True, check=False
    )
    assert done.stdout.splitlines() == ["2 []"]
    assert done.stderr.splitlines() == [
        f"{path}#1: $.spec.metadata[0].value: expected host:port, got 'localhost:port'",
        f"{path}#2: $.spec.metadata[1].value: must be a whole number >= 0, got '-1'",
        f"{path}#3: $.spec.metadata[1].value: 'sometimes' is not one of all, last, new, "
        "sequence, time",
        f"{path}#4: $.spec.metadata[0].value: expected one of fanout, topic, direct, headers, "
        "got 'broadcast'",
        f"{path}#5: $.spec.metadata[1].value: expected 0, 1 or 2, got 3",
    ]
