import numpy as np
import pytest

from inferd.errors import ErrorCode, InferError
from inferd.signature import (
    Signature,
    TensorSpec,
    as_declared,
    check_outputs,
    check_request_input,
    merge_override,
)

SIG = Signature(
    (TensorSpec("input", "FP32", (-1, 64)),),
    (TensorSpec("label", "INT64", (-1,)), TensorSpec("probabilities", "FP32", (-1, 10))),
)


def test_batched_when_every_tensor_has_a_free_first_dimension():
    assert SIG.batched
    assert not Signature((TensorSpec("x", "FP32", (3,)),), (TensorSpec("y", "FP32", (-1,)),)).batched


def test_duplicate_names_and_bad_specs_are_refused():
    with pytest.raises(ValueError, match="duplicate input names: x"):
        Signature((TensorSpec("x", "FP32", (1,)), TensorSpec("x", "FP32", (1,))), ())
    with pytest.raises(ValueError, match="unknown datatype"):
        TensorSpec("x", "FLOAT", (1,))
    with pytest.raises(ValueError, match="dimensions must be"):
        TensorSpec("x", "FP32", (-2,))


@pytest.mark.parametrize(
    ("name", "datatype", "shape", "message"),
    [
        ("pixels", "FP32", [1, 64], "unexpected input 'pixels'; the model takes 'input'"),
        ("input", "FP64", [1, 64], "input 'input': expected datatype FP32, got FP64"),
        ("input", "FP32", [1, 32], "input 'input': expected shape \\[-1, 64\\], got \\[1, 32\\]"),
        ("input", "FP32", [64], "expected shape \\[-1, 64\\], got \\[64\\]"),
    ],
)
def test_request_inputs_are_checked_against_the_signature(name, datatype, shape, message):
    with pytest.raises(InferError, match=message) as info:
        check_request_input(SIG.input(name), name, datatype, shape, SIG.input_names())
    assert info.value.code is ErrorCode.INVALID_ARGUMENT


def test_outputs_are_checked_and_converted():
    good = {"label": np.array([1, 2]), "probabilities": np.zeros((2, 10), dtype=np.float64)}
    checked = check_outputs(SIG, good, 2)
    assert checked["probabilities"].dtype == np.float32
    assert checked["label"].dtype == np.int64


@pytest.mark.parametrize(
    ("outputs", "message"),
    [
        ({"label": np.array([1, 2])}, "did not return output 'probabilities'"),
        ({"label": np.array([1, 2, 3]), "probabilities": np.zeros((3, 10))}, "has 3 rows for a batch of 2"),
        ({"label": np.array([1, 2]), "probabilities": np.zeros((2, 9))}, "has shape \\[2, 9\\], expected"),
        ([np.array([1, 2])], "expected a mapping"),
        ({"label": np.array(["a", "b"]), "probabilities": np.zeros((2, 10))}, "does not convert to INT64"),
    ],
)
def test_wrong_outputs_are_the_models_fault(outputs, message):
    with pytest.raises(InferError, match=message) as info:
        check_outputs(SIG, outputs, 2)
    assert info.value.code is ErrorCode.INTERNAL


def test_bytes_outputs_become_bytes():
    sig = Signature((), (TensorSpec("label", "BYTES", (-1,)),))
    checked = check_outputs(sig, {"label": np.array(["ham", "spam"])}, 2)
    assert checked["label"].tolist() == [b"ham", b"spam"]


def test_override_may_narrow_a_free_dimension_but_not_contradict():
    narrowed = merge_override(SIG, Signature((TensorSpec("input", "FP32", (8, 64)),), ()), "m")
    assert narrowed.inputs[0].shape == (8, 64)
    assert narrowed.outputs == SIG.outputs
    with pytest.raises(ValueError, match="m: input 'input' has shape \\[-1, 64\\] in the model, the override says"):
        merge_override(SIG, Signature((TensorSpec("input", "FP32", (-1, 32)),), ()), "m")
    with pytest.raises(ValueError, match="is FP32 in the model, the override says FP64"):
        merge_override(SIG, Signature((TensorSpec("input", "FP64", (-1, 64)),), ()), "m")
    with pytest.raises(ValueError, match="output 'score' is not in the model"):
        merge_override(SIG, Signature((), (TensorSpec("score", "FP32", (-1,)),)), "m")


TEXT = Signature((TensorSpec("text", "BYTES", (-1,)), TensorSpec("extra", "FP32", (-1, 3))),
                 (TensorSpec("label", "BYTES", (-1,)),))


def test_a_batched_models_one_value_per_row_input_also_takes_triton_s_n_by_1_form():
    """perf_analyzer and other Triton clients send such an input as [n, 1] (Triton states it as dims [1]
    reshaped to []); the model still declares and gets [n]."""
    text = TEXT.input("text")
    assert text is not None
    assert text.column
    assert TEXT.column_inputs == ("text",)
    assert [text.accepts_shape(shape) for shape in ([4], [4, 1], [4, 2], [4, 1, 1])] == [True, True, False, False]
    assert text.metadata() == {"name": "text", "datatype": "BYTES", "shape": [-1, 1]}
    assert text.to_dict()["shape"] == [-1]  # the declared form (the worker protocol) is unchanged
    with pytest.raises(InferError, match=r"expected shape \[-1\] \(or \[-1, 1\]\), got \[4, 2\]"):
        check_request_input(text, "text", "BYTES", [4, 2], TEXT.input_names())


def test_only_inputs_of_a_batched_model_take_the_n_by_1_form():
    assert not TEXT.outputs[0].column  # a model's output must have its declared shape
    assert not TEXT.outputs[0].accepts_shape([4, 1])
    unbatched = Signature((TensorSpec("tokens", "INT64", (-1,)),), (TensorSpec("score", "FP32", (2,)),))
    assert not unbatched.inputs[0].column
    assert not unbatched.inputs[0].accepts_shape([4, 1])
    assert not SIG.inputs[0].column  # [-1, 64]: not one value per row
    # a spec marked in one signature is unmarked where that signature's other tensors are not batched
    fixed = merge_override(TEXT, Signature((TensorSpec("extra", "FP32", (2, 3)),), ()), "m")
    assert not fixed.batched
    assert fixed.column_inputs == ()
    assert not fixed.inputs[0].accepts_shape([2, 1])


def test_as_declared_gives_the_model_the_shape_it_declares():
    texts = np.array([[b"a"], [b"b"]], dtype=object)
    extra = np.zeros((2, 3), dtype=np.float32)
    shaped = as_declared(TEXT.column_inputs, {"text": texts, "extra": extra})
    assert shaped["text"].shape == (2,)
    assert shaped["text"].tolist() == [b"a", b"b"]
    assert shaped["extra"] is extra
    plain = {"text": np.array([b"a"], dtype=object), "extra": extra[:1]}
    assert as_declared(TEXT.column_inputs, plain) is plain
