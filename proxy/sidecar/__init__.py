"""Dapr mode: the sidecar's runtime state, peers and options."""
