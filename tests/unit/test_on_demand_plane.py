"""OnDemand in process, over a real repository of python models: one load for concurrent requests, the LRU choice
under the budget, and the answer waiting requests get when the server stops during a load."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from demand_models import loads, write_counted
from inferd.dataplane import DataPlane
from inferd.errors import ErrorCode, InferError
from inferd.inference import InferenceRequest, RequestInput
from inferd.on_demand import DemandPolicy, ModelControl
from inferd.repository import ModelRepository, State


def _request(name: str, value: float = 1.0) -> InferenceRequest:
    return InferenceRequest(name, [RequestInput("x", "FP32", [1], [value])])


def _plane(root: Path, **policy: object) -> DataPlane:
    return DataPlane(ModelRepository(root), control=ModelControl(DemandPolicy(**policy)))  # type: ignore[arg-type]


def test_concurrent_first_requests_share_one_load_and_each_gets_its_answer(tmp_path):
    write_counted(tmp_path, "m", delay=0.3)
    plane = _plane(tmp_path)

    async def main() -> list[float]:
        await plane.start()
        responses = await asyncio.gather(*(plane.infer(_request("m", float(i))) for i in range(50)))
        await plane.stop()
        return [float(r.outputs[0].data[0]) for r in responses]

    assert asyncio.run(main()) == [2.0 * i for i in range(50)]
    assert loads(tmp_path, "m") == 1
    plane.close()


def test_the_least_recently_used_idle_model_makes_room(tmp_path):
    for name in ("a", "b", "c"):
        write_counted(tmp_path, name, toml='memory_size = "10MiB"\n')
    plane = _plane(tmp_path, memory_budget=25 * 2**20)

    async def main() -> None:
        await plane.start()
        for name in ("a", "b", "a", "c"):  # b is the least recently used when c needs room
            await plane.infer(_request(name))
        await plane.stop()

    asyncio.run(main())
    states = {m.name: m.versions[1].state for m in plane.repository.models()}
    assert states == {"a": State.READY, "b": State.UNLOADED, "c": State.READY}
    plane.close()


def test_requests_waiting_for_a_load_are_answered_when_the_server_stops(tmp_path):
    write_counted(tmp_path, "slow", delay=1.0)
    plane = _plane(tmp_path)

    async def main() -> None:
        await plane.start()
        waiting = asyncio.ensure_future(plane.infer(_request("slow")))
        await asyncio.sleep(0.2)
        await plane.stop()
        with pytest.raises(InferError, match="the server is stopping") as info:
            await waiting
        assert info.value.code is ErrorCode.UNAVAILABLE

    asyncio.run(main())
    plane.close()


def test_a_model_folder_deleted_while_serving(tmp_path):
    """Without polling: the loaded model keeps answering from memory; once idle-unloaded, its next request is a
    clear NOT_FOUND naming the model (no traceback, no hang), and the other models keep serving."""
    import shutil

    write_counted(tmp_path, "gone", toml="idle_unload_s = 0.2\n")
    write_counted(tmp_path, "kept")
    plane = _plane(tmp_path)

    async def main() -> tuple[float, InferError, float]:
        await plane.start()
        await plane.infer(_request("gone"))
        shutil.rmtree(tmp_path / "gone")
        served = await plane.infer(_request("gone", 2.0))
        for _ in range(100):  # idle unload: within a few sweeps
            if plane.repository.known("gone") is None:
                break
            await asyncio.sleep(0.05)
        with pytest.raises(InferError) as info:
            await plane.infer(_request("gone"))
        kept = await plane.infer(_request("kept", 3.0))
        await plane.stop()
        return float(served.outputs[0].data[0]), info.value, float(kept.outputs[0].data[0])

    served, error, kept = asyncio.run(main())
    assert (served, kept) == (4.0, 6.0)
    assert error.code is ErrorCode.NOT_FOUND, error
    assert "model 'gone' is no longer in the repository" in error.message
    plane.close()


def test_a_load_measures_the_memory_it_took_and_its_time_into_the_statistics(tmp_path):
    """Resident memory before and after the load (no model.toml memory_size): in the version's statistics, as
    Triton's memory_usage, with the load time; a declared memory_size is taken as it is."""
    write_counted(tmp_path, "big", hold_mb=64, delay=0.2)
    write_counted(tmp_path, "declared", toml='memory_size = "3MiB"\n')
    plane = _plane(tmp_path)

    async def main() -> None:
        await plane.start()
        await plane.infer(_request("big"))
        await plane.infer(_request("declared"))
        await plane.stop()

    asyncio.run(main())
    big = plane.repository.get("big", None).stats
    assert big.memory_bytes >= 60 * 2**20
    assert big.load_ns >= 200_000_000
    stats = big.to_dict(load_time=True)
    assert stats["memory_usage"] == [{"type": "CPU", "id": 0, "byte_size": big.memory_bytes}]
    assert stats["load_ns"] == big.load_ns
    assert plane.repository.get("declared", None).stats.memory_bytes == 3 * 2**20
    plane.close()


