"""Prometheus metrics on ``/metrics``, from a registry the server owns (nothing is registered at import).

Nothing here runs per request. The DataPlane already counts every inference in its per-version
:class:`~inferd.stats.ModelStats` (the figures Triton's statistics extension reports), including fixed-bucket
duration histograms (a bisect and an increment per observation); a custom collector turns those into
Prometheus metrics when ``/metrics`` is scraped. Gauges (queue depth, loaded models, jobs) are read then too.

=======================================  =========  ==================================================
metric                                   type       labels
=======================================  =========  ==================================================
inferd_request_success_total             counter    model, version
inferd_request_failure_total             counter    model, version, code (INVALID_ARGUMENT, ...)
inferd_inference_rows_total              counter    model, version (a request of 8 rows counts 8)
inferd_request_duration_seconds          histogram  model, version (successful requests, end to end)
inferd_queue_duration_seconds            histogram  model, version (waiting for an instance / a batch)
inferd_compute_duration_seconds          histogram  model, version (the model run of the request's batch)
inferd_batch_size                        histogram  model, version (rows of each batch the model ran)
inferd_queue_depth                       gauge      model, version
inferd_model_loaded                      gauge      model, version (1 ready, 0 not)
inferd_models_loaded                     gauge      (ready model versions)
inferd_worker_restarts_total             counter    model, version (worker processes replaced)
inferd_async_jobs                        gauge      model, version, status
inferd_batch_jobs                        gauge      model, state
inferd_capture_records_total             counter    model, version
inferd_capture_dropped_total             counter    model, version (capture queue full)
inferd_capture_errors_total              counter    model, version (records the writer could not write)
=======================================  =========  ==================================================

Endpoints add theirs, per endpoint and variant: see :mod:`inferd.observability.endpoint_metrics`.
Generative models add their own (time to first token, inter-token latency, tokens per second, running and
waiting sequences, token counters): see :mod:`inferd.observability.generation_metrics`.

Counters of a model version start again from zero when it is reloaded (Prometheus' ``rate`` handles resets).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from inferd.observability.endpoint_metrics import endpoint_metrics
from inferd.observability.generation_metrics import generation_metrics
from inferd.repository import ModelVersion, State
from inferd.stats import DURATION_BOUNDS_NS, HistogramDuration

if TYPE_CHECKING:
    from inferd.batch.server_jobs import BatchJobs
    from inferd.dataplane import DataPlane
    from inferd.observability.capture import CaptureWriter

JobCounts = Mapping[tuple[str, str, str], int]
"""(model, version, status) → number of asynchronous jobs."""

BATCH_BOUNDS: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
_DURATION_LE = [repr(ns / 1e9) for ns in DURATION_BOUNDS_NS]
"""The ``le`` labels: 0.0001, 0.00025, ... 10.0 (Go's float format for these values)."""
_MV = ["model", "version"]


class Metrics:
    """The server's metrics: one registry, one collector over the DataPlane and the job services."""

    content_type = "text/plain; version=0.0.4; charset=utf-8"
    """The text format as Prometheus 2 and 3 both read it without negotiation (prometheus_client 0.22 and later
    call theirs version 1.0.0, which older scrapers do not know)."""

    def __init__(self, dataplane: DataPlane, job_counts: Callable[[], Awaitable[JobCounts]] | None = None,
                 batch_jobs: BatchJobs | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._collector = InferdCollector(dataplane, batch_jobs is not None)
        self._job_counts = job_counts
        self._batch_jobs = batch_jobs
        self.registry.register(self._collector)
        self.whole_server: Callable[[bytes], Awaitable[bytes]] | None = None
        """With ``--workers N``: this process's exposition -> every worker's (inferd.server.worker_link)."""

    async def render(self) -> bytes:
        """The text exposition of every metric: this process's, or with workers the whole server's."""
        own = await self.own()
        return own if self.whole_server is None else await self.whole_server(own)

    async def own(self) -> bytes:
        """This process's metrics (the job counts are read first, off the event loop)."""
        if self._job_counts is not None:
            self._collector.job_counts = await self._job_counts()
        if self._batch_jobs is not None:
            self._collector.batch_counts = await self._batch_jobs.counts()
        return generate_latest(self.registry)


class InferdCollector(Collector):
    """Reads the DataPlane's statistics and the server's state at scrape time."""

    def __init__(self, dataplane: DataPlane, batch_jobs: bool = False) -> None:
        self._dataplane = dataplane
        self._batch_jobs = batch_jobs
        self.job_counts: JobCounts = {}
        """The asynchronous job counts of the latest scrape (the store is queried before collecting)."""
        self.batch_counts: Mapping[tuple[str, str], int] = {}
        """(model, state) → batch jobs in the store, as read before the latest scrape."""

    def collect(self) -> Iterator[Metric]:
        versions = [v for m in self._dataplane.repository.models() for _, v in sorted(m.versions.items())]
        yield from _request_metrics(versions)
        yield from _duration_metrics(versions)
        yield from _state_metrics(versions)
        yield from generation_metrics(versions)
        yield _async_jobs(self.job_counts)
        if self._batch_jobs:
            yield _batch_jobs(self.batch_counts)
        if self._dataplane.capture is not None:
            yield from _capture_metrics(self._dataplane.capture)
        if self._dataplane.cache is not None:
            yield from _cache_metrics(versions, self._dataplane.cache.held)
        if self._dataplane.endpoints is not None:
            yield from endpoint_metrics(self._dataplane.endpoints)


def _labels(version: ModelVersion) -> list[str]:
    return [version.name, str(version.version)]


def _request_metrics(versions: list[ModelVersion]) -> Iterator[Metric]:
    success = CounterMetricFamily("inferd_request_success", "Successful inference requests.", labels=_MV)
    failure = CounterMetricFamily("inferd_request_failure", "Failed inference requests, by error code.",
                                  labels=[*_MV, "code"])
    rows = CounterMetricFamily("inferd_inference_rows", "Rows inferred (a request of 8 rows counts 8).",
                               labels=_MV)
    for version in versions:
        stats = version.stats
        success.add_metric(_labels(version), stats.success.count)
        rows.add_metric(_labels(version), stats.inference_count)
        for code, count in sorted(dict(stats.fail_codes).items()):
            failure.add_metric([*_labels(version), code], count)
    return iter((success, failure, rows))


def _duration_metrics(versions: list[ModelVersion]) -> Iterator[Metric]:
    families = [
        (HistogramMetricFamily("inferd_request_duration_seconds",
                               "Time from the request reaching the DataPlane to its response, successful requests.",
                               labels=_MV), "success"),
        (HistogramMetricFamily("inferd_queue_duration_seconds",
                               "Time requests waited in the model's queue.", labels=_MV), "queue"),
        (HistogramMetricFamily("inferd_compute_duration_seconds",
                               "Time the model ran the batch that carried the request.", labels=_MV),
         "compute_infer"),
    ]
    batch = HistogramMetricFamily("inferd_batch_size", "Rows of each batch the model ran.", labels=_MV)
    for version in versions:
        for family, attribute in families:
            duration: HistogramDuration = getattr(version.stats, attribute)
            family.add_metric(_labels(version), _cumulative(_DURATION_LE, duration.buckets), duration.ns / 1e9)
        sizes = {size: stats.compute_infer.count for size, stats in list(version.stats.batches.items())}
        batch.add_metric(_labels(version), *_batch_buckets(sizes))
    yield from (family for family, _ in families)
    yield batch


def _cumulative(bounds: list[str], counts: Iterable[int]) -> list[tuple[str, float]]:
    """Prometheus buckets (cumulative, ending with +Inf) from per-bucket counts."""
    buckets, total = [], 0
    for le, count in zip([*bounds, "+Inf"], list(counts), strict=True):
        total += count
        buckets.append((le, float(total)))
    return buckets


def _batch_buckets(sizes: Mapping[int, int]) -> tuple[list[tuple[str, float]], float]:
    counts = [0] * (len(BATCH_BOUNDS) + 1)
    for size, count in sizes.items():
        index = next((i for i, bound in enumerate(BATCH_BOUNDS) if size <= bound), len(BATCH_BOUNDS))
        counts[index] += count
    bounds = [str(b) for b in BATCH_BOUNDS]
    return _cumulative(bounds, counts), float(sum(size * count for size, count in sizes.items()))


def _state_metrics(versions: list[ModelVersion]) -> Iterator[Metric]:
    depth = GaugeMetricFamily("inferd_queue_depth", "Requests waiting in the model's queue.", labels=_MV)
    loaded = GaugeMetricFamily("inferd_model_loaded", "1 when the model version is loaded and ready.", labels=_MV)
    restarts = CounterMetricFamily("inferd_worker_restarts", "Worker processes replaced (crashed or stuck).",
                                   labels=_MV)
    load_time = GaugeMetricFamily("inferd_model_load_seconds", "How long the model version's latest load took "
                                  "(what a request that found it unloaded waited).", labels=_MV)
    memory = GaugeMetricFamily("inferd_model_memory_bytes", "Memory the loaded model version holds (model.toml "
                               "memory_size, else measured at load).", labels=_MV)
    ready = 0
    for version in versions:
        is_ready = version.state is State.READY and version.loaded is not None
        ready += is_ready
        loaded.add_metric(_labels(version), 1.0 if is_ready else 0.0)
        if version.stats.load_ns:
            load_time.add_metric(_labels(version), version.stats.load_ns / 1e9)
        if is_ready:
            memory.add_metric(_labels(version), version.stats.memory_bytes)
        if version.loaded is not None:
            depth.add_metric(_labels(version), version.loaded.scheduler.queued)
            count = getattr(version.loaded.executor, "restarts", None)
            if count is not None:
                restarts.add_metric(_labels(version), count)
    yield depth
    yield loaded
    yield GaugeMetricFamily("inferd_models_loaded", "Model versions loaded and ready.", value=ready)
    yield restarts
    yield load_time
    yield memory


def _cache_metrics(versions: list[ModelVersion], held: Mapping[str, int]) -> Iterator[Metric]:
    hits = CounterMetricFamily("inferd_cache_hits", "Requests answered from the response cache.", labels=_MV)
    misses = CounterMetricFamily("inferd_cache_misses", "Requests the response cache did not hold (the model ran).",
                                 labels=_MV)
    for version in versions:
        if version.cache is not None or version.stats.cache_hit.count or version.stats.cache_miss.count:
            hits.add_metric(_labels(version), version.stats.cache_hit.count)
            misses.add_metric(_labels(version), version.stats.cache_miss.count)
    size = GaugeMetricFamily("inferd_cache_bytes", "Bytes of results the response cache holds, per model.",
                             labels=["model"])
    for model, count in sorted(dict(held).items()):
        size.add_metric([model], count)
    yield from (hits, misses, size)


def _async_jobs(counts: JobCounts) -> Metric:
    family = GaugeMetricFamily("inferd_async_jobs", "Asynchronous inference jobs in the job store, by status.",
                               labels=[*_MV, "status"])
    for (model, version, status), count in sorted(counts.items()):
        family.add_metric([model, version, status], count)
    return family


def _batch_jobs(counts: Mapping[tuple[str, str], int]) -> Metric:
    family = GaugeMetricFamily("inferd_batch_jobs", "Batch jobs submitted over HTTP in the job store, by state.",
                               labels=["model", "state"])
    for (model, state), count in sorted(counts.items()):
        family.add_metric([model, state], count)
    return family


def _capture_metrics(capture: CaptureWriter) -> Iterator[Metric]:
    for name, doc, counts in (
        ("inferd_capture_records", "Captured inferences written.", capture.written),
        ("inferd_capture_dropped", "Captures dropped because the capture queue was full.", capture.dropped),
        ("inferd_capture_errors", "Captures the writer could not write.", capture.failed),
    ):
        family = CounterMetricFamily(name, doc, labels=_MV)
        for (model, version), count in sorted(dict(counts).items()):
            family.add_metric([model, version], count)
        yield family
