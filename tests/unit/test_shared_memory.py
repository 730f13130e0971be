"""The shared memory registry and the one inference path's use of it, on files in a temporary folder standing in
for /dev/shm (the registry reads and writes through a descriptor, so any regular file behaves as a segment)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from inferd.calls import build_response, prepare_request
from inferd.errors import ErrorCode, InferError
from inferd.inference import InferenceRequest, RequestInput, RequestOutput
from inferd.shared_memory import Location, SharedMemoryRegistry, tensor_location
from inferd.signature import Signature, TensorSpec

SIMPLE = Signature((TensorSpec("INPUT0", "INT32", (-1, 4)), TensorSpec("INPUT1", "INT32", (-1, 4))),
                   (TensorSpec("OUTPUT0", "INT32", (-1, 4)), TensorSpec("OUTPUT1", "INT32", (-1, 4))))


@pytest.fixture
def registry(tmp_path: Path) -> SharedMemoryRegistry:
    (tmp_path / "inputs").write_bytes(np.arange(8, dtype="<i4").tobytes())
    (tmp_path / "outputs").write_bytes(bytes(64))
    found = SharedMemoryRegistry(root=str(tmp_path), max_regions=4)
    found.register("", "in", "/inputs", 0, 32)
    found.register("", "out", "/outputs", 16, 48)
    yield found
    found.close()


def shared(region: str, byte_size: int, offset: int = 0) -> dict[str, object]:
    return {"shared_memory_region": region, "shared_memory_byte_size": byte_size, "shared_memory_offset": offset}


def request(inputs: list[RequestInput], outputs: list[RequestOutput] | None = None) -> InferenceRequest:
    return InferenceRequest("simple", inputs, outputs=outputs)


class Result:
    def __init__(self, outputs: dict[str, np.ndarray]) -> None:
        self.outputs = outputs

    def output(self, name: str) -> np.ndarray:
        return self.outputs[name]


def test_status_lists_the_owners_regions(registry):
    assert [(r.name, r.key, r.offset, r.byte_size) for r in registry.status("")] == [
        ("in", "/inputs", 0, 32), ("out", "/outputs", 16, 48)]
    assert [r.name for r in registry.status("", "out")] == ["out"]
    with pytest.raises(InferError, match="Unable to find system shared memory region: 'nope'") as info:
        registry.status("", "nope")
    assert info.value.code is ErrorCode.NOT_FOUND


def test_regions_are_each_owners_own(registry, tmp_path):
    assert registry.status("alice") == []
    registry.register("alice", "in", "/outputs", 0, 8)  # the same name, another owner: another region
    assert [r.key for r in registry.status("alice")] == ["/outputs"]
    with pytest.raises(InferError, match="no shared memory region 'out' is registered for this API key"):
        registry.caller("alice").read("INPUT0", Location("out", 0, 4))
    registry.unregister("alice")
    assert [r.name for r in registry.status("")] == ["in", "out"]


@pytest.mark.parametrize(("key", "offset", "size", "match"), [
    ("/../inputs", 0, 8, "is not the name of a POSIX shared memory object"),
    ("/a/b", 0, 8, "is not the name of a POSIX shared memory object"),
    ("..", 0, 8, "is not the name of a POSIX shared memory object"),
    ("/missing", 0, 8, "unable to open shared memory object '/missing'"),
    ("/inputs", 0, 33, "offset \\+ byte_size is 33 bytes, past the end of shared memory object '/inputs' \\(32"),
    ("/inputs", 30, 4, "past the end"),
    ("/inputs", 0, 0, "byte_size a positive integer"),
    ("/inputs", -1, 4, "offset must be a non-negative"),
])
def test_a_bad_registration_is_refused(registry, key, offset, size, match):
    with pytest.raises(InferError, match=match) as info:
        registry.register("", "new", key, offset, size)
    assert info.value.code is ErrorCode.INVALID_ARGUMENT
    assert "new" not in [r.name for r in registry.status("")]


def test_a_name_is_registered_once_and_regions_are_bounded(registry):
    with pytest.raises(InferError, match="shared memory region 'in' already in manager") as info:
        registry.register("", "in", "/inputs", 0, 4)
    assert info.value.code is ErrorCode.FAILED_PRECONDITION
    registry.register("", "a", "/inputs", 0, 4)
    registry.register("", "b", "/inputs", 0, 4)
    with pytest.raises(InferError, match="4 shared memory regions are registered already") as info:
        registry.register("", "c", "/inputs", 0, 4)
    assert info.value.code is ErrorCode.RESOURCE_EXHAUSTED
    registry.unregister("", "nope")  # nothing to do, as in Triton
    registry.unregister("", "a")
    registry.register("", "c", "/inputs", 0, 4)


@pytest.mark.parametrize(("location", "match"), [
    (Location("nope", 0, 4), "input 'INPUT0': no shared memory region 'nope' is registered; register it first"),
    (Location("in", 32, 0), "offset 32 is past the end of shared memory region 'in' \\(32 bytes\\)"),
    (Location("in", 8, 32), "32 bytes at offset 8 do not fit in shared memory region 'in' \\(32 bytes\\)"),
])
def test_nothing_outside_a_region_is_read(registry, location, match):
    with pytest.raises(InferError, match=match):
        registry.shared.read("INPUT0", location)


def test_a_segment_made_smaller_fails_the_read_not_the_server(registry, tmp_path):
    (tmp_path / "inputs").write_bytes(bytes(8))  # truncated under the registered region
    with pytest.raises(InferError, match="only 0 of 8 bytes could be read .* was made smaller"):
        registry.shared.read("INPUT0", Location("in", 16, 8))


def test_tensor_parameters(registry):
    assert tensor_location("input", "x", {"binary_data_size": 4}) is None
    assert tensor_location("input", "x", shared("in", 8, 4)) == Location("in", 4, 8)
    assert tensor_location("input", "x", {"shared_memory_region": "in", "shared_memory_byte_size": 8}) \
        == Location("in", 0, 8)
    for parameters, match in [({"shared_memory_byte_size": 8}, "need a shared_memory_region"),
                              ({"shared_memory_region": "in"}, "needs a shared_memory_byte_size"),
                              ({"shared_memory_region": 3, "shared_memory_byte_size": 8}, "must be the name"),
                              (shared("in", -1), "byte_size must be a non-negative integer"),
                              (shared("in", 8, 1.5), "offset must be a non-negative integer")]:  # type: ignore[arg-type]
        with pytest.raises(InferError, match=match):
            tensor_location("input", "x", parameters)


def test_inputs_are_read_and_outputs_written_on_the_one_path(registry, tmp_path):
    inputs = [RequestInput("INPUT0", "INT32", [1, 4], None, shared("in", 16)),
              RequestInput("INPUT1", "INT32", [1, 4], [1, 1, 1, 1])]
    outputs = [RequestOutput("OUTPUT0", shared("out", 16, 8)), RequestOutput("OUTPUT1")]
    prepared = prepare_request(request(inputs, outputs), SIMPLE, 8, 1000, regions=registry.shared)
    assert prepared.arrays["INPUT0"].tolist() == [[0, 1, 2, 3]]
    a, b = prepared.arrays["INPUT0"], prepared.arrays["INPUT1"]
    response = build_response("simple", "1", SIMPLE, prepared, Result({"OUTPUT0": a + b, "OUTPUT1": a - b}))
    first, second = response.outputs
    assert (first.in_shared_memory, second.in_shared_memory) == (True, False)
    written = np.frombuffer((tmp_path / "outputs").read_bytes(), "<i4")
    assert written[6:10].tolist() == [1, 2, 3, 4]  # the region starts at 16, the output at 8 into it
    assert written[:6].tolist() == [0] * 6
    assert written[10:].tolist() == [0] * 6


def test_an_output_larger_than_its_byte_size_is_refused(registry):
    outputs = [RequestOutput("OUTPUT0", shared("out", 8))]
    prepared = prepare_request(request([RequestInput("INPUT0", "INT32", [1, 4], [0] * 4),
                                        RequestInput("INPUT1", "INT32", [1, 4], [0] * 4)], outputs),
                               SIMPLE, 8, 1000, regions=registry.shared)
    result = Result({"OUTPUT0": np.zeros((1, 4), np.int32), "OUTPUT1": np.zeros((1, 4), np.int32)})
    with pytest.raises(InferError, match="output 'OUTPUT0' has 16 bytes, more than the 8 bytes given for it in "
                                         "shared memory region 'out'"):
        build_response("simple", "1", SIMPLE, prepared, result)


@pytest.mark.parametrize(("item", "output", "match"), [
    (RequestInput("INPUT0", "INT32", [1, 4], None, shared("in", 12)), None,
     "shape \\[1, 4\\] of INT32 needs 16 bytes, but shared_memory_byte_size is 12 \\(shared memory region 'in'\\)"),
    (RequestInput("INPUT0", "INT32", [1, 4], [0] * 4, shared("in", 16)), None,
     "input 'INPUT0' has both data and shared_memory_region 'in'"),
    (RequestInput("INPUT0", "INT32", [1, 4], [0] * 4), RequestOutput("OUTPUT0", {**shared("out", 16),
                                                                                 "classification": 2}),
     "can't set both 'shared_memory_region' and 'classification'"),
    (RequestInput("INPUT0", "INT32", [1, 4], [0] * 4), RequestOutput("OUTPUT0", shared("out", 16, 48)),
     "output 'OUTPUT0': offset 48 is past the end of shared memory region 'out' \\(48 bytes\\)"),
])
def test_a_bad_tensor_in_shared_memory_is_refused_before_the_model_runs(registry, item, output, match):
    inputs = [item, RequestInput("INPUT1", "INT32", [1, 4], [0] * 4)]
    with pytest.raises(InferError, match=match) as info:
        prepare_request(request(inputs, [output] if output else None), SIMPLE, 8, 1000, regions=registry.shared)
    assert info.value.code is ErrorCode.INVALID_ARGUMENT


def test_a_call_without_regions_refuses_tensors_in_shared_memory():
    inputs = [RequestInput("INPUT0", "INT32", [1, 4], None, shared("in", 16)),
              RequestInput("INPUT1", "INT32", [1, 4], [0] * 4)]
    with pytest.raises(InferError, match="names shared memory region 'in', but this route takes no tensors"):
        prepare_request(request(inputs), SIMPLE, 8, 1000)


def test_a_region_unregistered_while_a_request_runs_fails_that_request(registry):
    outputs = [RequestOutput("OUTPUT0", shared("out", 16))]
    prepared = prepare_request(request([RequestInput("INPUT0", "INT32", [1, 4], [0] * 4),
                                        RequestInput("INPUT1", "INT32", [1, 4], [0] * 4)], outputs),
                               SIMPLE, 8, 1000, regions=registry.shared)
    registry.unregister("")
    result = Result({"OUTPUT0": np.zeros((1, 4), np.int32)})
    with pytest.raises(InferError, match="region 'out' was unregistered while the request was running"):
        build_response("simple", "1", SIMPLE, prepared, result)
