"""Leave the shared services as found: purge the streams and keys of the suites' test topics."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.pubsub.cleanup import purge_test_topics


@pytest.fixture(scope="session", autouse=True)
def _purged_shared_services() -> Iterator[None]:
    """Before the session (one that was interrupted leaves streams behind) and after it."""
    purge_test_topics()
    yield
    purge_test_topics()
