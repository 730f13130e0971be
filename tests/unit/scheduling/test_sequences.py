"""Sequence batching through the DataPlane, over Python models with controls and implicit state: one sequence's
requests run in order, different sequences share batches, the errors that name the sequence, idle release, the
limits (live sequences, the bounded queue), restarts, and the configuration checks."""

from __future__ import annotations

import asyncio
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from google.protobuf import json_format

from fakes import write_model
from inferd.config import ConfigError, ModelConfig
from inferd.dataplane import DataPlane
from inferd.errors import ErrorCode, InferError
from inferd.inference import InferenceRequest, RequestInput
from inferd.repository import ModelRepository
from inferd.server.grpc.generated import model_config_pb2 as config_pb
from inferd.server.triton import config_to_json
from sequence_models import COUNTER, COUNTER_TOML, STRING_DYNA, STRING_DYNA_TOML

ACCUMULATOR = """
import threading
import numpy as np

class Model:
    inputs = [{"name": "INPUT", "datatype": "INT32", "shape": [-1, 1]},
              {"name": "START", "datatype": "INT32", "shape": [-1, 1]},
              {"name": "END", "datatype": "BOOL", "shape": [-1, 1]},
              {"name": "CORRID", "datatype": "UINT64", "shape": [-1, 1]},
              {"name": "ACC", "datatype": "INT32", "shape": [-1, 1]}]
    outputs = [{"name": "OUTPUT", "datatype": "INT32", "shape": [-1, 1]},
               {"name": "ACC_NEXT", "datatype": "INT32", "shape": [-1, 1]}]

    def __init__(self):
        self.batches = []
        self.ends = []
        self.gate = threading.Event()
        self.gate.set()

    def predict(self, inputs):
        self.gate.wait()
        self.batches.append(sorted(inputs["CORRID"].ravel().tolist()))
        self.ends.extend(inputs["END"].ravel().tolist())
        total = np.where(inputs["START"] == 1, 0, inputs["ACC"]) + inputs["INPUT"]
        return {"OUTPUT": total, "ACC_NEXT": total}
"""
"""The running sum of INPUT over a sequence, kept in implicit state; records the sequences of each batch."""

ACCUMULATOR_TOML = """
max_batch_size = 8

[queue]
max_size = 5

[sequence_batching]
max_sequence_idle_microseconds = 50000
max_candidate_sequences = 4

[[sequence_batching.control_input]]
name = "START"
kind = "CONTROL_SEQUENCE_START"
int32_false_true = [0, 1]

[[sequence_batching.control_input]]
name = "END"
kind = "CONTROL_SEQUENCE_END"
bool_false_true = [false, true]

[[sequence_batching.control_input]]
name = "CORRID"
kind = "CONTROL_SEQUENCE_CORRID"
datatype = "UINT64"

[[sequence_batching.state]]
input_name = "ACC"
output_name = "ACC_NEXT"
datatype = "INT32"
shape = [1]
"""


@pytest.fixture
def sequence_repo(repo_root: Path) -> Path:
    write_model(repo_root, "acc", ACCUMULATOR, ACCUMULATOR_TOML)
    write_model(repo_root, "counter", COUNTER, COUNTER_TOML)
    write_model(repo_root, "no_start", ACCUMULATOR, ACCUMULATOR_TOML.replace('name = "START"', 'name = "BEGIN"'))
    return repo_root


def request(value: int, sequence_id: Any = 7, start: bool = False, end: bool = False,
            **parameters: Any) -> InferenceRequest:
    given = {"sequence_id": sequence_id, "sequence_start": start, "sequence_end": end, **parameters}
    return InferenceRequest("acc", [RequestInput("INPUT", "INT32", [1, 1], [value])], parameters=given)


async def value(plane: DataPlane, call: InferenceRequest) -> int:
    response = await plane.infer(call)
    assert [o.name for o in response.outputs] == ["OUTPUT"]  # the state output never reaches the client
    return int(response.outputs[0].data.ravel()[0])


