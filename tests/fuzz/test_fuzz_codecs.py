"""Property tests of the wire codecs: whatever bytes or JSON arrive, decoding and the DataPlane's input checks
either give a request or raise InferError with a client-error code, never another exception (which a server
would answer with 500). And tensors survive the raw binary layout unchanged."""

from __future__ import annotations

import json
import string
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
from hypothesis import assume, event, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from inferd.calls import prepare_inputs, requested_outputs
from inferd.codecs import csv_rows, v1, v2_binary, v2_json
from inferd.codecs.v2_plain import PlainRequestPlan
from inferd.errors import ErrorCode, InferError
from inferd.scheduling.scheduler import batch_key
from inferd.signature import Signature, TensorSpec
from inferd.tensors import DATATYPES, from_raw, numpy_dtype, to_raw

CLIENT_ERRORS = {ErrorCode.INVALID_ARGUMENT, ErrorCode.NOT_FOUND}
NUMERIC = sorted(d for d in DATATYPES if d != "BYTES")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=25,
)
shapes = st.lists(st.integers(-2, 6), min_size=0, max_size=4)


def _signature_for(payload: Any) -> Signature:
    """A signature that agrees with whatever names and datatypes the request declares (so the checks go on
    to shapes and data), falling back to one FP32 input."""
    specs: dict[str, TensorSpec] = {}
    for item in payload.get("inputs", []) if isinstance(payload, dict) and isinstance(payload.get("inputs"), list) else []:
        if isinstance(item, dict) and isinstance(item.get("name"), str) and item.get("datatype") in DATATYPES:
            shape = item.get("shape")
            rank = len(shape) if isinstance(shape, list) else 2
            specs.setdefault(item["name"], TensorSpec(item["name"], item["datatype"], (-1,) * rank))
    inputs = tuple(specs.values()) or (TensorSpec("x", "FP32", (-1, 3)),)
    return Signature(inputs, (TensorSpec("y", "FP32", (-1,)),))


def _failure(run: Callable[[], object]) -> InferError | None:
    """The InferError ``run`` raised, or None; any other exception propagates and fails the test."""
    try:
        run()
    except InferError as exc:
        return exc
    return None


def _assert_clean(error: InferError | None) -> None:
    assert error is None or (error.code in CLIENT_ERRORS and error.message), error


def _decode_and_check(body: bytes, header_length: Any) -> None:
    def run() -> None:
        request = v2_binary.decode_request(body, header_length, "m")
        payload = orjson.loads(body[: v2_binary.parse_header_length(header_length) or len(body)])
        signature = _signature_for(payload)
        prepare_inputs(signature, request.inputs)
        requested_outputs(signature, request.outputs)

    _assert_clean(_failure(run))


@st.composite
def binary_bodies(draw: st.DrawFn) -> tuple[bytes, Any]:
    """A JSON header of plausible inputs (some with binary_data_size) followed by random bytes."""
    inputs = []
    for index in range(draw(st.integers(0, 3))):
        item: dict[str, Any] = {"name": draw(st.sampled_from(["a", "b", f"in{index}"])),
                                "datatype": draw(st.sampled_from([*DATATYPES, "FP8", ""])),
                                "shape": draw(shapes)}
        if draw(st.booleans()):
            item["parameters"] = {"binary_data_size": draw(st.integers(-4, 64) | st.just("8") | st.none())}
        else:
            item["data"] = draw(json_values)
        inputs.append(item)
    payload: dict[str, Any] = {"inputs": inputs}
    if draw(st.booleans()):
        payload["outputs"] = [{"name": draw(st.text(max_size=3)),
                               "parameters": {"binary_data": draw(json_values)}}]
    if draw(st.booleans()):
        payload["parameters"] = {"binary_data_output": draw(json_values)}
    header = json.dumps(payload).encode()  # json, not orjson: it writes integers past 64 bits too
    tail = draw(st.binary(max_size=80))
    length = draw(st.sampled_from(["exact", "none", "other"]))
    if length == "exact":
        return header + tail, str(len(header))
    if length == "none":
        return header, None
    return header + tail, draw(st.integers(-3, len(header) + len(tail) + 3).map(str) | st.text(max_size=4))


@given(binary_bodies())
def test_binary_bodies_decode_or_fail_cleanly(case: tuple[bytes, Any]) -> None:
    _decode_and_check(*case)


@given(st.binary(max_size=200), st.none() | st.integers(0, 210).map(str) | st.text(max_size=5))
def test_arbitrary_bytes_decode_or_fail_cleanly(body: bytes, header_length: Any) -> None:
    _decode_and_check(body, header_length)


@given(json_values)
def test_arbitrary_json_as_a_v2_request(payload: Any) -> None:
    _decode_and_check(json.dumps(payload).encode(), None)


