"""The access log's byte counts for HTTP/1.1 and HTTP/2, for coalesced and streamed bodies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from proxy.http.model import BytesBody, Request, Response
from tests.integration.harness import H1Client, H2Client, backend, meshwire, one_route_config

SMALL = b"s" * 1000  # leaves with the head in one write
LARGE = b"L" * 200_000  # above COALESCE_LIMIT: streamed in DATA frames / h11 Data events


async def echo_size(request: Request) -> Response:
    received = 0
    while chunk := await request.body.read():
        received += len(chunk)
    body = LARGE if request.target.startswith(b"/large") else SMALL
    return Response(
        200,
        [(b"content-length", str(len(body)).encode()), (b"x-received", str(received).encode())],
        BytesBody(body),
    )


@pytest.mark.parametrize("protocol", ["http1", "h2c"])
@pytest.mark.parametrize("body", [SMALL, LARGE], ids=["small", "large"])
async def test_bytes_sent_and_received_are_logged(
    tmp_path: Path, protocol: str, body: bytes
) -> None:
    log = tmp_path / "access.log"
    target = "/large" if body is LARGE else "/small"
    upload = b"u" * 3000
    async with (
        backend(echo_size) as port,
        meshwire(one_route_config(0, port, access_log=str(log))) as mw,
    ):
        client_type = H1Client if protocol == "http1" else H2Client
        async with client_type.connect(mw.port()) as client:
            reply = await client.request("POST", target, body=upload)
    assert reply.status == 200
    assert reply.body == body
    [entry] = [json.loads(line) for line in log.read_text().splitlines()]
    assert entry["bytes_received"] == len(upload)
    if protocol == "h2c":
        # HTTP/2: the response's DATA payload (HPACK makes a stream's header bytes depend on
        # the streams before it, so they are not attributed to one request).
        assert entry["bytes_sent"] == len(body)
    else:
        # HTTP/1.1: everything written for the response, head included.
        assert len(body) < entry["bytes_sent"] < len(body) + 1000
