"""The admin port: readiness, server info, stats (text, JSON, Prometheus), clusters, config dump."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from urllib.parse import parse_qs

import msgspec
import trio

from config.schema import to_builtins
from proxy.admin.prometheus import render as render_prometheus
from proxy.admin.replies import (
    JSON,
    PROMETHEUS,
    clusters_reply,
    json_reply,
    reply,
    stats_reply,
    text_reply,
)
from proxy.app import App
from proxy.http.model import Request, Response
from proxy.stats import Stats, typed_items
from proxy.version import VERSION

LEVELS = frozenset({"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"})


def stat_items(stats: Stats) -> list[tuple[str, int]]:
    """Every counter and gauge as (name, value)."""
    items = [(c.name, c.value) for c in stats.counters()]
    return items + [(g.name, g.value) for g in stats.gauges()]


def logging_levels() -> str:
    """GET /logging: meshwire's loggers and their effective levels, one per line."""
    loggers = [
        "meshwire",
        *sorted(n for n in logging.root.manager.loggerDict if n.startswith("meshwire.")),
    ]
    return "".join(
        f"{name}: {logging.getLevelName(logging.getLogger(name).getEffectiveLevel()).lower()}\n"
        for name in loggers
    )


def set_logging_levels(params: dict[str, list[str]]) -> str | None:
    """POST /logging?level=debug (all of meshwire) or ?paths=meshwire.server:debug,...: why
    not, or None once applied."""
    changes: list[tuple[str, str]] = []
    if "level" in params:
        changes.append(("meshwire", params["level"][0]))
    for item in ",".join(params.get("paths", [])).split(","):
        if item:
            name, _, level = item.partition(":")
            changes.append((name.strip(), level.strip()))
    if not changes:
        return "give ?level=LEVEL or ?paths=logger:LEVEL,...\n"
    for name, level in changes:
        if level.upper() not in LEVELS:
            return f"unknown level {level!r}; one of {', '.join(sorted(LEVELS)).lower()}\n"
        if not (name == "meshwire" or name.startswith("meshwire.")):
            return f"unknown logger {name!r}; meshwire's loggers start with meshwire\n"
    for name, level in changes:
        logging.getLogger(name).setLevel(level.upper())
    return None


class AdminHandler:
    """A Handler for the admin listener; mutations are POST-only, as in Envoy."""

    def __init__(self, app: App, shutdown: trio.Event, draining: trio.Event) -> None:
        self._app = app
        self._shutdown = shutdown
        self._draining = draining
        self.bound: dict[str, tuple[str, int]] = {}
        self._get: dict[bytes, Callable[[dict[str, list[str]]], Response]] = {
            b"/": self._index,
            b"/ready": self._ready,
            b"/server_info": self._server_info,
            b"/stats": self._stats,
            b"/stats/prometheus": self._prometheus,
            b"/metrics": self._metrics,
            b"/clusters": self._clusters,
            b"/config_dump": self._config_dump,
            b"/listeners": self._listeners,
            b"/logging": self._logging,
        }
        self._post: dict[bytes, Callable[[dict[str, list[str]]], Response]] = {
            b"/quitquitquit": self._quit,
            b"/logging": self._set_logging,
        }

    async def __call__(self, request: Request, /) -> Response:
        await request.body.aclose()
        path, _, query = request.target.partition(b"?")
        params = parse_qs(query.decode("latin-1"), keep_blank_values=True)
        if request.method in (b"GET", b"HEAD"):
            get = self._get.get(path)
            if get is not None:
                return get(params)
            if path in self._post:
                return text_reply(400, "this admin endpoint needs POST\n")
        elif request.method == b"POST":
            post = self._post.get(path) or self._get.get(path)
            if post is not None:
                return post(params)
        else:
            return text_reply(405, "method not allowed\n")
        return text_reply(404, "unknown admin endpoint; see /\n")

    @property
    def _state(self) -> str:
        return "DRAINING" if self._draining.is_set() or self._shutdown.is_set() else "LIVE"

    def _index(self, params: dict[str, list[str]]) -> Response:
        names = sorted({p.decode() for p in self._get} | {p.decode() for p in self._post})
        return text_reply(200, "meshwire admin\n" + "".join(f"  {n}\n" for n in names))

    def _ready(self, params: dict[str, list[str]]) -> Response:
        state = self._state
        return text_reply(200 if state == "LIVE" else 503, state + "\n")

    def _server_info(self, params: dict[str, list[str]]) -> Response:
        return json_reply(
            200,
            {
                "version": VERSION,
                "state": self._state,
                "uptime_seconds": round(time.time() - self._app.started_at, 3),
                "pid": os.getpid(),
                "command_line": sys.argv,
                "drain_timeout_seconds": float(self._app.config.drain_timeout),
                "listeners": {k: f"{h}:{p}" for k, (h, p) in self.bound.items()},
            },
        )

    def _stats(self, params: dict[str, list[str]]) -> Response:
        if params.get("format", ["text"])[0] == "prometheus":
            return self._prometheus(params)
        if "types" in params:  # what a --concurrency supervisor sums: every stat, typed
            typed = typed_items(self._app.stats)
            return json_reply(
                200, {"stats": [{"name": n, "value": v, "type": t} for n, v, t in typed]}
            )
        return stats_reply(stat_items(self._app.stats), params)

    def _metrics(self, params: dict[str, list[str]]) -> Response:
        """Where Dapr's scrapers look: our families plus, in sidecar mode, Dapr's own names
        (which keep Dapr's spelling, counters without `_total`, so Dapr's dashboards work)."""
        text = render_prometheus(self._app.stats, self._app.telemetry)
        if self._app.sidecar is not None:
            text += self._app.sidecar.metrics.render()
        return reply(200, text.encode(), PROMETHEUS)

    def _prometheus(self, params: dict[str, list[str]]) -> Response:
        body = render_prometheus(self._app.stats, self._app.telemetry).encode()
        return reply(200, body, PROMETHEUS)

    def _clusters(self, params: dict[str, list[str]]) -> Response:
        return clusters_reply(self._app.clusters.snapshot(), params)

    def _config_dump(self, params: dict[str, list[str]]) -> Response:
        body = msgspec.json.format(msgspec.json.encode(to_builtins(self._app.config)), indent=2)
        return reply(200, body + b"\n", JSON)

    def _listeners(self, params: dict[str, list[str]]) -> Response:
        return text_reply(200, "".join(f"{k}::{h}:{p}\n" for k, (h, p) in self.bound.items()))

    def _logging(self, params: dict[str, list[str]]) -> Response:
        if params:
            return text_reply(400, "changing log levels needs POST\n")
        return text_reply(200, logging_levels())

    def _set_logging(self, params: dict[str, list[str]]) -> Response:
        refused = set_logging_levels(params)
        if refused is not None:
            return text_reply(400, refused)
        return self._logging({})

    def _quit(self, params: dict[str, list[str]]) -> Response:
        self._shutdown.set()
        return text_reply(200, "OK\n")
