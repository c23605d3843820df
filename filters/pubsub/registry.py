"""Brokers by Component type: construction of the backend a `pubsub.*` Component names."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Protocol, cast

from config.dapr.component import DEFAULT_INIT_TIMEOUT, Component
from filters.pubsub.broker import Broker, PubSubError

__all__ = ["BACKENDS", "DEFAULT_PUBSUB", "PubSubInitError", "construct", "default_component"]

DEFAULT_PUBSUB = "pubsub"

# Component type → (module, class, whether its factory takes `data_dir`). Imported only when a
# Component asks for the type, so a backend whose client is missing fails that Component alone.
BACKENDS: dict[str, tuple[str, str, bool]] = {
    "pubsub.in-memory": ("filters.pubsub.memory", "MemoryBroker", False),
    "pubsub.sqlite": ("filters.pubsub.sqlite", "SqliteBroker", True),
    "pubsub.redis": ("filters.pubsub.redis", "RedisBroker", False),
    "pubsub.jetstream": ("filters.pubsub.jetstream", "JetStreamBroker", False),
    "pubsub.rabbitmq": ("filters.pubsub.rabbitmq", "RabbitMQBroker", False),
    "pubsub.mqtt3": ("filters.pubsub.mqtt", "MqttBroker", False),
}


class PubSubInitError(Exception):
    """A broker could not be built or initialised: start-up stops with this reason."""


class _Factory(Protocol):
    def __call__(self, component: Component, /, **options: object) -> Broker: ...


def default_component(namespace: str) -> Component:
    """The embedded broker when no pub/sub Component is given: SQLite in the data directory."""
    return Component(
        name=DEFAULT_PUBSUB,
        namespace=namespace,
        type="pubsub.sqlite",
        version="v1",
        init_timeout=DEFAULT_INIT_TIMEOUT,
        ignore_errors=False,
        metadata={},  # pubsub.sqlite's default file: <data_dir>/pubsub.db
        secret_refs={},
        scopes=(),
    )


def construct(component: Component, data_dir: Path) -> Broker:
    """The (not yet initialised) broker `component` names."""
    backend = BACKENDS.get(component.type)
    if backend is None:
        known = ", ".join(sorted(BACKENDS))
        raise PubSubInitError(f"unknown pub/sub type {component.type!r}; one of {known}")
    module_name, class_name, takes_data_dir = backend
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise PubSubInitError(f"backend {module_name} is not available: {exc}") from exc
    factory = cast(_Factory, getattr(module, class_name).from_component)
    options: dict[str, object] = {"data_dir": data_dir} if takes_data_dir else {}
    try:
        return factory(component, **options)
    except (PubSubError, ValueError) as exc:
        raise PubSubInitError(str(exc)) from exc
