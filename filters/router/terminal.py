"""The router: the terminal filter that matches a route and forwards to an upstream cluster."""

from __future__ import annotations

import trio

from proxy.http.errors import NoCluster, NoRoute, UpstreamTimeout
from proxy.http.model import Body, BytesBody, Headers, Request, Response, in_memory
from proxy.routing import RouteTable
from proxy.stats import Counter
from proxy.upstream.manager import ClusterManager


class DeadlineBody:
    """A response body whose reads must finish before the route's deadline (504 UT after it)."""

    __slots__ = ("_body", "_deadline", "_timeouts", "length", "trailers")

    def __init__(self, body: Body, deadline: float, timeouts: Counter) -> None:
        self._body = body
        self._deadline = deadline
        self._timeouts = timeouts
        self.length = body.length
        self.trailers: Headers | None = None

    async def read(self) -> bytes:
        with trio.move_on_at(self._deadline) as scope:
            chunk = await self._body.read()
        if scope.cancelled_caught:
            await self._body.aclose()
            self._timeouts.inc()
            raise UpstreamTimeout("upstream response body timed out")
        if not chunk:
            self.trailers = self._body.trailers
        return chunk

    async def aclose(self) -> None:
        await self._body.aclose()


class Router:
    """Terminal: route table → direct response or cluster. Hop-by-hop request headers ended in
    the connection manager, before any filter; the upstream clients end the response's."""

    def __init__(self, table: RouteTable, clusters: ClusterManager) -> None:
        self._table = table
        self._clusters = clusters

    async def __call__(self, request: Request, /) -> Response:
        route = self._table.match(request)
        if route is None:
            await request.body.aclose()
            raise NoRoute(f"no route matches {request.path.decode('latin-1')}")
        info = request.info
        info.route_name = route.name
        direct = route.direct
        if direct is not None:
            await request.body.aclose()
            return Response(direct.status, list(direct.headers), BytesBody(direct.body))
        name = route.pick_cluster()
        cluster = self._clusters.get(name) if name is not None else None
        if cluster is None:
            await request.body.aclose()
            raise NoCluster(f"cluster {name!r} is not configured")
        if route.prefix_rewrite is not None:
            request.target = route.rewrite_target(request.target)
        if route.host_rewrite is not None:
            request.authority = route.host_rewrite
            request.headers = [h for h in request.headers if h[0] != b"host"]
            if request.http_version != "2":
                request.headers.append((b"host", route.host_rewrite))
        if route.timeout > 0:
            deadline = trio.current_time() + route.timeout
            with trio.move_on_at(deadline) as scope:
                response = await cluster.send(request)
            if scope.cancelled_caught:
                cluster.stats.rq_timeout.inc()
                raise UpstreamTimeout(f"no response from cluster {name!r} within {route.timeout}s")
            if not in_memory(response.body):
                response.body = DeadlineBody(response.body, deadline, cluster.stats.rq_timeout)
        else:
            response = await cluster.send(request)
        return response
