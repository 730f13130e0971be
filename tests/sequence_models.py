"""Stateful models with the names, tensors and answers of Triton's sequence models, built here: the two ONNX
graphs of Triton's ``simple_sequence`` and ``simple_dyna_sequence`` (the semantics of qa/common/
gen_qa_sequence_models.py and gen_qa_dyna_sequence_models.py, written with the ``onnx`` helper API), and
``simple_string_dyna_sequence`` as a Python model keeping a true accumulator in implicit state.

- ``simple_sequence``: ``OUTPUT = READY * (INPUT + START)`` (direct strategy, START and READY controls).
- ``simple_dyna_sequence``: ``OUTPUT = READY * (INPUT + START + END * CORRID)`` (oldest strategy, two instances).
- ``simple_string_dyna_sequence``: the running sum of INPUT over the sequence, plus the (string) sequence id on
  its last request.
- ``simple_sequence_plain``: ``simple_sequence``'s graph served without ``[sequence_batching]`` (START and READY
  are then ordinary inputs), for the benchmark's comparison.
- ``counter``: a Python model without a batch dimension whose implicit state is a BYTES list of what it was sent.
"""

from __future__ import annotations

from pathlib import Path

from fakes import write_model

CONTROLS = """
[[sequence_batching.control_input]]
name = "START"
kind = "CONTROL_SEQUENCE_START"
int32_false_true = [0, 1]

[[sequence_batching.control_input]]
name = "READY"
kind = "CONTROL_SEQUENCE_READY"
int32_false_true = [0, 1]
"""

END_CONTROL = """
[[sequence_batching.control_input]]
name = "END"
kind = "CONTROL_SEQUENCE_END"
int32_false_true = [0, 1]
"""

SIMPLE_SEQUENCE_TOML = """
max_batch_size = 8

[sequence_batching]
strategy = "direct"
""" + CONTROLS

SIMPLE_DYNA_SEQUENCE_TOML = """
max_batch_size = 8

[instances]
count = 2

[sequence_batching]
strategy = "oldest"
max_sequence_idle_microseconds = 10000000
max_candidate_sequences = 1024
max_queue_delay_microseconds = 10000
""" + CONTROLS + END_CONTROL + """
[[sequence_batching.control_input]]
name = "CORRID"
kind = "CONTROL_SEQUENCE_CORRID"
datatype = "UINT64"
"""

STRING_DYNA = """
import numpy as np

class Model:
    inputs = [{"name": n, "datatype": "INT32", "shape": [-1, 1]} for n in ("INPUT", "START", "END", "READY", "ACC")]
    inputs.append({"name": "CORRID", "datatype": "BYTES", "shape": [-1, 1]})
    outputs = [{"name": "OUTPUT", "datatype": "INT32", "shape": [-1, 1]},
               {"name": "ACC_NEXT", "datatype": "INT32", "shape": [-1, 1]}]

    def predict(self, inputs):
        total = np.where(inputs["START"] == 1, 0, inputs["ACC"]) + inputs["INPUT"]
        ids = np.array([[int(v)] for v in inputs["CORRID"].ravel()], dtype=np.int32)
        return {"OUTPUT": (total + inputs["END"] * ids) * inputs["READY"], "ACC_NEXT": total}
"""

STRING_DYNA_TOML = """
max_batch_size = 8

[sequence_batching]
strategy = "oldest"
max_sequence_idle_microseconds = 10000000
""" + CONTROLS + END_CONTROL + """
[[sequence_batching.control_input]]
name = "CORRID"
kind = "CONTROL_SEQUENCE_CORRID"
datatype = "BYTES"

[[sequence_batching.state]]
input_name = "ACC"
output_name = "ACC_NEXT"
datatype = "INT32"
shape = [1]
"""

COUNTER = """
import numpy as np

class Model:
    inputs = [{"name": "WORD", "datatype": "BYTES", "shape": [1]},
              {"name": "SEEN", "datatype": "BYTES", "shape": [-1]}]
    outputs = [{"name": "COUNT", "datatype": "INT64", "shape": [1]},
               {"name": "SEEN_NEXT", "datatype": "BYTES", "shape": [-1]}]

    def predict(self, inputs):
        seen = np.concatenate([inputs["SEEN"], inputs["WORD"]])
        return {"COUNT": np.array([len(seen)], dtype=np.int64), "SEEN_NEXT": seen}
"""

COUNTER_TOML = """
max_batch_size = 0

[sequence_batching]
max_sequence_idle_microseconds = 300000
max_candidate_sequences = 16

[[sequence_batching.state]]
input_name = "SEEN"
output_name = "SEEN_NEXT"
datatype = "BYTES"
shape = [-1]
"""


def sequence_graph(dyna: bool) -> bytes:
    """Triton's ONNX sequence model: ``READY * (INPUT + START)``, and with ``dyna`` ``+ END * CORRID`` inside."""
    import onnx
    from onnx import TensorProto, helper

    int32 = TensorProto.INT32
    names = ["INPUT", "START", "END", "READY"] if dyna else ["INPUT", "START", "READY"]
    inputs = [helper.make_tensor_value_info(n, int32, [None, 1]) for n in names]
    nodes = [helper.make_node("Add", ["INPUT", "START"], ["sum"])]
    if dyna:
        inputs.append(helper.make_tensor_value_info("CORRID", TensorProto.UINT64, [None, 1]))
        nodes += [helper.make_node("Cast", ["CORRID"], ["corrid"], to=int32),
                  helper.make_node("Mul", ["END", "corrid"], ["last"]),
                  helper.make_node("Add", ["sum", "last"], ["total"])]
    nodes.append(helper.make_node("Mul", ["READY", "total" if dyna else "sum"], ["OUTPUT"]))
    output = helper.make_tensor_value_info("OUTPUT", int32, [None, 1])
    name = "simple_dyna_sequence" if dyna else "simple_sequence"
    graph = helper.make_graph(nodes, name, inputs, [output])
    model = helper.make_model(graph, producer_name="inferd-tests", opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def _write_onnx(root: Path, name: str, graph: bytes, toml: str) -> None:
    folder = root / name
    (folder / "1").mkdir(parents=True, exist_ok=True)
    (folder / "1" / "model.onnx").write_bytes(graph)
    (folder / "model.toml").write_text(toml)


def write_sequence_models(root: Path) -> None:
    plain = sequence_graph(dyna=False)
    _write_onnx(root, "simple_sequence", plain, SIMPLE_SEQUENCE_TOML)
    _write_onnx(root, "simple_sequence_plain", plain, "max_batch_size = 8\n")
    _write_onnx(root, "simple_dyna_sequence", sequence_graph(dyna=True), SIMPLE_DYNA_SEQUENCE_TOML)
    write_model(root, "simple_string_dyna_sequence", STRING_DYNA, STRING_DYNA_TOML)
    write_model(root, "counter", COUNTER, COUNTER_TOML)
