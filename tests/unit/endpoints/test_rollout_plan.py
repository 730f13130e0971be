"""Rollout specs (steps, durations, thresholds), the weights of each step, the alarms over a window, and the
shadow comparison."""

from __future__ import annotations

import numpy as np
import pytest

from inferd.endpoints.model import parse_endpoint
from inferd.endpoints.rollout import parse_rollout, shares, with_new_variant
from inferd.endpoints.shadow import compare
from inferd.endpoints.stats import Snapshot, VariantStats, quantile_s, window
from inferd.errors import InferError


def test_linear_steps_start_at_the_canary_and_end_at_100():
    spec = parse_rollout({"to": "m:2", "canary": "10%", "steps": "linear:25%", "bake": "5m"})
    assert spec.steps == (10.0, 25.0, 50.0, 75.0, 100.0)
    assert spec.bake_s == 300.0
    assert spec.variant == "m-2"
    assert parse_rollout({"to": "m", "canary": 20, "steps": [50], "bake": "250ms"}).steps == (20.0, 50.0, 100.0)
    assert parse_rollout({"to": "m", "bake": 2, "max_p99": "1s"}).max_p99_s == 1.0


@pytest.mark.parametrize("body", [{}, {"to": "m", "canary": "150%"}, {"to": "m", "steps": [5]},
                                  {"to": "m", "bake": "soon"}, {"to": "m", "steps": "linear:0%"}])
def test_bad_rollouts_are_refused(body):
    with pytest.raises(InferError):
        parse_rollout(body)


def test_each_step_gives_the_new_variant_its_share_and_the_old_ones_the_rest_in_ratio():
    original = parse_endpoint("e", {"variants": [{"name": "a", "model": "m", "weight": 3},
                                                 {"name": "b", "model": "m", "weight": 1}]})
    assert shares(original, "new", 20) == {"a": 60.0, "b": 20.0, "new": 20}
    spec = parse_rollout({"to": "m:2", "variant": "new"})
    grown = with_new_variant(original, spec)
    assert grown.variant("new").weight == 0.0
    assert with_new_variant(grown, spec) is grown
    with pytest.raises(InferError, match="name the new variant differently"):
        with_new_variant(original, parse_rollout({"to": "n:2", "variant": "a"}))


def test_a_window_holds_what_happened_between_two_snapshots():
    stats = VariantStats()
    stats.record(1_000_000, True)
    before = stats.snapshot()
    for _ in range(98):
        stats.record(2_000_000, True)
    stats.record(400_000_000, False)
    stats.record(400_000_000, False)
    seen = window(before, stats.snapshot())
    assert (seen.requests, seen.errors, seen.error_rate) == (100, 2, 0.02)
    assert seen.p99_s == 0.5  # the bucket holding the 99th percentile: (0.25 s, 0.5 s]
    assert window(before, before).p99_s is None
    assert quantile_s([0] * 17, 0.99) is None
    assert isinstance(before, Snapshot)


def test_shadow_outputs_are_compared_by_argmax_and_mean_absolute_difference():
    stats = VariantStats()
    live = {"scores": np.array([[0.1, 0.9], [0.8, 0.2]], dtype=np.float32)}
    compare(stats, live, {"scores": np.array([[0.2, 0.8], [0.1, 0.9]], dtype=np.float32)})
    assert (stats.compared, stats.rows_compared, stats.agreed) == (1, 2, 1)
    assert stats.abs_diff_sum == pytest.approx(0.4)
    compare(stats, {"label": np.array(["a", "b"], dtype=object)}, {"label": np.array(["a", "c"], dtype=object)})
    assert (stats.rows_compared, stats.agreed) == (4, 2)
    assert stats.shadow_summary()["agreement"] == 0.5
