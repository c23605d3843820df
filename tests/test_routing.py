"""Route table: first match wins over path/prefix/regex, headers, methods; splits and rewrites."""

from __future__ import annotations

from collections import Counter

from config.schema import DirectResponse, Duration, HeaderMatch, Route, RouteMatch, WeightedCluster
from proxy.http.model import EmptyBody, Headers, Request
from proxy.routing import RouteTable


def req(
    target: bytes = b"/",
    *,
    method: bytes = b"GET",
    headers: Headers | None = None,
    authority: bytes = b"",
    http_version: str = "1.1",
) -> Request:
    return Request(
        method,
        target,
        headers or [],
        EmptyBody(),
        authority=authority,
        http_version=http_version,
    )


def route(cluster: str = "c", **match: object) -> Route:
    return Route(match=RouteMatch(**match), cluster=cluster)  # type: ignore[arg-type]


def name(table: RouteTable, request: Request) -> str | None:
    entry = table.match(request)
    return entry.pick_cluster() if entry is not None else None


def test_first_match_wins_across_path_prefix_regex() -> None:
    table = RouteTable.build(
        [
            route("exact", path="/a"),
            route("regex", regex=r"/a/\d+"),
            route("prefix", prefix="/a"),
            route("root", prefix="/"),
        ]
    )
    assert name(table, req(b"/a")) == "exact"
    assert name(table, req(b"/a?x=1")) == "exact"  # the query string is not part of the path
    assert name(table, req(b"/a/123")) == "regex"
    assert name(table, req(b"/a/123/x")) == "prefix"  # regex must match the whole path
    assert name(table, req(b"/x/a/1")) == "root"  # and from its start
    assert name(table, req(b"/ab")) == "prefix"
    assert RouteTable.build([route(path="/a")]).match(req(b"/b")) is None


def test_default_route_names() -> None:
    table = RouteTable.build([route(path="/a"), Route(name="named", match=RouteMatch(prefix="/"))])
    assert [e.name for e in table.entries] == ["route_0", "named"]


def header_table(*matchers: HeaderMatch) -> RouteTable:
    return RouteTable.build([route("hit", prefix="/", headers=list(matchers))])


def hits(table: RouteTable, headers: Headers) -> bool:
    return table.match(req(headers=headers)) is not None


def test_header_exact_prefix_regex_present() -> None:
    exact = header_table(HeaderMatch(name="X-Env", exact="canary"))
    assert hits(exact, [(b"x-env", b"canary")])
    assert not hits(exact, [(b"x-env", b"canary2")])
    assert not hits(exact, [])
    prefix = header_table(HeaderMatch(name="x-env", prefix="can"))
    assert hits(prefix, [(b"x-env", b"canary")])
    assert not hits(prefix, [(b"x-env", b"prod")])
    regex = header_table(HeaderMatch(name="x-v", regex=r"v\d"))
    assert hits(regex, [(b"x-v", b"v2")])
    assert not hits(regex, [(b"x-v", b"v22")])
    present = header_table(HeaderMatch(name="x-debug", present=True))
    assert hits(present, [(b"x-debug", b"")])
    assert not hits(present, [(b"other", b"1")])
    absent = header_table(HeaderMatch(name="x-debug", present=False))
    assert not hits(absent, [(b"x-debug", b"1")])
    assert hits(absent, [])


def test_header_invert_and_all_must_match() -> None:
    inverted = header_table(HeaderMatch(name="x-env", exact="prod", invert=True))
    assert not hits(inverted, [(b"x-env", b"prod")])
    assert hits(inverted, [(b"x-env", b"dev")])
    assert hits(inverted, [])  # the whole result is inverted, absence included
    both = header_table(HeaderMatch(name="a", exact="1"), HeaderMatch(name="b", present=True))
    assert hits(both, [(b"a", b"1"), (b"b", b"x")])
    assert not hits(both, [(b"a", b"1")])
    repeated = header_table(HeaderMatch(name="x", exact="1,2"))
    assert hits(repeated, [(b"x", b"1"), (b"x", b"2")])  # repeats are joined with commas


