"""Small embeddings models written as real model folders: a Python model that keeps the embeddings contract, and
a tiny ONNX encoder with a word-level tokenizer for the ``embeddings`` runtime."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fakes import write_model

FAKE_EMBEDDER = """
import numpy as np

class Model:
    inputs = [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    outputs = [{"name": "embedding", "datatype": "FP32", "shape": [-1, 4]},
               {"name": "token_count", "datatype": "INT64", "shape": [-1]}]

    def predict(self, inputs):
        texts = [t.decode() for t in inputs["text"]]
        vectors = np.array([[len(t), t.count(" "), sum(map(ord, t)) % 97, 1.0] for t in texts], dtype=np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        return {"embedding": vectors, "token_count": np.array([len(t.split()) + 2 for t in texts], dtype=np.int64)}
"""
FAKE_BATCH = 4
"""The fake embedder's max_batch_size: longer inputs lists go as several requests."""


def fake_vector(text: str) -> np.ndarray:
    """What FAKE_EMBEDDER answers for ``text``."""
    vector = np.array([len(text), text.count(" "), sum(map(ord, text)) % 97, 1.0], dtype=np.float32)
    return vector / np.linalg.norm(vector)


def write_fake_embedder(root: Path, name: str = "embedder") -> Path:
    return write_model(root, name, FAKE_EMBEDDER, toml=f"max_batch_size = {FAKE_BATCH}\n[batching]\nenabled = true\n")


VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "hello", "world", "hi", "tax", "law"]
WIDTH = 3


def token_table() -> np.ndarray:
    """The tiny encoder's vector for each token id (its whole "model")."""
    return np.arange(len(VOCAB) * WIDTH, dtype=np.float32).reshape(len(VOCAB), WIDTH) % 5 - 1.5


def write_tiny_encoder(folder: Path, pooling: dict[str, bool] | None = None, normalize: bool = True,
                       max_seq_length: int | None = 8, inputs: tuple[str, ...] = ("input_ids", "attention_mask",
                                                                                       "token_type_ids")) -> Path:
    """A version folder the embeddings runtime serves: model.onnx (a token lookup, times the mask), tokenizer.json
    (whitespace words, [CLS] ... [SEP]), 1_Pooling/config.json, modules.json and sentence_bert_config.json."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    folder.mkdir(parents=True, exist_ok=True)
    nodes = [helper.make_node("Gather", ["table", "input_ids"], ["looked_up"])]
    graph_inputs = [helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "sequence"]) for name in inputs]
    if "attention_mask" in inputs:
        nodes += [helper.make_node("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT),
                  helper.make_node("Unsqueeze", ["mask_f", "last"], ["mask3"]),
                  helper.make_node("Mul", ["looked_up", "mask3"], ["last_hidden_state"])]
    else:
        nodes.append(helper.make_node("Identity", ["looked_up"], ["last_hidden_state"]))
    graph = helper.make_graph(
        nodes, "tiny", graph_inputs,
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "sequence", WIDTH])],
        initializer=[numpy_helper.from_array(token_table(), "table"),
                     numpy_helper.from_array(np.array([-1], dtype=np.int64), "last")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save_model(model, str(folder / "model.onnx"))

    tokenizer = Tokenizer(models.WordLevel({word: i for i, word in enumerate(VOCAB)}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]",
                                                             special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]", length=16)  # fixed, as MiniLM's file: the runtime undoes it
    tokenizer.save(str(folder / "tokenizer.json"))
    if pooling is not None:
        (folder / "1_Pooling").mkdir(exist_ok=True)
        (folder / "1_Pooling" / "config.json").write_text(json.dumps(
            {"word_embedding_dimension": WIDTH, **{f"pooling_mode_{k}": v for k, v in pooling.items()}}))
    modules = [{"idx": 0, "type": "sentence_transformers.models.Transformer"}]
    if normalize:
        modules.append({"idx": 1, "type": "sentence_transformers.models.Normalize"})
    (folder / "modules.json").write_text(json.dumps(modules))
    if max_seq_length is not None:
        (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_seq_length}))
    return folder
