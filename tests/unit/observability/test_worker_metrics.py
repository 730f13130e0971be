"""/metrics of several workers as one exposition (``inferd.observability.worker_metrics``)."""

from prometheus_client.parser import text_string_to_metric_families

from inferd.observability.worker_metrics import merge

ONE = b"""# HELP inferd_request_success_total Successful inference requests.
# TYPE inferd_request_success_total counter
inferd_request_success_total{model="digits",version="1"} 3.0
# HELP inferd_request_duration_seconds Time.
# TYPE inferd_request_duration_seconds histogram
inferd_request_duration_seconds_bucket{model="digits",version="1",le="0.1"} 3.0
inferd_request_duration_seconds_bucket{model="digits",version="1",le="+Inf"} 3.0
inferd_request_duration_seconds_count{model="digits",version="1"} 3.0
inferd_request_duration_seconds_sum{model="digits",version="1"} 0.03
# HELP inferd_async_jobs Jobs in the store.
# TYPE inferd_async_jobs gauge
inferd_async_jobs{model="digits",status="queued"} 5.0
"""


def _samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text.decode()) for s in family.samples}


def test_each_worker_keeps_its_samples_under_a_process_label():
    two = ONE.replace(b"} 3.0", b"} 4.0").replace(b"} 5.0", b"} 6.0")
    merged = _samples(merge({"0": ONE, "1": two}, local="1"))
    digits = (("model", "digits"), ("process", "0"), ("version", "1"))
    assert merged[("inferd_request_success_total", digits)] == 3.0
    assert merged[("inferd_request_success_total", (*digits[:1], ("process", "1"), digits[2]))] == 4.0
    counts = [v for (name, _), v in merged.items() if name == "inferd_request_duration_seconds_count"]
    assert sorted(counts) == [3.0, 4.0]


def test_the_job_stores_counts_are_given_once_not_per_worker():
    two = ONE.replace(b"} 5.0", b"} 6.0")  # read a moment later by the other worker
    merged = _samples(merge({"0": ONE, "1": two}, local="1"))
    jobs = {labels: v for (name, labels), v in merged.items() if name == "inferd_async_jobs"}
    assert jobs == {(("model", "digits"), ("status", "queued")): 6.0}


def test_the_supervisors_replacements_are_counted_once():
    merged = _samples(merge({"0": ONE, "1": ONE}, local="0", replacements=3))
    assert merged[("inferd_server_worker_replacements_total", ())] == 3.0


def test_one_worker_alone_is_its_own_exposition_with_the_label():
    merged = merge({"0": ONE}, local="0").decode()
    assert merged.count("# TYPE inferd_request_success_total counter") == 1
    assert 'process="0"' in merged
