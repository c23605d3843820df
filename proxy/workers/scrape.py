"""One request to a worker's private admin socket: the supervisor's way to read its stats."""

from __future__ import annotations

import h11
import trio

MAX_BODY = 64 << 20  # a worker's exposition is kilobytes; this only bounds a broken one


class ScrapeError(Exception):
    """The worker did not answer properly (gone, restarting, or a malformed reply)."""


async def fetch(path: str, target: str, method: str = "GET") -> tuple[int, bytes, bytes]:
    """(status, content type, body) of `method target` on the admin socket at `path`; the
    caller bounds the time it may take."""
    try:
        stream = await trio.open_unix_socket(path)
    except OSError as exc:
        raise ScrapeError(f"{path}: {exc.strerror or exc}") from None
    async with stream:
        connection = h11.Connection(h11.CLIENT)
        request = h11.Request(
            method=method, target=target, headers=[("host", "worker"), ("connection", "close")]
        )
        try:
            await stream.send_all(connection.send(request) + connection.send(h11.EndOfMessage()))
            return await _response(stream, connection)
        except (trio.BrokenResourceError, h11.ProtocolError) as exc:
            raise ScrapeError(f"{path}: {exc}") from None


async def _response(
    stream: trio.SocketStream, connection: h11.Connection
) -> tuple[int, bytes, bytes]:
    status = 0
    content_type = b""
    body = bytearray()
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            connection.receive_data(await stream.receive_some())
            continue
        if isinstance(event, h11.Response):
            status = event.status_code
            content_type = dict(event.headers).get(b"content-type", b"")
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_BODY:
                raise ScrapeError("reply too large")
        elif isinstance(event, h11.EndOfMessage):
            return status, content_type, bytes(body)
        elif isinstance(event, h11.ConnectionClosed):
            raise ScrapeError("closed before the reply ended")
