"""State store tests: the conformance suite every backend runs, and per-backend units."""
