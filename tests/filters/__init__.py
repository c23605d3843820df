"""Filter unit tests."""
