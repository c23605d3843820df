"""PubSubs: the sidecar's named brokers, built from its `pubsub.*` Components, and topic scopes."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from config.dapr.component import Component
from filters.backends import open_all
from filters.dapr.params import metadata_value
from filters.pubsub.broker import Broker, Feature
from filters.pubsub.registry import BROKERS, construct, default_component

__all__ = ["NamedPubSub", "PubSubs", "TopicScopes"]


def _meta(component: Component, key: str) -> str:
    return metadata_value(component.metadata, key).strip()


def _topics(text: str) -> frozenset[str]:
    return frozenset(t.strip() for t in text.split(",") if t.strip())


def _app_scopes(text: str) -> dict[str, frozenset[str]]:
    """`app1=t1,t2;app2=` → {app1: {t1, t2}, app2: {}} (an app with no topics may use none)."""
    scopes: dict[str, frozenset[str]] = {}
    for part in text.split(";"):
        app, sep, topics = part.partition("=")
        if sep and app.strip():
            scopes[app.strip()] = _topics(topics)
    return scopes


@dataclass(frozen=True, slots=True)
class TopicScopes:
    """Dapr's topic scoping metadata: allowedTopics, protectedTopics, publishingScopes and
    subscriptionScopes (pkg/runtime/pubsub IsOperationAllowed)."""

    allowed: frozenset[str]
    protected: frozenset[str]
    publishing: Mapping[str, frozenset[str]]
    subscribing: Mapping[str, frozenset[str]]

    @classmethod
    def from_component(cls, component: Component) -> TopicScopes:
        return cls(
            allowed=_topics(_meta(component, "allowedTopics")),
            protected=_topics(_meta(component, "protectedTopics")),
            publishing=_app_scopes(_meta(component, "publishingScopes")),
            subscribing=_app_scopes(_meta(component, "subscriptionScopes")),
        )

    def may_publish(self, app_id: str, topic: str) -> bool:
        return self._allowed(topic, self.publishing.get(app_id))

    def may_subscribe(self, app_id: str, topic: str) -> bool:
        return self._allowed(topic, self.subscribing.get(app_id))

    def _allowed(self, topic: str, scoped: frozenset[str] | None) -> bool:
        if self.allowed and topic not in self.allowed:
            return False
        if topic in self.protected and (scoped is None or topic not in scoped):
            return False
        return scoped is None or topic in scoped


@dataclass(slots=True)
class NamedPubSub:
    """One initialised broker as the API addresses it."""

    name: str
    component: Component
    broker: Broker
    consumer_id: str  # the consumer group of this app's subscriptions
    scopes: TopicScopes

    @property
    def features(self) -> frozenset[Feature]:
        return frozenset(self.broker.features)

    @property
    def capabilities(self) -> list[str]:
        return [f.value for f in Feature if f in self.features]


def consumer_id(component: Component, app_id: str, namespace: str) -> str:
    """`consumerID` with Dapr's templates ({appID}, {namespace}, {uuid}); the app id by default."""
    raw = _meta(component, "consumerID") or app_id
    return (
        raw.replace("{appID}", app_id)
        .replace("{namespace}", namespace)
        .replace("{uuid}", str(uuid.uuid4()))
    )


class PubSubs:
    """The brokers by name. Construction only reads the Components; `start` builds and
    initialises each broker (the embedded SQLite one when no Component names a broker)."""

    def __init__(
        self, components: Sequence[Component], app_id: str, namespace: str, data_dir: Path
    ) -> None:
        wanted = [c for c in components if c.category == "pubsub"]
        self.components: tuple[Component, ...] = tuple(wanted) or (default_component(namespace),)
        self.app_id = app_id
        self.namespace = namespace
        self.data_dir = data_dir
        self._brokers: dict[str, NamedPubSub] = {}

    def get(self, name: str) -> NamedPubSub | None:
        return self._brokers.get(name)

    def __iter__(self) -> Iterator[NamedPubSub]:
        return iter(self._brokers.values())

    def __len__(self) -> int:
        return len(self._brokers)

    async def start(self) -> None:
        """Build and initialise every broker in Component order; a failure stops start-up with
        `pubsub <name> (<type>): <reason>` unless the Component has ignoreErrors."""
        self._brokers = await open_all(BROKERS, self.components, self._open, self.aclose)

    async def _open(self, component: Component) -> NamedPubSub:
        broker = await BROKERS.initialise(component, construct(component, self.data_dir))
        return NamedPubSub(
            component.name,
            component,
            broker,
            consumer_id(component, self.app_id, self.namespace),
            TopicScopes.from_component(component),
        )

    async def aclose(self) -> None:
        brokers, self._brokers = list(self._brokers.values()), {}
        for named in brokers:
            await BROKERS.close_quietly(named.name, named.broker)


def pubsub_components(pubsubs: PubSubs) -> list[dict[str, object]]:
    """The brokers as /v1.0/metadata lists them, with capabilities (the embedded default one
    too, when it stands in for a Component)."""
    return [
        {
            "name": named.name,
            "type": named.component.type,
            "version": named.component.version,
            "capabilities": named.capabilities,
        }
        for named in pubsubs
    ]