def test_a_model_just_loaded_is_not_unloaded_for_another_before_its_load_returns(tmp_path):
    """A load installs its model in the repository on a thread; the requests waiting for it are handed it only when
    the load's coroutine resumes. A second load making room in between must not take it (under Zipf traffic it
    was the least recently used, and its waiting requests got 503 "unloaded")."""
    for name in ("a", "b", "c"):
        write_counted(tmp_path, name, toml='memory_size = "10MiB"\n')
    plane = _plane(tmp_path, memory_budget=35 * 2**20)

    async def main() -> None:
        await plane.start()
        assert plane.on_demand is not None
        await plane.infer(_request("a"))
        gate = asyncio.Event()

        async def load_b_then_wait():
            model = await asyncio.get_running_loop().run_in_executor(None, plane.repository.load, "b")
            await gate.wait()  # b is in the repository, idle, and its load has not returned
            return model

        loading = asyncio.ensure_future(plane.on_demand.within_budget("b", load_b_then_wait))
        while plane.repository.known("b") is None:
            await asyncio.sleep(0.01)
        await plane.infer(_request("a"))  # a is now used more recently than b
        await plane.infer(_request("c"))  # c needs room: a goes, not b
        gate.set()
        await loading
        await plane.infer(_request("b"))  # b was never unloaded: no second load
        await plane.stop()

    asyncio.run(main())
    states = {m.name: m.versions[1].state for m in plane.repository.models()}
    assert states == {"a": State.UNLOADED, "b": State.READY, "c": State.READY}
    assert loads(tmp_path, "b") == 1
    plane.close()


def test_a_request_that_looked_while_a_load_installed_its_model_is_served(tmp_path, monkeypatch):
    """Loads install their model on a thread: a request can find the old, unloaded model at its first look and the
    new, ready one at its second (whether to wait for a load). It is served, not refused as "unloaded"."""
    from inferd.errors import unavailable

    write_counted(tmp_path, "m")
    plane = _plane(tmp_path)
    real_get = plane.repository.get
    stale = [True]

    def get(name, version=None):
        if stale and name == "m":  # the first look, just before the thread installed the model
            stale.clear()
            raise unavailable("model 'm' is not ready: version 1: unloaded")
        return real_get(name, version)

    async def main() -> tuple[float, float]:
        await plane.start()
        await plane.infer(_request("m"))
        monkeypatch.setattr(plane.repository, "get", get)
        served = await plane.infer(_request("m", 3.0))
        stale.append(True)
        ensured = await plane.ensure_loaded("m")
        await plane.stop()
        return float(served.outputs[0].data[0]), ensured.version

    assert asyncio.run(main()) == (6.0, 1)
    assert loads(tmp_path, "m") == 1
    plane.close()
