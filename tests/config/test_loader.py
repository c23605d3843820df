"""Config loader: every problem reported with its exact path, valid configs decode with defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.loader import ConfigError, Problem, format_problems, load_file, load_text
from config.schema import BufferFilter, Config, Duration, Limits, RouterFilter

EXAMPLES = Path(__file__).resolve().parents[2] / "config" / "examples"

BASE = """
listeners:
  - name: edge
    address: 127.0.0.1:19010
    routes:
      - match: {prefix: /}
        cluster: backend
clusters:
  - name: backend
    endpoints: [127.0.0.1:18080]
"""

FILTER_TYPES = "router, buffer, headers, tracing, retry, dapr_api, dapr_grpc, dapr_internal"


def problems(text: str, base_dir: Path | None = None) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        load_text(text, base_dir=base_dir)
    return [(p.path, p.message) for p in info.value.problems]


def one(text: str) -> tuple[str, str]:
    found = problems(text)
    assert len(found) == 1, found
    return found[0]


def edit(old: str, new: str) -> str:
    assert old in BASE
    return BASE.replace(old, new, 1)


def test_valid_config_decodes_with_defaults() -> None:
    config = load_text(BASE)
    assert isinstance(config, Config)
    listener = config.listeners[0]
    assert listener.protocols == ["http1", "h2c"]
    assert listener.filters == [RouterFilter()]
    assert listener.limits == Limits()
    assert config.admin is not None
    assert config.admin.address == "127.0.0.1:9901"
    route = listener.routes[0]
    assert route.timeout == 15.0
    assert isinstance(route.timeout, Duration)
    assert config.clusters[0].protocol == "http1"
    assert config.clusters[0].lb_policy == "round_robin"


@pytest.mark.parametrize(("text", "seconds"), [("250ms", 0.25), ("2m", 120.0), ("3", 3.0)])
def test_durations_parse(text: str, seconds: float) -> None:
    config = load_text(edit("cluster: backend", f"cluster: backend\n        timeout: {text}"))
    timeout = config.listeners[0].routes[0].timeout
    assert timeout == pytest.approx(seconds)
    assert isinstance(timeout, Duration)


def test_bad_duration() -> None:
    assert one(edit("cluster: backend", "cluster: backend\n        timeout: soon")) == (
        "$.listeners[0].routes[0].timeout",
        "expected a duration such as 15s or 250ms, got 'soon'",
    )


def test_unknown_field_with_suggestion() -> None:
    assert one(edit("cluster: backend", "cluster: backend\n        retries: 3")) == (
        "$.listeners[0].routes[0].retries",
        "unknown field 'retries'",
    )
    assert problems(edit("endpoints:", "endpoint:")) == [
        ("$.clusters[0].endpoint", "unknown field 'endpoint' (did you mean 'endpoints'?)"),
        ("$.clusters[0].endpoints", "missing required field 'endpoints'"),
    ]


def test_missing_required_field() -> None:
    assert problems(edit("    endpoints: [127.0.0.1:18080]\n", "")) == [
        ("$.clusters[0].endpoints", "missing required field 'endpoints'")
    ]


def test_wrong_types_and_bool_is_not_int() -> None:
    text = edit("address: 127.0.0.1:19010", "address: 19010\n    limits: {max_headers: true}")
    assert problems(text) == [
        ("$.listeners[0].address", "expected str, got int"),
        ("$.listeners[0].limits.max_headers", "expected int, got bool"),
    ]
    assert one(edit("endpoints: [127.0.0.1:18080]", "endpoints: 127.0.0.1:18080")) == (
        "$.clusters[0].endpoints",
        "expected list, got str",
    )
    assert one("listeners: {}") == ("$.listeners", "expected list, got object")
    assert one("- 1") == ("$", "expected object, got list")


def test_bad_literal() -> None:
    assert one(
        edit("address: 127.0.0.1:19010", "address: 127.0.0.1:19010\n    protocols: [h3]")
    ) == (
        "$.listeners[0].protocols[0]",
        "must be one of http1, h2c, got 'h3'",
    )
    assert one(edit("endpoints:", "protocol: http2\n    endpoints:")) == (
        "$.clusters[0].protocol",
        "must be one of http1, h2c, h2, got 'http2'",
    )


def test_unknown_and_missing_filter_type() -> None:
    text = edit("routes:", "filters: [{type: gzip}, {}, {type: router}]\n    routes:")
    assert problems(text) == [
        (
            "$.listeners[0].filters[0].type",
            "unknown type 'gzip'; must be one of " + FILTER_TYPES,
        ),
        (
            "$.listeners[0].filters[1]",
            "missing field 'type'; must be one of " + FILTER_TYPES,
        ),
    ]


def test_filter_fields_are_checked() -> None:
    text = edit(
        "routes:", "filters: [{type: buffer, max_request_bytes: 10}, {type: router}]\n    routes:"
    )
    assert load_text(text).listeners[0].filters[0] == BufferFilter(max_request_bytes=10)
    text = edit("routes:", "filters: [{type: router, extra: 1}]\n    routes:")
    assert one(text) == ("$.listeners[0].filters[0].extra", "unknown field 'extra'")


def test_terminal_filter_rules() -> None:
    text = edit("routes:", "filters: [{type: router}, {type: buffer}]\n    routes:")
    assert one(text) == (
        "$.listeners[0].filters[0]",
        "terminal filter 'router' must be the last filter",
    )
    text = edit("routes:", "filters: [{type: buffer}]\n    routes:")
    assert one(text) == (
        "$.listeners[0].filters",
        "the chain must end with a terminal filter (dapr_api, dapr_grpc, dapr_internal, router)",
    )
    text = edit("routes:", "filters: [{type: router}, {type: router}]\n    routes:")
    assert problems(text) == [
        ("$.listeners[0].filters[0]", "terminal filter 'router' must be the last filter"),
        (
            "$.listeners[0].filters[1]",
            "only one terminal filter is allowed; 'router' follows $.listeners[0].filters[0]",
        ),
    ]


def test_router_without_routes() -> None:
    text = """
