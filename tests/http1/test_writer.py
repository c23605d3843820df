"""The writer against h11's serializer: the same bytes for what both accept, and no field
line that could be read as two."""

from __future__ import annotations

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.http1 import writer

_NAMES = st.sampled_from([b"x-a", b"X-Custom", b"content-type", b"server", b"connection"])
_VALUES = st.sampled_from([b"v", b"a b", b"", b"\xe9", b"close", b"keep-alive"])
_FIELDS = st.lists(st.tuples(_NAMES, _VALUES), max_size=4)


def h11_response(
    method: bytes,
    version: bytes,
    close: bool,
    status: int,
    headers: list[tuple[bytes, bytes]],
    chunks: list[bytes],
) -> bytes:
    conn = h11.Connection(h11.SERVER)
    asked = [(b"host", b"h")] + ([(b"connection", b"close")] if close else [])
    conn.receive_data(
        b"%s / HTTP/%s\r\n%s\r\n" % (method, version, b"".join(b"%s: %s\r\n" % f for f in asked))
    )
    assert type(conn.next_event()) is h11.Request
    conn.next_event()
    out = conn.send(h11.Response(status_code=status, headers=headers, reason=b"R")) or b""
    if method != b"HEAD" and status not in (204, 304):
        for chunk in chunks:
            out += conn.send(h11.Data(data=chunk)) or b""
    return out + (conn.send(h11.EndOfMessage()) or b"")


def write_all(
    status: int,
    headers: list[tuple[bytes, bytes]],
    method: bytes,
    version: bytes,
    close: bool,
    chunks: list[bytes],
) -> bytes:
    head, body, _ = writer.response(status, b"R", headers, method, version, not close)
    return head + b"".join(body.data(chunk) for chunk in chunks) + body.end()


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    st.sampled_from([b"GET", b"HEAD", b"POST"]),
    st.sampled_from([b"1.1", b"1.0"]),
    st.booleans(),
    st.sampled_from([200, 204, 304, 404]),
    _FIELDS,
    st.lists(st.binary(min_size=1, max_size=8), max_size=3),
    st.booleans(),
)
def test_responses_match_h11(
    method: bytes,
    version: bytes,
    close: bool,
    status: int,
    headers: list[tuple[bytes, bytes]],
    chunks: list[bytes],
    sized: bool,
) -> None:
    if sized:
        headers = [*headers, (b"content-length", b"%d" % sum(map(len, chunks)))]
    try:
        expected = h11_response(method, version, close, status, headers, chunks)
    except h11.LocalProtocolError:
        with pytest.raises(writer.WriteError):
            write_all(status, headers, method, version, close, chunks)
        return
    head, body, _ = writer.response(
        status, b"R", headers, method, version, not close and version == b"1.1"
    )
    out = head
    if method != b"HEAD" and status not in (204, 304):
        for chunk in chunks:
            out += body.data(chunk)
    assert out + body.end() == expected


@pytest.mark.parametrize(
    "field",
    [
        (b"x-a", b"v\r\nx-injected: 1"),
        (b"x-a", b"v\nx-injected: 1"),
        (b"x-a", b"v\rx"),
        (b"x-a", b"v\x00"),
        (b"x-a\r\nx-injected", b"1"),
        (b"x a", b"1"),
        (b"", b"1"),
        (b"x-a", b" leading"),
    ],
)
def test_fields_that_could_inject_are_refused(field: tuple[bytes, bytes]) -> None:
    with pytest.raises(writer.WriteError):
        writer.response(200, b"OK", [field], b"GET", b"1.1", True)
    with pytest.raises(writer.WriteError):
        writer.request(b"GET", b"/", [(b"host", b"h"), field])
    with pytest.raises(writer.WriteError):
        writer.BodyWriter(writer.CHUNKED).end([field])


def test_request_line_and_body_length_are_checked() -> None:
    with pytest.raises(writer.WriteError):
        writer.request(b"GET", b"/a b", [(b"host", b"h")])
    head, body = writer.request(b"POST", b"/", [(b"host", b"h"), (b"content-length", b"2")])
    assert head == b"POST / HTTP/1.1\r\nhost: h\r\ncontent-length: 2\r\n\r\n"
    with pytest.raises(writer.WriteError):
        body.data(b"abc")
    assert body.data(b"a") == b"a"
    with pytest.raises(writer.WriteError):
        body.end()
