"""The admin port: readiness, server info, stats (text, JSON, Prometheus), clusters, config dump."""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable
from urllib.parse import parse_qs

import msgspec
import trio

from config.schema import to_builtins
from proxy.admin.prometheus import render as render_prometheus
from proxy.app import App
from proxy.http.model import BytesBody, Request, Response
from proxy.version import VERSION

_JSON = b"application/json"
_LEVELS = frozenset({"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"})
_TEXT = b"text/plain; charset=utf-8"


def _reply(status: int, body: bytes, content_type: bytes) -> Response:
    return Response(
        status,
        [(b"content-type", content_type), (b"content-length", str(len(body)).encode())],
        BytesBody(body),
    )


def _json(status: int, value: object) -> Response:
    return _reply(status, json.dumps(value, indent=2).encode() + b"\n", _JSON)


def _text(status: int, text: str) -> Response:
    return _reply(status, text.encode(), _TEXT)


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
                return _text(400, "this admin endpoint needs POST\n")
        elif request.method == b"POST":
            post = self._post.get(path) or self._get.get(path)
            if post is not None:
                return post(params)
        else:
            return _text(405, "method not allowed\n")
        return _text(404, "unknown admin endpoint; see /\n")

    @property
    def _state(self) -> str:
        return "DRAINING" if self._draining.is_set() or self._shutdown.is_set() else "LIVE"

    def _index(self, params: dict[str, list[str]]) -> Response:
        names = sorted({p.decode() for p in self._get} | {p.decode() for p in self._post})
        return _text(200, "meshwire admin\n" + "".join(f"  {n}\n" for n in names))

    def _ready(self, params: dict[str, list[str]]) -> Response:
        state = self._state
        return _text(200 if state == "LIVE" else 503, state + "\n")

    def _server_info(self, params: dict[str, list[str]]) -> Response:
        return _json(
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
        fmt = params.get("format", ["text"])[0]
        if fmt == "prometheus":
            return self._prometheus(params)
        pattern = params.get("filter", [None])[0]
        try:
            regex = re.compile(pattern) if pattern else None
        except re.error as exc:
            return _text(400, f"bad filter regex: {exc}\n")
        used_only = "usedonly" in params
        items = [(c.name, c.value) for c in self._app.stats.counters()]
        items += [(g.name, g.value) for g in self._app.stats.gauges()]
        items = [
            (n, v)
            for n, v in sorted(items)
            if (regex is None or regex.search(n)) and (not used_only or v)
        ]
        if fmt == "json":
            return _json(200, {"stats": [{"name": n, "value": v} for n, v in items]})
        return _text(200, "".join(f"{n}: {v}\n" for n, v in items))

    def _metrics(self, params: dict[str, list[str]]) -> Response:
        """Where Dapr's scrapers look: our families plus, in sidecar mode, Dapr's own names
        (which keep Dapr's spelling, counters without `_total`, so Dapr's dashboards work)."""
        text = render_prometheus(self._app.stats, self._app.telemetry)
        if self._app.sidecar is not None:
            text += self._app.sidecar.metrics.render()
        return _reply(200, text.encode(), b"text/plain; version=0.0.4; charset=utf-8")

    def _prometheus(self, params: dict[str, list[str]]) -> Response:
        body = render_prometheus(self._app.stats, self._app.telemetry).encode()
        return _reply(200, body, b"text/plain; version=0.0.4; charset=utf-8")

    def _clusters(self, params: dict[str, list[str]]) -> Response:
        snapshot = self._app.clusters.snapshot()
        if params.get("format", [""])[0] == "json":
            return _json(200, {"cluster_statuses": snapshot})
        lines: list[str] = []
        for cluster in snapshot:
            name = cluster.get("name")
            hosts = cluster.get("hosts", [])
            assert isinstance(hosts, list)
            for host in hosts:
                address = host.get("address")
                for key, value in host.items():
                    if key != "address":
                        lines.append(f"{name}::{address}::{key}::{value}\n")
        return _text(200, "".join(lines))

    def _config_dump(self, params: dict[str, list[str]]) -> Response:
        body = msgspec.json.format(msgspec.json.encode(to_builtins(self._app.config)), indent=2)
        return _reply(200, body + b"\n", _JSON)

    def _listeners(self, params: dict[str, list[str]]) -> Response:
        return _text(200, "".join(f"{k}::{h}:{p}\n" for k, (h, p) in self.bound.items()))

    def _logging(self, params: dict[str, list[str]]) -> Response:
        if params:
            return _text(400, "changing log levels needs POST\n")
        loggers = [
            "meshwire",
            *sorted(n for n in logging.root.manager.loggerDict if n.startswith("meshwire.")),
        ]
        lines = [
            f"{name}: {logging.getLevelName(logging.getLogger(name).getEffectiveLevel()).lower()}\n"
            for name in loggers
        ]
        return _text(200, "".join(lines))

    def _set_logging(self, params: dict[str, list[str]]) -> Response:
        """POST /logging?level=debug (all of meshwire) or ?paths=meshwire.server:debug,..."""
        changes: list[tuple[str, str]] = []
        if "level" in params:
            changes.append(("meshwire", params["level"][0]))
        for item in ",".join(params.get("paths", [])).split(","):
            if item:
                name, _, level = item.partition(":")
                changes.append((name.strip(), level.strip()))
        if not changes:
            return _text(400, "give ?level=LEVEL or ?paths=logger:LEVEL,...\n")
        for name, level in changes:
            if level.upper() not in _LEVELS:
                return _text(
                    400, f"unknown level {level!r}; one of {', '.join(sorted(_LEVELS)).lower()}\n"
                )
            if not (name == "meshwire" or name.startswith("meshwire.")):
                return _text(
                    400, f"unknown logger {name!r}; meshwire's loggers start with meshwire\n"
                )
        for name, level in changes:
            logging.getLogger(name).setLevel(level.upper())
        return self._logging({})

    def _quit(self, params: dict[str, list[str]]) -> Response:
        self._shutdown.set()
        return _text(200, "OK\n")
