"""Brokers by Component type: construction of the backend a `pubsub.*` Component names."""

from __future__ import annotations

from pathlib import Path

from config.dapr.component import DEFAULT_INIT_TIMEOUT, Component
from filters.backends import BackendKind, ComponentInitError
from filters.pubsub.broker import Broker, PubSubError

__all__ = [
    "BACKENDS",
    "BROKERS",
    "DEFAULT_PUBSUB",
    "PubSubInitError",
    "construct",
    "default_component",
]

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


class PubSubInitError(ComponentInitError):
    """A broker could not be built or initialised: start-up stops with this reason."""


BROKERS = BackendKind("pubsub", BACKENDS, (PubSubError,), PubSubInitError)


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
    broker: Broker = BROKERS.construct(component, data_dir)
    return broker
