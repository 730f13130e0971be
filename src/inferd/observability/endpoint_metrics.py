"""Prometheus metrics of endpoints, per endpoint and variant, read at scrape time from the endpoints' own
statistics (:mod:`inferd.endpoints.stats`).

=============================================  =========  =========================================
metric                                         type       labels
=============================================  =========  =========================================
inferd_endpoint_requests_total                 counter    endpoint, variant (shadow copies included)
inferd_endpoint_errors_total                   counter    endpoint, variant
inferd_endpoint_request_duration_seconds       histogram  endpoint, variant (failures included)
inferd_endpoint_traffic_percent                gauge      endpoint, variant (live variants' shares)
inferd_endpoint_shadow_compared_total          counter    endpoint, variant (shadow answers compared)
inferd_endpoint_shadow_dropped_total           counter    endpoint, variant (shadow queue full)
inferd_endpoint_shadow_disagreement_ratio      gauge      endpoint, variant (rows whose argmax/label differ)
inferd_endpoint_shadow_mean_abs_diff           gauge      endpoint, variant
=============================================  =========  =========================================
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from inferd.stats import DURATION_BOUNDS_NS

if TYPE_CHECKING:
    from inferd.endpoints.service import Endpoints

_LABELS = ["endpoint", "variant"]
_LE = [repr(ns / 1e9) for ns in DURATION_BOUNDS_NS]


def endpoint_metrics(endpoints: Endpoints) -> Iterator[Metric]:
    requests = CounterMetricFamily("inferd_endpoint_requests", "Requests answered by an endpoint's variant.",
                                   labels=_LABELS)
    errors = CounterMetricFamily("inferd_endpoint_errors", "Failed requests of an endpoint's variant.",
                                 labels=_LABELS)
    duration = HistogramMetricFamily("inferd_endpoint_request_duration_seconds",
                                     "Time to answer, per endpoint variant (failures included).", labels=_LABELS)
    weight = GaugeMetricFamily("inferd_endpoint_traffic_percent", "Share of an endpoint's live traffic a "
                               "variant gets now.", labels=_LABELS)
    compared = CounterMetricFamily("inferd_endpoint_shadow_compared", "Shadow answers compared with the live "
                                   "ones.", labels=_LABELS)
    dropped = CounterMetricFamily("inferd_endpoint_shadow_dropped", "Shadow copies dropped (queue full).",
                                  labels=_LABELS)
    disagree = GaugeMetricFamily("inferd_endpoint_shadow_disagreement_ratio", "Share of compared rows whose "
                                 "argmax or label differs from the live answer's.", labels=_LABELS)
    diff = GaugeMetricFamily("inferd_endpoint_shadow_mean_abs_diff", "Mean absolute difference between a "
                             "shadow's outputs and the live ones.", labels=_LABELS)
    for name, compiled in sorted(endpoints.table.endpoints.items()):
        shares = compiled.weights()
        for variant in compiled.endpoint.variants:
            labels = [name, variant.name]
            stats = endpoints.stats[name, variant.name]
            requests.add_metric(labels, stats.requests)
            errors.add_metric(labels, stats.errors)
            duration.add_metric(labels, _cumulative(stats.latency.buckets), stats.latency.ns / 1e9)
            if not variant.shadow:
                weight.add_metric(labels, shares[variant.name])
                continue
            compared.add_metric(labels, stats.compared)
            dropped.add_metric(labels, stats.shadow_dropped)
            if stats.rows_compared:
                disagree.add_metric(labels, 1 - stats.agreed / stats.rows_compared)
            if stats.compared:
                diff.add_metric(labels, stats.abs_diff_sum / stats.compared)
    yield from (requests, errors, duration, weight, compared, dropped, disagree, diff)


def _cumulative(counts: Iterable[int]) -> list[tuple[str, float]]:
    buckets, total = [], 0
    for le, count in zip([*_LE, "+Inf"], list(counts), strict=True):
        total += count
        buckets.append((le, float(total)))
    return buckets