def run(sequence_repo: Path, scenario: Any) -> Any:
    async def main() -> Any:
        plane = DataPlane(ModelRepository(sequence_repo))
        await plane.start()
        try:
            return await scenario(plane)
        finally:
            plane.close()

    return asyncio.run(main())


def model_of(plane: DataPlane) -> Any:
    return plane.repository.get("acc", None).require_loaded().runtime._instance  # type: ignore[union-attr]


def test_one_sequences_requests_run_one_at_a_time_in_order(sequence_repo):
    async def scenario(plane):
        calls = [request(1, start=True)] + [request(n) for n in range(2, 5)] + [request(5, end=True)]
        return await asyncio.gather(*(value(plane, c) for c in calls))

    assert run(sequence_repo, scenario) == [1, 3, 6, 10, 15]


def test_different_sequences_share_a_batch_and_keep_their_own_state(sequence_repo):
    async def scenario(plane):
        starts = [request(10 * s, sequence_id=s, start=True) for s in (1, 2, 3)]
        first = await asyncio.gather(*(value(plane, c) for c in starts))
        second = await asyncio.gather(*(value(plane, request(1, sequence_id=s, end=True)) for s in (1, 2, 3)))
        return first, second, model_of(plane).batches, model_of(plane).ends

    first, second, batches, ends = run(sequence_repo, scenario)
    assert (first, second) == ([10, 20, 30], [11, 21, 31])
    assert batches == [[1, 2, 3], [1, 2, 3]]  # one row per sequence, the CORRID control tells them apart
    assert ends == [False, False, False, True, True, True]


def test_a_request_without_start_for_an_unknown_sequence_is_refused_naming_it(sequence_repo):
    async def scenario(plane):
        with pytest.raises(InferError, match="sequence 99 to model 'acc' must specify the START flag") as info:
            await value(plane, request(1, sequence_id=99))
        return info.value.code

    assert run(sequence_repo, scenario) is ErrorCode.INVALID_ARGUMENT


def test_a_request_without_sequence_id_is_refused(sequence_repo):
    async def scenario(plane):
        for parameters in (None, {"sequence_id": 0}, {"sequence_id": ""}):
            call = InferenceRequest("acc", [RequestInput("INPUT", "INT32", [1, 1], [1])], parameters=parameters)
            with pytest.raises(InferError, match="must specify a non-zero or non-empty correlation ID"):
                await value(plane, call)

    run(sequence_repo, scenario)


@pytest.mark.parametrize(("parameters", "words"), [
    ({"sequence_id": -3}, "unsigned 64-bit integer or a string"),
    ({"sequence_id": 2**64}, "unsigned 64-bit integer or a string"),
    ({"sequence_id": 1.5}, "unsigned 64-bit integer or a string"),
    ({"sequence_id": True}, "unsigned 64-bit integer or a string"),
    ({"sequence_id": 3, "sequence_start": "yes"}, "sequence_start must be true or false"),
    ({"sequence_id": "abc", "sequence_start": True}, "takes its sequence id as UINT64"),
])
def test_bad_sequence_parameters_are_refused(sequence_repo, parameters, words):
    async def scenario(plane):
        call = InferenceRequest("acc", [RequestInput("INPUT", "INT32", [1, 1], [1])], parameters=parameters)
        with pytest.raises(InferError, match=words) as info:
            await value(plane, call)
        assert info.value.code is ErrorCode.INVALID_ARGUMENT

    run(sequence_repo, scenario)


def test_a_sequence_request_carries_one_row(sequence_repo):
    async def scenario(plane):
        call = InferenceRequest("acc", [RequestInput("INPUT", "INT32", [2, 1], [1, 2])],
                                parameters={"sequence_id": 5, "sequence_start": True})
        with pytest.raises(InferError, match="carries one row"):
            await value(plane, call)

    run(sequence_repo, scenario)


