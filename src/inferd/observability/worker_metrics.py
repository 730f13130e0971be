"""/metrics of ``inferd serve --workers N``: the expositions of every worker as one.

Each worker counts what it served (its own models, queues and caches), so its samples get a ``process`` label (the
worker's index, kept by its replacement) and the families are merged: ``sum without (process) (...)`` is the whole
server, and nothing is lost when one worker is busier. Families every worker reads from the one shared job store
(:data:`SERVER_WIDE`) would count each job N times: they are taken from the worker that answers the scrape only.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

LABEL = "process"
SERVER_WIDE = frozenset({"inferd_async_jobs"})
"""Families whose values are the job store's, the same from every worker."""


def merge(expositions: Mapping[str, bytes], local: str, replacements: int = 0) -> bytes:
    """One text exposition from each worker's (by worker index; ``local``: the one answering), with the number of
    workers the supervisor replaced."""
    families: dict[str, Metric] = {"inferd_server_worker_replacements": CounterMetricFamily(
        "inferd_server_worker_replacements", "Server worker processes (--workers) that exited unexpectedly and were "
        "replaced by the supervisor.", value=replacements)}
    for index in sorted(expositions, key=lambda key: (key != local, key)):
        for family in text_string_to_metric_families(expositions[index].decode()):
            if family.name in SERVER_WIDE:
                if index == local:
                    families[family.name] = family
                continue
            merged = families.setdefault(family.name, Metric(family.name, family.documentation, family.type,
                                                             family.unit))
            merged.samples.extend(Sample(s.name, {**s.labels, LABEL: index}, s.value, s.timestamp, s.exemplar)
                                  for s in family.samples)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(list(families.values())))
    return generate_latest(registry)


class _Fixed(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)
