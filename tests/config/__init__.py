"""Tests for config loading and validation."""