@given(st.text(alphabet=string.printable + "é\u2028\x00", max_size=120),
       st.sampled_from(["FP32", "INT64", "BOOL", "UINT8", "FP16", "BYTES"]),
       st.sampled_from([(-1, 3), (-1,), (2, 2), (-1, -1)]))
def test_csv_bodies_decode_or_fail_cleanly(text: str, datatype: str, shape: tuple[int, ...]) -> None:
    signature = Signature((TensorSpec("x", datatype, shape),), (TensorSpec("y", "FP32", (-1,)),))
    _assert_clean(_failure(lambda: prepare_inputs(signature, csv_rows.decode_request(text, "m", signature).inputs)))


@given(json_values, st.sampled_from(["FP32", "INT32", "BOOL", "BYTES"]), st.booleans())
def test_v1_bodies_decode_or_fail_cleanly(payload: Any, datatype: str, two_inputs: bool) -> None:
    specs = [TensorSpec("x", datatype, (-1, 2))]
    if two_inputs:
        specs.append(TensorSpec("z", "FP64", (-1,)))
    signature = Signature(tuple(specs), (TensorSpec("y", "FP32", (-1,)),))
    _assert_clean(_failure(lambda: prepare_inputs(signature, v1.decode_request(payload, "m", signature).inputs)))


@st.composite
def tensors(draw: st.DrawFn) -> tuple[str, np.ndarray]:
    """Any numeric datatype (BF16 and the NaN patterns included): the array is built from random bytes."""
    datatype = draw(st.sampled_from(NUMERIC))
    dtype = numpy_dtype(datatype)
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4))
    count = int(np.prod(shape))
    if datatype == "BOOL":
        raw = bytes(draw(st.lists(st.integers(0, 1), min_size=count, max_size=count)))
    else:
        raw = draw(st.binary(min_size=count * dtype.itemsize, max_size=count * dtype.itemsize))
    return datatype, np.frombuffer(raw, dtype=dtype).reshape(shape)


@given(tensors())
def test_raw_layout_round_trips(case: tuple[str, np.ndarray]) -> None:
    datatype, array = case
    back = from_raw("x", datatype, list(array.shape), to_raw(array))
    assert back.shape == array.shape
    assert back.tobytes() == np.ascontiguousarray(array).tobytes()


@given(st.lists(st.binary(max_size=12), min_size=0, max_size=6))
def test_bytes_tensors_round_trip(items: list[bytes]) -> None:
    array = np.empty(len(items), dtype=object)
    array[:] = items
    back = from_raw("x", "BYTES", [len(items)], to_raw(array))
    assert back.tolist() == items


@given(st.text(max_size=40))
def test_v2_json_loads_never_raises_anything_else(text: str) -> None:
    assume(text.strip() != "")
    _assert_clean(_failure(lambda: v2_json.loads(text)))


# -- the plain JSON form: read in one pass, it must agree with the general path ---------------------------------------
PLAIN_SIGNATURES = {
    "batched": Signature((TensorSpec("a", "FP32", (-1, 3)), TensorSpec("b", "INT64", (-1,))),
                         (TensorSpec("y", "FP32", (-1, 2)), TensorSpec("z", "BOOL", (-1,)))),
    "fixed": Signature((TensorSpec("a", "FP64", (2, -1)),), (TensorSpec("y", "UINT8", (4,)),)),
}
odd_values = st.none() | st.integers() | st.text(max_size=3) | st.dictionaries(st.text(max_size=3), st.integers(),
                                                                               max_size=2)
plain_values = st.none() | st.booleans() | st.text(max_size=2) | st.integers(-(2**66), 2**66) | st.lists(
    st.integers() | st.floats(), max_size=3)
"""Values that do not belong in a numeric tensor, or do not fit it."""


def _rarely(draw: st.DrawFn) -> bool:
    return draw(st.integers(0, 19)) == 0


def _plain_data(draw: st.DrawFn, spec: TensorSpec, shape: list[Any]) -> Any:
    count = int(np.prod([d for d in shape if isinstance(d, int) and d >= 0])) + (1 if _rarely(draw) else 0)
    big = _rarely(draw)
    element = {"FP32": st.floats(-1e39, 1e39, allow_nan=False) if big else st.floats(-1e6, 1e6),
               "FP64": st.floats(allow_nan=False, allow_infinity=False),
               "INT64": st.integers(-(2**64), 2**64) if big else st.integers(-(2**40), 2**40),
               "BOOL": st.booleans()}[spec.datatype]
    flat = draw(st.lists(element | (plain_values if _rarely(draw) else element), min_size=count, max_size=count))
    if len(shape) == 2 and all(isinstance(d, int) and d > 0 for d in shape) and len(flat) == shape[0] * shape[1] \
            and draw(st.booleans()):
        return [flat[i:i + shape[1]] for i in range(0, len(flat), shape[1])]  # nested, as numpy.tolist() writes
    return flat


