"""StateStores: the sidecar's named state stores, built from its `state.*` Components."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, cast

import trio

from config.dapr.component import DEFAULT_INIT_TIMEOUT, Component
from config.dapr.duration import parse_go_duration
from filters.backends import BackendKind, BackendType, ComponentInitError, open_all
from filters.dapr.params import metadata_value
from filters.state.keys import IllegalKey, KeyScheme, prefix_for
from filters.state.observe import db_system
from filters.state.store import Feature, StateError, Store

log = logging.getLogger("meshwire.state")

DEFAULT_STORE = "statestore"
ACTOR_FLAG = "actorStateStore"
CLEANUP_INTERVAL = "cleanupInterval"
DEFAULT_CLEANUP_INTERVAL = 3600.0  # seconds; Dapr's SQL stores purge expired rows hourly

# Component type → its backend and, for those on a client library, the metadata checks
# `meshwire validate` runs without importing it (filters/backends.py).
_BACKENDS: dict[str, BackendType] = {
    "state.in-memory": BackendType("filters.state.memory:MemoryStore"),
    "state.sqlite": BackendType("filters.state.sqlite:SqliteStore", takes_data_dir=True),
    "state.redis": BackendType(
        "filters.state.redis:RedisStore", check="filters.state.redis_settings:parse"
    ),
    "state.postgresql": BackendType("filters.state.postgres:PostgresStore"),
    "state.postgres": BackendType("filters.state.postgres:PostgresStore"),
}


class StateStoreInitError(ComponentInitError):
    """A state store could not be built or initialised: start-up stops with this reason."""


STATE_STORES = BackendKind("state store", _BACKENDS, (StateError,), StateStoreInitError)


class _Cleaning(Protocol):
    async def cleanup(self) -> object: ...


class _Background(Protocol):
    async def run(self) -> None: ...


@dataclass(slots=True)
class NamedStore:
    """One initialised store as the API addresses it."""

    name: str
    component: Component
    store: Store
    keys: KeyScheme
    actor: bool = False
    system: str = field(init=False)

    def __post_init__(self) -> None:
        self.system = db_system(self.component.type)

    @property
    def features(self) -> frozenset[Feature]:
        features = frozenset(self.store.features)
        return features | {Feature.ACTOR} if self.actor else features

    @property
    def capabilities(self) -> list[str]:
        """The features as /v1.0/metadata lists them, in a stable order."""
        return [f.value for f in Feature if f in self.features]


def default_component(namespace: str) -> Component:
    """The embedded store when no state Component is given: SQLite in the data directory."""
    return Component(
        name=DEFAULT_STORE,
        namespace=namespace,
        type="state.sqlite",
        version="v1",
        init_timeout=DEFAULT_INIT_TIMEOUT,
        ignore_errors=False,
        metadata={ACTOR_FLAG: "true"},  # state.sqlite's default file: <data_dir>/state.db
        secret_refs={},
        scopes=(),
    )


def is_actor_store(component: Component) -> bool:
    """Whether the Component sets actorStateStore (one store per app may)."""
    flag = metadata_value(component.metadata, ACTOR_FLAG)
    return flag.strip().lower() in ("true", "1", "yes", "y", "on")


class StateStores:
    """The stores by name. Construction only reads the Components; `start` builds and
    initialises each store, `aclose` closes them."""

    def __init__(
        self, components: Sequence[Component], app_id: str, namespace: str, data_dir: Path
    ) -> None:
        wanted = [c for c in components if c.category == "state"]
        self.components: tuple[Component, ...] = tuple(wanted) or (default_component(namespace),)
        self.app_id = app_id
        self.namespace = namespace
        self.data_dir = data_dir
        self._stores: dict[str, NamedStore] = {}
        actors = [c.name for c in self.components if is_actor_store(c)]
        if len(actors) > 1:
            raise ValueError(
                f"only one state store may set {ACTOR_FLAG}: true; found {', '.join(actors)}"
            )

    def get(self, name: str) -> NamedStore | None:
        return self._stores.get(name)

    def __iter__(self) -> Iterator[NamedStore]:
        return iter(self._stores.values())

    def __len__(self) -> int:
        return len(self._stores)

    @property
    def actor_store(self) -> NamedStore | None:
        return next((s for s in self._stores.values() if s.actor), None)

    async def start(self) -> None:
        """Build and initialise every store, in Component order. A failure stops here with
        `state store <name> (<type>): <reason>`, unless the Component has ignoreErrors."""
        self._stores = await open_all(STATE_STORES, self.components, self._open, self.aclose)

    async def _open(self, component: Component) -> NamedStore:
        try:
            prefix = prefix_for(component.metadata, component.name, self.app_id, self.namespace)
        except IllegalKey as exc:
            raise StateStoreInitError(str(exc)) from exc
        store: Store = STATE_STORES.construct(component, self.data_dir)
        await STATE_STORES.initialise(component, store)
        actor = is_actor_store(component)
        return NamedStore(component.name, component, store, KeyScheme(prefix), actor)

    def schedule_cleanup(self, nursery: trio.Nursery) -> None:
        """Purge expired keys periodically in the stores that need it: a store with its own
        background `run` (e.g. PostgreSQL's, coordinated between processes) runs it; one with
        only `cleanup` has it called every cleanup interval."""
        for named in self._stores.values():
            background = getattr(named.store, "run", None)
            if background is not None:
                nursery.start_soon(_background, named.name, cast(_Background, named.store))
                continue
            if getattr(named.store, "cleanup", None) is None:
                continue
            interval = _cleanup_interval(named)
            if interval is not None and interval > 0:
                store = cast(_Cleaning, named.store)
                nursery.start_soon(_cleanup_loop, named.name, store, interval)

    async def aclose(self) -> None:
        stores, self._stores = list(self._stores.values()), {}
        for named in stores:
            await STATE_STORES.close_quietly(named.name, named.store)


def registered_components(
    components: Sequence[Component], stores: StateStores
) -> list[dict[str, object]]:
    """The loaded Components as /v1.0/metadata lists them: state stores with their
    capabilities, and the embedded default store when it stands in for a Component."""
    listed: list[dict[str, object]] = []
    for c in (*components, *(s.component for s in stores if s.component not in components)):
        if c.category == "pubsub":
            continue  # listed with their capabilities by filters/pubsub (S4)
        entry: dict[str, object] = {"name": c.name, "type": c.type, "version": c.version}
        named = stores.get(c.name) if c.category == "state" else None
        if named is not None:
            entry["capabilities"] = named.capabilities
        listed.append(entry)
    return listed


def _cleanup_interval(named: NamedStore) -> float | None:
    """Seconds between cleanups: the store's own `cleanup_interval` when it parsed one from its
    metadata (None: never), else `cleanupInterval` here, hourly by default, negative: never."""
    missing = object()
    own = getattr(named.store, "cleanup_interval", missing)
    if own is not missing:
        return float(own) if isinstance(own, int | float) else None
    raw = named.component.metadata.get(CLEANUP_INTERVAL, "").strip()
    if not raw:
        return DEFAULT_CLEANUP_INTERVAL
    if raw.startswith("-"):
        return None
    try:
        return parse_go_duration(raw)
    except ValueError:
        log.warning("state store %s: bad %s %r", named.name, CLEANUP_INTERVAL, raw)
        return DEFAULT_CLEANUP_INTERVAL


async def _cleanup_loop(name: str, store: _Cleaning, interval: float) -> None:
    while True:
        await trio.sleep(interval)
        try:
            await store.cleanup()
        except (StateError, OSError) as exc:
            log.warning("state store %s: cleanup of expired keys failed: %s", name, exc)


async def _background(name: str, store: _Background) -> None:
    try:
        await store.run()
    except (StateError, OSError) as exc:
        log.warning("state store %s: background work stopped: %s", name, exc)