def test_an_ended_sequence_takes_no_more_requests_but_may_start_again(sequence_repo):
    async def scenario(plane):
        assert await value(plane, request(4, start=True, end=True)) == 4
        with pytest.raises(InferError, match="sequence 7 is not live"):
            await value(plane, request(1))
        return await value(plane, request(2, start=True))

    assert run(sequence_repo, scenario) == 2


def test_a_start_for_a_live_sequence_restarts_it(sequence_repo):
    async def scenario(plane):
        assert await value(plane, request(5, start=True)) == 5
        assert await value(plane, request(1)) == 6
        return await value(plane, request(3, start=True))  # the state starts afresh, as Triton restarts it

    assert run(sequence_repo, scenario) == 3


def test_an_idle_sequence_is_released_and_its_id_answered_with_the_reason(sequence_repo):
    async def scenario(plane):
        await value(plane, request(1, start=True))
        sequences = plane.repository.get("acc", None).require_loaded().sequences
        while sequences.live:  # max_sequence_idle_microseconds is 50 ms
            await asyncio.sleep(0.01)
        with pytest.raises(InferError, match=r"sequence 7 of model 'acc' was released after 50000 µs") as info:
            await value(plane, request(2))
        assert info.value.code is ErrorCode.INVALID_ARGUMENT
        return await value(plane, request(2, start=True))

    assert run(sequence_repo, scenario) == 2


def test_a_sequence_beyond_max_candidate_sequences_waits_in_the_backlog_for_a_slot(sequence_repo):
    async def scenario(plane):
        for s in range(1, 5):
            await value(plane, request(s, sequence_id=s, start=True))
        fifth = asyncio.ensure_future(value(plane, request(9, sequence_id=5, start=True)))
        more = asyncio.ensure_future(value(plane, request(1, sequence_id=5)))
        for _ in range(20):
            await asyncio.sleep(0)
        assert not fifth.done()  # four slots, all held by live sequences
        assert await value(plane, request(1, sequence_id=1, end=True)) == 2
        return await fifth, await more

    assert run(sequence_repo, scenario) == (9, 10)


def test_requests_waiting_in_sequences_count_against_the_bounded_queue(sequence_repo):
    async def scenario(plane):
        model = model_of(plane)
        scheduler = plane.repository.get("acc", None).require_loaded().scheduler
        model.gate.clear()
        waiting = [asyncio.ensure_future(value(plane, request(1, start=True)))]
        await asyncio.sleep(0)
        while scheduler.queued:  # the first request is handed to the model (held at its gate)
            await asyncio.sleep(0)
        waiting += [asyncio.ensure_future(value(plane, request(n))) for n in range(2, 7)]  # 5: the queue's size
        await asyncio.sleep(0)
        with pytest.raises(InferError, match="queue is full") as info:
            await value(plane, request(6, sequence_id=8, start=True))
        assert info.value.code is ErrorCode.UNAVAILABLE
        model.gate.set()
        return await asyncio.gather(*waiting)

    assert run(sequence_repo, scenario) == [1, 3, 6, 10, 15, 21]


def test_unbatched_model_keeps_bytes_state_that_grows(sequence_repo):
    async def scenario(plane):
        counts = []
        for n, word in enumerate([b"a", b"b", b"c"]):
            call = InferenceRequest("counter", [RequestInput("WORD", "BYTES", [1], [word])],
                                    parameters={"sequence_id": "s-1", "sequence_start": n == 0})
            response = await plane.infer(call)
            counts.append(int(response.outputs[0].data[0]))
        return counts

    assert run(sequence_repo, scenario) == [1, 2, 3]


def test_a_control_for_an_input_the_model_lacks_keeps_it_from_loading(sequence_repo):
    async def scenario(plane):
        return [e.reason for e in plane.repository_index() if e.name == "no_start"]

    (reason,) = run(sequence_repo, scenario)
    assert "the model has no input 'BEGIN'" in reason


