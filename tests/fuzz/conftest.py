"""Hypothesis profiles: a short run in CI (the default), a longer one on demand:
``HYPOTHESIS_PROFILE=long .venv/bin/pytest tests/fuzz`` (see docs/fuzzing.md)."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile("ci", max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=20_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
