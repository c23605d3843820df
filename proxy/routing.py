"""The route table: config routes compiled once into byte matchers; first match wins per request."""

from __future__ import annotations

import bisect
import random
import re
from collections.abc import Callable, Sequence

from config.schema import HeaderMatch, Route
from proxy.http.model import Header, Request

_EXACT, _PREFIX, _REGEX, _ANY = range(4)
_NO_BODY_STATUSES = frozenset({204, 304})


def _compile(pattern: str) -> Callable[[bytes], bool]:
    """A whole-string regex test on bytes (Envoy's safe_regex semantics)."""
    try:
        compiled = re.compile(pattern.encode())
    except re.error:  # e.g. \\u escapes are str-only; fall back to decoding the input
        text = re.compile(pattern)
        return lambda data: text.fullmatch(data.decode("utf-8", "surrogateescape")) is not None
    return lambda data: compiled.fullmatch(data) is not None


class DirectReply:
    """A response the route answers itself; headers include a precomputed content-length."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: list[Header], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    @classmethod
    def build(cls, status: int, headers: dict[str, str], body: str) -> DirectReply:
        data = body.encode()
        out: list[Header] = [
            (name.lower().encode(), value.encode())
            for name, value in headers.items()
            if name.lower() != "content-length"
        ]
        if status < 200 or status in _NO_BODY_STATUSES:
            return cls(status, out, b"")
        if data and not any(name == b"content-type" for name, _ in out):
            out.insert(0, (b"content-type", b"text/plain"))
        out.append((b"content-length", str(len(data)).encode()))
        return cls(status, out, data)


class _HeaderMatcher:
    """One header condition; `host` is read from the request's authority (HTTP/2 :authority)."""

    __slots__ = ("invert", "is_host", "kind", "name", "regex", "value")

    def __init__(self, cfg: HeaderMatch) -> None:
        self.name = cfg.name.lower().encode()
        self.is_host = self.name == b"host"
        self.invert = cfg.invert
        self.regex: Callable[[bytes], bool] | None = None
        self.value = b""
        if cfg.exact is not None:
            self.kind, self.value = _EXACT, cfg.exact.encode()
        elif cfg.prefix is not None:
            self.kind, self.value = _PREFIX, cfg.prefix.encode()
        elif cfg.regex is not None:
            self.kind, self.regex = _REGEX, _compile(cfg.regex)
        else:  # present: false means "must be absent", handled as an inverted presence test
            self.kind = _ANY
            if cfg.present is False:
                self.invert = not self.invert

    def _lookup(self, request: Request) -> bytes | None:
        if self.is_host and request.authority:
            return request.authority
        found = [value for key, value in request.headers if key == self.name]
        if not found:
            return None
        return found[0] if len(found) == 1 else b",".join(found)

    def matches(self, request: Request) -> bool:
        value = self._lookup(request)
        if value is None:
            ok = False
        elif self.kind == _EXACT:
            ok = value == self.value
        elif self.kind == _PREFIX:
            ok = value.startswith(self.value)
        elif self.kind == _REGEX:
            assert self.regex is not None
            ok = self.regex(value)
        else:
            ok = True
        return ok is not self.invert


class RouteEntry:
    """One compiled route: its match conditions and what to do with a matching request."""

    __slots__ = (
        "_clusters",
        "_cumulative",
        "_headers",
        "_kind",
        "_methods",
        "_path",
        "_regex",
        "_rng",
        "_total",
        "direct",
        "host_rewrite",
        "name",
        "prefix_rewrite",
        "template",
        "timeout",
    )

    def __init__(self, route: Route, index: int, rng: random.Random) -> None:
        self.name = route.name if route.name is not None else f"route_{index}"
        self.timeout = float(route.timeout)
        rewrite, host = route.prefix_rewrite, route.host_rewrite
        self.prefix_rewrite = rewrite.encode() if rewrite is not None else None
        self.host_rewrite = host.encode() if host is not None else None
        d = route.direct_response
        self.direct = DirectReply.build(d.status, d.headers, d.body) if d is not None else None
        match = route.match
        self._regex: Callable[[bytes], bool] | None = None
        self._path = b""
        if match.path is not None:
            self._kind, self._path = _EXACT, match.path.encode()
        elif match.prefix is not None:
            self._kind, self._path = _PREFIX, match.prefix.encode()
        elif match.regex is not None:
            self._kind, self._regex = _REGEX, _compile(match.regex)
        else:
            self._kind = _ANY
        # Low-cardinality path pattern for `http.route` (a prefix matches anything under it).
        self.template = (
            match.path
            if match.path is not None
            else match.regex
            if match.regex is not None
            else (match.prefix or "/") + "*"
        )
        self._headers = tuple(_HeaderMatcher(h) for h in match.headers)
        self._methods = frozenset(m.upper().encode() for m in match.methods) or None
        self._rng = rng
        if route.weighted_clusters:
            self._clusters = tuple(wc.name for wc in route.weighted_clusters)
            cumulative, total = [], 0
            for wc in route.weighted_clusters:
                total += max(wc.weight, 0)
                cumulative.append(total)
            self._cumulative, self._total = tuple(cumulative), total
        else:
            self._clusters = (route.cluster,) if route.cluster is not None else ()
            self._cumulative, self._total = (), 0

    def matches(self, request: Request, path: bytes) -> bool:
        kind = self._kind
        if kind == _PREFIX:
            if not path.startswith(self._path):
                return False
        elif kind == _EXACT:
            if path != self._path:
                return False
        elif kind == _REGEX:
            assert self._regex is not None
            if not self._regex(path):
                return False
        if self._methods is not None and request.method not in self._methods:
            return False
        return all(h.matches(request) for h in self._headers)

    def pick_cluster(self) -> str | None:
        """The only cluster, or a weighted random choice; None for direct replies."""
        clusters = self._clusters
        if len(clusters) <= 1 or self._total <= 0:
            return clusters[0] if clusters else None
        return clusters[bisect.bisect_right(self._cumulative, self._rng.randrange(self._total))]

    def rewrite_target(self, target: bytes) -> bytes:
        """Replace the matched prefix (the whole path for path/regex matches); keep the query."""
        if self.prefix_rewrite is None:
            return target
        q = target.find(b"?")
        path, query = (target, b"") if q < 0 else (target[:q], target[q:])
        if self._kind == _PREFIX:
            if not path.startswith(self._path):
                return target
            return self.prefix_rewrite + path[len(self._path) :] + query
        return self.prefix_rewrite + query


class RouteTable:
    """A listener's routes in order; `match` returns the first entry that accepts the request."""

    __slots__ = ("_entries", "rng")

    def __init__(self, entries: Sequence[RouteEntry], rng: random.Random) -> None:
        self._entries = tuple(entries)
        self.rng = rng

    @classmethod
    def build(cls, routes: Sequence[Route], *, seed: int | None = None) -> RouteTable:
        rng = random.Random(seed)
        return cls([RouteEntry(route, i, rng) for i, route in enumerate(routes)], rng)

    @property
    def entries(self) -> tuple[RouteEntry, ...]:
        return self._entries

    def match(self, request: Request) -> RouteEntry | None:
        path = request.path
        for entry in self._entries:
            if entry.matches(request, path):
                return entry
        return None
