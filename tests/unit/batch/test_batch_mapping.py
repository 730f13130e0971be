from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from inferd.batch import BatchError
from inferd.batch.mapping import bind_inputs, output_schema, to_arrays, to_output_table
from inferd.errors import InferError
from inferd.signature import Signature, TensorSpec

ONE = Signature((TensorSpec("input", "FP32", (-1, 3)),), (TensorSpec("label", "INT64", (-1,)),
                                                          TensorSpec("probabilities", "FP32", (-1, 2))))
TWO = Signature((TensorSpec("a", "FP32", (-1,)), TensorSpec("text", "BYTES", (-1,))),
                (TensorSpec("out", "BYTES", (-1,)),))


def table() -> pa.Table:
    return pa.table({"id": [1, 2], "x": [1.0, 2.0], "y": [3, 4], "z": [5.5, 6.5], "name": ["ab", "cd"]})


def test_single_input_takes_every_feature_column_but_the_key() -> None:
    t = table().drop_columns(["name"])
    [binding] = bind_inputs(ONE, t.schema, {}, key="id")
    assert binding.columns == ("x", "y", "z")
    arrays = to_arrays([binding], t)
    assert arrays["input"].dtype == np.float32
    np.testing.assert_array_equal(arrays["input"], [[1, 3, 5.5], [2, 4, 6.5]])


def test_single_input_from_a_list_column() -> None:
    t = pa.table({"id": [1, 2], "vec": [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]})
    [binding] = bind_inputs(ONE, t.schema, {}, key="id")
    assert binding.columns == ("vec",)
    np.testing.assert_array_equal(to_arrays([binding], t)["input"], [[1, 2, 3], [4, 5, 6]])


def test_wrong_number_of_feature_columns_is_explained() -> None:
    with pytest.raises(BatchError, match=r"takes 3 values per row; the input has 5 feature column"):
        bind_inputs(ONE, table().schema, {}, key=None)


def test_mapping_by_name_and_text_to_bytes() -> None:
    t = table()
    bindings = bind_inputs(TWO, t.schema, {"a": "x", "text": "name"}, key=None)
    arrays = to_arrays(bindings, t)
    assert arrays["text"].tolist() == [b"ab", b"cd"]
    assert arrays["a"].tolist() == [1.0, 2.0]


def test_mapping_stacks_several_columns() -> None:
    [binding] = bind_inputs(ONE, table().schema, {"input": "z,y,x"}, key=None)
    np.testing.assert_array_equal(to_arrays([binding], table())["input"], [[5.5, 3, 1], [6.5, 4, 2]])


def test_mapping_mistakes_are_named() -> None:
    with pytest.raises(BatchError, match="'b', which the model does not take"):
        bind_inputs(TWO, table().schema, {"b": "x"}, key=None)
    with pytest.raises(BatchError, match="no column 'nope'"):
        bind_inputs(TWO, table().schema, {"a": "nope"}, key=None)
    with pytest.raises(BatchError, match=r"no column for model input 'a'.*--map a=COLUMN"):
        bind_inputs(TWO, pa.schema([("text", pa.string())]), {}, key=None)


@pytest.mark.parametrize(("values", "message"), [
    ([1.0, None], "missing value"),
    (["1.0", "abc"], "does not fit model input"),
])
def test_bad_values_fail_as_invalid_argument(values: list[object], message: str) -> None:
    t = pa.table({"a": values, "text": ["p", "q"]})
    bindings = bind_inputs(TWO, t.schema, {}, key=None)
    with pytest.raises(InferError, match=message):
        to_arrays(bindings, t)


def test_output_table_predictions_only_with_key_and_list_columns() -> None:
    t = table()
    schema = output_schema(ONE, t.schema, join=False, key="id")
    assert schema.names == ["id", "label", "probabilities"]
    assert schema.field("probabilities").type == pa.list_(pa.float32(), 2)
    out = to_output_table(schema, t, {"label": np.array([0, 1]), "probabilities": np.array([[0.9, 0.1], [0.2, 0.8]],
                                                                                          dtype=np.float32)},
                          ONE, join=False, key="id")
    assert out.to_pylist()[1] == {"id": 2, "label": 1, "probabilities": pytest.approx([0.2, 0.8])}


def test_join_keeps_input_columns_and_renames_a_clash() -> None:
    t = table().append_column("label", pa.array(["cat", "dog"]))
    schema = output_schema(ONE, t.schema, join=True, key=None)
    assert schema.names == [*t.schema.names, "label_prediction", "probabilities"]
