"""The python runtime: user classes with load/predict and optional pre/postprocess."""

import numpy as np
import pytest

from fakes import write_model
from inferd.config import ConfigError
from inferd.runtimes.registry import RUNTIMES, load_runtime
from inferd.signature import Signature, TensorSpec

WITH_HOOKS = """
import numpy as np

class Model:
    def load(self):
        self.loaded = True

    def preprocess(self, inputs):
        return inputs["text"]

    def predict(self, texts):
        return [len(t) for t in texts]

    def postprocess(self, lengths):
        return {"length": np.array(lengths, dtype=np.int32)}
"""

TOML = """
[[inputs]]
name = "text"
datatype = "BYTES"
shape = [-1]

[[outputs]]
name = "length"
datatype = "INT32"
shape = [-1]
"""


def load(folder, options=None, override=None):
    return load_runtime(RUNTIMES["python"], folder / "1" / "model.py", folder, options or {}, override)


def override_from(toml_folder):
    from inferd.config import load_model_config

    return load_model_config(toml_folder).signature_override()


def test_hooks_run_in_order_with_a_model_toml_signature(repo_root):
    folder = write_model(repo_root, "lengths", WITH_HOOKS, toml=TOML)
    runtime = load(folder, override=override_from(folder))
    assert runtime.signature.inputs == (TensorSpec("text", "BYTES", (-1,)),)
    out = runtime.predict({"text": np.array([b"abc", b"hello"], dtype=object)})
    assert out["length"].tolist() == [3, 5]


def test_a_python_model_needs_a_signature(repo_root):
    folder = write_model(repo_root, "lengths", WITH_HOOKS)
    with pytest.raises(ValueError, match=r"a python model needs a signature: declare \[\[inputs\]\] and \[\[outputs\]\]"):
        load(folder)


def test_class_is_found_by_predict_or_by_name(repo_root):
    source = """
    class Helper:
        pass

    class Scorer:
        inputs = [{"name": "x", "datatype": "FP32", "shape": [-1]}]
        outputs = [{"name": "x", "datatype": "FP32", "shape": [-1]}]

        def predict(self, inputs):
            return inputs
    """
    folder = write_model(repo_root, "echo", source)
    assert load(folder).predict({"x": np.ones(2, dtype=np.float32)})["x"].tolist() == [1.0, 1.0]
    assert load(folder, {"class_name": "Scorer"}).signature.inputs[0].name == "x"
    with pytest.raises(ValueError, match="no class named 'Missing'"):
        load(folder, {"class_name": "Missing"})
    with pytest.raises(ConfigError, match="key 'options.klass': unknown key"):
        load(folder, {"klass": "Scorer"})


def test_two_candidate_classes_are_ambiguous(repo_root):
    source = """
    class A:
        def predict(self, inputs): return inputs
    class B:
        def predict(self, inputs): return inputs
    """
    folder = write_model(repo_root, "two", source)
    with pytest.raises(ValueError, match="expected one class with a predict\\(\\) method .* found A, B"):
        load(folder)


def test_declared_signature_may_be_narrowed_not_contradicted(repo_root):
    from fakes import ADDER

    folder = write_model(repo_root, "adder", ADDER)
    narrowed = Signature((TensorSpec("a", "FP32", (4, 3)),), ())
    assert load(folder, override=narrowed).signature.inputs[0].shape == (4, 3)
    with pytest.raises(ValueError, match="input 'a' is FP32 in the model, the override says INT8"):
        load(folder, override=Signature((TensorSpec("a", "INT8", (-1, 3)),), ()))


def test_bad_class_signature(repo_root):
    source = """
    class Model:
        inputs = [{"name": "x", "datatype": "FP32"}]
        outputs = []
        def predict(self, inputs): return inputs
    """
    folder = write_model(repo_root, "bad", source)
    with pytest.raises(ValueError, match="class Model declares a bad signature"):
        load(folder)


def test_two_models_with_the_same_class_name_do_not_collide(repo_root):
    from fakes import ADDER, FAILING

    first = load(write_model(repo_root, "one", ADDER))
    second = load(write_model(repo_root, "two", FAILING))
    assert first.signature != second.signature


class _Sender:
    """Takes ``room`` responses, then says the caller has gone away."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.sent: list[int] = []

    def send(self, outputs) -> bool:
        if len(self.sent) == self.room:
            return False
        self.sent.append(int(outputs["i"][0]))
        return True


def test_a_decoupled_predict_streams_through_postprocess_and_is_closed_when_the_caller_leaves(repo_root):
    from fakes import STREAMER

    source = STREAMER.replace("    def predict(self, inputs):",
                              "    def postprocess(self, outputs):\n        return {'i': outputs['i'] * 10}\n\n"
                              "    def predict(self, inputs):")
    folder = write_model(repo_root, "streamer", source)
    runtime = load(folder)
    everything = _Sender(room=10)
    runtime.stream({"n": np.array([3], dtype=np.int32)}, everything)
    assert everything.sent == [0, 10, 20]
    leaving = _Sender(room=2)
    runtime.stream({"n": np.array([-1], dtype=np.int32)}, leaving)  # forever, until the sender refuses
    assert leaving.sent == [0, 10]
    assert (folder / "1" / "closed").read_text() == "2"  # its finally ran: the generator was closed


def test_a_decoupled_call_of_a_predict_that_is_no_generator_is_a_type_error(repo_root):
    folder = write_model(repo_root, "lengths", WITH_HOOKS, toml=TOML)
    runtime = load(folder, override=override_from(folder))
    with pytest.raises(TypeError, match="a decoupled model's predict must be a generator"):
        runtime.stream({"text": np.array([b"abc"], dtype=object)}, _Sender(room=1))
