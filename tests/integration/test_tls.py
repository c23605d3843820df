"""TLS listeners: HTTP/1.1 and h2 chosen by ALPN on one port; mutual TLS refuses strangers."""

from __future__ import annotations

import ssl
from pathlib import Path

import msgspec
import pytest
import trio
import trustme

from config import schema
from proxy.http.model import BytesBody, Request, Response
from tests.integration.harness import H1Client, H2Client, backend, meshwire, one_route_config


async def who(request: Request) -> Response:
    await request.body.aclose()
    body = f"{request.http_version} {request.scheme.decode()}".encode()
    return Response(200, [(b"content-length", str(len(body)).encode())], BytesBody(body))


def tls_config(
    upstream: int, ca: trustme.CA, tmp: Path, *, client_ca: bool = False
) -> schema.Config:
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp / "server.pem"))
    ca.cert_pem.write_to_path(str(tmp / "ca.pem"))
    tls = schema.TlsContext(
        cert_file=str(tmp / "server.pem"),
        key_file=str(tmp / "server.pem"),
        ca_file=str(tmp / "ca.pem") if client_ca else None,
        require_client_cert=client_ca,
    )
    config = one_route_config(0, upstream)
    listener = msgspec.structs.replace(config.listeners[0], tls=tls)
    return msgspec.structs.replace(config, listeners=[listener])


def client_context(ca: trustme.CA, alpn: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    ctx.set_alpn_protocols([alpn])
    return ctx


async def open_tls(port: int, ctx: ssl.SSLContext) -> trio.SSLStream[trio.SocketStream]:
    tcp = await trio.open_tcp_stream("127.0.0.1", port)
    stream = trio.SSLStream(tcp, ctx, server_hostname="127.0.0.1")
    await stream.do_handshake()
    return stream


async def test_one_tls_listener_serves_http1_and_h2_by_alpn(tmp_path: Path) -> None:
    ca = trustme.CA()
    async with backend(who) as port, meshwire(tls_config(port, ca, tmp_path)) as mw:
        h1_stream = await open_tls(mw.port(), client_context(ca, "http/1.1"))
        async with h1_stream:
            assert h1_stream.selected_alpn_protocol() == "http/1.1"
            reply = await H1Client(h1_stream).request("GET", "/")
        h2_stream = await open_tls(mw.port(), client_context(ca, "h2"))
        async with h2_stream:
            assert h2_stream.selected_alpn_protocol() == "h2"
            async with H2Client.over(h2_stream) as client:
                h2_reply = await client.request("GET", "/")
    # The upstream leg is plain HTTP/1.1 in both cases; the downstream scheme was https.
    assert (reply.status, h2_reply.status) == (200, 200)
    assert mw.stat("http.ingress.downstream_cx_total") == 2


async def test_mutual_tls_refuses_a_client_without_a_trusted_certificate(tmp_path: Path) -> None:
    ca = trustme.CA()
    stranger_ca = trustme.CA()
    async with backend(who) as port, meshwire(tls_config(port, ca, tmp_path, client_ca=True)) as mw:
        trusted = client_context(ca, "http/1.1")
        ca.issue_cert("client.test").configure_cert(trusted)
        assert await status_over_tls(mw.port(), trusted) == 200

        stranger = client_context(ca, "http/1.1")
        stranger_ca.issue_cert("client.test").configure_cert(stranger)
        with pytest.raises(trio.BrokenResourceError):
            await status_over_tls(mw.port(), stranger)

        anonymous = client_context(ca, "http/1.1")
        with pytest.raises(trio.BrokenResourceError):
            await status_over_tls(mw.port(), anonymous)


async def status_over_tls(port: int, ctx: ssl.SSLContext) -> int:
    stream = await open_tls(port, ctx)
    async with stream:
        return (await H1Client(stream).request("GET", "/")).status
