"""Route features end to end: direct responses, NR, timeouts (UT), weighted splits, filters, 413."""

from __future__ import annotations

import trio

from config import schema
from proxy.chain import Handler
from proxy.http.model import BytesBody, Request, Response
from tests.integration.harness import H1Client, H2Client, backend, meshwire


def named(tag: str) -> Handler:
    async def handler(request: Request) -> Response:
        await request.body.aclose()
        if request.target.startswith(b"/slow"):
            await trio.sleep_forever()
        return Response(200, [(b"content-length", str(len(tag)).encode())], BytesBody(tag.encode()))

    return handler


def config(a: int, b: int) -> schema.Config:
    routes = [
        schema.Route(
            name="health",
            match=schema.RouteMatch(path="/healthz"),
            direct_response=schema.DirectResponse(status=200, body="ok\n"),
        ),
        schema.Route(
            name="slow",
            match=schema.RouteMatch(prefix="/slow"),
            cluster="a",
            timeout=schema.Duration(0.2),
        ),
        schema.Route(
            name="canary",
            match=schema.RouteMatch(
                prefix="/", headers=[schema.HeaderMatch(name="x-canary", exact="1")]
            ),
            cluster="b",
        ),
        schema.Route(
            name="split",
            match=schema.RouteMatch(prefix="/split"),
            weighted_clusters=[
                schema.WeightedCluster(name="a", weight=50),
                schema.WeightedCluster(name="b", weight=50),
            ],
        ),
        schema.Route(name="api", match=schema.RouteMatch(prefix="/api/"), cluster="a"),
    ]
    filters: list[schema.FilterConfig] = [
        schema.BufferFilter(max_request_bytes=1024),
        schema.HeadersFilter(response_add={"x-served-by": "meshwire"}),
        schema.RouterFilter(),
    ]
    return schema.Config(
        admin=None,
        listeners=[
            schema.Listener(name="ingress", address="127.0.0.1:0", routes=routes, filters=filters)
        ],
        clusters=[
            schema.Cluster(name="a", endpoints=[f"127.0.0.1:{a}"]),
            schema.Cluster(name="b", endpoints=[f"127.0.0.1:{b}"], protocol="h2c"),
        ],
    )


async def test_routes_direct_no_route_canary_split_and_headers_filter() -> None:
    async with backend(named("A")) as a, backend(named("B")) as b:
        async with meshwire(config(a, b)) as mw, H1Client.connect(mw.port()) as client:
            health = await client.request("GET", "/healthz")
            nowhere = await client.request("GET", "/nowhere")
            api = await client.request("GET", "/api/x")
            canary = await client.request("GET", "/api/x", [("x-canary", "1")])
            split = [(await client.request("GET", "/split")).body for _ in range(60)]
    assert (health.status, health.body) == (200, b"ok\n")
    assert nowhere.status == 404
    assert nowhere.header(b"x-meshwire-response-flags") == b"NR"
    assert (api.body, canary.body) == (b"A", b"B")
    assert api.header(b"x-served-by") == b"meshwire"
    assert {b"A", b"B"} == set(split)  # both sides of a 50/50 split are used


async def test_route_timeout_is_504_with_flag_ut_on_both_protocols() -> None:
    async with backend(named("A")) as a, backend(named("B")) as b, meshwire(config(a, b)) as mw:
        async with H1Client.connect(mw.port()) as client:
            h1 = await client.request("GET", "/slow")
        async with H2Client.connect(mw.port()) as h2c:
            h2 = await h2c.request("GET", "/slow")
    for reply in (h1, h2):
        assert reply.status == 504
        assert reply.header(b"x-meshwire-response-flags") == b"UT"
    assert mw.stat("cluster.a.upstream_rq_timeout") == 2


async def test_buffered_body_over_the_limit_is_413_and_the_connection_survives() -> None:
    async with backend(named("A")) as a, backend(named("B")) as b, meshwire(config(a, b)) as mw:
        async with H1Client.connect(mw.port()) as client:
            small = await client.request("POST", "/api/x", body=b"x" * 1000)
            large = await client.request("POST", "/api/x", body=b"x" * 5000)
        async with H1Client.connect(mw.port()) as client:
            after = await client.request("GET", "/api/x")
        async with H2Client.connect(mw.port()) as h2c:
            h2_large = await h2c.request("POST", "/api/x", body=b"x" * 5000)
            h2_after = await h2c.request("GET", "/api/x")
    assert small.status == 200
    assert large.status == 413
    assert after.status == 200
    assert (h2_large.status, h2_after.status) == (413, 200)
    assert mw.stat("http.ingress.downstream_rq_too_large") == 2
