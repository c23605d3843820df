"""Tests that the shipped dashboards query only what meshwire exports, and that the queries work."""
