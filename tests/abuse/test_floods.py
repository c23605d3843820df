"""Floods from one client against a real meshwire process: each costs bounded CPU and memory,
ends with the connection cut, and a well-behaved client on another connection is served
throughout. The CPU bounds are an order of magnitude above what the cut-off attack costs and
well below what the same bytes cost with the limit off (10-90 µs a frame or chunk)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from hyperframe.frame import GoAwayFrame

from proxy.downstream.negotiate import PREFACE
from tests.abuse.target import Target, connect, read_until_closed, send_until_closed, target
from tests.downstream.helpers import parse_frames, raw_frame

ENHANCE_YOUR_CALM = 0xB
FRAMES = 300_000
CPU_BOUND = 1.5  # seconds of the proxy's CPU for one whole flood
RSS_BOUND_MB = 50


def goaway_codes(data: bytes) -> list[int]:
    return [f.error_code for f in parse_frames(data) if isinstance(f, GoAwayFrame)]


H2_FLOODS = {
    "priority": raw_frame(0x2, 1, b"\x00\x00\x00\x00\x10"),
    "window-update+1": raw_frame(0x8, 0, b"\x00\x00\x00\x01"),
    "unknown-type": raw_frame(0xFF, 0, b""),
}


def under_attack(mw: Target, attack: Callable[[], bytes]) -> tuple[bytes, float, float]:
    """Run `attack` on a thread while a well-behaved client keeps asking; what the attacker
    read back, and the proxy's CPU seconds and RSS growth over the attack."""
    cpu, rss = mw.cpu_seconds(), mw.rss_mb()
    result: list[bytes] = []
    thread = threading.Thread(target=lambda: result.append(attack()))
    thread.start()
    probes = 0
    while thread.is_alive() or probes == 0:
        assert mw.served(), "a well-behaved client was not served during the attack"
        probes += 1
        thread.join(timeout=0.05)
    thread.join()
    assert mw.served()
    return result[0], mw.cpu_seconds() - cpu, mw.rss_mb() - rss


@pytest.mark.parametrize("kind", sorted(H2_FLOODS))
def test_an_h2_frame_flood_is_cut_with_enhance_your_calm(tmp_path: Path, kind: str) -> None:
    def attack() -> bytes:
        with connect(mw.port) as sock:
            send_until_closed(sock, PREFACE + raw_frame(0x4, 0, b"") + H2_FLOODS[kind] * FRAMES)
            return read_until_closed(sock)

    with target(tmp_path) as mw:
        answer, cpu, rss = under_attack(mw, attack)
    assert ENHANCE_YOUR_CALM in goaway_codes(answer)
    assert cpu < CPU_BOUND, cpu
    assert rss < RSS_BOUND_MB, rss


@pytest.mark.parametrize("reader", ["buffer", "unread"])
def test_a_one_byte_chunk_flood_is_cut(tmp_path: Path, reader: str) -> None:
    """Whether a filter reads the body (buffer: 400) or the answer leaves first and the codec
    drains what is left (unread: 200), the connection is cut early in the flood."""
    head = b"POST /upload HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"

    def attack() -> bytes:
        with connect(mw.port) as sock:
            finished = send_until_closed(sock, head + b"1\r\nx\r\n" * FRAMES + b"0\r\n\r\n")
            answer = read_until_closed(sock)
            assert not finished or answer.count(b"HTTP/1.1 ") == 1
            return answer

    filters = "{type: buffer, max_request_bytes: 10000000}, " if reader == "buffer" else ""
    with target(tmp_path, filters=filters) as mw:
        answer, cpu, rss = under_attack(mw, attack)
    assert answer.startswith(b"HTTP/1.1 400 " if reader == "buffer" else b"HTTP/1.1 200 ")
    assert answer.count(b"HTTP/1.1 ") == 1  # and then closed: no second response
    assert cpu < CPU_BOUND, cpu
    assert rss < RSS_BOUND_MB, rss
