"""Sampling each sequence with its own parameters and generator."""

from __future__ import annotations

import numpy as np

from inferd.generation.sampling import Sampler, SamplingParams

LOGITS = np.log(np.array([0.5, 0.3, 0.15, 0.05], dtype=np.float32))


def test_temperature_zero_is_greedy():
    assert {Sampler(SamplingParams(temperature=0)).sample(LOGITS) for _ in range(20)} == {0}


def test_the_same_seed_gives_the_same_tokens_and_another_seed_others():
    def draws(seed):
        sampler = Sampler(SamplingParams(temperature=1.0, seed=seed))
        return [sampler.sample(LOGITS) for _ in range(50)]

    assert draws(7) == draws(7)
    assert draws(7) != draws(8)


def test_draws_follow_the_distribution():
    sampler = Sampler(SamplingParams(temperature=1.0, seed=1))
    counts = np.bincount([sampler.sample(LOGITS) for _ in range(4000)], minlength=4) / 4000
    assert np.allclose(counts, [0.5, 0.3, 0.15, 0.05], atol=0.04)


def test_top_p_keeps_the_smallest_set_that_reaches_it():
    sampler = Sampler(SamplingParams(temperature=1.0, top_p=0.7, seed=3))
    assert {sampler.sample(LOGITS) for _ in range(500)} == {0, 1}


def test_top_p_over_a_large_vocabulary_samples_among_the_likely():
    logits = np.full(50_000, -20.0, dtype=np.float32)
    logits[[10, 20, 30]] = [3.0, 2.0, 1.0]
    sampler = Sampler(SamplingParams(temperature=1.0, top_p=0.9, seed=0))
    assert {sampler.sample(logits) for _ in range(300)} <= {10, 20, 30}


def test_any_integer_is_a_seed():
    for seed in (-1, 2**70, 0):
        assert Sampler(SamplingParams(temperature=1.0, seed=seed)).sample(LOGITS) in range(4)
