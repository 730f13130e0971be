"""Sequence batching with the stock ``tritonclient`` over HTTP and gRPC (unary and ModelStreamInfer) against a
real server holding Triton's sequence models (tests/sequence_models.py): the checks Triton's sequence client
examples make (simple_*_sequence_*_infer_client.py, with and without ``-d``), re-implemented here, the
configuration both transports report, and the errors that name a sequence."""

from __future__ import annotations

import queue
import time
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from sequence_models import write_sequence_models
from server_process import ServerProcess

VALUES = [11, 7, 5, 3, 2, 0, 1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("sequences") / "models"
    write_sequence_models(root)
    process = ServerProcess(root, tmp_path_factory.mktemp("logs") / "serve.log")
    yield from process.serving(timeout=120)


def _sequences(dyna: bool) -> list[tuple[str, Any, list[int]]]:
    """The example's three sequences: (model, sequence id, values)."""
    string_id = "1002" if dyna else str(uuid.uuid4())
    return [("simple_dyna_sequence" if dyna else "simple_sequence", 1000, [0, *VALUES]),
            ("simple_dyna_sequence" if dyna else "simple_sequence", 1001, [100] + [-v for v in VALUES]),
            ("simple_string_dyna_sequence" if dyna else "simple_sequence", string_id, [20] + [-v for v in VALUES])]


def _expected(dyna: bool, sequence: int, sequence_id: Any, results: list[int]) -> list[int]:
    """What Triton's examples expect of each response (the same arithmetic, written out)."""
    wanted = []
    for i in range(len(VALUES) + 1):
        if sequence == 2 and dyna:
            value = 20 if i == 0 else -VALUES[i - 1] + results[i - 1]
        else:
            first = {0: 1, 1: 101, 2: 21}[sequence]
            value = first if i == 0 else VALUES[i - 1] * (1 if sequence == 0 else -1)
        if dyna and i != 0 and VALUES[i - 1] == 1:
            value += int(sequence_id)
        wanted.append(value)
    return wanted


def _inputs(module: Any, value: int) -> list[Any]:
    data = np.full([1, 1], value, dtype=np.int32)
    tensor = module.InferInput("INPUT", [1, 1], "INT32")
    tensor.set_data_from_numpy(data)
    return [tensor]


@pytest.mark.parametrize("dyna", [False, True], ids=["simple", "dyna"])
@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_the_sync_sequence_examples_get_tritons_answers(server, transport, dyna):
    module = httpclient if transport == "http" else grpcclient
    url = f"127.0.0.1:{server.http_port}" if transport == "http" else server.grpc_url
    client = module.InferenceServerClient(url)
    try:
        for number, (model, sequence_id, values) in enumerate(_sequences(dyna)):
            results = []
            for count, value in enumerate(values, start=1):
                result = client.infer(model, _inputs(module, value), outputs=[module.InferRequestedOutput("OUTPUT")],
                                      sequence_id=sequence_id, sequence_start=count == 1,
                                      sequence_end=count == len(values))
                results.append(int(result.as_numpy("OUTPUT")[0][0]))
            assert results == _expected(dyna, number, sequence_id, results), model
    finally:
        client.close()


@pytest.mark.parametrize("dyna", [False, True], ids=["simple", "dyna"])
def test_the_stream_sequence_example_gets_tritons_answers(server, dyna):
    answers: queue.Queue[Any] = queue.Queue()
    sequences = _sequences(dyna)
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        client.start_stream(callback=lambda result, error: answers.put(error or result))
        for model, sequence_id, values in sequences:  # interleaved on one stream, as the example sends them
            for count, value in enumerate(values, start=1):
                client.async_stream_infer(model, _inputs(grpcclient, value), request_id=f"{sequence_id}_{count}",
                                          outputs=[grpcclient.InferRequestedOutput("OUTPUT")],
                                          sequence_id=sequence_id, sequence_start=count == 1,
                                          sequence_end=count == len(values))
        results: dict[str, list[int]] = {str(s): [] for _, s, _ in sequences}
        for _ in range(sum(len(v) for _, _, v in sequences)):
            item = answers.get(timeout=30)
            assert not isinstance(item, InferenceServerException), item
            results[item.get_response().id.split("_")[0]].append(int(item.as_numpy("OUTPUT")[0][0]))
        client.stop_stream()
    for number, (_, sequence_id, _) in enumerate(sequences):
        got = results[str(sequence_id)]
        assert got == _expected(dyna, number, sequence_id, got)


def test_both_transports_report_sequence_batching_as_triton_does(server):
    http = httpclient.InferenceServerClient(f"127.0.0.1:{server.http_port}")
    try:
        config = http.get_model_config("simple_dyna_sequence")
        assert "sequence" in http.get_server_metadata()["extensions"]
    finally:
        http.close()
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        message = client.get_model_config("simple_dyna_sequence").config
        assert "sequence" in client.get_server_metadata().extensions
    assert "dynamic_batching" not in config
    assert config["sequence_batching"]["oldest"]["max_queue_delay_microseconds"] == 10000
    assert [c["name"] for c in config["sequence_batching"]["control_input"]] == ["START", "READY", "END", "CORRID"]
    assert [i["name"] for i in config["input"]] == ["INPUT"]
    assert message.WhichOneof("scheduling_choice") == "sequence_batching"
    assert message.sequence_batching.max_sequence_idle_microseconds == 10_000_000
    assert message.sequence_batching.oldest.max_candidate_sequences == 1024
    corrid = message.sequence_batching.control_input[3].control[0]
    assert corrid.kind == corrid.CONTROL_SEQUENCE_CORRID
    assert corrid.data_type == 5  # TYPE_UINT64


def _count(client: Any, module: Any, word: str, sequence_id: str, start: bool) -> int:
    tensor = module.InferInput("WORD", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([word.encode()], dtype=object))
    result = client.infer("counter", [tensor], sequence_id=sequence_id, sequence_start=start)
    return int(result.as_numpy("COUNT")[0])


def test_an_idle_sequence_is_released_and_named_in_the_error_on_both_transports(server):
    http = httpclient.InferenceServerClient(f"127.0.0.1:{server.http_port}")
    try:
        with grpcclient.InferenceServerClient(server.grpc_url) as grpc:
            for client, module, sequence_id in ((http, httpclient, "idle-http"), (grpc, grpcclient, "idle-grpc")):
                assert _count(client, module, "a", sequence_id, start=True) == 1
                assert _count(client, module, "b", sequence_id, start=False) == 2
            time.sleep(0.6)  # the counter's max_sequence_idle_microseconds is 300 ms
            with pytest.raises(InferenceServerException, match="sequence 'idle-http' of model 'counter' was "
                               "released") as info:
                _count(http, httpclient, "c", "idle-http", start=False)
            assert info.value.status() == "400"
            with pytest.raises(InferenceServerException, match="sequence 'idle-grpc' of model 'counter' was "
                               "released") as info:
                _count(grpc, grpcclient, "c", "idle-grpc", start=False)
            assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
            assert _count(grpc, grpcclient, "c", "idle-grpc", start=True) == 1
    finally:
        http.close()


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_sequence_errors_are_clear_on_both_transports(server, transport):
    module = httpclient if transport == "http" else grpcclient
    url = f"127.0.0.1:{server.http_port}" if transport == "http" else server.grpc_url
    client = module.InferenceServerClient(url)
    status = "400" if transport == "http" else "StatusCode.INVALID_ARGUMENT"
    try:
        with pytest.raises(InferenceServerException, match="must specify a non-zero or non-empty correlation ID") as info:
            client.infer("simple_sequence", _inputs(module, 1))
        assert info.value.status() == status
        with pytest.raises(InferenceServerException, match="sequence 4242 to model 'simple_sequence' must specify "
                           "the START flag") as info:
            client.infer("simple_sequence", _inputs(module, 1), sequence_id=4242)
        assert info.value.status() == status
        with pytest.raises(InferenceServerException, match="takes its sequence id as UINT64"):
            client.infer("simple_dyna_sequence", _inputs(module, 1), sequence_id="not-a-number", sequence_start=True)
    finally:
        client.close()


def test_the_plain_twin_takes_the_controls_as_inputs(server):
    """The benchmark's comparison: the same graph without [sequence_batching] is an ordinary model."""
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.http_port}")
    try:
        tensors = []
        for name, value in (("INPUT", 5), ("START", 1), ("READY", 1)):
            tensor = httpclient.InferInput(name, [1, 1], "INT32")
            tensor.set_data_from_numpy(np.full([1, 1], value, dtype=np.int32))
            tensors.append(tensor)
        assert int(client.infer("simple_sequence_plain", tensors).as_numpy("OUTPUT")[0][0]) == 6
    finally:
        client.close()

