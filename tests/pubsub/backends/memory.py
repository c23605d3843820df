"""pubsub.in-memory in the conformance suites: nothing to reach, nothing durable."""

from tests.pubsub.brokers import BrokerFactory

FACTORY = BrokerFactory(
    name="memory",
    type="pubsub.in-memory",
    metadata=lambda tmp_path: {},
    durable=False,
    shared=False,
)
