"""The ray engine on a small local Ray gives the same bytes as the local engine."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from batch_models import FEATURES, PICKY, feature_table, write_python_model, write_table
from inferd.batch import BatchOptions, run_batch

ray = pytest.importorskip("ray", reason="the ray extra is not installed")


@pytest.fixture
def local_ray() -> Iterator[None]:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.usefixtures("local_ray")
def test_ray_engine_matches_local_engine_byte_for_byte(tmp_path: Path) -> None:
    root = tmp_path / "models"
    root.mkdir()
    write_python_model(root, "picky", PICKY)
    data = tmp_path / "data"
    write_table(feature_table(230, seed=3), data / "a.csv")
    write_table(feature_table(170, seed=4), data / "b.parquet")
    mapping = {"input": ",".join(FEATURES)}
    # picky fails the records whose f0 < -1.5: output rows, isolation and the errors file are all compared.
    options = BatchOptions(batch_size=40, key="id", mapping=mapping, join=True)
    local = run_batch(root, "picky", data, tmp_path / "local", options)
    on_ray = run_batch(root, "picky", data, tmp_path / "ray", dataclasses.replace(options, engine="ray"))
    assert local.rows_failed > 0
    assert (on_ray.rows_in, on_ray.rows_out, on_ray.rows_failed) == (local.rows_in, local.rows_out, local.rows_failed)
    for name in ("a.csv", "b.parquet", "_errors.jsonl"):
        assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "local" / name).read_bytes(), name
