"""Dapr state management: the Store protocol, its backends and the API terminals."""
