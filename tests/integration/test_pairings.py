"""Every downstream/upstream protocol pairing through a real meshwire on loopback sockets."""

from __future__ import annotations

import json

import pytest
import trio

from proxy.http.model import BytesBody, Request, Response, header_get, read_all
from tests.integration.harness import H1Client, H2Client, backend, meshwire, one_route_config


async def echo(request: Request) -> Response:
    """Describe the request as the upstream saw it."""
    body = await read_all(request.body, 1 << 20)
    seen = {
        "method": request.method.decode(),
        "target": request.target.decode(),
        "version": request.http_version,
        "authority": request.authority.decode(),
        "xff": (header_get(request.headers, b"x-forwarded-for") or b"").decode(),
        "request_id": (header_get(request.headers, b"x-request-id") or b"").decode(),
        "connection": (header_get(request.headers, b"connection") or b"").decode(),
        "body": body.decode(),
    }
    data = json.dumps(seen).encode()
    return Response(
        200, [(b"content-type", b"application/json"), (b"x-upstream", b"yes")], BytesBody(data)
    )


PAIRINGS = [("h1", "http1"), ("h1", "h2c"), ("h2", "http1"), ("h2", "h2c")]


@pytest.mark.parametrize(("downstream", "upstream"), PAIRINGS)
async def test_get_and_post_cross_every_pairing(downstream: str, upstream: str) -> None:
    async with (
        backend(echo) as port,
        meshwire(one_route_config(0, port, upstream_protocol=upstream)) as mw,
    ):
        listen = mw.port()
        if downstream == "h1":
            async with H1Client.connect(listen) as client:
                get = await client.request("GET", "/a/b?x=1", [("connection", "keep-alive")])
                post = await client.request("POST", "/submit", body=b"payload-1")
        else:
            async with H2Client.connect(listen) as h2client:
                get = await h2client.request("GET", "/a/b?x=1")
                post = await h2client.request("POST", "/submit", body=b"payload-1")
    assert get.status == 200
    assert get.header(b"x-upstream") == b"yes"
    seen = json.loads(get.body)
    assert seen["method"] == "GET"
    assert seen["target"] == "/a/b?x=1"
    assert seen["version"] == ("2" if upstream == "h2c" else "1.1")
    assert seen["authority"] == "test"
    assert seen["xff"] == "127.0.0.1"
    assert len(seen["request_id"]) == 36
    assert seen["connection"] == ""  # hop-by-hop: never forwarded
    posted = json.loads(post.body)
    assert posted["method"] == "POST"
    assert posted["body"] == "payload-1"


async def test_hop_by_hop_headers_do_not_cross_the_proxy() -> None:
    async with backend(echo) as port, meshwire(one_route_config(0, port)) as mw:
        async with H1Client.connect(mw.port()) as client:
            reply = await client.request(
                "GET",
                "/",
                [("connection", "x-secret"), ("x-secret", "1"), ("x-request-id", "given-id")],
            )
    seen = json.loads(reply.body)
    assert seen["request_id"] == "given-id"
    assert seen["connection"] == ""


async def test_many_concurrent_h2_streams_multiplex() -> None:
    async with (
        backend(echo) as port,
        meshwire(one_route_config(0, port, upstream_protocol="h2c")) as mw,
    ):
        async with H2Client.connect(mw.port()) as client:
            results: dict[int, int] = {}

            async def one(i: int) -> None:
                reply = await client.request("POST", f"/n/{i}", body=str(i).encode() * 100)
                results[i] = reply.status
                assert json.loads(reply.body)["body"] == str(i) * 100

            async with trio.open_nursery() as nursery:
                for i in range(50):
                    nursery.start_soon(one, i)
    assert results == dict.fromkeys(range(50), 200)
