"""Tests of the exporters: telemetry built from config against real receivers on loopback."""
