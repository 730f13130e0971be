"""The per-model scheduler through a real ``inferd serve`` subprocess and real clients (httpx, tritonclient):
a full queue, deadlines, priorities, departed clients, dynamic batching, and a process worker killed with
SIGKILL while it runs a request.

The models record every request they run (by its ``tag``) in ``ran.log`` in their version folder, and one
request can hold a model instance until the test opens its gate (a file ``open-<tag>`` beside the log), so
"this request never ran" and "the instance is busy" are facts the tests read, not guesses from timing.
"""

from __future__ import annotations

import itertools
import os
import queue
import signal
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from fakes import write_model
from server_process import ServerProcess

SLEEPER = """
import os
import time
from pathlib import Path

import numpy as np

LEAST_S = 0.002

class Model:
    inputs = [{"name": "tag", "datatype": "INT64", "shape": [1]},
              {"name": "hold_ms", "datatype": "INT64", "shape": [1]}]
    outputs = [{"name": "tag", "datatype": "INT64", "shape": [1]},
               {"name": "pid", "datatype": "INT64", "shape": [1]}]

    def load(self, path):
        self.folder = Path(path)

    def predict(self, inputs):
        tag = int(inputs["tag"][0])
        with open(self.folder / "ran.log", "a") as log:
            log.write(f"{tag}\\n")
        deadline = time.monotonic() + int(inputs["hold_ms"][0]) / 1000
        gate = self.folder / f"open-{tag}"
        time.sleep(LEAST_S)
        while time.monotonic() < deadline and not gate.exists():
            time.sleep(0.002)
        return {"tag": inputs["tag"].copy(), "pid": np.array([os.getpid()], dtype=np.int64)}
"""
"""Runs request ``tag``: logs it, then holds the instance for up to ``hold_ms`` or until its gate opens. Every
call takes at least LEAST_S, so that the server runs it on a thread, never inline on its event loop."""

JITTERY = SLEEPER.replace("LEAST_S = 0.002", "LEAST_S = 0")
"""The same, fast unless asked to hold: the server learns to run it inline on its event loop."""

DOUBLER = """
import numpy as np

class Model:
    inputs = [{"name": "x", "datatype": "FP32", "shape": [-1, -1]}]
    outputs = [{"name": "y", "datatype": "FP32", "shape": [-1, -1]},
               {"name": "rows", "datatype": "INT64", "shape": [-1]}]

    def predict(self, inputs):
        x = inputs["x"]
        return {"y": x * 2, "rows": np.full(len(x), len(x), dtype=np.int64)}
"""
"""x * 2, and for each row the number of rows of the batch the model saw."""

MODELS = {
    "slow": (SLEEPER, "[queue]\nmax_size = 2\n\n[instances]\ncount = 1\n"),
    "prio": (SLEEPER, "[queue]\npriority_levels = 3\n\n[instances]\ncount = 1\n"),
    "batched": (DOUBLER, "max_batch_size = 16\n\n[batching]\nenabled = true\nmax_queue_delay_us = 20000\n"),
    "crashy": (SLEEPER, '[instances]\nkind = "process"\ncount = 1\n'),
    "jittery": (JITTERY, "[instances]\ncount = 1\n"),
}

_tags = itertools.count(1)
LONG_HOLD_MS = 10_000
"""Longest a gated request holds its instance; tests open the gate long before that."""


def new_tag() -> int:
    return next(_tags)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("scheduling") / "models"
    for name, (source, toml) in MODELS.items():
        write_model(root, name, source, toml)
    return root


