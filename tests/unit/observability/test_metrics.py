"""The Prometheus collector over a real DataPlane: what each metric says after real inferences."""

from __future__ import annotations

import asyncio
from pathlib import Path

import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fakes import ADDER, FAILING, write_model
from inferd.dataplane import DataPlane
from inferd.errors import InferError
from inferd.inference import InferenceRequest, RequestInput
from inferd.observability.metrics import BATCH_BOUNDS, Metrics
from inferd.repository import ModelRepository
from inferd.stats import DURATION_BOUNDS_NS, HistogramDuration


def adder_request(rows: int = 1) -> InferenceRequest:
    data = [1.0] * (3 * rows)
    return InferenceRequest("adder", [RequestInput("a", "FP32", [rows, 3], data),
                                      RequestInput("b", "FP32", [rows, 3], data)])


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[sample.name, frozenset(sample.labels.items())] = sample.value
    return found


def value(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return found[name, frozenset(labels.items())]


async def scrape(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return samples((await metrics.render()).decode())


def test_histogram_duration_counts_each_observation_in_its_bucket() -> None:
    duration = HistogramDuration()
    for ns in (0, DURATION_BOUNDS_NS[0], DURATION_BOUNDS_NS[0] + 1, DURATION_BOUNDS_NS[-1] + 1):
        duration.add(ns)
    assert duration.count == 4
    assert duration.buckets[0] == 2, "a bucket's bound is inclusive, as Prometheus' le"
    assert duration.buckets[1] == 1
    assert duration.buckets[-1] == 1, "past the last bound: the +Inf bucket"
    assert duration.to_dict() == {"count": 4, "ns": duration.ns}, "Triton's statistics keep their shape"


def test_metrics_follow_requests_failures_and_batches(tmp_path: Path) -> None:
    write_model(tmp_path, "adder", ADDER)
    write_model(tmp_path, "failing", FAILING)

    async def main() -> None:
        plane = DataPlane(ModelRepository(tmp_path))
        await plane.start()
        counts = {("adder", "", "succeeded"): 3, ("adder", "1", "queued"): 1}

        async def job_counts() -> dict[tuple[str, str, str], int]:
            return counts

        metrics = Metrics(plane, job_counts)
        try:
            for rows in (1, 1, 5):
                await plane.infer(adder_request(rows))
            for data in ([-1], [1, 2]):  # the model raises (INTERNAL); two values for shape [1] (INVALID_ARGUMENT)
                with pytest.raises(InferError):
                    await plane.infer(InferenceRequest("failing", [RequestInput("x", "INT64", [1], data)]))
            found = await scrape(metrics)
        finally:
            plane.close()
        adder = {"model": "adder", "version": "1"}
        assert value(found, "inferd_request_success_total", **adder) == 3
        assert value(found, "inferd_inference_rows_total", **adder) == 7
        assert value(found, "inferd_request_failure_total", model="failing", version="1", code="INTERNAL") == 1
        assert value(found, "inferd_request_failure_total", model="failing", version="1",
                     code="INVALID_ARGUMENT") == 1
        for name in ("inferd_request_duration_seconds", "inferd_queue_duration_seconds",
                     "inferd_compute_duration_seconds"):
            assert value(found, f"{name}_count", **adder) == 3
            assert value(found, f"{name}_bucket", **adder, le="+Inf") == 3
            assert value(found, f"{name}_bucket", **adder, le="10.0") == 3
            assert value(found, f"{name}_sum", **adder) > 0 or name == "inferd_queue_duration_seconds"
        assert value(found, "inferd_request_duration_seconds_count", model="failing", version="1") == 0
        assert value(found, "inferd_batch_size_count", **adder) == 3
        assert value(found, "inferd_batch_size_sum", **adder) == 7
        assert value(found, "inferd_batch_size_bucket", **adder, le="1") == 2
        assert value(found, "inferd_batch_size_bucket", **adder, le="4") == 2
        assert value(found, "inferd_batch_size_bucket", **adder, le="8") == 3
        assert len([k for k in found if k[0] == "inferd_batch_size_bucket" and ("model", "adder") in k[1]]) == \
            len(BATCH_BOUNDS) + 1
        assert value(found, "inferd_queue_depth", **adder) == 0
        assert value(found, "inferd_model_loaded", **adder) == 1
        assert value(found, "inferd_models_loaded") == 2
        assert value(found, "inferd_async_jobs", model="adder", version="", status="succeeded") == 3
        assert value(found, "inferd_async_jobs", model="adder", version="1", status="queued") == 1

    asyncio.run(main())


def test_unloaded_versions_read_zero_and_counts_stay(tmp_path: Path) -> None:
    write_model(tmp_path, "adder", ADDER)

    async def main() -> None:
        plane = DataPlane(ModelRepository(tmp_path))
        await plane.start()
        metrics = Metrics(plane)
        await plane.infer(adder_request())
        await plane.unload("adder")
        found = await scrape(metrics)
        plane.close()
        assert value(found, "inferd_model_loaded", model="adder", version="1") == 0
        assert value(found, "inferd_models_loaded") == 0
        assert value(found, "inferd_request_success_total", model="adder", version="1") == 1
        assert ("inferd_queue_depth", frozenset({("model", "adder"), ("version", "1")})) not in found

    asyncio.run(main())


def test_each_server_has_its_own_registry_and_the_global_one_stays_empty(tmp_path: Path) -> None:
    write_model(tmp_path, "adder", ADDER)
    plane = DataPlane(ModelRepository(tmp_path))
    first, second = Metrics(plane), Metrics(plane)
    assert first.registry is not second.registry
    global_text = prometheus_client.generate_latest(prometheus_client.REGISTRY).decode()
    assert "inferd_" not in global_text
    plane.close()
