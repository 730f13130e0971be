"""The memory budget on every load path, in process: a load through the repository API and a reload by repository
polling make room the way a load a request starts does (the least recently used idle model goes first), and are
refused with the budget's message when nothing can go. (The same over REST and gRPC: tests/e2e/test_memory_budget.py.)
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from demand_models import loads, write_counted
from inferd.dataplane import DataPlane
from inferd.errors import ErrorCode, InferError
from inferd.inference import InferenceRequest, RequestInput
from inferd.on_demand import DemandPolicy, ModelControl
from inferd.repository import ModelRepository

MIB = 2**20
SIZE = 'memory_size = "10MiB"\n'


def _request(name: str, value: float = 1.0) -> InferenceRequest:
    return InferenceRequest(name, [RequestInput("x", "FP32", [1], [value])])


def _plane(root: Path, budget_mib: int, poll: bool = False) -> DataPlane:
    """On demand under a budget; with ``poll``, a poller the tests drive themselves (``plane.poller.poll()``)."""
    control = ModelControl(DemandPolicy(memory_budget=budget_mib * MIB), poll_s=3600.0 if poll else 0.0)
    return DataPlane(ModelRepository(root), control=control)


def _states(plane: DataPlane) -> dict[str, str]:
    return {m.name: "/".join(v.state.value for v in m.versions.values()) for m in plane.repository.models()}


async def _answer(plane: DataPlane, name: str) -> float:
    response = await plane.infer(_request(name))
    return float(response.outputs[0].data[0])


def _run(plane: DataPlane, steps: object) -> None:
    async def main() -> None:
        await plane.start()
        try:
            await steps  # type: ignore[misc]
        finally:
            await plane.stop()

    try:
        asyncio.run(main())
    finally:
        plane.close()


def test_a_repository_api_load_unloads_the_least_recently_used_idle_model(tmp_path):
    for name in ("a", "b", "c"):
        write_counted(tmp_path, name, toml=SIZE)
    plane = _plane(tmp_path, budget_mib=25)

    async def steps() -> None:
        for name in ("a", "b", "a"):  # b is the least recently used when c needs room
            await _answer(plane, name)
        await plane.load("c")
        assert _states(plane) == {"a": "READY", "b": "UNLOADED", "c": "READY"}

    _run(plane, steps())


def test_a_repository_api_load_with_nothing_to_unload_is_refused_naming_the_budget(tmp_path):
    for name in ("a", "b"):
        write_counted(tmp_path, name, toml=SIZE + "pinned = true\n")
    write_counted(tmp_path, "c", toml=SIZE)
    plane = _plane(tmp_path, budget_mib=25)

    async def steps() -> None:
        await plane.load("a")
        await plane.load("b")
        with pytest.raises(InferError) as refused:
            await plane.load("c")
        assert refused.value.code is ErrorCode.UNAVAILABLE
        assert refused.value.retry_after_s == 1
        assert "memory budget 25.0MiB (memory_budget) is full: 20.0MiB held by models that are pinned or have " \
               "requests in flight (a, b); model 'c' needs 10.0MiB" in refused.value.message
        assert _states(plane) == {"a": "READY", "b": "READY"}

    _run(plane, steps())
    assert loads(tmp_path, "c") == 0  # refused before it loaded


def test_a_repository_api_load_of_a_model_larger_than_the_budget_is_refused_before_it_loads(tmp_path):
    write_counted(tmp_path, "huge", toml='memory_size = "30MiB"\n')
    plane = _plane(tmp_path, budget_mib=25)

    async def steps() -> None:
        with pytest.raises(InferError, match="needs 30.0MiB, more than the whole memory budget 25.0MiB") as refused:
            await plane.load("huge")
        assert refused.value.code is ErrorCode.FAILED_PRECONDITION

    _run(plane, steps())
    assert loads(tmp_path, "huge") == 0


def test_a_polling_reload_makes_room_by_unloading_an_idle_model(tmp_path):
    write_counted(tmp_path, "kept", toml=SIZE + "pinned = true\n")
    for name in ("a", "b"):
        write_counted(tmp_path, name, toml=SIZE)
    plane = _plane(tmp_path, budget_mib=35, poll=True)

    async def steps() -> None:
        for name in ("kept", "a", "b"):
            await _answer(plane, name)
        write_counted(tmp_path, "b", toml=SIZE, version=2, factor=3)  # version 2 loads beside 1: 10 MiB more
        assert plane.poller is not None
        await plane.poller.poll()
        assert await _answer(plane, "b") == 3.0
        assert _states(plane) == {"a": "UNLOADED", "b": "READY", "kept": "READY"}  # a: idle, used longest ago

    _run(plane, steps())


def test_a_polling_reload_without_room_keeps_the_old_version_serving_and_is_tried_again(tmp_path):
    write_counted(tmp_path, "kept", toml=SIZE + "pinned = true\n")
    write_counted(tmp_path, "b", toml=SIZE)
    plane = _plane(tmp_path, budget_mib=25, poll=True)

    async def steps() -> None:
        for name in ("kept", "b"):
            await _answer(plane, name)
        write_counted(tmp_path, "b", toml=SIZE, version=2, factor=3)
        assert plane.poller is not None
        await plane.poller.poll()
        assert await _answer(plane, "b") == 2.0  # version 1 still serves
        model = plane.repository.known("b")
        assert model is not None
        assert "cannot be served, the previous versions still are: memory budget 25.0MiB (memory_budget) is " \
               "full" in model.reload_error
        assert loads(tmp_path, "b") == 1
        await plane.unload("kept")  # room now: the next poll follows the change it could not follow before
        await plane.poller.poll()
        assert await _answer(plane, "b") == 3.0
        again = plane.repository.known("b")
        assert again is not None
        assert again.reload_error == ""

    _run(plane, steps())
    assert loads(tmp_path, "b") == 2


def test_a_polling_reload_of_a_model_grown_past_the_budget_is_not_tried_at_every_poll(tmp_path):
    write_counted(tmp_path, "b", toml=SIZE)
    plane = _plane(tmp_path, budget_mib=25, poll=True)

    async def steps() -> None:
        await _answer(plane, "b")
        (tmp_path / "b" / "model.toml").write_text('memory_size = "30MiB"\n')
        assert plane.poller is not None
        await plane.poller.poll()
        await plane.poller.poll()
        assert await _answer(plane, "b") == 2.0
        model = plane.repository.known("b")
        assert model is not None
        assert "more than the whole memory budget 25.0MiB" in model.reload_error

    _run(plane, steps())
    assert loads(tmp_path, "b") == 1


def test_a_model_removed_while_its_reload_waits_for_room_is_forgotten(tmp_path):
    write_counted(tmp_path, "kept", toml=SIZE + "pinned = true\n")
    write_counted(tmp_path, "b", toml=SIZE)
    plane = _plane(tmp_path, budget_mib=25, poll=True)

    async def steps() -> None:
        for name in ("kept", "b"):
            await _answer(plane, name)
        write_counted(tmp_path, "b", toml=SIZE, version=2, factor=3)
        assert plane.poller is not None
        await plane.poller.poll()
        shutil.rmtree(tmp_path / "b")
        await plane.poller.poll()
        with pytest.raises(InferError) as gone:
            await _answer(plane, "b")
        assert gone.value.code is ErrorCode.NOT_FOUND
        assert _states(plane) == {"kept": "READY"}

    _run(plane, steps())
