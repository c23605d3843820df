"""The brokers the pub/sub suites run on, as fixtures by what a test needs of them; and the
shared services left as found (the streams and keys of the suites' test topics purged)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.pubsub.brokers import BrokerFactory, factories
from tests.pubsub.cleanup import purge_test_topics

FACTORIES = factories()
SHARED = [f for f in FACTORIES if f.shared]  # separate sidecars reach the same topics
SHARED_DURABLE = [f for f in SHARED if f.durable]


@pytest.fixture(scope="session", autouse=True)
def _purged_shared_services() -> Iterator[None]:
    """Before the session (one that was interrupted leaves streams behind) and after it."""
    purge_test_topics()
    yield
    purge_test_topics()


def _require(request: pytest.FixtureRequest) -> BrokerFactory:
    """The parameter, once its service is known to be there (skip, or in CI fail, if not)."""
    chosen: BrokerFactory = request.param
    chosen.require()
    return chosen


@pytest.fixture(params=FACTORIES, ids=str)
def factory(request: pytest.FixtureRequest) -> BrokerFactory:
    return _require(request)


@pytest.fixture(params=[f for f in FACTORIES if f.ordered], ids=str)
def ordered_factory(request: pytest.FixtureRequest) -> BrokerFactory:
    return _require(request)


@pytest.fixture(params=[f for f in FACTORIES if f.durable], ids=str)
def durable_factory(request: pytest.FixtureRequest) -> BrokerFactory:
    return _require(request)


@pytest.fixture(params=SHARED, ids=str)
def shared_factory(request: pytest.FixtureRequest) -> BrokerFactory:
    return _require(request)


@pytest.fixture(params=SHARED_DURABLE, ids=str)
def shared_durable_factory(request: pytest.FixtureRequest) -> BrokerFactory:
    return _require(request)


@pytest.fixture(params=[f for f in SHARED_DURABLE if f.private is not None], ids=str)
def restartable_factory(request: pytest.FixtureRequest) -> BrokerFactory:
    return _require(request)