def test_sequence_batching_excludes_dynamic_batching_and_the_cache():
    for extra in ({"batching": {"enabled": True}}, {"cache": {"enabled": True}}):
        with pytest.raises(ValueError, match="cannot have"):
            ModelConfig.model_validate({"sequence_batching": {}, **extra})
    with pytest.raises(ValueError, match="takes exactly one of"):
        ModelConfig.model_validate({"sequence_batching": {"control_input": [
            {"name": "S", "kind": "CONTROL_SEQUENCE_START"}]}})
    with pytest.raises(ValueError, match="takes a datatype"):
        ModelConfig.model_validate({"sequence_batching": {"control_input": [
            {"name": "C", "kind": "CONTROL_SEQUENCE_CORRID", "int32_false_true": [0, 1]}]}})
    assert issubclass(ConfigError, ValueError)


def test_the_configuration_shows_sequence_batching_in_tritons_form(sequence_repo):
    async def scenario(plane):
        return config_to_json(plane.model_config("acc"))

    found = run(sequence_repo, scenario)
    assert "dynamic_batching" not in found
    assert [i["name"] for i in found["input"]] == ["INPUT"]  # controls and state are the server's business
    assert [o["name"] for o in found["output"]] == ["OUTPUT"]
    sequencing = found["sequence_batching"]
    assert sequencing["max_sequence_idle_microseconds"] == 50000
    assert sequencing["direct"] == {"max_queue_delay_microseconds": 0, "minimum_slot_utilization": 0.0}
    assert sequencing["control_input"][2] == {"name": "CORRID", "control": [
        {"kind": "CONTROL_SEQUENCE_CORRID", "data_type": "TYPE_UINT64"}]}
    assert sequencing["state"][0]["input_name"] == "ACC"
    message = json_format.ParseDict(found, config_pb.ModelConfig())  # what gRPC ModelConfig sends
    assert message.WhichOneof("scheduling_choice") == "sequence_batching"
    assert message.sequence_batching.control_input[1].control[0].bool_false_true == [False, True]
    np.testing.assert_array_equal(message.sequence_batching.state[0].dims, [1])


def test_state_travels_with_the_request_to_worker_processes(repo_root):
    """Two worker processes: a sequence's steps may run on either, its state goes with each request."""
    write_model(repo_root, "acc_workers", STRING_DYNA, STRING_DYNA_TOML + '\n[instances]\nkind = "process"\ncount = 2\n')

    async def scenario(plane):
        async def one(sequence_id):
            sums = []
            for n, step in enumerate([5, 1, 2, 3]):
                call = InferenceRequest("acc_workers", [RequestInput("INPUT", "INT32", [1, 1], [step])],
                                        parameters={"sequence_id": sequence_id, "sequence_start": n == 0,
                                                    "sequence_end": n == 3})
                sums.append(int((await plane.infer(call)).outputs[0].data.ravel()[0]))
            return sums

        return await asyncio.gather(*(one(str(s)) for s in (10, 20, 30)))

    assert run(repo_root, scenario) == [[5, 6, 8, 21], [5, 6, 8, 31], [5, 6, 8, 41]]  # the last adds the id


def test_a_load_config_takes_sequence_batching_as_config_reports_it():
    """A model-control client reloads a model with the configuration it read, changed: the sequence batching it
    read must come back as it was."""
    from inferd.load_parameters import apply_config
    from inferd.server.triton import sequence_batching_to_json

    own = ModelConfig.model_validate(tomllib.loads(ACCUMULATOR_TOML))
    assert own.sequence_batching is not None
    reported = sequence_batching_to_json(own.sequence_batching)
    reported["max_sequence_idle_microseconds"] = "70000"  # protobuf's JSON writes uint64 as a string
    loaded = apply_config("acc", ModelConfig(), {"max_batch_size": 8, "sequence_batching": reported})
    assert loaded.sequence_batching == own.sequence_batching.model_copy(  # Triton's direct has no candidates field
        update={"max_sequence_idle_microseconds": 70000, "max_candidate_sequences": None})
    with pytest.raises(InferError, match="exactly one control per control input"):
        apply_config("acc", ModelConfig(), {"sequence_batching": {"control_input": [{"name": "S", "control": []}]}})
