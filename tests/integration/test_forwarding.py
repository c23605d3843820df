"""Forwarding headers in bytes: Host, Connection-nominated fields, x-forwarded-*, request id."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import msgspec
import pytest
import trio

from config import schema
from tests.integration.harness import H2Client, meshwire, one_route_config, raw_backend

DEADLINE = 20  # generous bound on waits; tests never assert elapsed time
OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


class Recorder:
    """A raw HTTP/1.1 upstream: keeps each request head exactly as its bytes arrived."""

    def __init__(self) -> None:
        self.heads: list[bytes] = []

    async def serve(self, stream: trio.SocketStream) -> None:
        data = b""
        while True:
            while b"\r\n\r\n" not in data:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    return
                data += chunk
            head, _, data = data.partition(b"\r\n\r\n")
            self.heads.append(head + b"\r\n\r\n")
            await stream.send_all(OK)

    def fields(self, name: bytes) -> list[bytes]:
        """The values of every `name` line of the one request received, in order."""
        assert len(self.heads) == 1, self.heads
        lines = self.heads[0].split(b"\r\n")[1:]
        return [line.partition(b":")[2].strip() for line in lines if _name(line) == name]


def _name(line: bytes) -> bytes:
    return line.partition(b":")[0].strip().lower()


@asynccontextmanager
async def proxy(
    tmp_path: Path | None = None, **listener: object
) -> AsyncIterator[tuple[int, Recorder]]:
    """meshwire on loopback in front of a Recorder; `listener` overrides Listener fields."""
    recorder = Recorder()
    async with raw_backend(recorder.serve) as upstream:
        log = str(tmp_path / "access.log") if tmp_path is not None else None
        config = one_route_config(0, upstream, access_log=log)
        lc = msgspec.structs.replace(config.listeners[0], **listener)
        config = msgspec.structs.replace(config, listeners=[lc])
        async with meshwire(config) as mw:
            yield mw.port(), recorder


async def exchange(port: int, head: bytes) -> bytes:
    """Send one bodiless HTTP/1.1 request as raw bytes; the whole response as raw bytes."""
    with trio.fail_after(DEADLINE):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(head)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = await stream.receive_some(65536)
                assert chunk, data
                data += chunk
            top, _, rest = data.partition(b"\r\n\r\n")
            lines = top.split(b"\r\n")[1:]
            length = next(
                int(line.split(b":")[1]) for line in lines if _name(line) == b"content-length"
            )
            while len(rest) < length:
                chunk = await stream.receive_some(65536)
                assert chunk, data
                rest += chunk
            return top + b"\r\n\r\n" + rest


def request(*lines: str, host: bytes = b"test") -> bytes:
    return (
        b"GET /x HTTP/1.1\r\nhost: "
        + host
        + b"\r\n"
        + "".join(f"{x}\r\n" for x in lines).encode()
        + b"\r\n"
    )


def rejected(response: bytes) -> bool:
    return response.startswith(b"HTTP/1.1 400 ") and b"x-meshwire-response-flags: DPE" in response


def access_log_entry(tmp_path: Path) -> dict[str, object]:
    """The one access-log line (read once the proxy has stopped, so it is written)."""
    (line,) = (tmp_path / "access.log").read_text().splitlines()
    entry: dict[str, object] = json.loads(line)
    return entry


# --- Connection-nominated fields (RFC 9110 §7.6.1) -------------------------------------------


async def test_a_nominated_request_id_is_replaced_by_the_one_the_proxy_logs(tmp_path: Path) -> None:
    async with proxy(tmp_path) as (port, upstream):
        response = await exchange(port, request("connection: x-request-id", "x-request-id: mine"))
    assert response.startswith(b"HTTP/1.1 200 ")
    (rid,) = upstream.fields(b"x-request-id")
    assert rid != b"mine"
    assert len(rid) == 36
    assert upstream.fields(b"connection") == []
    assert access_log_entry(tmp_path)["request_id"] == rid.decode()


@pytest.mark.parametrize(
    "option", ["x-forwarded-for", "X-Forwarded-Proto", "keep-alive, x-forwarded-host", "host"]
)
async def test_forwarding_fields_and_host_cannot_be_nominated(option: str) -> None:
    async with proxy() as (port, upstream):
        response = await exchange(
            port, request(f"connection: {option}", "x-forwarded-for: 1.2.3.4")
        )
    assert rejected(response), response
    assert upstream.heads == []


async def test_headers_added_by_filters_survive_a_nomination() -> None:
    filters = [schema.HeadersFilter(request_add={"x-added": "by-proxy"}), schema.RouterFilter()]
    async with proxy(filters=filters) as (port, upstream):
        response = await exchange(port, request("connection: x-added, x-secret", "x-secret: 1"))
    assert response.startswith(b"HTTP/1.1 200 ")
    assert upstream.fields(b"x-added") == [b"by-proxy"]
    assert upstream.fields(b"x-secret") == []


async def test_a_nominated_te_still_forwards_te_trailers() -> None:
    async with proxy() as (port, upstream):
        response = await exchange(port, request("connection: te", "te: trailers"))
    assert response.startswith(b"HTTP/1.1 200 ")
    assert upstream.fields(b"te") == [b"trailers"]


# --- x-forwarded-for / -proto trust ------------------------------------------------------------


async def test_an_edge_overwrites_the_clients_x_forwarded_proto() -> None:
    async with proxy() as (port, upstream):
        response = await exchange(port, request("x-forwarded-proto: https"))
    assert response.startswith(b"HTTP/1.1 200 ")
    assert upstream.fields(b"x-forwarded-proto") == [b"http"]
    assert upstream.fields(b"x-forwarded-for") == [b"127.0.0.1"]


async def test_a_trusted_hop_keeps_its_proto_and_names_the_client(tmp_path: Path) -> None:
    xff = "x-forwarded-for: 203.0.113.128, 203.0.113.10"
    async with proxy(tmp_path, xff_num_trusted_hops=1) as (port, upstream):
        response = await exchange(port, request(xff, "x-forwarded-proto: https"))
    assert response.startswith(b"HTTP/1.1 200 ")
    assert upstream.fields(b"x-forwarded-proto") == [b"https"]
    assert upstream.fields(b"x-forwarded-for") == [b"203.0.113.128, 203.0.113.10, 127.0.0.1"]
    entry = access_log_entry(tmp_path)
    assert entry["client_address"] == "203.0.113.10"


async def test_repeated_x_forwarded_for_lines_are_one_list(tmp_path: Path) -> None:
    lines = ("x-forwarded-for: 198.51.100.1", "x-forwarded-for: 203.0.113.10, 192.0.2.1")
    async with proxy(tmp_path, xff_num_trusted_hops=2) as (port, upstream):
        await exchange(port, request(*lines))
    expected = b"198.51.100.1, 203.0.113.10, 192.0.2.1, 127.0.0.1"
    assert upstream.fields(b"x-forwarded-for") == [expected]
    assert access_log_entry(tmp_path)["client_address"] == "203.0.113.10"


async def test_untrusted_or_short_x_forwarded_for_means_the_peer(tmp_path: Path) -> None:
    async with proxy(tmp_path, xff_num_trusted_hops=2) as (port, _):
        await exchange(port, request("x-forwarded-for: 203.0.113.10"))
    assert access_log_entry(tmp_path)["client_address"] == "127.0.0.1"


async def test_behind_a_trusted_proxy_forwarding_headers_pass_unchanged(tmp_path: Path) -> None:
    xff = "x-forwarded-for: 203.0.113.128, 192.0.2.5"
    async with proxy(tmp_path, use_remote_address=False) as (port, upstream):
        await exchange(port, request(xff, "x-forwarded-proto: https"))
    assert upstream.fields(b"x-forwarded-for") == [b"203.0.113.128, 192.0.2.5"]
    assert upstream.fields(b"x-forwarded-proto") == [b"https"]
    assert access_log_entry(tmp_path)["client_address"] == "192.0.2.5"


def test_negative_trusted_hops_are_a_config_error() -> None:
    from config.loader import ConfigError, load_text

    text = "listeners: [{name: a, address: '127.0.0.1:0', xff_num_trusted_hops: -1}]"
    with pytest.raises(ConfigError, match=r"xff_num_trusted_hops.*must not be negative"):
        load_text(text)


# --- Host / :authority (RFC 9112 §3.2, RFC 3986 §3.2.2) ---------------------------------------

INVALID_HOSTS = [
    b"evil.example/x@y",
    b"user@evil.example",
    b"a b",
    b"a\x01b",
    b"a\tb",
    b"a\x80b",
    b"good:99999",
    b"good:8o",
    b"good:80:80",
    b"[::1",
    b"[not-v6]:80",
    b"bad%zz",
]
VALID_HOSTS = [
    b"good",
    b"good:8080",
    b"127.0.0.1:1",
    b"[::1]:80",
    b"%41.example",
    b"x_y.~!$&'()*+,;=",
]


@pytest.mark.parametrize("host", INVALID_HOSTS)
async def test_an_invalid_host_gets_400(host: bytes) -> None:
    async with proxy() as (port, upstream):
        response = await exchange(port, request(host=host))
    assert rejected(response), response
    assert upstream.heads == []


@pytest.mark.parametrize("host", VALID_HOSTS)
async def test_a_valid_host_is_forwarded_as_is(host: bytes) -> None:
    async with proxy() as (port, upstream):
        response = await exchange(port, request(host=host))
    assert response.startswith(b"HTTP/1.1 200 "), response
    assert upstream.fields(b"host") == [host]


async def test_an_empty_host_is_valid() -> None:
    async with proxy() as (port, upstream):  # RFC 9112 §3.2: a target URI without authority
        response = await exchange(port, request(host=b""))
    assert response.startswith(b"HTTP/1.1 200 "), response
    assert len(upstream.heads) == 1


async def h2_request(port: int, headers: list[tuple[bytes, bytes]]) -> int:
    """One bodiless HTTP/2 request with exactly these header fields; its status."""
    async with H2Client.connect(port) as client:
        client.conn.config.validate_outbound_headers = False
        client.conn.config.normalize_outbound_headers = False
        sid = client.conn.get_next_available_stream_id()
        client.done[sid] = trio.Event()
        client.conn.send_headers(sid, headers, end_stream=True)
        await client.flush()
        with trio.fail_after(DEADLINE):
            reply = await client.finish(sid)
    assert reply.status != 400 or reply.header(b"x-meshwire-response-flags") == b"DPE"
    return reply.status


def h2_head(authority: bytes, *extra: tuple[bytes, bytes]) -> list[tuple[bytes, bytes]]:
    return [
        (b":method", b"GET"),
        (b":path", b"/x"),
        (b":scheme", b"http"),
        (b":authority", authority),
        *extra,
    ]


@pytest.mark.parametrize("authority", [b"evil.example/x@y", b"a b", b"good:99999"])
async def test_an_invalid_authority_gets_400(authority: bytes) -> None:
    async with proxy() as (port, upstream):
        assert await h2_request(port, h2_head(authority)) == 400
    assert upstream.heads == []
