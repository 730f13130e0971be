"""Two real ``inferd serve`` processes on one state folder (as ``--workers N`` or replicas on one host): an admin
change made through one reaches the other within a few seconds, a rollout is driven by one of them only, and when
that one is killed -9 the other takes the rollout over and rolls it back."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from endpoint_models import row, write_endpoint_repository
from server_process import ServerProcess

SEEN_WITHIN_S = 5.0
"""The other process polls the store every 0.5 s; this leaves room for a loaded machine."""


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    root = write_endpoint_repository(tmp_path / "models")
    state = ["--state-dir", str(tmp_path / "state")]
    a = ServerProcess(root, tmp_path / "a.log", extra_args=state)
    b = ServerProcess(root, tmp_path / "b.log", extra_args=state)
    try:
        a.start()
        b.start()
        yield a, b
    finally:
        assert b.stop() == 0, b.log()
        a.stop()  # may have been killed


def eventually(check: Callable[[], Any], within: float = SEEN_WITHIN_S) -> Any:
    deadline = time.monotonic() + within
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, f"not within {within} s"
        time.sleep(0.05)


def variants_on(server: ServerProcess, name: str) -> set[str]:
    """The variants 40 requests to ``name`` land on."""
    with httpx.Client(base_url=server.url, timeout=30) as http:
        return {http.post(f"/v2/models/{name}/infer", json=row()).headers.get("x-inferd-variant", "") for _ in range(40)}


def test_a_change_through_one_process_reaches_the_other(pair):
    a, b = pair
    with httpx.Client(base_url=a.url, timeout=30) as on_a, httpx.Client(base_url=b.url, timeout=30) as on_b:
        assert on_b.get("/v2/endpoints/shared").status_code == 404
        made = on_a.put("/v2/endpoints/shared", json={"variants": [{"name": "one", "model": "scorer", "version": 1}]})
        assert made.status_code == 200, made.text
        eventually(lambda: on_b.get("/v2/endpoints/shared").status_code == 200)
        assert variants_on(b, "shared") == {"one"}
        changed = on_a.put("/v2/endpoints/shared", headers={"if-match": '"1"'}, json={"variants": [
            {"name": "one", "model": "scorer", "version": 1, "weight": 0},
            {"name": "two", "model": "scorer", "version": 2, "weight": 1}]})
        assert changed.status_code == 200, changed.text
        eventually(lambda: on_b.get("/v2/endpoints/shared").json()["version"] == 2)
        assert variants_on(b, "shared") == {"two"}
        stale = on_b.put("/v2/endpoints/shared", headers={"if-match": '"1"'},
                         json={"variants": [{"name": "one", "model": "scorer", "version": 1}]})
        assert stale.status_code == 409  # made against the version A replaced
        assert on_b.delete("/v2/endpoints/shared").status_code in (200, 204)
        eventually(lambda: on_a.get("/v2/endpoints/shared").status_code == 404)


def test_a_rollout_driven_by_a_killed_process_is_taken_over_and_rolled_back(pair):
    a, b = pair
    with httpx.Client(base_url=a.url, timeout=30) as on_a, httpx.Client(base_url=b.url, timeout=30) as on_b:
        assert on_a.put("/v2/endpoints/moving", json={"variants": [
            {"name": "old", "model": "scorer", "version": 1}]}).status_code == 200
        started = on_a.post("/v2/endpoints/moving/rollout", json={"to": "scorer:2", "variant": "new",
                                                                  "canary": "50%", "bake": "120s"})
        assert started.status_code == 202, started.text
        eventually(lambda: {v["name"]: v.get("traffic_percent") for v in
                            on_b.get("/v2/endpoints/moving").json().get("variants", [])} == {"old": 50, "new": 50})
        assert on_b.get("/v2/endpoints/moving").json()["rollout"]["state"] == "running"
        assert variants_on(b, "moving") == {"old", "new"}  # B routes by the canary weights A set
        second = on_b.post("/v2/endpoints/moving/rollout", json={"to": "scorer:3", "bake": "1s"})
        assert second.status_code == 409, second.text
        edit = on_b.put("/v2/endpoints/moving", json={"variants": [{"name": "old", "model": "scorer"}]})
        assert edit.status_code == 409, edit.text  # the rollout's weights are its own, in every process
        time.sleep(1.5)  # A drives it: B leaves it alone while A lives (its lease is renewed)
        assert on_b.get("/v2/endpoints/moving").json()["rollout"]["state"] == "running"
        a.kill()
        shown = eventually(lambda: (got := on_b.get("/v2/endpoints/moving").json())["rollout"]["state"]
                           == "rolled_back" and got)
        assert [v["name"] for v in shown["variants"]] == ["old"]
        assert variants_on(b, "moving") == {"old"}
        kinds = [e["kind"] for e in on_b.get("/v2/endpoints/moving/history").json()["events"]]
        assert kinds[-2:] == ["rolled_back", "rollout_rolled_back"], kinds
        reason = on_b.get("/v2/endpoints/moving/history").json()["events"][-1]["detail"]["reason"]
        assert "driving the rollout stopped or died" in reason
