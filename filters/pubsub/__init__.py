"""Dapr pub/sub: CloudEvents envelopes, brokers, subscriptions and at-least-once delivery."""
