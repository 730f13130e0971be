"""Prometheus metrics of generative models, read from each one's generation statistics at scrape time.

=============================================  =========  ===============================================
metric                                         type       labels
=============================================  =========  ===============================================
inferd_generation_time_to_first_token_seconds  histogram  model, version (submission to the first token)
inferd_generation_inter_token_seconds          histogram  model, version (between two tokens of a sequence)
inferd_generation_output_tokens_per_second     gauge      model, version (all sequences, last 10 s)
inferd_generation_running_sequences            gauge      model, version (sequences holding a slot)
inferd_generation_waiting_sequences            gauge      model, version (requests queued for a slot)
inferd_generation_prompt_tokens_total          counter    model, version
inferd_generation_completion_tokens_total      counter    model, version
inferd_generation_sequences_finished_total     counter    model, version, reason (stop, length, cancelled, error)
=============================================  =========  ===============================================
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from inferd.repository import ModelVersion
from inferd.stats import DURATION_BOUNDS_NS

_LE = [repr(ns / 1e9) for ns in DURATION_BOUNDS_NS]
_MV = ["model", "version"]


def generation_metrics(versions: Iterable[ModelVersion]) -> Iterator[Metric]:
    ttft = HistogramMetricFamily("inferd_generation_time_to_first_token_seconds",
                                 "Time from a generation request's submission to its first token.", labels=_MV)
    itl = HistogramMetricFamily("inferd_generation_inter_token_seconds",
                                "Time between two tokens of one sequence.", labels=_MV)
    rate = GaugeMetricFamily("inferd_generation_output_tokens_per_second",
                             "Output tokens per second, all sequences together, over the last 10 s.", labels=_MV)
    running = GaugeMetricFamily("inferd_generation_running_sequences", "Sequences holding a slot.", labels=_MV)
    waiting = GaugeMetricFamily("inferd_generation_waiting_sequences", "Requests waiting for a slot.", labels=_MV)
    prompt = CounterMetricFamily("inferd_generation_prompt_tokens", "Prompt tokens submitted.", labels=_MV)
    completion = CounterMetricFamily("inferd_generation_completion_tokens", "Tokens generated.", labels=_MV)
    finished = CounterMetricFamily("inferd_generation_sequences_finished", "Sequences ended, by reason.",
                                   labels=[*_MV, "reason"])
    for version in versions:
        loaded = version.loaded
        if loaded is None or loaded.generator is None:
            continue
        stats = loaded.generator.stats
        labels = [version.name, str(version.version)]
        for family, duration in ((ttft, stats.time_to_first_token), (itl, stats.inter_token)):
            family.add_metric(labels, _cumulative(duration.buckets), duration.ns / 1e9)
        rate.add_metric(labels, stats.output_tokens_per_second())
        running.add_metric(labels, stats.running)
        waiting.add_metric(labels, stats.waiting)
        prompt.add_metric(labels, stats.prompt_tokens)
        completion.add_metric(labels, stats.completion_tokens)
        for reason, count in sorted(dict(stats.finished).items()):
            finished.add_metric([*labels, reason], count)
    yield from (ttft, itl, rate, running, waiting, prompt, completion, finished)


def _cumulative(counts: Iterable[int]) -> list[tuple[str, float]]:
    buckets, total = [], 0
    for le, count in zip([*_LE, "+Inf"], list(counts), strict=True):
        total += count
        buckets.append((le, float(total)))
    return buckets
