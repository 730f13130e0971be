"""Converting scikit-learn, XGBoost and LightGBM models to ONNX with the signature inferd already serves.

The converters (skl2onnx; onnxmltools for the boosters) name inputs and outputs their own way and give
regressors a ``[N, 1]`` output; the converted graph is then given the original's input name and datatype, and
each output is cast and reshaped to the original's name, datatype and rank, so a client of the model sees no
difference between versions.

Trees in double precision: scikit-learn compares ``float32(x)`` with float64 thresholds, and a converted tree
with float32 thresholds sends a value lying between a threshold and its float32 rounding down the other branch
(skl2onnx's documented pitfall). Such estimators are converted with double inputs, behind a Cast from the
served FP32 input. XGBoost and LightGBM keep float32: their own thresholds are float32 already.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from inferd.signature import Signature

if TYPE_CHECKING:
    import onnx

OPSET = 17
ML_OPSET = 3
ONNXMLTOOLS_OPSET = 15
"""The highest opset onnxmltools 1.16 converts boosters to."""
_ONNX_TYPE = {"FP32": 1, "UINT8": 2, "INT8": 3, "INT32": 6, "INT64": 7, "BYTES": 8, "BOOL": 9, "FP64": 11}
"""V2 datatype -> onnx.TensorProto element type, for the datatypes a converted model gives."""
TREE_MODULES = ("sklearn.tree", "sklearn.ensemble")
TEXT_LOCALE = "C.UTF-8"
"""The locale of a text vectorizer's StringNormalizer (lowercasing). skl2onnx's default, en_US.UTF-8, is missing
from many images (Debian's included), and onnxruntime then refuses to load the graph; C.UTF-8 is in glibc."""


class ConversionError(ValueError):
    """The converter refused the model; the message carries its reason."""


def to_onnx(runtime_name: str, native: Any, signature: Signature) -> tuple[onnx.ModelProto, list[str]]:
    """The model as ONNX with ``signature`` (notes say how it was converted). ConversionError on refusal."""
    notes: list[str] = []
    try:
        if runtime_name == "xgboost":
            model = _xgboost(native, signature)
        elif runtime_name == "lightgbm":
            model = _lightgbm(native, signature)
        elif runtime_name == "sklearn":
            model, double = _sklearn(native, signature)
            if double:
                notes.append("trees converted in double precision (FP32 input cast to double first)")
        else:
            raise ConversionError(f"no ONNX converter for the {runtime_name} runtime")
    except ConversionError:
        raise
    except Exception as exc:  # every converter raises its own types (RuntimeError, NotImplementedError, ...)
        raise ConversionError(f"{type(exc).__name__}: {exc}") from exc
    return adapt(model, signature), notes


def _input_type(signature: Signature, double: bool = False) -> list[tuple[str, Any]]:
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType, StringTensorType

    spec = signature.inputs[0]
    width = spec.shape[1] if len(spec.shape) == 2 and spec.shape[1] > 0 else None
    if spec.datatype == "BYTES":
        return [(spec.name, StringTensorType([None]))]
    kind = DoubleTensorType if double else FloatTensorType
    return [(spec.name if not double else spec.name + "__double", kind([None, width]))]


def _xgboost(booster: Any, signature: Signature) -> onnx.ModelProto:
    from onnxmltools.convert import convert_xgboost

    model: onnx.ModelProto = convert_xgboost(booster, initial_types=_input_type(signature),
                                             target_opset=ONNXMLTOOLS_OPSET)
    return model


def _lightgbm(booster: Any, signature: Signature) -> onnx.ModelProto:
    from onnxmltools.convert import convert_lightgbm

    model: onnx.ModelProto = convert_lightgbm(booster, initial_types=_input_type(signature), zipmap=False,
                                              target_opset=ONNXMLTOOLS_OPSET)
    return model


def _sklearn(estimator: Any, signature: Signature) -> tuple[onnx.ModelProto, bool]:
    from skl2onnx import convert_sklearn

    final = estimator.steps[-1][1] if hasattr(estimator, "steps") else estimator
    double = signature.inputs[0].datatype != "BYTES" and _has_trees(estimator)
    options: dict[int, dict[str, Any]] = {id(final): {"zipmap": False}} if hasattr(final, "classes_") else {}
    for step in [s for _, s in estimator.steps] if hasattr(estimator, "steps") else [estimator]:
        if callable(getattr(step, "build_analyzer", None)):
            options[id(step)] = {"locale": TEXT_LOCALE}
    model: onnx.ModelProto = convert_sklearn(estimator, initial_types=_input_type(signature, double),
                                             options=options or None, target_opset={"": OPSET, "ai.onnx.ml": ML_OPSET})
    if double:
        model = _cast_input(model, signature)
    return model, double


def _has_trees(estimator: Any) -> bool:
    steps = [s for _, s in estimator.steps] if hasattr(estimator, "steps") else [estimator]
    return any(type(s).__module__.startswith(TREE_MODULES) for s in steps)


def _cast_input(model: onnx.ModelProto, signature: Signature) -> onnx.ModelProto:
    """A new FP32 graph input under the served name, cast to the double input the converter was given."""
    from onnx import TensorProto, helper

    spec = signature.inputs[0]
    graph = model.graph
    inner = graph.input[0]
    served = helper.make_tensor_value_info(spec.name, TensorProto.FLOAT, [None, spec.shape[1] if spec.shape[1] > 0
                                                                          else None])
    graph.node.insert(0, helper.make_node("Cast", [spec.name], [inner.name], to=TensorProto.DOUBLE,
                                          name="inferd_cast_input"))
    del graph.input[:]
    graph.input.append(served)
    return model


def adapt(model: onnx.ModelProto, signature: Signature) -> onnx.ModelProto:
    """Outputs renamed, cast and reshaped to the served ones, in order. ConversionError when their counts differ."""
    from onnx import helper

    graph = model.graph
    produced = list(graph.output)
    if len(produced) != len(signature.outputs):
        raise ConversionError(f"the converted model has outputs {[o.name for o in produced]}, the served one "
                              f"{list(signature.output_names())}")
    served = set(signature.output_names())
    for given in produced:
        if given.name in served:  # the served name is given to the last node of the chain below
            _rename(graph, given.name, given.name + "__converted")
    new_outputs = []
    for index, (given, spec) in enumerate(zip(produced, signature.outputs, strict=True)):
        element = _ONNX_TYPE.get(spec.datatype)
        if element is None:
            raise ConversionError(f"output {spec.name!r} is {spec.datatype}, which a converted model cannot give")
        current = given.name
        rank = len(given.type.tensor_type.shape.dim)
        if rank != len(spec.shape) and len(spec.shape) == 1:
            shape = helper.make_tensor(f"inferd_shape_{index}", 7, [1], [-1])
            graph.initializer.append(shape)
            graph.node.append(helper.make_node("Reshape", [current, shape.name], [f"{current}__flat"],
                                               name=f"inferd_reshape_{index}"))
            current = f"{current}__flat"
        if given.type.tensor_type.elem_type != element:
            graph.node.append(helper.make_node("Cast", [current], [f"{spec.name}__cast"], to=element,
                                               name=f"inferd_cast_{index}"))
            current = f"{spec.name}__cast"
        graph.node.append(helper.make_node("Identity", [current], [spec.name], name=f"inferd_output_{index}"))
        dims = [None if d < 0 else d for d in spec.shape]
        new_outputs.append(helper.make_tensor_value_info(spec.name, element, dims))
    del graph.output[:]
    graph.output.extend(new_outputs)
    return model


def _rename(graph: Any, old: str, new: str) -> None:
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]
    for value in graph.output:
        if value.name == old:
            value.name = new
