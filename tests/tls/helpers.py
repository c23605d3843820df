"""Shared helpers for the TLS tests: clocks to steer, real TLS connections on loopback."""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import trio
from cryptography import x509

from proxy.tls.ca import CertificateAuthority
from proxy.tls.spiffe import SpiffeId
from proxy.tls.workload_cert import Clock, utc_now

# Certificates carry whole seconds; a fixed instant without microseconds compares exactly.
FIXED_NOW = datetime(2030, 6, 1, 12, 0, 0, tzinfo=UTC)
TRUST_DOMAIN = "public"


def sid(app_id: str, namespace: str = "default", trust_domain: str = TRUST_DOMAIN) -> SpiffeId:
    return SpiffeId(trust_domain, namespace, app_id)


@dataclass
class ShiftedClock:
    """The real wall clock plus an offset a test may change (read from worker threads too)."""

    offset: timedelta = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


@dataclass
class FixedClock:
    """A wall clock that only moves when the test says so."""

    now: datetime = FIXED_NOW

    def __call__(self) -> datetime:
        return self.now


def new_ca(directory: Path, clock: Clock = utc_now) -> CertificateAuthority:
    return CertificateAuthority.init(directory, TRUST_DOMAIN, clock=clock)


def chain_certificates(chain_pem: bytes) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(chain_pem)


def peer_serial(stream: trio.SSLStream[trio.SocketStream]) -> int:
    der = stream.getpeercert(binary_form=True)
    assert isinstance(der, bytes)
    return x509.load_der_x509_certificate(der).serial_number


async def wait_until(predicate: Callable[[], bool], *, within: float, poll: float) -> None:
    """Wait for ``predicate`` to hold, failing after ``within`` seconds of trio's clock."""
    with trio.fail_after(within):
        while True:
            if predicate():
                return
            await trio.sleep(poll)


@dataclass
class Attempt:
    """Both ends of one TLS connection attempt: a handshaken stream or the error it raised."""

    server: trio.SSLStream[trio.SocketStream] | None = None
    server_error: BaseException | None = None
    client: trio.SSLStream[trio.SocketStream] | None = None
    client_error: BaseException | None = None
    streams: list[trio.abc.AsyncResource] = field(default_factory=list)


@contextlib.asynccontextmanager
async def tls_listener() -> AsyncIterator[tuple[trio.SocketListener, int]]:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    listener = listeners[0]
    try:
        yield listener, listener.socket.getsockname()[1]
    finally:
        for each in listeners:
            await each.aclose()


@contextlib.asynccontextmanager
async def attempt_tls(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> AsyncIterator[Attempt]:
    """Connect ``client_ctx`` to a real listener serving ``server_ctx``; both handshakes run."""
    result = Attempt()
    async with tls_listener() as (listener, port):

        async def serve() -> None:
            tcp = await listener.accept()
            result.streams.append(tcp)
            tls = trio.SSLStream(tcp, server_ctx, server_side=True)
            try:
                await tls.do_handshake()
            except trio.BrokenResourceError as exc:
                result.server_error = exc
                await trio.aclose_forcefully(tcp)
            else:
                result.server = tls

        async def connect() -> None:
            tcp = await trio.open_tcp_stream("127.0.0.1", port)
            result.streams.append(tcp)
            tls = trio.SSLStream(tcp, client_ctx, server_hostname="sidecar")
            try:
                await tls.do_handshake()
            except trio.BrokenResourceError as exc:
                result.client_error = exc
                await trio.aclose_forcefully(tcp)
            else:
                result.client = tls

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(serve)
                nursery.start_soon(connect)
        try:
            yield result
        finally:
            for stream in (result.client, result.server, *result.streams):
                if stream is not None:
                    await trio.aclose_forcefully(stream)


async def echo_once(sender: trio.abc.Stream, receiver: trio.abc.Stream, data: bytes) -> None:
    """Send ``data`` one way and assert it arrives whole."""
    with trio.fail_after(10):
        await sender.send_all(data)
        received = b""
        while len(received) < len(data):
            chunk = await receiver.receive_some()
            assert chunk, "connection closed early"
            received += chunk
    assert received == data


async def refused_after_handshake(client: trio.SSLStream[trio.SocketStream]) -> bool:
    """In TLS 1.3 a client finishes its handshake before the server judges its certificate;
    the server's verdict then arrives as an alert (or a close) on the first read."""
    with trio.fail_after(10):
        try:
            data = await client.receive_some()
        except trio.BrokenResourceError:
            return True
    return data == b""
