"""Dapr API terminals: the app-facing HTTP API and the sidecar-to-sidecar entry."""
