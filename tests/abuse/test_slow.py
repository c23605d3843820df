"""Slow and silent clients, and a misbehaving upstream, against a real meshwire process: each is
cut off by its limit at bounded cost while a well-behaved client keeps being served."""

from __future__ import annotations

import selectors
import socket
import threading
import time
from pathlib import Path

from tests.abuse.target import DEADLINE, connect, target

QUICK = "{header_read_timeout: 0.5s}"  # so the test does not wait out the 10 s default
SILENT = 2_000  # connections that never send a byte
SLOW_HEADS = 300
CPU_BOUND = 2.0  # seconds of the proxy's CPU for the whole attack
RSS_BOUND_MB = 60


def wait_all_closed(socks: list[socket.socket]) -> list[bytes]:
    """What each connection got before the server closed it; fails if any is still open after
    DEADLINE (one bound for all of them)."""
    got = {sock: bytearray() for sock in socks}
    with selectors.DefaultSelector() as selector:
        for sock in socks:
            selector.register(sock, selectors.EVENT_READ)
        end = time.monotonic() + DEADLINE
        while selector.get_map():
            left = end - time.monotonic()
            assert left > 0, f"{len(selector.get_map())} connections still open"
            for key, _ in selector.select(timeout=left):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    chunk = sock.recv(65536)
                except ConnectionResetError:
                    chunk = b""
                if chunk:
                    got[sock] += chunk
                else:
                    selector.unregister(sock)
    return [bytes(got[sock]) for sock in socks]


def test_silent_connections_are_closed_and_others_served(tmp_path: Path) -> None:
    with target(tmp_path, limits=QUICK) as mw:
        cpu, rss = mw.cpu_seconds(), mw.rss_mb()
        socks = [connect(mw.port) for _ in range(SILENT)]
        try:
            assert mw.served()  # while all of them are open
            got = wait_all_closed(socks)
            assert mw.served()
            grew = mw.rss_mb() - rss
            spent = mw.cpu_seconds() - cpu
        finally:
            for sock in socks:
                sock.close()
    assert got == [b""] * SILENT  # closed silently: they never asked anything
    assert spent < CPU_BOUND, spent
    assert grew < RSS_BOUND_MB, grew


def test_slowloris_heads_get_408_and_others_are_served(tmp_path: Path) -> None:
    with target(tmp_path, limits=QUICK) as mw:
        cpu, rss = mw.cpu_seconds(), mw.rss_mb()
        socks = [connect(mw.port) for _ in range(SLOW_HEADS)]
        try:
            for sock in socks:
                sock.sendall(b"GET / HTTP/1.1\r\nhost: x\r\nx-slow: ")  # and never the rest
            assert mw.served()
            got = wait_all_closed(socks)
        finally:
            for sock in socks:
                sock.close()
        assert mw.served()
        spent, grew = mw.cpu_seconds() - cpu, mw.rss_mb() - rss
    assert all(answer.startswith(b"HTTP/1.1 408 ") for answer in got)
    assert spent < CPU_BOUND, spent
    assert grew < RSS_BOUND_MB, grew


def endless_head_upstream(server: socket.socket, stop: threading.Event) -> None:
    """Answers every connection with a response head that never ends (a header 100 MB long)."""
    server.settimeout(0.1)
    while not stop.is_set():
        try:
            conn, _ = server.accept()
        except TimeoutError:
            continue
        with conn:
            conn.settimeout(DEADLINE)
            conn.recv(65536)
            try:
                conn.sendall(b"HTTP/1.1 200 OK\r\nx-endless: ")
                for _ in range(100 * 16):
                    conn.sendall(b"a" * 65536)
            except OSError:
                pass  # the proxy gave up on us, as it should


def test_an_upstream_head_that_never_ends_is_a_502_at_bounded_memory(tmp_path: Path) -> None:
    upstream = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()
    thread = threading.Thread(target=endless_head_upstream, args=(upstream, stop), daemon=True)
    thread.start()
    port = upstream.getsockname()[1]
    clusters = f"clusters:\n  - name: up\n    endpoints: ['127.0.0.1:{port}']\n"
    route = "      - match: {prefix: /up}\n        cluster: up\n"
    try:
        with target(tmp_path, extra=route, clusters=clusters) as mw:
            rss = mw.rss_mb()
            for _ in range(3):
                with connect(mw.port) as sock:
                    sock.sendall(b"GET /up HTTP/1.1\r\nhost: x\r\n\r\n")
                    head = sock.recv(65536)
                assert head.startswith(b"HTTP/1.1 502 "), head
                assert mw.served()
            grew = mw.rss_mb() - rss
    finally:
        stop.set()
        thread.join(timeout=DEADLINE)
        upstream.close()
    assert grew < RSS_BOUND_MB, grew
