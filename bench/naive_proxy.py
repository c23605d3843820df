"""The yardstick the targets are stated against: a naive trio + h11 reverse proxy, HTTP/1.1 only.

One upstream keep-alive connection per downstream connection, whole bodies buffered, no timeouts,
no routing, no stats. `python bench/naive_proxy.py LISTEN_PORT UPSTREAM_PORT`. Not part of meshwire.
"""

import contextlib
import sys

import h11
import trio


async def next_event(conn: h11.Connection, stream: trio.SocketStream) -> object:
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        conn.receive_data(await stream.receive_some(65536))


async def relay(down: trio.SocketStream, upstream_port: int) -> None:
    up = await trio.open_tcp_stream("127.0.0.1", upstream_port)
    server, client = h11.Connection(h11.SERVER), h11.Connection(h11.CLIENT)
    async with up:
        while type(request := await next_event(server, down)) is h11.Request:
            body = b""
            while type(event := await next_event(server, down)) is h11.Data:
                body += event.data
            out = client.send(
                h11.Request(method=request.method, target=request.target, headers=request.headers)
            )
            await up.send_all(
                out + client.send(h11.Data(data=body)) + client.send(h11.EndOfMessage())
            )
            response = await next_event(client, up)
            assert isinstance(response, h11.Response)
            rbody = b""
            while type(event := await next_event(client, up)) is h11.Data:
                rbody += event.data
            out = server.send(
                h11.Response(status_code=response.status_code, headers=response.headers)
            )
            await down.send_all(
                out + server.send(h11.Data(data=rbody)) + server.send(h11.EndOfMessage())
            )
            server.start_next_cycle()
            client.start_next_cycle()


async def handle(down: trio.SocketStream) -> None:
    with contextlib.suppress(h11.ProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
        await relay(down, int(sys.argv[2]))


async def main() -> None:
    await trio.serve_tcp(handle, int(sys.argv[1]), host="127.0.0.1")


if __name__ == "__main__":
    trio.run(main)
