"""Hypothesis strategies for HTTP/1.1 requests: honest ones, hostile framing, and raw mutation."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

from hypothesis import strategies as st

METHODS = [b"GET", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"G ET", b"\x00", b""]
HEADER_NAMES = [
    b"host", b"x-a", b"accept", b"connection", b"expect", b"te", b"upgrade", b"trailer",
    b"keep-alive", b"transfer-encoding", b"content-length", b"x-forwarded-for", b"x-request-id",
    b"bad name", b"", b"\xff",
]  # fmt: skip
HEADER_VALUES = [
    b"", b"x", b"close", b"keep-alive", b"100-continue", b"chunked", b"gzip, chunked", b"h2c",
    b"a\x00b", b"a\rb", b"  padded  ", b"\xff\xfe", b"0", b"-1", b"99999999999999999999",
]  # fmt: skip


@dataclass(frozen=True)
class Sent:
    """One request as bytes, its target, and whether its framing tells the truth (only then
    must the requests after it be told apart by the server)."""

    data: bytes
    target: bytes
    honest: bool


def _chunked(parts: list[bytes], ext: bytes) -> bytes:
    out = b"".join(b"%x%s\r\n%s\r\n" % (len(p), ext, p) for p in parts if p)
    return out + b"0\r\n\r\n"


@st.composite
def request(draw: st.DrawFn, index: int) -> Sent:
    target = b"/r%d" % index + draw(st.sampled_from([b"", b"?q=1", b"/a/../b", b"#f", b"?%00"]))
    honest_head = draw(st.booleans())
    method = b"POST" if honest_head else draw(st.sampled_from(METHODS))
    headers = [(b"host", b"fuzz.example")]
    extra = draw(
        st.lists(
            st.tuples(
                st.sampled_from(HEADER_NAMES) if not honest_head else st.just(b"x-a"),
                st.sampled_from(HEADER_VALUES) | st.binary(max_size=12),
            ),
            max_size=4,
        )
    )
    if honest_head:
        extra = [(n, v) for n, v in extra if all(32 <= b < 127 for b in v) and v.strip() == v]
    headers += extra
    body_parts = draw(st.lists(st.binary(max_size=40), max_size=4))
    body = b"".join(body_parts)
    framing = draw(
        st.sampled_from(["none", "length", "chunked", "short", "long", "both", "bad-chunk", "dup"])
    )
    honest = honest_head and framing in ("none", "length", "chunked")
    if framing == "none":
        payload = b""
    elif framing == "length":
        headers.append((b"content-length", b"%d" % len(body)))
        payload = body
    elif framing == "chunked":
        headers.append((b"transfer-encoding", b"chunked"))
        ext = draw(st.sampled_from([b"", b";a=b", b";x"]))
        payload = _chunked(body_parts, ext)
    elif framing == "short":
        headers.append((b"content-length", b"%d" % max(len(body) - 3, 0)))
        payload = body
    elif framing == "long":
        headers.append((b"content-length", b"%d" % (len(body) + 5)))
        payload = body
    elif framing == "both":
        headers += [(b"content-length", b"6"), (b"transfer-encoding", b"chunked")]
        payload = b"0\r\n\r\nG"
    elif framing == "bad-chunk":
        headers.append((b"transfer-encoding", b"chunked"))
        payload = draw(st.sampled_from([b"zz\r\n", b"-1\r\nx\r\n", b"1\r\nxx\r\n0\r\n\r\n"]))
    else:
        headers += [(b"content-length", b"1"), (b"content-length", b"2")]
        payload = b"ab"
    eol = b"\r\n" if honest_head else draw(st.sampled_from([b"\r\n", b"\r\n", b"\n"]))
    head = method + b" " + target + b" HTTP/1.1" + eol
    head += b"".join(name + b": " + value + eol for name, value in headers)
    return Sent(head + eol + payload, target, honest)


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    """A few random byte edits (insert, delete, replace) of `data`."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(out)))
        edit = draw(st.sampled_from(["insert", "delete", "replace"]))
        byte = draw(st.sampled_from([0, 10, 13, 32, 58, 48, 255]) | st.integers(0, 255))
        if edit == "insert":
            out.insert(at, byte)
        elif out and at < len(out):
            if edit == "delete":
                del out[at]
            else:
                out[at] = byte
    return bytes(out)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    """`data` in pieces at the given offsets (how it would arrive over a socket)."""
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in pairwise(points) if b > a]
