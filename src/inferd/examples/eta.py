"""ETA regressor for deliveries and rides: gradient-boosted trees served by inferd's xgboost runtime.

Trips are simulated with a seeded RNG: travel time grows with distance, traffic and stops, and peaks in the
weekday rush hours around 8:00 and 18:00.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import xgboost

from inferd.examples.build import Example

NAME = "eta"
DESCRIPTION = "ETA regressor for deliveries and rides: trip features in, minutes out"
FEATURES = ("distance_km", "hour", "weekday", "traffic_index", "stops")
TRAIN_SIZE = 3000
SEED = 11

BASE_SPEED_KMH = 32.0
MINUTES_PER_STOP = 2.5
PICKUP_MINUTES = 3.0

MODEL_TOML = f'''# The demo ETA model (built by inferd.examples.eta).
description = "ETA in minutes for a delivery or ride. Input 'input' FP32 [-1, 5], columns in this order: \
{", ".join(FEATURES)} (hour 0-23, weekday 0-6 with 0 = Monday, traffic_index 0-1, stops an integer count)"
'''


def make_trips(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` simulated trips: features (FP32, columns in :data:`FEATURES` order) and minutes (FP32)."""
    rng = np.random.default_rng(seed)
    distance = rng.gamma(shape=2.0, scale=4.0, size=n).clip(0.3, 60.0)
    hour = rng.integers(0, 24, size=n)
    weekday = rng.integers(0, 7, size=n)
    traffic = rng.beta(2.0, 3.0, size=n)
    stops = rng.poisson(1.2, size=n)
    features = np.column_stack([distance, hour, weekday, traffic, stops]).astype(np.float32)
    noise = rng.lognormal(mean=0.0, sigma=0.08, size=n)
    return features, (trip_minutes(features) * noise).astype(np.float32)


def trip_minutes(features: np.ndarray) -> np.ndarray:
    """The noiseless travel time the simulation is built on."""
    distance, hour, weekday, traffic, stops = (features[:, i].astype(np.float64) for i in range(len(FEATURES)))
    rush = np.exp(-(((hour - 8.0) / 1.5) ** 2)) * 0.6 + np.exp(-(((hour - 18.0) / 1.8) ** 2)) * 0.7
    rush_factor = 1.0 + np.where(weekday < 5, rush, 0.2 * rush)
    night_factor = np.where((hour < 6) | (hour >= 22), 0.85, 1.0)
    traffic_factor = 1.0 + 1.5 * traffic**2
    driving = distance / BASE_SPEED_KMH * 60.0 * rush_factor * night_factor * traffic_factor
    result: np.ndarray = PICKUP_MINUTES + driving + MINUTES_PER_STOP * stops
    return result


def train(features: np.ndarray, minutes: np.ndarray) -> xgboost.XGBRegressor:
    model = xgboost.XGBRegressor(
        n_estimators=120, max_depth=4, learning_rate=0.15, subsample=0.9, random_state=0,
        n_jobs=1,
    )
    model.fit(features, minutes)
    return model


def build(model_folder: Path) -> Example:
    model = train(*make_trips(TRAIN_SIZE, SEED))
    model.get_booster().save_model(str(model_folder / "1" / "model.json"))
    (model_folder / "model.toml").write_text(MODEL_TOML, encoding="utf-8")
    # 7.5 km across town on a Monday in the 17:00 hour, in heavy traffic, with one stop on the way.
    request: dict[str, list[Any]] = {"input": [[7.5, 17.0, 0.0, 0.7, 1.0]]}
    return Example(NAME, DESCRIPTION, request, explain)


def explain(outputs: dict[str, np.ndarray]) -> str:
    """'ETA 23.4 min' for each trip, separated by semicolons."""
    return "; ".join(f"ETA {minutes:.1f} min" for minutes in np.asarray(outputs["prediction"]).ravel())