listeners: [{name: a, address: "127.0.0.1:1"}]
clusters: []
"""
    assert one(text) == ("$.listeners[0].routes", "the router filter needs at least one route")


def test_route_actions_and_references() -> None:
    text = edit(
        "      - match: {prefix: /}\n        cluster: backend\n",
        """      - match: {prefix: /}
        cluster: nope
      - match: {prefix: /}
      - match: {prefix: /}
        cluster: backend
        direct_response: {status: 700}
      - match: {prefix: /}
        weighted_clusters: [{name: backend, weight: 0}, {name: other, weight: 1}]
      - match: {prefix: /}
        weighted_clusters: []
""",
    )
    assert problems(text) == [
        ("$.listeners[0].routes[0].cluster", "unknown cluster 'nope' (clusters: backend)"),
        (
            "$.listeners[0].routes[1]",
            "a route needs exactly one of cluster, weighted_clusters, direct_response (found none)",
        ),
        (
            "$.listeners[0].routes[2]",
            "a route needs exactly one of cluster, weighted_clusters, direct_response "
            "(found cluster and direct_response)",
        ),
        ("$.listeners[0].routes[2].direct_response.status", "must be 100-599, got 700"),
        ("$.listeners[0].routes[3].weighted_clusters[0].weight", "must be > 0, got 0"),
        (
            "$.listeners[0].routes[3].weighted_clusters[1].name",
            "unknown cluster 'other' (clusters: backend)",
        ),
        ("$.listeners[0].routes[4].weighted_clusters", "needs at least one cluster"),
    ]


def test_match_rules_and_regexes() -> None:
    text = edit(
        "match: {prefix: /}",
        """match:
          path: /a
          prefix: /
          headers:
            - {name: x, exact: a, prefix: b}
            - {name: y}
            - {name: z, regex: "("}
            - {name: w, present: false}""",
    )
    assert problems(text) == [
        (
            "$.listeners[0].routes[0].match",
            "needs exactly one of path, prefix, regex (found path and prefix)",
        ),
        (
            "$.listeners[0].routes[0].match.headers[0]",
            "needs exactly one of exact, prefix, regex, present (found exact and prefix)",
        ),
        (
            "$.listeners[0].routes[0].match.headers[1]",
            "needs exactly one of exact, prefix, regex, present (found none)",
        ),
        (
            "$.listeners[0].routes[0].match.headers[2].regex",
            "invalid regex '(': missing ), unterminated subpattern at position 0",
        ),
    ]
    assert one(edit("match: {prefix: /}", "match: {regex: '[a-'}"))[0] == (
        "$.listeners[0].routes[0].match.regex"
    )


def test_duplicate_names() -> None:
    text = (
        BASE
        + """  - name: backend
    endpoints: [127.0.0.1:18081]
"""
    )
    text = text.replace(
        "      - match: {prefix: /}\n        cluster: backend\n",
        "      - {name: r, match: {prefix: /}, cluster: backend}\n" * 2,
    )
    text = text.replace(
        "clusters:",
        """  - name: edge
    address: 127.0.0.1:19011
    routes: [{match: {prefix: /}, cluster: backend}]
