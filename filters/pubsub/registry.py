"""Brokers by Component type: construction of the backend a `pubsub.*` Component names."""

from __future__ import annotations

from pathlib import Path

from config.dapr.component import DEFAULT_INIT_TIMEOUT, Component
from filters.backends import BackendKind, BackendType, ComponentInitError
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

# Component type → its backend and, for those on a client library, the metadata checks
# `meshwire validate` runs without importing it (filters/backends.py).
BACKENDS: dict[str, BackendType] = {
    "pubsub.in-memory": BackendType("filters.pubsub.memory:MemoryBroker"),
    "pubsub.sqlite": BackendType("filters.pubsub.sqlite:SqliteBroker", takes_data_dir=True),
    "pubsub.redis": BackendType(
        "filters.pubsub.redis:RedisBroker",
        check="filters.pubsub.redis_settings:RedisPubSubSettings.parse",
    ),
    "pubsub.jetstream": BackendType(
        "filters.pubsub.jetstream:JetStreamBroker",
        check="filters.pubsub.jetstream_settings:parse",
    ),
    "pubsub.rabbitmq": BackendType(
        "filters.pubsub.rabbitmq:RabbitMQBroker", check="filters.pubsub.rabbitmq_settings:parse"
    ),
    "pubsub.mqtt3": BackendType(
        "filters.pubsub.mqtt:MqttBroker", check="filters.pubsub.mqtt_settings:parse"
    ),
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
