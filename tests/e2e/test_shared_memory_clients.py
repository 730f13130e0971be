"""Triton's system shared memory extension with the stock ``tritonclient`` over HTTP and gRPC, against a real
server holding Triton's ``simple`` (tests/triton_models.py): regions created with ``tritonclient.utils.shared_memory``
as Triton's examples create them, registered, used for inputs and outputs, listed and removed; the errors for a
region that is unknown, too small or overrun; CUDA shared memory refused; and, on a server with API keys, each
key's regions its own. Every segment a test creates is destroyed: none is left in /dev/shm."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException

from inferd.security.keys import hash_key
from server_process import ServerProcess
from triton_models import write_triton_models

PREFIX = f"shm-e2e-{os.getpid()}-"
"""The segments this module creates: /dev/shm/<PREFIX>..."""
KEYS = {"alice": "k-alice-0123456789abcdefghijklmnopqrstuv", "bob": "k-bob-0123456789abcdefghijklmnopqrstuvwx"}
ROW = 16 * 4  # one row of simple's INT32 [-1, 16]
TRANSPORTS = ("http", "grpc")
REFUSED = {"http": "400", "grpc": "StatusCode.INVALID_ARGUMENT"}


@pytest.fixture(scope="module")
def triton_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("shm") / "models"
    write_triton_models(root)
    return root


@pytest.fixture(scope="module")
def server(triton_repo: Path) -> Iterator[ServerProcess]:
    yield from ServerProcess(triton_repo, triton_repo.parent / "serve.log").serving(timeout=120)
    assert not [n for n in os.listdir("/dev/shm") if n.startswith(PREFIX)], "a test left a segment in /dev/shm"


@pytest.fixture(scope="module")
def keyed_server(triton_repo: Path) -> Iterator[ServerProcess]:
    keys_file = triton_repo.parent / "keys.toml"
    keys_file.write_text("".join(f'[[keys]]\nname = "{name}"\nsha256 = "{hash_key(key)}"\nscopes = ["infer"]\n\n'
                                 for name, key in KEYS.items()))
    process = ServerProcess(triton_repo, triton_repo.parent / "keyed.log", extra_args=["--api-keys-file",
                                                                                       str(keys_file)])
    yield from process.serving(timeout=120)


class Segments:
    """The segments one test creates (``tritonclient.utils.shared_memory``), destroyed after it."""

    def __init__(self) -> None:
        self.handles: list[Any] = []

    def create(self, name: str, byte_size: int, values: list[np.ndarray] | None = None) -> tuple[str, Any]:
        key = f"/{PREFIX}{name}"
        handle = shm.create_shared_memory_region(name, key, byte_size)
        self.handles.append(handle)
        if values:
            shm.set_shared_memory_region(handle, values)
        return key, handle


@pytest.fixture
def segments() -> Iterator[Segments]:
    made = Segments()
    yield made
    for handle in made.handles:
        shm.destroy_shared_memory_region(handle)


def client_of(server: ServerProcess, transport: str) -> Any:
    if transport == "http":
        return httpclient.InferenceServerClient(f"127.0.0.1:{server.http_port}")
    return grpcclient.InferenceServerClient(server.grpc_url)


def module_of(transport: str) -> ModuleType:
    return httpclient if transport == "http" else grpcclient


def headers(key: str | None) -> dict[str, str] | None:
    return None if key is None else {"authorization": f"Bearer {KEYS[key]}"}


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def client(server: ServerProcess, transport: str) -> Iterator[Any]:
    found = client_of(server, transport)
    found.unregister_system_shared_memory()
    yield found
    found.unregister_system_shared_memory()
    found.close()


def statuses(client: Any, transport: str, name: str = "", key: str | None = None) -> list[tuple[str, str, int, int]]:
    """The regions a status call lists, as (name, key, offset, byte_size), whatever the transport."""
    if transport == "http":
        found = client.get_system_shared_memory_status(name, headers=headers(key))
        return [(r["name"], r["key"], r["offset"], r["byte_size"]) for r in found]
    found = client.get_system_shared_memory_status(name, headers=headers(key)).regions
    return sorted((r.name, r.key, r.offset, r.byte_size) for r in found.values())


def simple_tensors(module: ModuleType, in_region: bool = True, out_region: bool = True,
                   ) -> tuple[list[Any], list[Any]]:
    """simple's two inputs and two outputs: INPUT0 and OUTPUT0 in regions ``in``/``out`` at offset 0, INPUT1 and
    OUTPUT1 at one row in (or, when not ``in_region`` / ``out_region``, sent and answered in the messages)."""
    inputs = [module.InferInput("INPUT0", [1, 16], "INT32"), module.InferInput("INPUT1", [1, 16], "INT32")]
    inputs[0].set_shared_memory("in", ROW)
    if in_region:
        inputs[1].set_shared_memory("in", ROW, offset=ROW)
    else:
        inputs[1].set_data_from_numpy(np.ones((1, 16), np.int32))
    outputs = [module.InferRequestedOutput("OUTPUT0"), module.InferRequestedOutput("OUTPUT1")]
    outputs[0].set_shared_memory("out", ROW)
    if out_region:
        outputs[1].set_shared_memory("out", ROW, offset=ROW)
    return inputs, outputs


def register_simple(client: Any, segments: Segments, key: str | None = None, out_bytes: int = 2 * ROW) -> Any:
    """Regions ``in`` (INPUT0 = 0..15, INPUT1 = ones) and ``out``; the handle of ``out``."""
    a, b = np.arange(16, dtype=np.int32), np.ones(16, np.int32)
    in_key, _ = segments.create("in", 2 * ROW, [a, b])
    out_key, out = segments.create("out", out_bytes)
    client.register_system_shared_memory("in", in_key, 2 * ROW, headers=headers(key))
    client.register_system_shared_memory("out", out_key, out_bytes, headers=headers(key))
    return out


def test_metadata_advertises_system_shared_memory_only(server):
    for transport in TRANSPORTS:
        with client_of(server, transport) as client:
            metadata = client.get_server_metadata(**({} if transport == "http" else {"as_json": True}))
            extensions = metadata["extensions"]
            assert "system_shared_memory" in extensions
            assert "cuda_shared_memory" not in extensions


def test_inputs_and_outputs_travel_through_shared_memory(client, transport, segments):
    out = register_simple(client, segments)
    assert statuses(client, transport) == [("in", f"/{PREFIX}in", 0, 2 * ROW), ("out", f"/{PREFIX}out", 0, 2 * ROW)]
    assert statuses(client, transport, "out") == [("out", f"/{PREFIX}out", 0, 2 * ROW)]
    inputs, outputs = simple_tensors(module_of(transport))
    result = client.infer("simple", inputs, outputs=outputs)
    answered = result.get_output("OUTPUT0")  # as Triton's examples read it: as_numpy has no data to give
    shape = answered["shape"] if transport == "http" else list(answered.shape)
    assert shape == [1, 16]
    if transport == "http":  # no data in the response: it is in the region
        assert answered == {"name": "OUTPUT0", "datatype": "INT32", "shape": [1, 16]}
    else:
        assert result.get_response().raw_output_contents == [b"", b""]  # one per output, as Triton's
    total = shm.get_contents_as_numpy(out, np.int32, [1, 16])
    difference = shm.get_contents_as_numpy(out, np.int32, [1, 16], offset=ROW)
    assert total.tolist() == [list(range(1, 17))]
    assert difference.tolist() == [list(range(-1, 15))]
    client.unregister_system_shared_memory("in")
    assert [s[0] for s in statuses(client, transport)] == ["out"]
    client.unregister_system_shared_memory()
    assert statuses(client, transport) == []


def test_tensors_in_regions_and_in_the_message_mix(client, transport, segments):
    """INPUT1 and OUTPUT1 travel in the message (binary data over HTTP, raw contents over gRPC), beside the other
    two in regions: gRPC's raw contents then count only the inputs not in shared memory."""
    out = register_simple(client, segments)
    inputs, outputs = simple_tensors(module_of(transport), in_region=False, out_region=False)
    result = client.infer("simple", inputs, outputs=outputs)
    assert result.as_numpy("OUTPUT1").tolist() == [list(range(-1, 15))]
    assert shm.get_contents_as_numpy(out, np.int32, [1, 16]).tolist() == [list(range(1, 17))]


