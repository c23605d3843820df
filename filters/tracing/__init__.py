"""Tracing: a SERVER span per request, a CLIENT span per upstream attempt, W3C/B3 propagation."""
