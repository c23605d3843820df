"""A Component's backend: imported by type, initialised within initTimeout, closed on failure."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import trio

from config.dapr.component import DEFAULT_INIT_TIMEOUT, Component

__all__ = ["Backend", "BackendKind", "BackendType", "ComponentInitError", "open_all"]

log = logging.getLogger("meshwire.components")

T = TypeVar("T")
B = TypeVar("B", bound="Backend")


class ComponentInitError(Exception):
    """A Component's backend could not be built or initialised: start-up stops with this."""


class Backend(Protocol):
    async def init(self) -> None: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True)
class BackendType:
    """Where one Component type's backend lives, as "module:name" strings resolved on first
    use, so a process imports only the client libraries its Components name (and a missing
    one fails that Component alone).

    `factory` is the class whose `from_component` builds the backend. `check`, when given, is
    a function (or a "module:Class.method") that reads the Component's metadata exactly as
    `from_component` does, from a module that imports no client library: `meshwire validate`
    runs it instead of building the backend. Without it the backend itself is built: the
    stdlib-only ones, and state.postgresql, whose connection string only libpq (psycopg) reads
    as start-up would.
    """

    factory: str
    takes_data_dir: bool = False
    check: str | None = None


@dataclass(frozen=True)
class BackendKind:
    """One building block's backends by Component type. `errors` are the failures that mean
    "this backend cannot start" (anything else is a bug and propagates)."""

    label: str  # "state store", "pubsub"
    types: Mapping[str, BackendType]
    errors: tuple[type[Exception], ...]
    fail: type[ComponentInitError]

    def construct(self, component: Component, data_dir: Path) -> Any:
        """The (not yet initialised) backend `component` names."""
        found = self._type(component)
        options: dict[str, object] = {"data_dir": data_dir} if found.takes_data_dir else {}
        factory = self._resolve(found.factory)
        refused: tuple[type[Exception], ...] = (*self.errors, ValueError)
        try:
            return factory.from_component(component, **options)
        except refused as exc:
            raise self.fail(str(exc)) from exc

    def check(self, component: Component, data_dir: Path) -> None:
        """What `construct` would refuse `component` for, without importing its client library
        when the type declares a `check`."""
        found = self._type(component)
        if found.check is None:
            self.construct(component, data_dir)
            return
        check = self._resolve(found.check)
        refused: tuple[type[Exception], ...] = (*self.errors, ValueError)
        try:
            check(component)
        except refused as exc:
            raise self.fail(str(exc)) from exc

    def _type(self, component: Component) -> BackendType:
        found = self.types.get(component.type)
        if found is None:
            known = ", ".join(sorted(self.types))
            raise self.fail(f"unknown {self.label} type {component.type!r}; one of {known}")
        return found

    def _resolve(self, target: str) -> Any:
        module_name, _, path = target.partition(":")
        try:
            found: Any = importlib.import_module(module_name)
        except ImportError as exc:
            raise self.fail(f"backend {module_name} is not available: {exc}") from exc
        for name in path.split("."):
            found = getattr(found, name)
        return found

    async def initialise(self, component: Component, backend: B) -> B:
        """`backend.init()` within the Component's initTimeout; on failure it is closed and
        `fail` raised with the reason."""
        timeout = component.init_timeout or DEFAULT_INIT_TIMEOUT
        refused: tuple[type[Exception], ...] = (*self.errors, OSError, ValueError)
        try:
            with trio.fail_after(timeout):
                await backend.init()
        except trio.TooSlowError:
            reason = f"init timed out after {timeout:g}s"
        except refused as exc:
            reason = str(exc) or type(exc).__name__
        except BaseException:
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                await self.close_quietly(component.name, backend)
            raise
        else:
            return backend
        with trio.CancelScope(shield=True), trio.move_on_after(2):
            await self.close_quietly(component.name, backend)
        raise self.fail(reason)

    async def close_quietly(self, name: str, backend: Backend) -> None:
        failures: tuple[type[Exception], ...] = (*self.errors, OSError)
        try:
            await backend.aclose()
        except failures as exc:
            log.warning("%s %s: close failed: %s", self.label, name, exc)


async def open_all(
    kind: BackendKind,
    components: Sequence[Component],
    open_one: Callable[[Component], Awaitable[T]],
    abort: Callable[[], Awaitable[None]],
) -> dict[str, T]:
    """Every Component opened in order. A failure stops here with `<label> <name> (<type>):
    <reason>` after `abort()` closed what was opened, unless the Component has ignoreErrors."""
    opened: dict[str, T] = {}
    for component in components:
        try:
            opened[component.name] = await open_one(component)
        except kind.fail as exc:
            message = f"{kind.label} {component.name} ({component.type}): {exc}"
            if not component.ignore_errors:
                await abort()
                raise kind.fail(message) from exc
            log.warning("%s; ignored (ignoreErrors)", message)
            continue
        log.info("%s %s (%s) is ready", kind.label, component.name, component.type)
    return opened