@pytest.mark.parametrize(("change", "match"), [
    ("unknown", "input 'INPUT0': no shared memory region 'elsewhere' is registered; register it first"),
    ("offset", "input 'INPUT1': offset 128 is past the end of shared memory region 'in' \\(128 bytes\\)"),
    ("overrun", "input 'INPUT1': 64 bytes at offset 96 do not fit in shared memory region 'in' \\(128 bytes\\)"),
    ("small-output", "output 'OUTPUT0' has 64 bytes, more than the 32 bytes given for it in shared memory region "
                     "'out'"),
])
def test_a_region_misused_is_a_clear_error(client, transport, segments, change, match):
    register_simple(client, segments)
    module = module_of(transport)
    inputs, outputs = simple_tensors(module)
    if change == "unknown":
        inputs[0].set_shared_memory("elsewhere", ROW)
    elif change == "offset":
        inputs[1].set_shared_memory("in", ROW, offset=2 * ROW)
    elif change == "overrun":
        inputs[1].set_shared_memory("in", ROW, offset=ROW + ROW // 2)
    else:
        outputs[0].set_shared_memory("out", ROW // 2)
    with pytest.raises(InferenceServerException, match=match) as info:
        client.infer("simple", inputs, outputs=outputs)
    assert info.value.status() == REFUSED[transport]
    inputs, outputs = simple_tensors(module)  # the server goes on serving the regions
    client.infer("simple", inputs, outputs=outputs)


def test_registrations_that_cannot_work_are_refused(client, transport, segments):
    key, _ = segments.create("small", ROW)
    for name, shm_key, size, match in [
        ("r", f"/{PREFIX}missing", ROW, f"unable to open shared memory object '/{PREFIX}missing'"),
        ("r", key, 2 * ROW, f"past the end of shared memory object '/{key[1:]}' \\(64 bytes\\)"),
        ("r", "/../etc/passwd", 8, "is not the name of a POSIX shared memory object"),
    ]:
        with pytest.raises(InferenceServerException, match=match) as info:
            client.register_system_shared_memory(name, shm_key, size)
        assert info.value.status() == REFUSED[transport]
    client.register_system_shared_memory("r", key, ROW)
    with pytest.raises(InferenceServerException, match="shared memory region 'r' already in manager"):
        client.register_system_shared_memory("r", key, ROW)
    with pytest.raises(InferenceServerException, match="Unable to find system shared memory region: 'nope'") as info:
        client.get_system_shared_memory_status("nope")
    assert info.value.status() == ("404" if transport == "http" else "StatusCode.NOT_FOUND")


def test_cuda_shared_memory_is_refused_as_triton_without_a_gpu_refuses_it(client, transport):
    client.unregister_cuda_shared_memory()  # Triton's examples start with this: nothing to unregister
    status = client.get_cuda_shared_memory_status()
    assert (status == []) if transport == "http" else not status.regions
    with pytest.raises(InferenceServerException, match="CUDA shared memory is not supported: this server has no GPU")\
            as info:
        client.register_cuda_shared_memory("gpu", "AAAA" if transport == "http" else b"\0" * 64, 0, 64)
    assert info.value.status() == REFUSED[transport]


def test_each_api_key_has_its_own_regions(keyed_server, transport, segments):
    with client_of(keyed_server, transport) as client:
        out = register_simple(client, segments, key="alice")
        inputs, outputs = simple_tensors(module_of(transport))
        with pytest.raises(InferenceServerException, match="no shared memory region 'in' is registered for this "
                                                           "API key") as info:
            client.infer("simple", inputs, outputs=outputs, headers=headers("bob"))
        assert info.value.status() == REFUSED[transport]
        assert statuses(client, transport, key="bob") == []
        client.unregister_system_shared_memory(headers=headers("bob"))  # bob's, none: alice's stay
        client.infer("simple", inputs, outputs=outputs, headers=headers("alice"))
        assert shm.get_contents_as_numpy(out, np.int32, [1, 16]).tolist() == [list(range(1, 17))]
        assert [s[0] for s in statuses(client, transport, key="alice")] == ["in", "out"]
        with pytest.raises(InferenceServerException) as info:
            client.get_system_shared_memory_status()  # no key at all
        assert info.value.status() in ("401", "StatusCode.UNAUTHENTICATED")
        client.unregister_system_shared_memory(headers=headers("alice"))
