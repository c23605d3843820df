"""The stack's ceiling: the naive trio proxy of naive_proxy.py with httptools (llhttp) on both legs.

One upstream keep-alive connection per downstream connection, whole bodies buffered, no timeouts,
no routing, no stats, no header checks. `python bench/naive_httptools_proxy.py LISTEN UPSTREAM`.
Not part of meshwire: it shows what trio + a C parser can do on one core.
"""

import contextlib
import sys

import httptools
import trio


class Message:
    """Collects one message from an httptools parser's callbacks."""

    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.url = b""
        self.body = b""
        self.done = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.done = True


async def read_message(stream: trio.SocketStream, message: Message, parser: object) -> bool:
    while not message.done:
        data = await stream.receive_some(65536)
        if not data:
            return False
        parser.feed_data(data)  # type: ignore[attr-defined]
    return True


def head_bytes(first: bytes, headers: list[tuple[bytes, bytes]], body: bytes) -> bytes:
    lines = [first]
    for name, value in headers:
        if name.lower() not in (b"content-length", b"transfer-encoding", b"connection"):
            lines.append(name + b": " + value)
    lines.append(b"content-length: " + str(len(body)).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


async def relay(down: trio.SocketStream, upstream_port: int) -> None:
    up = await trio.open_tcp_stream("127.0.0.1", upstream_port)
    async with up:
        while True:
            request = Message()
            parser = httptools.HttpRequestParser(request)
            if not await read_message(down, request, parser):
                return
            method = parser.get_method()
            await up.send_all(
                head_bytes(
                    method + b" " + request.url + b" HTTP/1.1", request.headers, request.body
                )
            )
            response = Message()
            rparser = httptools.HttpResponseParser(response)
            if not await read_message(up, response, rparser):
                return
            status = rparser.get_status_code()
            await down.send_all(
                head_bytes(b"HTTP/1.1 %d OK" % status, response.headers, response.body)
            )


async def handle(down: trio.SocketStream) -> None:
    with contextlib.suppress(
        httptools.HttpParserError, trio.BrokenResourceError, trio.ClosedResourceError
    ):
        await relay(down, int(sys.argv[2]))


async def main() -> None:
    await trio.serve_tcp(handle, int(sys.argv[1]), host="127.0.0.1")


if __name__ == "__main__":
    trio.run(main)
