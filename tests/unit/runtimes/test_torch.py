"""The torch runtime, on tiny models built, saved and loaded here: torch.export (model.pt2) and TorchScript
(model.pt)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import pytest

from inferd.config import ConfigError
from inferd.runtimes.base import Runtime
from inferd.runtimes.registry import RUNTIMES, load_runtime
from inferd.signature import Signature, TensorSpec

torch = pytest.importorskip("torch")  # the torch extra is optional
nn = torch.nn

# torch.jit.script / trace / save are deprecated in torch 2.13; the runtime still serves TorchScript files.
pytestmark = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning")

LINEAR_OVERRIDE = Signature((TensorSpec("x", "FP32", (-1, 4)),), (TensorSpec("y", "FP32", (-1, 3)),))


class Classifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.linear(x), dim=-1)


class TwoInTwoOut(nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return a + b, (a * b).sum(dim=1)


class DictOut(nn.Module):
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"doubled": x * 2, "total": x.sum(dim=1)}


class Embed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embedding = nn.Embedding(10, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embedding(ids).mean(dim=1)


class Halve(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / 2


def _export(module: Any, path: Path, example: tuple[Any, ...], dynamic: dict[str, Any] | None = None) -> Path:
    torch.export.save(torch.export.export(module.eval(), example, dynamic_shapes=dynamic), path)
    return path


def _script(module: Any, path: Path) -> Path:
    torch.jit.save(torch.jit.script(module.eval()), str(path))
    return path


def _trace(module: Any, path: Path, example: Any) -> Path:
    torch.jit.save(torch.jit.trace(module.eval(), example), str(path))
    return path


def _load(artifact: Path, override: Signature | None = None, options: dict[str, Any] | None = None) -> Runtime:
    return load_runtime(RUNTIMES["torch"], artifact, artifact.parent, options or {}, override)


def _eager(module: Any, *arrays: np.ndarray) -> Any:
    with torch.no_grad():
        return module(*(torch.tensor(a) for a in arrays))


def _rows(n: int, width: int = 4, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, width)).astype(np.float32)


def test_export_with_dynamic_batch_declares_free_first_dimension(tmp_path: Path) -> None:
    model = Classifier()
    batch = torch.export.Dim("batch")
    rt = _load(_export(model, tmp_path / "model.pt2", (torch.randn(2, 4),), {"x": {0: batch}}))
    assert rt.signature == Signature((TensorSpec("x", "FP32", (-1, 4)),), (TensorSpec("output_0", "FP32", (-1, 3)),))
    for n in (1, 5):
        x = _rows(n)
        x.flags.writeable = False  # request arrays may be read-only views of the wire bytes: no warning, no error
        got = rt.predict({"x": x})
        assert got["output_0"].dtype == np.float32
        np.testing.assert_allclose(got["output_0"], _eager(model, x).numpy(), rtol=1e-6)
    rt.close()


def test_static_export_declares_fixed_shape(tmp_path: Path) -> None:
    rt = _load(_export(Classifier(), tmp_path / "model.pt2", (torch.randn(2, 4),)))
    assert rt.signature.inputs == (TensorSpec("x", "FP32", (2, 4)),)
    assert rt.signature.outputs == (TensorSpec("output_0", "FP32", (2, 3)),)
    assert not rt.signature.batched


def test_torchscript_with_override_predicts_like_the_module(tmp_path: Path) -> None:
    model = Classifier()
    rt = _load(_trace(model, tmp_path / "model.pt", torch.randn(2, 4)), LINEAR_OVERRIDE)
    assert rt.signature == LINEAR_OVERRIDE
    x = _rows(3)
    np.testing.assert_allclose(rt.predict({"x": x})["y"], _eager(model, x).numpy(), rtol=1e-6)


def test_torchscript_without_override_asks_for_model_toml(tmp_path: Path) -> None:
    artifact = _script(Classifier(), tmp_path / "model.pt")
    with pytest.raises(ValueError, match=r"declare \[\[inputs\]\] and \[\[outputs\]\] in model\.toml"):
        _load(artifact)


def test_two_inputs_and_a_tuple_of_two_outputs(tmp_path: Path) -> None:
    batch = torch.export.Dim("batch")
    example = (torch.randn(2, 3), torch.randn(2, 3))
    rt = _load(_export(TwoInTwoOut(), tmp_path / "model.pt2", example, {"a": {0: batch}, "b": {0: batch}}))
    assert rt.signature.inputs == (TensorSpec("a", "FP32", (-1, 3)), TensorSpec("b", "FP32", (-1, 3)))
    assert rt.signature.outputs == (TensorSpec("output_0", "FP32", (-1, 3)), TensorSpec("output_1", "FP32", (-1,)))
    a, b = _rows(4, 3, seed=2), _rows(4, 3, seed=3)
    got = rt.predict({"b": b, "a": a})  # a dict's order does not matter: inputs go in signature order
    np.testing.assert_allclose(got["output_0"], a + b, rtol=1e-6)
    np.testing.assert_allclose(got["output_1"], (a * b).sum(axis=1), rtol=1e-5)


def test_override_names_numbered_export_outputs_in_order(tmp_path: Path) -> None:
    artifact = _export(TwoInTwoOut(), tmp_path / "model.pt2", (torch.randn(2, 3), torch.randn(2, 3)))
    override = Signature((), (TensorSpec("total", "FP32", (2, 3)), TensorSpec("dot", "FP32", (2,))))
    rt = _load(artifact, override)
    assert rt.signature.output_names() == ["total", "dot"]
    assert set(rt.predict({"a": _rows(2, 3), "b": _rows(2, 3)})) == {"total", "dot"}


def test_scripted_module_returning_a_dict_is_matched_by_name(tmp_path: Path) -> None:
    override = Signature(
        (TensorSpec("x", "FP32", (-1, 4)),),
        (TensorSpec("total", "FP32", (-1,)), TensorSpec("doubled", "FP32", (-1, 4))),  # not the dict's order
    )
    rt = _load(_script(DictOut(), tmp_path / "model.pt"), override)
    x = _rows(3)
    got = rt.predict({"x": x})
    np.testing.assert_allclose(got["doubled"], x * 2)
    np.testing.assert_allclose(got["total"], x.sum(axis=1), rtol=1e-6)


def test_exported_dict_outputs_are_named_by_their_keys(tmp_path: Path) -> None:
    rt = _load(_export(DictOut(), tmp_path / "model.pt2", (torch.randn(2, 4),)))
    assert rt.signature.output_names() == ["doubled", "total"]
    x = _rows(2)
    np.testing.assert_allclose(rt.predict({"x": x})["total"], x.sum(axis=1), rtol=1e-6)


def test_int64_input(tmp_path: Path) -> None:
    model = Embed()
    batch = torch.export.Dim("batch")
    example = (torch.randint(0, 10, (2, 5)),)
    rt = _load(_export(model, tmp_path / "model.pt2", example, {"ids": {0: batch}}))
    assert rt.signature.inputs == (TensorSpec("ids", "INT64", (-1, 5)),)
    ids = np.random.default_rng(4).integers(0, 10, size=(3, 5), dtype=np.int64)
    np.testing.assert_allclose(rt.predict({"ids": ids})["output_0"], _eager(model, ids).numpy(), rtol=1e-6)


def test_bf16_round_trips_through_ml_dtypes(tmp_path: Path) -> None:
    spec = (-1, 2)
    override = Signature((TensorSpec("x", "BF16", spec),), (TensorSpec("y", "BF16", spec),))
    rt = _load(_script(Halve(), tmp_path / "model.pt"), override)
    x = np.array([[1.0, 3.0], [-5.0, 0.5]], dtype=ml_dtypes.bfloat16)
    got = rt.predict({"x": x})["y"]
    assert got.dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(got.astype(np.float32), [[0.5, 1.5], [-2.5, 0.25]])


@pytest.mark.parametrize("filename", ["model.pt", "model.pt2"])
def test_predict_from_several_threads(tmp_path: Path, filename: str) -> None:
    model = Classifier()
    if filename == "model.pt":
        rt = _load(_trace(model, tmp_path / filename, torch.randn(2, 4)), LINEAR_OVERRIDE)
    else:
        batch = torch.export.Dim("batch")
        artifact = _export(model, tmp_path / filename, (torch.randn(2, 4),), {"x": {0: batch}})
        rt = _load(artifact, LINEAR_OVERRIDE)
    batches = [_rows(n % 5 + 1, seed=n) for n in range(40)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda x: rt.predict({"x": x})["y"], batches))
    for x, got in zip(batches, results, strict=True):
        np.testing.assert_allclose(got, _eager(model, x).numpy(), rtol=1e-6)


@pytest.mark.parametrize(("filename", "kind"), [("model.pt", "TorchScript"), ("model.pt2", "torch.export")])
def test_corrupt_artifact_names_the_file(tmp_path: Path, filename: str, kind: str) -> None:
    artifact = tmp_path / filename
    artifact.write_bytes(b"this is not a zip archive")
    with pytest.raises(ValueError, match="not a zip") as caught:
        _load(artifact, LINEAR_OVERRIDE)
    assert str(artifact) in str(caught.value)
    assert f"not a {kind} archive" in str(caught.value)


def test_state_dict_is_not_a_torchscript_archive(tmp_path: Path) -> None:
    artifact = tmp_path / "model.pt"
    torch.save(Classifier().state_dict(), artifact)
    with pytest.raises(ValueError, match="not a TorchScript archive: it is a torch.save file") as caught:
        _load(artifact, LINEAR_OVERRIDE)
    assert str(artifact) in str(caught.value)


def test_misnamed_archives_say_which_name_they_need(tmp_path: Path) -> None:
    scripted = _script(Classifier(), tmp_path / "scripted.pt").rename(tmp_path / "model.pt2")
    with pytest.raises(ValueError, match="not a torch.export archive: it is a TorchScript file; name it model.pt$"):
        _load(scripted)
    (tmp_path / "exported").mkdir()
    exported = _export(Classifier(), tmp_path / "exported" / "model.pt2", (torch.randn(2, 4),))
    exported = exported.rename(tmp_path / "exported" / "model.pt")
    with pytest.raises(ValueError, match="not a TorchScript archive: it is a torch.export file; name it model.pt2$"):
        _load(exported, LINEAR_OVERRIDE)


def test_unknown_option_is_a_config_error(tmp_path: Path) -> None:
    artifact = _export(Classifier(), tmp_path / "model.pt2", (torch.randn(2, 4),))
    with pytest.raises(ConfigError, match="options.intra_op_threads"):
        _load(artifact, options={"intra_op_threads": 2})


def test_num_threads_option_is_accepted(tmp_path: Path) -> None:
    before = torch.get_num_threads()
    try:
        _load(_script(Classifier(), tmp_path / "model.pt"), LINEAR_OVERRIDE, {"num_threads": 1})
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_override_contradicting_the_export_is_refused(tmp_path: Path) -> None:
    batch = torch.export.Dim("batch")
    artifact = _export(Classifier(), tmp_path / "model.pt2", (torch.randn(2, 4),), {"x": {0: batch}})
    wrong = Signature((TensorSpec("x", "FP32", (-1, 5)),), ())
    with pytest.raises(ValueError, match=r"input 'x' has shape \[-1, 4\] in the model, the override says \[-1, 5\]"):
        _load(artifact, wrong)


def test_unsupported_datatype_in_override_is_refused(tmp_path: Path) -> None:
    override = Signature((TensorSpec("x", "BYTES", (-1,)),), (TensorSpec("y", "FP32", (-1,)),))
    with pytest.raises(ValueError, match="input 'x' is BYTES"):
        _load(_script(Halve(), tmp_path / "model.pt"), override)


def test_runtime_module_imports_the_real_torch() -> None:
    from inferd.runtimes import torch as runtime_module

    assert runtime_module.torch is torch