def test_methods() -> None:
    table = RouteTable.build(
        [route("write", prefix="/", methods=["post", "PUT"]), route("read", prefix="/")]
    )
    assert name(table, req(method=b"POST")) == "write"
    assert name(table, req(method=b"PUT")) == "write"
    assert name(table, req(method=b"GET")) == "read"


def test_host_header_uses_authority_for_http2_and_http1() -> None:
    table = RouteTable.build(
        [route("api", prefix="/", headers=[HeaderMatch(name="Host", exact="api.example.com")])]
    )
    h2 = req(authority=b"api.example.com", http_version="2")
    assert name(table, h2) == "api"
    assert table.match(req(authority=b"www.example.com", http_version="2")) is None
    h1 = req(headers=[(b"host", b"api.example.com")])
    assert name(table, h1) == "api"


def test_weighted_split_distribution_is_seeded() -> None:
    routes = [
        Route(
            match=RouteMatch(prefix="/"),
            weighted_clusters=[
                WeightedCluster(name="a", weight=80),
                WeightedCluster(name="b", weight=15),
                WeightedCluster(name="c", weight=5),
            ],
        )
    ]
    entry = RouteTable.build(routes, seed=7).match(req())
    assert entry is not None
    counts = Counter(entry.pick_cluster() for _ in range(10_000))
    assert 7700 <= counts["a"] <= 8300
    assert 1300 <= counts["b"] <= 1700
    assert 380 <= counts["c"] <= 620
    again = RouteTable.build(routes, seed=7).match(req())
    assert again is not None
    assert Counter(again.pick_cluster() for _ in range(10_000)) == counts


def test_prefix_rewrite_keeps_query() -> None:
    table = RouteTable.build(
        [
            Route(match=RouteMatch(prefix="/api/v1/"), cluster="c", prefix_rewrite="/"),
            Route(match=RouteMatch(path="/old"), cluster="c", prefix_rewrite="/new"),
            Route(match=RouteMatch(prefix="/"), cluster="c", host_rewrite="up.internal"),
        ]
    )
    api = table.match(req(b"/api/v1/users?id=1&x=/api/v1/"))
    assert api is not None
    assert api.rewrite_target(b"/api/v1/users?id=1&x=/api/v1/") == (b"/users?id=1&x=/api/v1/")
    old = table.match(req(b"/old?q"))
    assert old is not None
    assert old.rewrite_target(b"/old?q") == b"/new?q"
    rest = table.match(req(b"/x"))
    assert rest is not None
    assert rest.rewrite_target(b"/x?y") == b"/x?y"
    assert rest.host_rewrite == b"up.internal"
    assert rest.prefix_rewrite is None


def test_direct_response_bytes() -> None:
    table = RouteTable.build(
        [
            Route(
                name="healthz",
                match=RouteMatch(path="/healthz"),
                direct_response=DirectResponse(
                    status=200, body="ok\n", headers={"X-Why": "health"}
                ),
            ),
            Route(
                match=RouteMatch(path="/gone"), direct_response=DirectResponse(status=204, body="x")
            ),
        ]
    )
    entry = table.match(req(b"/healthz"))
    assert entry is not None
    assert entry.direct is not None
    assert entry.name == "healthz"
    assert entry.pick_cluster() is None
    assert entry.direct.status == 200
    assert entry.direct.body == b"ok\n"
    assert entry.direct.headers == [
        (b"content-type", b"text/plain"),
        (b"x-why", b"health"),
        (b"content-length", b"3"),
    ]
    gone = table.match(req(b"/gone"))
    assert gone is not None
    assert gone.direct is not None
    assert gone.direct.body == b""
    assert gone.direct.headers == []


def test_timeout_and_regex_needing_str_semantics() -> None:
    table = RouteTable.build(
        [Route(match=RouteMatch(regex=r"/caf\u00e9"), cluster="c", timeout=Duration(0))]
    )
    entry = table.match(req("/café".encode()))
    assert entry is not None
    assert entry.timeout == 0.0
