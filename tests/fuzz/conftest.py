"""Hypothesis profiles for the fuzz suite: a short, repeatable run in `make test`, a long one in
`make fuzz` (MESHWIRE_FUZZ=long, MESHWIRE_FUZZ_EXAMPLES=N)."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_QUIET = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]

# Same examples every run, so a finding never makes CI flaky; `make fuzz` explores.
settings.register_profile(
    "short", max_examples=60, derandomize=True, deadline=None, suppress_health_check=_QUIET
)
settings.register_profile(
    "long",
    max_examples=int(os.environ.get("MESHWIRE_FUZZ_EXAMPLES", "3000")),
    deadline=None,
    suppress_health_check=_QUIET,
    print_blob=True,
)
settings.load_profile(os.environ.get("MESHWIRE_FUZZ", "short"))
