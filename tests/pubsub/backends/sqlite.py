"""pubsub.sqlite in the conformance suites: a file per test, shared by the broker objects."""

from tests.pubsub.brokers import BrokerFactory

FACTORY = BrokerFactory(
    name="sqlite",
    type="pubsub.sqlite",
    metadata=lambda tmp_path: {
        "connectionString": str(tmp_path / "pubsub.db"),
        "processingTimeout": "2s",
        "pollInterval": "50ms",
    },
    durable=True,
    shared=True,
    ordered=True,
    native_ttl=True,
    private=None,
    extra={"redelivery": "a failed message after 0.1 s doubling to 5 s; a lost one after 2 s"},
)
