"""One store operation observed: a database CLIENT span under the request's span, Dapr's metrics."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from opentelemetry.util.types import AttributeValue

from exporters.dapr_metrics import DaprMetrics
from filters.tracing.state import RequestTrace

T = TypeVar("T")

DB_SYSTEM_NAME = "db.system.name"
DB_OPERATION_NAME = "db.operation.name"
DB_NAMESPACE = "db.namespace"
DB_BATCH_SIZE = "db.operation.batch.size"
ERROR_TYPE = "error.type"
COMPONENT_NAME = "meshwire.dapr.component"  # the store's Component name, as Dapr labels it

# Component type → the semconv `db.system.name` (in-memory has no registered value).
_DB_SYSTEMS = {
    "state.sqlite": "sqlite",
    "state.redis": "redis",
    "state.postgresql": "postgresql",
    "state.postgres": "postgresql",
    "state.in-memory": "in-memory",
}


def db_system(component_type: str) -> str:
    return _DB_SYSTEMS.get(component_type, component_type.removeprefix("state."))


class Observer:
    """Wraps store calls of one sidecar: every call is timed into
    `dapr_component_state_{count,latencies}`; a call made for a sampled request also gets a
    CLIENT span `<operation> <store>` whose parent is the request's SERVER span."""

    def __init__(self, metrics: DaprMetrics, namespace: str) -> None:
        self.metrics = metrics
        self.namespace = namespace

    async def call(
        self,
        store: str,
        system: str,
        operation: str,
        trace: RequestTrace | None,
        work: Callable[[], Awaitable[T]],
        batch: int | None = None,
    ) -> T:
        span = None
        if trace is not None and trace.sampled:
            attributes: dict[str, AttributeValue] = {
                DB_SYSTEM_NAME: system,
                DB_OPERATION_NAME: operation,
                DB_NAMESPACE: store,
                COMPONENT_NAME: store,
            }
            if batch is not None and batch > 1:
                attributes[DB_BATCH_SIZE] = batch
            _, span = trace.client_span(f"{operation} {store}", attributes)
        started = time.monotonic()
        try:
            result = await work()
        except BaseException as exc:
            self._record(store, operation, False, started)
            if span is not None:
                span.set_attribute(ERROR_TYPE, type(exc).__name__)
                span.set_error(str(exc) or None)
                span.end()
            raise
        self._record(store, operation, True, started)
        if span is not None:
            span.end()
        return result

    def _record(self, store: str, operation: str, success: bool, started: float) -> None:
        elapsed = (time.monotonic() - started) * 1000
        self.metrics.state(store, self.namespace, operation, success, elapsed)
