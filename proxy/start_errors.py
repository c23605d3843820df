"""What stops `meshwire run` from starting, and the one line each reason is shown as."""

from __future__ import annotations

from collections.abc import Sequence

from filters.backends import ComponentInitError
from proxy.bind import BindError
from proxy.reasons import os_reason
from proxy.sidecar.child import AppStartError


class StartError(Exception):
    """Start-up could not open something it needs (a file, a directory): one line each."""

    def __init__(self, reasons: Sequence[str]) -> None:
        self.reasons = list(reasons)
        super().__init__("; ".join(self.reasons))


class ReportedStartError(Exception):
    """Start-up failed in a worker process, which said why in lines of its own."""

    def __init__(self, lines: Sequence[str]) -> None:
        self.lines = list(lines)
        super().__init__("; ".join(self.lines))


# What cannot start (a port, a state store, a broker, the app, a worker) ends start-up with
# its reason; anything else is a bug and keeps its traceback.
START_ERRORS = (BindError, ComponentInitError, StartError, AppStartError, ReportedStartError)


def start_reason(exc: BaseException) -> str:
    """An OSError (a file start-up needed) as `PATH: reason`; anything else as its message."""
    if not isinstance(exc, OSError):
        return str(exc)
    return f"{exc.filename}: {os_reason(exc)}" if exc.filename else os_reason(exc)


def explain(failure: BaseException, origins: dict[str, str]) -> list[str]:
    """The lines (one per reason) a start-up failure is shown as; `origins` says where each
    listener's address was set (a flag, or a path in the config file)."""
    if isinstance(failure, BindError):
        return [f"{origins.get(failure.name, f'listener {failure.name}')}: {failure}"]
    if isinstance(failure, StartError):
        return [f"meshwire: cannot start: {reason}" for reason in failure.reasons]
    if isinstance(failure, ReportedStartError):
        return failure.lines
    return [f"meshwire: {failure}"]


def leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    """Every exception in a (nested) group, in order."""
    found: list[BaseException] = []
    for exc in group.exceptions:
        found.extend(leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return found


def start_failure_lines(
    group: BaseExceptionGroup[BaseException], origins: dict[str, str]
) -> list[str] | None:
    """The lines a failed start-up is shown as; None when the group holds anything else (a
    bug, whose traceback must not be lost)."""
    failed, rest = group.split(START_ERRORS)
    if failed is None or rest is not None:
        return None
    lines = [line for exc in leaves(failed) for line in explain(exc, origins)]
    return list(dict.fromkeys(lines))  # workers failing alike: each reason once
