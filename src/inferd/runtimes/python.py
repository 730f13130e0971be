"""Plain Python models: a class in ``model.py`` with ``load()``, ``predict()`` and optional
``preprocess()`` / ``postprocess()``.

.. code-block:: python

    class Model:
        inputs = [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}]     # or [[inputs]] in model.toml
        outputs = [{"name": "y", "datatype": "FP32", "shape": [-1]}]

        def load(self, path):          # path: the version folder, for files beside model.py (optional)
            self.weights = ...

        def predict(self, inputs):     # dict of name -> numpy array, checked against the signature
            return {"y": inputs["x"].sum(axis=1)}

A decoupled model (``[model_transaction_policy] decoupled = true`` in model.toml) writes ``predict`` as a
generator: each ``yield`` of an output dict is one response, sent at once; returning ends the request (Triton's
final flag), after zero, one or many responses. Its caller going away closes the generator (``GeneratorExit`` at
the ``yield``), so ``try``/``finally`` in ``predict`` runs. See docs/decoupled.md.

``model.py`` runs as code from the repository folder: serve only repositories you trust.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
from pathlib import Path
from types import ModuleType
from typing import Any

from inferd.runtimes.base import Inputs, Outputs, ResponseSender
from inferd.runtimes.options import PythonOptions as Options
from inferd.signature import Signature, TensorSpec, merge_override


class PythonRuntime:
    def __init__(self, instance: Any, signature: Signature) -> None:
        self._instance = instance
        self.signature = signature
        self._preprocess = getattr(instance, "preprocess", None)
        self._postprocess = getattr(instance, "postprocess", None)

    def predict(self, inputs: Inputs) -> Outputs:
        payload: Any = self._preprocess(inputs) if self._preprocess else inputs
        result = self._instance.predict(payload)
        if self._postprocess:
            result = self._postprocess(result)
        outputs: Outputs = result
        return outputs

    def stream(self, inputs: Inputs, sender: ResponseSender) -> None:
        """A decoupled model's request: each output dict its generator yields goes to ``sender`` at once (through
        ``postprocess``); the generator is closed early when the caller has gone away."""
        payload: Any = self._preprocess(inputs) if self._preprocess else inputs
        produced = self._instance.predict(payload)
        if not inspect.isgenerator(produced):
            raise TypeError("a decoupled model's predict must be a generator: yield each response's outputs "
                            f"(it returned {type(produced).__name__})")
        try:
            for outputs in produced:
                response: Any = self._postprocess(outputs) if self._postprocess else outputs
                if not sender.send(response):
                    return
        finally:
            produced.close()

    def close(self) -> None:
        close = getattr(self._instance, "close", None)
        if callable(close):
            close()


def load(artifact: Path, options: Options, override: Signature | None) -> PythonRuntime:
    module = _import(artifact)
    cls = _model_class(module, options.class_name, artifact)
    instance = cls()
    user_load = getattr(instance, "load", None)
    if callable(user_load):
        if inspect.signature(user_load).parameters:
            user_load(artifact.parent)
        else:
            user_load()
    declared = _declared_signature(cls, artifact)
    signature = merge_override(declared, override, str(artifact))
    if not signature.inputs or not signature.outputs:
        raise ValueError(
            f"{artifact}: a python model needs a signature: declare [[inputs]] and [[outputs]] in model.toml, "
            f"or 'inputs' and 'outputs' lists on class {cls.__name__}"
        )
    return PythonRuntime(instance, signature)


def _import(artifact: Path) -> ModuleType:
    # A unique module name per file, so two models' model.py never shadow each other in sys.modules.
    digest = hashlib.sha1(str(artifact.resolve()).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(f"inferd_user_model_{digest}", artifact)
    if spec is None or spec.loader is None:
        raise ValueError(f"{artifact}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _model_class(module: ModuleType, class_name: str | None, artifact: Path) -> type[Any]:
    if class_name is not None:
        found = getattr(module, class_name, None)
        if not inspect.isclass(found):
            raise ValueError(f"{artifact}: no class named {class_name!r}")
        return found
    if inspect.isclass(getattr(module, "Model", None)):
        model_cls: type[Any] = module.Model
        return model_cls
    candidates = [
        obj for obj in vars(module).values()
        if inspect.isclass(obj) and obj.__module__ == module.__name__ and callable(getattr(obj, "predict", None))
    ]
    if len(candidates) != 1:
        names = ", ".join(c.__name__ for c in candidates) or "none"
        raise ValueError(
            f"{artifact}: expected one class with a predict() method (or one named Model), found {names}; "
            "set options.class_name in model.toml"
        )
    return candidates[0]


def _declared_signature(cls: type[Any], artifact: Path) -> Signature:
    try:
        inputs = tuple(_spec(d) for d in getattr(cls, "inputs", ()) or ())
        outputs = tuple(_spec(d) for d in getattr(cls, "outputs", ()) or ())
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{artifact}: class {cls.__name__} declares a bad signature: {exc}") from None
    return Signature(inputs, outputs)


def _spec(declared: dict[str, Any]) -> TensorSpec:
    return TensorSpec(str(declared["name"]), str(declared["datatype"]), tuple(int(d) for d in declared["shape"]))
