"""Shared helpers for the upstream tests: cluster configs, requests, bodies that record pulls."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import trio

from config.schema import Cluster
from proxy.http.model import Body, BytesBody, EmptyBody, Headers, Request, Response
from proxy.stats import Stats
from proxy.upstream.cluster import UpstreamCluster
from proxy.upstream.manager import ClusterManager


def cluster(*ports: int, **kw: Any) -> Cluster:
    kw.setdefault("name", "backend")
    return Cluster(endpoints=[f"127.0.0.1:{p}" for p in ports], **kw)


@contextlib.asynccontextmanager
async def running(*configs: Cluster) -> AsyncIterator[tuple[ClusterManager, Stats]]:
    stats = Stats()
    async with ClusterManager(configs, stats) as manager:
        yield manager, stats


def upstream(manager: ClusterManager, name: str = "backend") -> UpstreamCluster:
    found = manager.get(name)
    assert found is not None
    return found


def request(
    method: bytes = b"GET",
    target: bytes = b"/",
    body: Body | bytes | None = None,
    headers: Headers | None = None,
    authority: bytes = b"example.test",
) -> Request:
    if isinstance(body, bytes):
        body = BytesBody(body)
    return Request(method, target, headers or [], body or EmptyBody(), authority=authority)


async def read_body(response: Response) -> bytes:
    parts = []
    while chunk := await response.body.read():
        parts.append(chunk)
    return b"".join(parts)


def counter(stats: Stats, name: str, cluster: str = "backend") -> int:
    return stats.counter(f"cluster.{cluster}.upstream_{name}").value


class ChannelBody:
    """A streamed request body fed by the test, one chunk at a time."""

    length: int | None = None

    def __init__(self, trailers: Headers | None = None) -> None:
        self.send, self._recv = trio.open_memory_channel[bytes](0)
        self.trailers: Headers | None = None
        self._final_trailers = trailers
        self.closed = False

    async def read(self) -> bytes:
        try:
            chunk = await self._recv.receive()
        except trio.EndOfChannel:
            self.trailers = self._final_trailers
            return b""
        return chunk

    async def aclose(self) -> None:
        self.closed = True


class CountingBody:
    """A large generated body that records how many bytes were pulled so far."""

    length: int | None = None

    def __init__(self, total: int, chunk: int = 65536) -> None:
        self.total = total
        self.chunk = chunk
        self.pulled = 0
        self.trailers: Headers | None = None

    async def read(self) -> bytes:
        n = min(self.chunk, self.total - self.pulled)
        self.pulled += n
        await trio.lowlevel.checkpoint()
        return b"x" * n

    async def aclose(self) -> None:
        self.pulled = self.total
