"""Recommendation ranker: LightGBM lambdarank over user x item features, served by inferd's lightgbm runtime.

Sessions are simulated with a seeded RNG: each user (a query) sees about ten candidate items, whose
relevance 0-3 comes from a hidden scoring function plus noise. The model scores candidates; sort by score.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightgbm
import numpy as np

from inferd.examples.build import Example

NAME = "ranker"
DESCRIPTION = "recommendation ranker: candidate items for one user in, one relevance score per item out"
FEATURES = ("user_affinity_to_category", "item_popularity", "price_match", "recency_days", "past_clicks_on_item")
TRAIN_USERS = 300
SEED = 23
MIN_CANDIDATES, MAX_CANDIDATES = 8, 12
RELEVANCE_CUTS = (1.2, 2.0, 2.7)
"""Hidden-score thresholds between relevance 0|1, 1|2 and 2|3."""

MODEL_TOML = f'''# The demo ranker (built by inferd.examples.ranker).
description = "Recommendation ranker: one row per candidate item, higher score = show first. Input 'input' \
FP32 [-1, 5], columns in this order: {", ".join(FEATURES)} (affinity, popularity, price_match in 0-1; \
recency_days since the item was listed; past_clicks_on_item a count)"
'''


def make_sessions(n_users: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate rows for ``n_users`` users: features (FP32, :data:`FEATURES` order), relevance labels
    0-3 (int), and the number of candidates of each user in row order (the query groups)."""
    rng = np.random.default_rng(seed)
    groups = rng.integers(MIN_CANDIDATES, MAX_CANDIDATES + 1, size=n_users)
    n = int(groups.sum())
    affinity = rng.beta(2.0, 2.0, size=n)
    popularity = rng.beta(1.5, 4.0, size=n)
    price_match = rng.uniform(0.0, 1.0, size=n)
    recency = rng.exponential(20.0, size=n).clip(0.0, 180.0)
    clicks = rng.poisson(0.3 + 3.0 * affinity * popularity, size=n)
    features = np.column_stack([affinity, popularity, price_match, recency, clicks]).astype(np.float32)
    score = hidden_score(features) + rng.normal(0.0, 0.25, size=n)
    labels = np.digitize(score, RELEVANCE_CUTS)
    return features, labels, groups


def hidden_score(features: np.ndarray) -> np.ndarray:
    """How much a user wants an item, before noise: the truth the ranker should learn."""
    affinity, popularity, price_match, recency, clicks = (features[:, i].astype(np.float64) for i in range(5))
    result: np.ndarray = (
        1.8 * affinity
        + 0.9 * popularity
        + 1.0 * price_match * (0.5 + affinity)
        + 0.5 * np.exp(-recency / 15.0)
        + 0.5 * np.log1p(clicks)
    )
    return result


def train(features: np.ndarray, labels: np.ndarray, groups: np.ndarray) -> lightgbm.LGBMRanker:
    model = lightgbm.LGBMRanker(
        objective="lambdarank", n_estimators=50, learning_rate=0.1, num_leaves=15, min_child_samples=10,
        random_state=0, deterministic=True, n_jobs=1, verbose=-1,
    )
    model.fit(features, labels, group=groups)
    return model


def build(model_folder: Path) -> Example:
    model = train(*make_sessions(TRAIN_USERS, SEED))
    model.booster_.save_model(str(model_folder / "1" / "model.txt"))
    (model_folder / "model.toml").write_text(MODEL_TOML, encoding="utf-8")
    request: dict[str, list[Any]] = {"input": [
        [0.55, 0.30, 0.60, 10.0, 1.0],  # a fair match
        [0.10, 0.05, 0.20, 120.0, 0.0],  # off-topic, unpopular, stale
        [0.90, 0.60, 0.85, 2.0, 4.0],  # the user's favourite category, new, clicked before
        [0.35, 0.50, 0.30, 30.0, 0.0],  # popular but not for this user
    ]}
    return Example(NAME, DESCRIPTION, request, explain)


def explain(outputs: dict[str, np.ndarray]) -> str:
    """'ranking: item 2 > item 0 > item 3 > item 1': candidates by score, highest first."""
    scores = np.asarray(outputs["score"]).ravel()
    order = np.argsort(-scores, kind="stable")
    return "ranking: " + " > ".join(f"item {i}" for i in order)
