"""The supervisor's admin port: the single-process endpoints, answered for all workers at once."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qs, urlencode

import msgspec
import trio

from config.schema import to_builtins
from proxy.admin.handler import logging_levels, set_logging_levels
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
from proxy.stats import typed_items
from proxy.version import VERSION
from proxy.workers.group import Slot, WorkerGroup
from proxy.workers.merge import (
    Typed,
    counters_only,
    counting_part,
    sum_clusters,
    sum_expositions,
    sum_stats,
)
from proxy.workers.retired import Retired
from proxy.workers.scrape import ScrapeError, fetch

SCRAPE_TIMEOUT = 5.0  # seconds for every worker to answer one admin request

Params = dict[str, list[str]]
Endpoint = Callable[[Params], Awaitable[Response]]


class Unanswered(Exception):
    """A running worker did not answer: the sum would be short, so none is given."""


class SupervisorAdmin:
    """Stats, /stats/prometheus and /metrics summed over the workers (and this process's own
    admin counters), /clusters merged, /ready LIVE only while every worker is; `?worker=N`
    on a GET shows that worker's own answer. Mutations are POST-only, as in Envoy."""

    def __init__(
        self,
        app: App,
        shutdown: trio.Event,
        draining: trio.Event,
        *,
        group: WorkerGroup,
        listeners: dict[str, tuple[str, int]],
    ) -> None:
        self._app = app
        self._shutdown = shutdown
        self._draining = draining
        self._group = group
        self._listeners = listeners
        self.bound: dict[str, tuple[str, int]] = {}
        # What workers that died had counted, per endpoint: the sums never go down.
        self._retired_stats: Retired[Typed] = Retired(counters_only, sum_stats)
        self._retired_texts: dict[str, Retired[str]] = {}
        self._get: dict[bytes, Endpoint] = {
            b"/": self._index,
            b"/ready": self._ready,
            b"/server_info": self._server_info,
            b"/stats": self._stats,
            b"/stats/prometheus": self._prometheus,
            b"/metrics": self._metrics,
            b"/clusters": self._clusters,
            b"/config_dump": self._config_dump,
            b"/listeners": self._listeners_list,
            b"/logging": self._logging,
        }
        self._post: dict[bytes, Endpoint] = {
            b"/quitquitquit": self._quit,
            b"/logging": self._set_logging,
        }

    async def __call__(self, request: Request, /) -> Response:
        await request.body.aclose()
        path, _, query = request.target.partition(b"?")
        params = parse_qs(query.decode("latin-1"), keep_blank_values=True)
        try:
            if request.method in (b"GET", b"HEAD"):
                if "worker" in params and path in self._get:
                    return await self._one_worker(path.decode("latin-1"), params)
                get = self._get.get(path)
                if get is not None:
                    return await get(params)
                if path in self._post:
                    return text_reply(400, "this admin endpoint needs POST\n")
            elif request.method == b"POST":
                post = self._post.get(path) or self._get.get(path)
                if post is not None:
                    return await post(params)
            else:
                return text_reply(405, "method not allowed\n")
        except Unanswered as exc:
            return text_reply(503, f"{exc}\n")
        return text_reply(404, "unknown admin endpoint; see /\n")

    @property
    def _state(self) -> str:
        if self._draining.is_set() or self._shutdown.is_set():
            return "DRAINING"
        return "LIVE" if self._group.ready else "INITIALIZING"

    async def _gather(self, target: str, method: str = "GET") -> dict[int, tuple[int, bytes]]:
        """Every running worker's answer to `target` (slot → (pid, body)); Unanswered when one
        that runs does not answer in time (a worker restarting is not running)."""
        slots = [slot for slot in self._group.slots if slot.ready]
        answers: dict[int, tuple[int, bytes]] = {}
        failures: dict[int, str] = {}

        async def ask(slot: Slot) -> None:
            if slot.process is None:
                return
            pid = slot.process.pid
            try:
                status, _, body = await fetch(slot.admin_path, target, method)
            except ScrapeError as exc:
                failures[slot.index] = str(exc)
                return
            if status != 200:
                failures[slot.index] = f"{status} for {target}"
                return
            answers[slot.index] = (pid, body)

        with trio.move_on_after(SCRAPE_TIMEOUT):
            async with trio.open_nursery() as nursery:
                for slot in slots:
                    nursery.start_soon(ask, slot)
        for slot in slots:
            if slot.index not in answers:
                failures.setdefault(slot.index, f"no answer within {SCRAPE_TIMEOUT:g}s")
        if failures:
            raise Unanswered("; ".join(f"worker {i}: {why}" for i, why in sorted(failures.items())))
        return answers

    async def _one_worker(self, path: str, params: Params) -> Response:
        number = params.pop("worker")[0]
        slots = self._group.slots
        if not number.isdigit() or int(number) >= len(slots):
            return text_reply(400, f"worker must be 0 to {len(slots) - 1}, got {number!r}\n")
        slot = slots[int(number)]
        if not slot.ready:
            return text_reply(503, f"worker {slot.index} is not running\n")
        target = path + ("?" + urlencode(params, doseq=True) if params else "")
        try:
            with trio.fail_after(SCRAPE_TIMEOUT):
                status, content_type, body = await fetch(slot.admin_path, target)
        except (ScrapeError, trio.TooSlowError) as exc:
            return text_reply(503, f"worker {slot.index}: {exc or 'no answer'}\n")
        return reply(status, body, content_type or JSON)

    async def _index(self, params: Params) -> Response:
        names = sorted({p.decode() for p in self._get} | {p.decode() for p in self._post})
        return text_reply(200, "meshwire admin\n" + "".join(f"  {n}\n" for n in names))

    async def _ready(self, params: Params) -> Response:
        state = self._state
        return text_reply(200 if state == "LIVE" else 503, state + "\n")

    async def _server_info(self, params: Params) -> Response:
        workers = [
            {
                "index": slot.index,
                "pid": slot.process.pid if slot.process is not None else None,
                "ready": slot.ready,
                "restarts": slot.restarts,
            }
            for slot in self._group.slots
        ]
        return json_reply(
            200,
            {
                "version": VERSION,
                "state": self._state,
                "uptime_seconds": round(time.time() - self._app.started_at, 3),
                "pid": os.getpid(),
                "command_line": sys.argv,
                "drain_timeout_seconds": float(self._app.config.drain_timeout),
                "listeners": {k: f"{h}:{p}" for k, (h, p) in self._addresses().items()},
                "concurrency": len(workers),
                "workers": workers,
            },
        )

    async def _stats(self, params: Params) -> Response:
        if params.get("format", ["text"])[0] == "prometheus":
            return await self._prometheus(params)
        fresh = {
            index: (pid, [(s["name"], s["value"], s["type"]) for s in json.loads(body)["stats"]])
            for index, (pid, body) in (await self._gather("/stats?format=json&types")).items()
        }
        own = typed_items(self._app.stats)  # this process's admin counters
        lists = [own, *self._retired_stats.answers(self._group.slots, fresh)]
        return stats_reply([(name, value) for name, value, _ in sum_stats(lists)], params)

    async def _prometheus(self, params: Params) -> Response:
        return await self._exposition("/stats/prometheus")

    async def _metrics(self, params: Params) -> Response:
        return await self._exposition("/metrics")

    async def _exposition(self, target: str) -> Response:
        own = render_prometheus(self._app.stats)  # this process's admin counters
        fresh = {i: (pid, body.decode()) for i, (pid, body) in (await self._gather(target)).items()}
        retired = self._retired_texts.setdefault(target, Retired(counting_part, sum_expositions))
        texts = [own, *retired.answers(self._group.slots, fresh)]
        return reply(200, sum_expositions(texts).encode(), PROMETHEUS)

    async def _clusters(self, params: Params) -> Response:
        snapshots = [
            json.loads(body)["cluster_statuses"]
            for _, body in (await self._gather("/clusters?format=json")).values()
        ]
        return clusters_reply(sum_clusters(snapshots), params)

    async def _config_dump(self, params: Params) -> Response:
        body = msgspec.json.format(msgspec.json.encode(to_builtins(self._app.config)), indent=2)
        return reply(200, body + b"\n", JSON)

    async def _listeners_list(self, params: Params) -> Response:
        lines = "".join(f"{k}::{h}:{p}\n" for k, (h, p) in self._addresses().items())
        return text_reply(200, lines)

    async def _logging(self, params: Params) -> Response:
        if params:
            return text_reply(400, "changing log levels needs POST\n")
        return text_reply(200, logging_levels())

    async def _set_logging(self, params: Params) -> Response:
        refused = set_logging_levels(params)
        if refused is not None:
            return text_reply(400, refused)
        await self._gather("/logging?" + urlencode(params, doseq=True), method="POST")
        return text_reply(200, logging_levels())

    async def _quit(self, params: Params) -> Response:
        self._shutdown.set()
        return text_reply(200, "OK\n")

    def _addresses(self) -> dict[str, tuple[str, int]]:
        return {**self._listeners, **self.bound}