@st.composite
def near_plain_payloads(draw: st.DrawFn, signature: Signature) -> Any:
    """Requests in the plain form for ``signature``, now and then bent (a key, a name, a datatype, a shape, the data,
    the outputs, the id)."""
    rows = draw(st.integers(1, 3)) if not _rarely(draw) else draw(st.integers(0, 6))
    inputs = []
    for spec in draw(st.permutations(signature.inputs)):
        shape: list[Any] = [rows if d == -1 else d for d in spec.shape]
        if _rarely(draw):
            shape = draw(st.lists(st.integers(-1, 6) | st.just(True), max_size=3))
        item: dict[str, Any] = {"name": spec.name if not _rarely(draw) else draw(st.sampled_from(["a", "b", "c", 1])),
                                "datatype": spec.datatype if not _rarely(draw) else draw(st.sampled_from(DATATYPES)),
                                "shape": shape, "data": _plain_data(draw, spec, shape)}
        if _rarely(draw):
            item[draw(st.sampled_from(["parameters", "extra"]))] = draw(odd_values)
        if _rarely(draw):
            del item[draw(st.sampled_from(sorted(item)))]
        inputs.append(item)
    if _rarely(draw):
        inputs = inputs[1:] if draw(st.booleans()) else [*inputs, inputs[0]]
    payload: dict[str, Any] = {"inputs": inputs}
    if draw(st.booleans()):
        names = st.sampled_from(signature.output_names()) if not _rarely(draw) else st.just("q")
        flags = st.fixed_dictionaries({}, optional={"binary_data": st.booleans()})
        outputs = st.lists(st.fixed_dictionaries({"name": names}, optional={"parameters": flags}), min_size=1, max_size=3)
        payload["outputs"] = draw(outputs if not _rarely(draw) else odd_values)
    if draw(st.booleans()):
        payload["id"] = draw(st.text(max_size=3) if not _rarely(draw) else st.none() | st.integers())
    if _rarely(draw):
        payload["parameters"] = draw(odd_values)
    elif draw(st.booleans()):
        payload["parameters"] = {"binary_data_output": draw(st.booleans())}
    return payload


def _as_binary(draw: st.DrawFn, payload: Any, signature: Signature) -> tuple[Any, bytes]:
    """The payload with the data of the inputs numpy can convert moved after the header, as the binary tensor
    extension sends it (now and then with a size that is off)."""
    tail = b""
    dtypes = {spec.name: numpy_dtype(spec.datatype) for spec in signature.inputs}
    for item in payload["inputs"]:
        if not isinstance(item, dict) or item.get("name") not in dtypes or "data" not in item:
            continue
        try:
            raw = np.asarray(item.pop("data"), dtype=dtypes[item["name"]]).tobytes()
        except (ValueError, TypeError, OverflowError):
            continue
        item["parameters"] = {"binary_data_size": len(raw) + (draw(st.integers(-2, 2)) if _rarely(draw) else 0)}
        tail += raw
    return payload, tail


@given(st.data(), st.sampled_from(sorted(PLAIN_SIGNATURES)), st.integers(1, 4))
def test_the_plain_form_is_read_as_the_general_path_reads_it(data: st.DataObject, which: str, max_batch: int) -> None:
    signature = PLAIN_SIGNATURES[which]
    payload = data.draw(near_plain_payloads(signature))
    tail: memoryview | None = None
    if data.draw(st.booleans()):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numpy's overflow warnings while the case is made
            payload, raw = _as_binary(data.draw, payload, signature)
        tail = memoryview(raw)
    plan = PlainRequestPlan.for_signature(signature, max_batch)
    assert plan is not None
    read = plan.read(json.loads(json.dumps(payload)), 12, tail)
    event(f"{'JSON' if tail is None else 'binary'} request {'declined' if read is None else 'read'}")
    if read is None:
        return  # declined: the general path answers, whatever it says
    request = v2_binary.decode_payload(json.loads(json.dumps(payload)), tail, "m")
    arrays, batch = prepare_inputs(signature, request.inputs, 12)
    assert batch is None or batch <= max_batch
    assert read.rows == (batch or 1)
    assert read.id == request.id
    wanted = list(requested_outputs(signature, request.outputs))
    assert [name for name, _, _ in read.outputs] == wanted
    binary = v2_binary.binary_outputs(request, wanted)
    assert [name for name, _, flag in read.outputs if flag] == [name for name in wanted if name in binary]
    assert read.arrays.keys() == arrays.keys()
    if plan.batch_key is not None:  # what the scheduler would have worked out, for the inputs in signature order
        assert plan.batch_key == batch_key({spec.name: arrays[spec.name] for spec in signature.inputs})
    for name, array in arrays.items():
        assert read.arrays[name].dtype == array.dtype
        assert read.arrays[name].shape == array.shape
        assert read.arrays[name].tobytes() == array.tobytes()  # NaN from binary data included