@pytest.fixture(scope="module")
def server(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(repo, tmp_path_factory.mktemp("scheduling-logs") / "serve.log")
    process.start(timeout=120)
    yield process
    code = process.stop()
    assert code == 0, f"inferd serve exited with {code} on SIGTERM:\n{process.log()}"


@pytest.fixture
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


@pytest.fixture
def grpc(server: ServerProcess) -> Iterator[grpcclient.InferenceServerClient]:
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        yield client


# -- the sleeper models: what ran, and holding an instance ----------------------------------------------------
def body(tag: int, hold_ms: int = 0, **parameters: object) -> dict:
    request: dict = {"inputs": [{"name": "tag", "datatype": "INT64", "shape": [1], "data": [tag]},
                                {"name": "hold_ms", "datatype": "INT64", "shape": [1], "data": [hold_ms]}]}
    if parameters:
        request["parameters"] = parameters
    return request


def grpc_inputs(tag: int, hold_ms: int = 0) -> list[grpcclient.InferInput]:
    inputs = []
    for name, value in (("tag", tag), ("hold_ms", hold_ms)):
        item = grpcclient.InferInput(name, [1], "INT64")
        item.set_data_from_numpy(np.array([value], dtype=np.int64))
        inputs.append(item)
    return inputs


def ran(repo: Path, model: str) -> list[int]:
    """The tags the model ran, in the order it started them."""
    log = repo / model / "1" / "ran.log"
    return [int(line) for line in log.read_text().split()] if log.exists() else []


def wait_until_ran(repo: Path, model: str, tag: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while tag not in ran(repo, model):
        assert time.monotonic() < deadline, f"model {model!r} did not start request {tag} in {timeout} s"
        time.sleep(0.002)


def release(repo: Path, model: str, tag: int) -> None:
    (repo / model / "1" / f"open-{tag}").touch()


def settle() -> None:
    """Give requests just sent from other threads time to reach the server's queue (loopback)."""
    time.sleep(0.2)


def post(client: httpx.Client, model: str, payload: dict) -> httpx.Response:
    """One inference request (httpx.Client is thread-safe: pool threads share the test's client)."""
    return client.post(f"/v2/models/{model}/infer", json=payload)


@contextmanager
def occupied(http: httpx.Client, repo: Path, model: str, pool: ThreadPoolExecutor,
             hold_ms: int = LONG_HOLD_MS) -> Iterator[int]:
    """Hold the model's one instance with a gated request while the block runs; it must then succeed."""
    tag = new_tag()
    holder = pool.submit(post, http, model, body(tag, hold_ms))
    try:
        wait_until_ran(repo, model, tag)
        yield tag
    finally:
        release(repo, model, tag)
    response = holder.result(timeout=30)
    assert response.status_code == 200, response.text


def tag_of(response: httpx.Response) -> int:
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o["data"] for o in response.json()["outputs"]}
    return int(outputs["tag"][0])


def grpc_status(exc: InferenceServerException) -> str:
    return str(exc.status()).removeprefix("StatusCode.")


# -- a full queue -----------------------------------------------------------------------------------------
def test_full_queue_is_503_with_retry_after_then_serves_again(repo, http, grpc):
    with ThreadPoolExecutor(4) as pool:
        with occupied(http, repo, "slow", pool):
            queued_tags = [new_tag(), new_tag()]
            queued = [pool.submit(post, http, "slow", body(tag)) for tag in queued_tags]  # max_size = 2
            settle()
            refused_tag = new_tag()
            started = time.monotonic()
            refused = http.post("/v2/models/slow/infer", json=body(refused_tag))
            assert time.monotonic() - started < 1.0, "a full queue must refuse at once, not make the caller wait"
            assert refused.status_code == 503, refused.text
            retry_after = refused.headers.get("retry-after", "")
            assert retry_after.isdigit(), f"Retry-After must be whole seconds, got {retry_after!r}"
            assert int(retry_after) >= 1
            error = refused.json()["error"]
            assert "'slow'" in error
            assert "queue is full" in error

            with pytest.raises(InferenceServerException) as caught:
                grpc.infer("slow", grpc_inputs(new_tag()))
            assert grpc_status(caught.value) == "UNAVAILABLE", caught.value
            assert "queue is full" in caught.value.message()
        assert sorted(tag_of(f.result(timeout=30)) for f in queued) == queued_tags

    assert refused_tag not in ran(repo, "slow")
    after = new_tag()
    assert tag_of(http.post("/v2/models/slow/infer", json=body(after))) == after


# -- deadlines in the queue ------------------------------------------------------------------------------
def test_deadline_in_queue_is_504_and_never_runs(repo, http):
    with ThreadPoolExecutor(2) as pool, occupied(http, repo, "slow", pool) as holder:
        late = new_tag()
        started = time.monotonic()
        response = http.post("/v2/models/slow/infer", json=body(late, timeout=50_000))
        elapsed = time.monotonic() - started
        assert response.status_code == 504, response.text
        assert "timed out" in response.json()["error"]
        assert elapsed < 1.0, f"a 50 ms queue deadline was answered after {elapsed:.2f} s"
        assert ran(repo, "slow")[-1] == holder, "the holder must still be running when the deadline passes"
    after = new_tag()
    assert tag_of(http.post("/v2/models/slow/infer", json=body(after))) == after
    log = ran(repo, "slow")
    assert late not in log
    assert log.index(holder) < log.index(after)


def test_grpc_deadline_in_queue_is_deadline_exceeded(repo, http, grpc):
    with ThreadPoolExecutor(2) as pool, occupied(http, repo, "slow", pool):
        late = new_tag()
        started = time.monotonic()
        with pytest.raises(InferenceServerException) as caught:
            grpc.infer("slow", grpc_inputs(late), timeout=50_000)  # the V2 `timeout` parameter, in µs
        elapsed = time.monotonic() - started
        assert grpc_status(caught.value) == "DEADLINE_EXCEEDED", caught.value
        assert "timed out" in caught.value.message()  # the server's answer, not the client giving up
        assert elapsed < 1.0
    after = new_tag()
    assert int(grpc.infer("slow", grpc_inputs(after)).as_numpy("tag")[0]) == after
    assert late not in ran(repo, "slow")


# -- priorities ---------------------------------------------------------------------------------------------
def test_higher_priority_runs_first(repo, http):
    low, mid, high = new_tag(), new_tag(), new_tag()
    with ThreadPoolExecutor(4) as pool:
        with occupied(http, repo, "prio", pool) as holder:
            answers = []
            for payload in (body(low, priority=3), body(mid), body(high, priority=1)):  # the worst order for FIFO
                answers.append(pool.submit(post, http, "prio", payload))
                time.sleep(0.03)
            settle()
        assert [tag_of(a.result(timeout=30)) for a in answers] == [low, mid, high]
    log = ran(repo, "prio")
    assert log[log.index(holder):] == [holder, high, mid, low]


def test_priority_out_of_range_is_400(http):
    response = http.post("/v2/models/prio/infer", json=body(new_tag(), priority=4))
    assert response.status_code == 400, response.text
    assert "priority" in response.json()["error"]


# -- a client that goes away while queued -----------------------------------------------------------------
def test_request_of_departed_client_is_dropped(server, repo, http):
    gone = new_tag()
    with ThreadPoolExecutor(2) as pool, occupied(http, repo, "slow", pool):
        with httpx.Client(base_url=server.url, timeout=0.3) as impatient, pytest.raises(httpx.ReadTimeout):
            impatient.post("/v2/models/slow/infer", json=body(gone))
        # the client gave up and closed its connection; its request is still queued behind the holder
        settle()  # the server sees the connection close
    after = new_tag()
    assert tag_of(http.post("/v2/models/slow/infer", json=body(after))) == after
    assert gone not in ran(repo, "slow"), f"the departed client's request ran: {server.log()[-2000:]}"


# -- gRPC cancellation ------------------------------------------------------------------------------------
def test_grpc_request_cancelled_by_client_deadline_never_runs(repo, http, grpc):
    cancelled = new_tag()
    results: queue.Queue[tuple[object, InferenceServerException | None]] = queue.Queue()
    with ThreadPoolExecutor(2) as pool, occupied(http, repo, "slow", pool):
        grpc.async_infer("slow", grpc_inputs(cancelled), lambda result, error: results.put((result, error)),
                         client_timeout=0.3)
        result, error = results.get(timeout=10)
        assert result is None
        assert error is not None
        assert grpc_status(error) == "DEADLINE_EXCEEDED", error
        settle()  # the cancellation reaches the server
    after = new_tag()
    assert int(grpc.infer("slow", grpc_inputs(after)).as_numpy("tag")[0]) == after
    assert cancelled not in ran(repo, "slow")


# -- a model that is usually fast and sometimes slow -----------------------------------------------------------
def test_one_slow_call_of_a_fast_model_does_not_block_the_server(repo, http):
    for _ in range(20):  # fast calls: the server's moving average of this model falls under its inline limit
        tag_of(http.post("/v2/models/jittery/infer", json=body(new_tag())))
    with ThreadPoolExecutor(2) as pool, occupied(http, repo, "jittery", pool, hold_ms=1500):
        started = time.monotonic()
        try:
            live = http.get("/v2/health/live", timeout=1.0)
        except httpx.TimeoutException:
            pytest.fail("the server did not answer a health check while one model call ran")
        assert live.status_code == 200
        assert time.monotonic() - started < 0.5


# -- dynamic batching ----------------------------------------------------------------------------------------
def doubler_body(x: np.ndarray, datatype: str = "FP32") -> dict:
    return {"inputs": [{"name": "x", "datatype": datatype, "shape": list(x.shape), "data": x.ravel().tolist()}]}


def infer_all(server: ServerProcess, bodies: list[dict]) -> list[httpx.Response]:
    """Every request at once, each from a thread of its own, over one client with a connection per thread."""
    limits = httpx.Limits(max_connections=len(bodies), max_keepalive_connections=len(bodies))
    with (httpx.Client(base_url=server.url, timeout=30, limits=limits) as client,
          ThreadPoolExecutor(len(bodies)) as pool):
        return list(pool.map(lambda payload: post(client, "batched", payload), bodies))


def doubled(response: httpx.Response) -> tuple[np.ndarray, np.ndarray]:
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    y = np.array(outputs["y"]["data"], dtype=np.float32).reshape(outputs["y"]["shape"])
    return y, np.array(outputs["rows"]["data"], dtype=np.int64)


def test_batched_answers_reach_their_callers(server):
    rng = np.random.default_rng(7)
    xs = [rng.integers(-1000, 1000, size=(int(rng.integers(1, 5)), 4)).astype(np.float32) for _ in range(200)]
    responses = infer_all(server, [doubler_body(x) for x in xs])
    batch_rows = []
    for x, response in zip(xs, responses, strict=True):
        y, rows = doubled(response)
        np.testing.assert_array_equal(y, x * 2)
        assert len(set(rows)) == 1
        assert len(x) <= rows[0] <= 16
        batch_rows.append(int(rows[0]) - len(x))
    assert max(batch_rows) > 0, "no request was batched with another"


def test_batches_never_mix_widths(server):
    rng = np.random.default_rng(11)
    widths = [2, 3, 5]
    xs = [rng.integers(-100, 100, size=(int(rng.integers(1, 4)), widths[i % 3])).astype(np.float32)
          for i in range(90)]
    responses = infer_all(server, [doubler_body(x) for x in xs])
    merged = dict.fromkeys(widths, False)
    for x, response in zip(xs, responses, strict=True):
        y, rows = doubled(response)  # a batch of mixed widths could not even be stacked: 500
        np.testing.assert_array_equal(y, x * 2)
        assert len(x) <= rows[0] <= 16
        merged[x.shape[1]] |= rows[0] > len(x)
    assert any(merged.values()), "no request was batched with another"


def test_bad_request_inside_a_batch_fails_alone(server):
    rng = np.random.default_rng(3)
    xs = [rng.integers(-100, 100, size=(2, 4)).astype(np.float32) for _ in range(30)]
    bodies = [doubler_body(x) for x in xs]
    bad_at = 17
    bodies.insert(bad_at, doubler_body(np.ones((2, 4), dtype=np.int32), datatype="INT32"))
    responses = infer_all(server, bodies)
    bad = responses.pop(bad_at)
    assert bad.status_code == 400, bad.text
    error = bad.json()["error"]
    assert "'x'" in error
    assert "INT32" in error
    merged = False
    for x, response in zip(xs, responses, strict=True):
        y, rows = doubled(response)
        np.testing.assert_array_equal(y, x * 2)
        merged |= rows[0] > len(x)
    assert merged, "no request was batched with another"


# -- a process worker killed with SIGKILL ------------------------------------------------------------
def worker_pids(server_pid: int) -> list[int]:
    """The server's multiprocessing spawn children (its model workers), from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:  # gone meanwhile
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # after "pid (comm) state"
        if ppid == server_pid and b"spawn_main" in cmdline:
            found.append(int(entry.name))
    return found


def test_killed_process_worker_fails_its_request_and_is_replaced(server, repo, http):
    assert server.process is not None
    warm = http.post("/v2/models/crashy/infer", json=body(new_tag()))
    assert warm.status_code == 200, warm.text
    pid = {o["name"]: o["data"] for o in warm.json()["outputs"]}["pid"][0]
    assert worker_pids(server.process.pid) == [pid]

    victim, waiting = new_tag(), new_tag()
    with ThreadPoolExecutor(2) as pool:
        in_flight: Future[httpx.Response] = pool.submit(post, http, "crashy", body(victim, 2000))
        wait_until_ran(repo, "crashy", victim)
        killed = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        failed = in_flight.result(timeout=10)
        assert time.monotonic() - killed < 1.0, "the in-flight request must fail at once, not after its 2 s"
        assert failed.status_code == 500, failed.text
        error = failed.json()["error"]
        assert f"worker process {pid} of model 'crashy' died" in error
        assert "SIGKILL" in error

        # sent while the worker is down: it waits for the replacement rather than failing
        patient = pool.submit(post, http, "crashy", body(waiting))
        statuses = []
        while time.monotonic() - killed < 10:
            statuses.append(http.get("/v2/models/crashy/ready").status_code)
            if statuses[-1] == 200:
                break
            time.sleep(0.005)
        back = time.monotonic() - killed
        assert statuses[-1] == 200, f"not ready again 10 s after the kill:\n{server.log()[-3000:]}"
        assert back < 2.0, f"the replacement worker took {back:.2f} s to be ready"
        assert set(statuses) <= {200, 503}
        # a replacement means a process spawn and an import of numpy: polled every few ms, the gap shows
        assert 503 in statuses or back < 0.05, "the model said ready while its worker was down"
        answer = patient.result(timeout=10)

    assert tag_of(answer) == waiting
    replacement = {o["name"]: o["data"] for o in answer.json()["outputs"]}["pid"][0]
    assert replacement != pid
    assert worker_pids(server.process.pid) == [replacement]
    after = new_tag()
    assert tag_of(http.post("/v2/models/crashy/infer", json=body(after))) == after
    assert ran(repo, "crashy")[-3:] == [victim, waiting, after]


# -- stopping -----------------------------------------------------------------------------------------------
def test_requests_in_flight_when_the_server_is_told_to_stop_are_answered(tmp_path):
    """SIGTERM while one request runs and two wait behind it in the queue: all three are answered (each waiting
    one is resumed by the future it awaits, not by a task), then the server exits cleanly."""
    root = tmp_path / "models"
    write_model(root, "slow", SLEEPER, "[instances]\ncount = 1\n")
    process = ServerProcess(root, tmp_path / "serve.log").start(timeout=120)
    assert process.process is not None
    try:
        with ThreadPoolExecutor(3) as pool, httpx.Client(base_url=process.url, timeout=30) as client:
            tags = [new_tag() for _ in range(3)]
            answers = [pool.submit(post, client, "slow", body(tag, hold_ms=400)) for tag in tags]
            wait_until_ran(root, "slow", tags[0])
            settle()
            os.kill(process.process.pid, signal.SIGTERM)
            responses = [answer.result(timeout=30) for answer in answers]
    finally:
        code = process.stop()
    assert sorted(tag_of(response) for response in responses) == sorted(tags)
    assert code == 0, process.log()
    assert sorted(ran(root, "slow")) == sorted(tags)