clusters:""",
    )
    assert problems(text) == [
        (
            "$.listeners[0].routes[1].name",
            "duplicate route name 'r' (also at $.listeners[0].routes[0].name)",
        ),
        ("$.listeners[1].name", "duplicate listener name 'edge' (also at $.listeners[0].name)"),
        ("$.clusters[1].name", "duplicate cluster name 'backend' (also at $.clusters[0].name)"),
    ]


def test_duplicate_addresses() -> None:
    text = BASE.replace(
        "clusters:",
        """  - name: second
    address: 127.0.0.1:19010
    routes: [{match: {prefix: /}, cluster: backend}]
  - name: third
    address: 0.0.0.0:9901
    routes: [{match: {prefix: /}, cluster: backend}]
clusters:""",
    )
    assert problems(text) == [
        ("$.listeners[1].address", "address already used by $.listeners[0]"),
        ("$.listeners[2].address", "address already used by $.admin"),
    ]


def test_bad_addresses() -> None:
    text = edit("address: 127.0.0.1:19010", "address: nowhere").replace(
        "endpoints: [127.0.0.1:18080]", "endpoints: ['h:x', 'h:0', 'h:70000']"
    )
    assert problems("admin: {address: ':1'}\n" + text) == [
        ("$.admin.address", "expected host:port, got ':1'"),
        ("$.listeners[0].address", "expected host:port, got 'nowhere'"),
        ("$.clusters[0].endpoints[0]", "port must be a number in 'h:x'"),
        ("$.clusters[0].endpoints[1]", "port 0 cannot be connected to in 'h:0'"),
        ("$.clusters[0].endpoints[2]", "port out of range in 'h:70000'"),
    ]


def test_cluster_checks() -> None:
    text = edit(
        "endpoints: [127.0.0.1:18080]",
        "endpoints: []\n    protocol: h2c\n    tls: {}\n"
        "    max_requests: 0\n    connect_timeout: 0",
    )
    assert problems(text) == [
        ("$.clusters[0].endpoints", "a cluster needs at least one endpoint"),
        ("$.clusters[0].tls", "h2c is cleartext HTTP/2; use protocol h2 with tls"),
        ("$.clusters[0].max_requests", "must be positive, got 0"),
        ("$.clusters[0].connect_timeout", "must be positive, got 0"),
    ]
    # h2 is HTTP/2 over TLS; tls may be omitted (system trust store).
    assert (
        load_text(edit("endpoints:", "protocol: h2\n    endpoints:")).clusters[0].protocol == "h2"
    )


def test_listener_checks() -> None:
    text = edit(
        "address: 127.0.0.1:19010",
        "address: 127.0.0.1:19010\n    protocols: []\n"
        "    limits: {max_headers: 0, idle_timeout: 0, overload_threshold: 1.5}",
    )
    assert problems(text) == [
        ("$.listeners[0].protocols", "at least one protocol is needed (http1, h2c)"),
        ("$.listeners[0].limits.max_headers", "must be positive, got 0"),
        ("$.listeners[0].limits.idle_timeout", "must be positive, got 0"),
        ("$.listeners[0].limits.overload_threshold", "a share of max_connections: at most 1"),
    ]


def test_a_limit_documented_as_off_at_zero_accepts_zero() -> None:
    text = edit(
        "address: 127.0.0.1:19010", "address: 127.0.0.1:19010\n    limits: {h1_chunk_budget: 0}"
    )
    assert load_text(text).listeners[0].limits.h1_chunk_budget == 0
    text = edit(
        "address: 127.0.0.1:19010", "address: 127.0.0.1:19010\n    limits: {h1_chunk_budget: -1}"
    )
    assert problems(text) == [
        ("$.listeners[0].limits.h1_chunk_budget", "must not be negative, got -1")
    ]


def test_tls_files_relative_to_base_dir(tmp_path: Path) -> None:
    (tmp_path / "cert.pem").write_text("cert")
    (tmp_path / "key.pem").write_text("key")
    (tmp_path / "dir").mkdir()
    tls = "tls: {cert_file: cert.pem, key_file: key.pem, alpn: [h2, h3]}"
    text = edit("address: 127.0.0.1:19010", f"address: 127.0.0.1:19010\n    {tls}")
    assert problems(text, base_dir=tmp_path) == [
        ("$.listeners[0].tls.alpn[1]", "must be one of h2, http/1.1, got 'h3'")
    ]
    text = (
        text.replace("key.pem", "missing.pem")
        .replace(", h3", "")
        .replace("alpn:", "ca_file: dir, alpn:")
    )
    found = problems(text, base_dir=tmp_path)
    assert found == [
        (
            "$.listeners[0].tls.key_file",
            f"cannot read {str(tmp_path / 'missing.pem')!r}: No such file or directory",
        ),
        ("$.listeners[0].tls.ca_file", f"cannot read {str(tmp_path / 'dir')!r}: Is a directory"),
    ]
    upstream = "tls: {cert_file: cert.pem}\n    protocol: h2\n    endpoints:"
    path = tmp_path / "mesh.yaml"
    path.write_text(edit("endpoints:", upstream))
    with pytest.raises(ConfigError) as info:
        load_file(path)
    assert info.value.problems == [
        Problem("$.clusters[0].tls", "cert_file and key_file must be given together")
    ]


def test_many_problems_all_reported_and_formatted() -> None:
    text = (
        edit("cluster: backend", "cluster: nope\n        bogus: 1").replace("h2c", "")
        + "drain_timeout: x\n"
    )
    with pytest.raises(ConfigError) as info:
        load_text(text, "mesh.yaml")
    assert str(info.value).splitlines() == [
        "mesh.yaml: $.listeners[0].routes[0].bogus: unknown field 'bogus'",
        "mesh.yaml: $.drain_timeout: expected a duration such as 15s or 250ms, got 'x'",
        "mesh.yaml: $.listeners[0].routes[0].cluster: unknown cluster 'nope' (clusters: backend)",
    ]
    assert format_problems([Problem("$", "m")], "f") == "f: $: m"


def test_yaml_syntax_error_has_line_and_column() -> None:
    found = problems("listeners:\n  - name: a\n   bad: [\n")
    assert len(found) == 1
    path, message = found[0]
    assert path == "$"
    assert message.startswith("invalid YAML at line 3, column 4:"), message


def test_duplicate_yaml_keys_and_empty_file() -> None:
    text = "drain_timeout: 1\n" + BASE.replace(
        "cluster: backend", "cluster: backend\n        cluster: x"
    )
    assert problems(text) == [
        ("$", "line 9, column 9: duplicate key 'cluster'"),
        ("$.listeners[0].routes[0].cluster", "unknown cluster 'x' (clusters: backend)"),
    ]
    assert problems("# nothing\n") == [("$", "the configuration is empty")]


def test_unreadable_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_file(tmp_path / "nope.yaml")
    assert info.value.problems == [Problem("$", "cannot read the file: No such file or directory")]


@pytest.mark.parametrize(
    "path",
    sorted(p for p in EXAMPLES.glob("*.yaml") if p.name != "invalid.yaml"),
    ids=lambda p: p.name,
)
def test_examples_load(path: Path) -> None:
    config = load_file(path)
    assert config.listeners
    assert config.clusters


def test_invalid_example_reports_everything() -> None:
    with pytest.raises(ConfigError) as info:
        load_file(EXAMPLES / "invalid.yaml")
    assert [(p.path, p.message) for p in info.value.problems] == [
        ("$.listeners[0].protocols[1]", "must be one of http1, h2c, got 'http2'"),
        ("$.listeners[0].routes[0].retries", "unknown field 'retries'"),
        (
            "$.listeners[0].routes[1].timeout",
            "expected a duration such as 15s or 250ms, got 'soon'",
        ),
        ("$.listeners[0].limits.max_headers", "expected int, got bool"),
        (
            "$.listeners[1].filters[0].type",
            "unknown type 'gzip'; must be one of " + FILTER_TYPES,
        ),
        ("$.clusters[0].lb_policy", "must be one of round_robin, least_request, got 'random'"),
        ("$.listeners[0].address", "address already used by $.admin"),
        ("$.listeners[0].filters[0]", "terminal filter 'router' must be the last filter"),
        ("$.listeners[0].routes[0].cluster", "unknown cluster 'backnd' (clusters: backend)"),
        (
            "$.listeners[0].routes[0].match",
            "needs exactly one of path, prefix, regex (found path and prefix)",
        ),
        ("$.listeners[0].routes[1].weighted_clusters[0].weight", "must be > 0, got 0"),
        (
            "$.listeners[0].routes[1].match.regex",
            "invalid regex '/api/(v1': missing ), unterminated subpattern at position 5",
        ),
        ("$.listeners[1].routes", "the router filter needs at least one route"),
        ("$.clusters[0].endpoints[0]", "expected host:port, got 'localhost'"),
        ("$.clusters[1].name", "duplicate cluster name 'backend' (also at $.clusters[0].name)"),
        ("$.clusters[1].endpoints", "a cluster needs at least one endpoint"),
    ]


def test_concurrency_is_a_count_or_auto() -> None:
    assert load_text(BASE).concurrency == 1
    assert load_text("concurrency: 4\n" + BASE).concurrency == 4
    assert load_text("concurrency: auto\n" + BASE).concurrency == "auto"
    assert load_text("concurrency: 0\n" + BASE).concurrency == 0
    assert one("concurrency: -1\n" + BASE) == (
        "$.concurrency",
        "must be a number of processes, 0 or auto (one per CPU), got -1",
    )
    assert one("concurrency: many\n" + BASE) == (
        "$.concurrency",
        "expected int or 'auto', got str",
    )
