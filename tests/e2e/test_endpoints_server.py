"""Endpoints on a real ``inferd serve`` over loopback: traffic split, forced and sticky variants, every way in,
the admin API's refusals, shadow traffic, and staged rollouts (rollback on alarms, success, kill -9)."""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from endpoint_models import write_endpoint_repository
from server_process import ServerProcess

BODY = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1.0, 2.0, 3.0]}]}


@pytest.fixture(scope="module")
def endpoint_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_endpoint_repository(tmp_path_factory.mktemp("endpoints") / "models")


@pytest.fixture(scope="module")
def served(endpoint_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(endpoint_repo, tmp_path_factory.mktemp("logs") / "serve.log")
    yield from process.serving()


@pytest.fixture
def client(served: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served.url, timeout=30) as http:
        yield http


def put(client: httpx.Client, name: str, variants: list[dict[str, Any]], version: int | None = None) -> httpx.Response:
    headers = {} if version is None else {"if-match": f'"{version}"'}
    return client.put(f"/v2/endpoints/{name}", json={"variants": variants}, headers=headers)


def variant_of(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    assert response.json()["parameters"]["variant"] == response.headers["x-inferd-variant"]
    return response.headers["x-inferd-variant"]


def test_2000_requests_over_80_20_land_within_5_sigma(client):
    """Binomial(2000, 0.8): mean 1600, sigma 17.9; 5 sigma (±89) fails a correct router once in ~1.7 million."""
    counts = Counter(variant_of(client.post("/v2/models/front/infer", json=BODY)) for _ in range(2000))
    sigma = math.sqrt(2000 * 0.8 * 0.2)
    assert abs(counts["blue"] - 1600) <= 5 * sigma, counts
    assert counts["blue"] + counts["green"] == 2000


@pytest.mark.parametrize("header", ["x-inferd-variant", "X-Amzn-SageMaker-Target-Variant",
                                    "azureml-model-deployment"])
def test_a_forced_variant_always_wins(client, header):
    for _ in range(100):
        assert variant_of(client.post("/v2/models/front/infer", json=BODY, headers={header: "green"})) == "green"


def test_a_forced_variant_as_a_request_parameter_and_on_the_endpoint_route(client):
    body = {**BODY, "parameters": {"inferd_variant": "green"}}
    for _ in range(50):
        assert variant_of(client.post("/v2/endpoints/front/infer", json=body)) == "green"


def test_a_forced_variant_that_does_not_exist_is_404_naming_the_variants(client):
    response = client.post("/v2/models/front/infer", json=BODY, headers={"x-inferd-variant": "purple"})
    assert response.status_code == 404
    assert "'blue', 'green'" in response.json()["error"]


def test_sticky_keys_never_move_while_weights_stay(client):
    first: dict[str, str] = {}
    for round_ in range(3):
        for i in range(150):
            body = {**BODY, "parameters": {"inferd_route_key": f"user-{i}"}}
            got = variant_of(client.post("/v2/models/front/infer", json=body))
            assert first.setdefault(f"user-{i}", got) == got, f"user-{i} moved in round {round_}"
    assert set(first.values()) == {"blue", "green"}
    headers = {"x-inferd-route-key": "user-7"}
    assert {variant_of(client.post("/v2/models/front/infer", json=BODY, headers=headers))
            for _ in range(20)} == {first["user-7"]}


def test_v1_sagemaker_async_and_grpc_name_the_endpoint(client, served):
    v1 = client.post("/v1/models/front:predict", json={"instances": [[1, 2, 3]]}, headers={"x-inferd-variant": "blue"})
    assert v1.status_code == 200
    assert v1.headers["x-inferd-variant"] == "blue"
    sagemaker = client.post("/invocations", json={"instances": [[1, 2, 3]]},
                            headers={"X-Amzn-SageMaker-Target-Model": "front",
                                     "X-Amzn-SageMaker-Target-Variant": "green"})
    assert sagemaker.status_code == 200, sagemaker.text
    assert sagemaker.headers["X-Amzn-Invoked-Production-Variant"] == "green"
    job = client.post("/v2/models/front/infer-async", json={**BODY, "parameters": {"inferd_variant": "green"}})
    assert job.status_code == 202, job.text
    deadline = time.monotonic() + 30
    while client.get(f"/v2/jobs/{job.json()['id']}").json()["status"] != "succeeded":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert client.get(job.json()["result_url"]).json()["parameters"] == {"endpoint": "front", "variant": "green"}

    import tritonclient.grpc as grpcclient

    grpc = grpcclient.InferenceServerClient(served.grpc_url)
    tensor = grpcclient.InferInput("x", [1, 3], "FP32")
    tensor.set_data_from_numpy(np.array([[1, 2, 3]], dtype=np.float32))
    answer = grpc.infer("front", [tensor], headers={"x-inferd-variant": "green"})
    assert answer.get_response().parameters["variant"].string_param == "green"
    assert answer.get_response().model_version == "2"
    grpc.close()


def test_bad_endpoint_changes_are_refused(client):
    zero = put(client, "bad", [{"name": "a", "model": "scorer", "weight": 0}])
    assert zero.status_code == 400
    assert "sum to a positive number" in zero.text
    unknown = put(client, "bad", [{"name": "a", "model": "nosuch", "weight": 1}])
    assert unknown.status_code == 404
    assert "unknown model 'nosuch'" in unknown.text
    no_version = put(client, "bad", [{"name": "a", "model": "scorer", "version": 9, "weight": 1}])
    assert no_version.status_code == 404
    assert "no version 9" in no_version.text
    clash = put(client, "scorer", [{"name": "a", "model": "scorer", "weight": 1}])
    assert clash.status_code == 400
    assert "may not share" in clash.text
    assert client.get("/v2/endpoints/bad").status_code == 404


def test_two_admin_changes_at_once_one_wins_the_other_gets_409(client):
    assert put(client, "race", [{"name": "a", "model": "scorer", "version": 1, "weight": 1}]).status_code == 200
    version = client.get("/v2/endpoints/race").json()["version"]
    barrier = threading.Barrier(2)
    statuses: list[int] = []

    def change(weight: int) -> None:
        barrier.wait()
        with httpx.Client(base_url=str(client.base_url), timeout=30) as own:
            variants = [{"name": "a", "model": "scorer", "version": 1, "weight": weight}]
            statuses.append(put(own, "race", variants, version).status_code)

    threads = [threading.Thread(target=change, args=(w,)) for w in (2, 3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200, 409]
    assert client.get("/v2/endpoints/race").json()["version"] == version + 1


def test_a_shadow_that_raises_on_every_request_is_never_noticed(client):
    variants = [{"name": "live", "model": "scorer", "version": 1, "weight": 1},
                {"name": "broken", "model": "broken", "shadow": True, "sample": 100},
                {"name": "reversed", "model": "scorer2", "shadow": True, "sample": 100}]
    assert put(client, "shadowed", variants).status_code == 200
    for _ in range(100):
        assert variant_of(client.post("/v2/models/shadowed/infer", json=BODY)) == "live"
    deadline = time.monotonic() + 20
    while True:
        shown = {v["name"]: v for v in client.get("/v2/endpoints/shadowed").json()["variants"]}
        if shown["broken"]["errors"] + shown["broken"]["shadow_stats"]["dropped"] == 100 and \
                shown["reversed"]["requests"] + shown["reversed"]["shadow_stats"]["dropped"] == 100:
            break
        assert time.monotonic() < deadline, shown
        time.sleep(0.1)
    assert shown["broken"]["errors"] > 0
    assert shown["broken"]["shadow_stats"]["compared"] == 0
    reversed_stats = shown["reversed"]["shadow_stats"]
    assert reversed_stats["compared"] > 0
    assert reversed_stats["agreement"] == 0.0
    assert reversed_stats["mean_abs_diff"] == pytest.approx(6.0)  # |2x - (-x)| = 3x, mean of 3, 6, 9
    metrics = client.get("/metrics").text
    assert 'inferd_endpoint_errors_total{endpoint="shadowed",variant="broken"}' in metrics
    assert 'inferd_endpoint_shadow_disagreement_ratio{endpoint="shadowed",variant="reversed"} 1.0' in metrics
    assert 'inferd_endpoint_traffic_percent{endpoint="front",variant="blue"} 80.0' in metrics


class Load:
    """Requests to an endpoint from a thread until stopped; every answer kept as (status, variant)."""

    def __init__(self, url: str, endpoint: str) -> None:
        self.answers: list[tuple[int, str | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(url, endpoint))

    def _run(self, url: str, endpoint: str) -> None:
        with httpx.Client(base_url=url, timeout=30) as http:
            while not self._stop.is_set():
                response = http.post(f"/v2/models/{endpoint}/infer", json=BODY)
                self.answers.append((response.status_code, response.headers.get("x-inferd-variant")))

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def events(client: httpx.Client, name: str) -> list[dict[str, Any]]:
    return client.get(f"/v2/endpoints/{name}/history").json()["events"]


def wait_for_event(client: httpx.Client, name: str, kind: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [e for e in events(client, name) if e["kind"] == kind]
        if found:
            return found[-1]
        time.sleep(0.05)
    raise AssertionError(f"no {kind} event on {name} after {timeout} s: {events(client, name)}")


def test_a_rollout_to_a_version_failing_30_percent_rolls_back_in_its_first_bake_window(client, served):
    assert put(client, "canary", [{"name": "stable", "model": "scorer", "version": 1, "weight": 1}]).status_code == 200
    with Load(served.url, "canary") as load:
        started = client.post("/v2/endpoints/canary/rollout",
                              json={"to": "scorer:3", "canary": "30%", "bake": "4s", "steps": "linear:50%"})
        assert started.status_code == 202, started.text
        again = client.post("/v2/endpoints/canary/rollout", json={"to": "scorer:2", "bake": "1s"})
        assert again.status_code == 409, again.text  # one rollout at a time
        rolled = wait_for_event(client, "canary", "rollout_rolled_back")
        time.sleep(0.3)  # requests after the rollback
    history = events(client, "canary")
    begun = next(e for e in history if e["kind"] == "rollout_started")["at"]
    steps = [e for e in history if e["kind"] == "rollout_step"]
    assert len(steps) == 1, history
    assert rolled["at"] - begun < 4.0, history  # still in the canary's first bake window
    assert "error rate" in rolled["detail"]["reason"]
    failures = [variant for status, variant in load.answers if status != 200]
    assert failures
    assert set(failures) == {"scorer-3"}
    shown = client.get("/v2/endpoints/canary").json()
    assert [v["name"] for v in shown["variants"]] == ["stable"]
    assert shown["rollout"]["state"] == "rolled_back"


def test_a_rollout_to_a_good_version_reaches_100_percent(client, served):
    assert put(client, "promote", [{"name": "old", "model": "scorer", "version": 1, "weight": 1}]).status_code == 200
    with Load(served.url, "promote"):
        started = client.post("/v2/endpoints/promote/rollout",
                              json={"to": "scorer:2", "variant": "new", "canary": 25, "bake": "1s",
                                    "steps": [50, 75]})
        assert started.status_code == 202, started.text
        wait_for_event(client, "promote", "rollout_succeeded")
    percents = [e["detail"]["percent"] for e in events(client, "promote") if e["kind"] == "rollout_step"]
    assert percents == [25, 50, 75, 100]
    assert {variant_of(client.post("/v2/models/promote/infer", json=BODY)) for _ in range(200)} == {"new"}
    shown = {v["name"]: v for v in client.get("/v2/endpoints/promote").json()["variants"]}
    assert shown["old"]["traffic_percent"] == 0
    assert shown["new"]["traffic_percent"] == 100


def test_kill_9_during_a_rollout_then_restart_rolls_back_and_keeps_admin_changes(endpoint_repo, tmp_path):
    state = ["--state-dir", str(tmp_path / "state")]
    process = ServerProcess(endpoint_repo, tmp_path / "serve.log", extra_args=state).start()
    try:
        with httpx.Client(base_url=process.url, timeout=30) as http:
            variants = [{"name": "v1", "model": "scorer", "version": 1, "weight": 1}]
            assert put(http, "durable", variants).status_code == 200
            assert http.post("/v2/endpoints/durable/rollout",
                             json={"to": "scorer:2", "canary": "10%", "bake": "60s"}).status_code == 202
            wait_for_event(http, "durable", "rollout_step")
        process.kill()
        process = ServerProcess(endpoint_repo, tmp_path / "serve.log", extra_args=state).start()
        with httpx.Client(base_url=process.url, timeout=30) as http:
            shown = http.get("/v2/endpoints/durable").json()
            assert [v["name"] for v in shown["variants"]] == ["v1"], shown  # the admin change survived
            assert shown["rollout"]["state"] == "rolled_back"
            reason = [e for e in events(http, "durable") if e["kind"] == "rollout_rolled_back"][-1]["detail"]["reason"]
            assert "driving the rollout stopped or died" in reason
            assert {variant_of(http.post("/v2/models/durable/infer", json=BODY)) for _ in range(50)} == {"v1"}
            assert http.get("/v2/endpoints/front").status_code == 200  # the file's endpoint too
    finally:
        assert process.stop() == 0, process.log()


def test_the_cli_sets_lists_rolls_out_and_shows_history(served):
    from cli_runner import inferd

    url = ["--url", served.url]
    created = inferd("endpoints", "set", "cli", "--variant", "a=scorer:1", "--variant", "b=scorer:2",
                     "--traffic", "a=70 b=30", *url)
    assert created.returncode == 0, created.stderr
    assert "version 1" in created.stdout
    listed = inferd("endpoints", "list", *url)
    assert "a=scorer:1 (70%), b=scorer:2 (30%)" in listed.stdout, listed.stdout
    wrong = inferd("endpoints", "set", "cli", "--traffic", "c=1", *url)
    assert wrong.returncode != 0
    assert "not a variant" in wrong.stderr + wrong.stdout
    started = inferd("endpoints", "rollout", "cli", "--to", "scorer:2", "--variant", "b", "--canary", "50%",
                     "--bake", "0.2s", "--steps", "75", *url)
    assert started.returncode == 0, started.stderr
    assert "50%, 75%, 100%" in started.stdout
    with httpx.Client(base_url=served.url, timeout=30) as http:
        wait_for_event(http, "cli", "rollout_succeeded")
    history = inferd("endpoints", "history", "cli", *url)
    assert "rollout_succeeded" in history.stdout, history.stdout
    shown = inferd("endpoints", "show", "cli", *url)
    assert '"state": "succeeded"' in shown.stdout
