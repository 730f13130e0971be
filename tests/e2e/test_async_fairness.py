"""Real-time requests are not starved by an asynchronous backlog: with 40 slow jobs queued, synchronous
requests to the same model are answered while most of the backlog is still waiting (the async workers hold at
most ``async_concurrency_per_model`` places in the model's queue)."""

from __future__ import annotations

from collections import Counter

import httpx

from fakes import write_model
from server_process import ServerProcess

SLOW = """
import time

class Model:
    inputs = [{"name": "x", "datatype": "INT64", "shape": [-1]}]
    outputs = [{"name": "y", "datatype": "INT64", "shape": [-1]}]

    def predict(self, inputs):
        time.sleep(0.05)
        return {"y": inputs["x"] * 2}
"""


def _body(i: int) -> dict[str, object]:
    return {"inputs": [{"name": "x", "datatype": "INT64", "shape": [1], "data": [i]}]}


def test_sync_requests_are_answered_while_the_backlog_waits(tmp_path):
    repo = tmp_path / "models"
    write_model(repo, "slow", SLOW)
    server = ServerProcess(repo, tmp_path / "serve.log", env={"INFERD_ASYNC_CONCURRENCY_PER_MODEL": "2"}).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            ids = [client.post("/v2/models/slow/infer-async", json=_body(i)).json()["id"] for i in range(40)]
            for i in range(5):
                answer = client.post("/v2/models/slow/infer", json=_body(100 + i))
                assert answer.status_code == 200, answer.text
                assert answer.json()["outputs"][0]["data"] == [200 + 2 * i]
            states = Counter(client.get(f"/v2/jobs/{job_id}").json()["status"] for job_id in ids)
            # 5 sync calls took at most 5 x (2 async jobs ahead + itself) x 50 ms: most of 40 jobs still wait
            assert states["queued"] + states["running"] >= 15, states
            assert states["failed"] == 0, states
    finally:
        assert server.stop() == 0, server.log()
