"""Batch jobs over OpenAI batch input files (inferd.server.openai.batch, inferd.batch.lines) on the echo language
model and the fake embedder: one output line per request line, in order, in OpenAI's output shape; failures per
line; resuming after an interruption."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from embedding_models import fake_vector, write_fake_embedder
from generative_models import write_echo_llm
from inferd.batch.lines import output_paths
from inferd.batch.options import BatchError
from inferd.server.openai.batch import is_openai_lines, run_openai_batch

CHATML = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"


def _line(custom_id: str, url: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body}


def _write(path: Path, lines: list[Any]) -> Path:
    path.write_bytes(b"".join((line if isinstance(line, bytes) else orjson.dumps(line)) + b"\n" for line in lines))
    return path


def _answers(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


@pytest.fixture
def root(repo_root: Path) -> Path:
    write_echo_llm(repo_root, "echo", slots=2, context=128, max_tokens=100)
    write_fake_embedder(repo_root)
    return repo_root


def test_each_request_line_gets_its_answer_in_order_in_openai_batch_output_shape(root, tmp_path):
    source = _write(tmp_path / "requests.jsonl", [
        _line("chat-1", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
        _line("done-2", "/v1/completions", {"model": "echo", "prompt": "abcdef", "max_tokens": 3}),
        {"messages": [{"role": "user", "content": "bare"}], "max_tokens": 4},
        _line("long-4", "/v1/completions", {"prompt": "x", "max_tokens": 500}),
        _line("url-5", "/v1/images/generations", {}),
        b"{not json",
        _line("emb-7", "/v1/embeddings", {"model": "embedder", "input": ["hello world"]}),
    ])
    summary = run_openai_batch(root, "echo", source, tmp_path / "out")
    answers = _answers(output_paths(source, tmp_path / "out")[0])
    assert [a["custom_id"] for a in answers] == ["chat-1", "done-2", "line-3", "long-4", "url-5", None, "emb-7"]
    assert all(a["id"].startswith("batch_req_") for a in answers)
    chat = answers[0]["response"]
    assert chat["status_code"] == 200
    assert chat["request_id"]
    assert chat["body"]["object"] == "chat.completion"
    assert chat["body"]["choices"][0]["message"]["content"] == CHATML.format("hi")
    assert answers[0]["error"] is None
    assert answers[1]["response"]["body"]["choices"][0]["text"] == "abc"
    assert answers[1]["response"]["body"]["usage"]["completion_tokens"] == 3
    assert answers[2]["response"]["body"]["choices"][0]["message"]["content"] == CHATML.format("bare")[:4]
    refused = answers[3]["response"]
    assert refused["status_code"] == 400
    assert refused["body"]["error"]["param"] == "max_tokens"
    for bad in answers[4:6]:
        assert bad["response"] is None
        assert bad["error"]["code"] == "invalid_request"
    assert "'url' must be one of" in answers[4]["error"]["message"]
    embedding = answers[6]["response"]["body"]["data"][0]["embedding"]
    assert embedding == pytest.approx(fake_vector("hello world").tolist(), abs=1e-6)
    assert (summary.rows_in, summary.rows_out, summary.rows_failed) == (7, 7, 3)


def test_an_interrupted_job_resumes_after_its_last_complete_line(root, tmp_path):
    source = _write(tmp_path / "requests.jsonl", [
        _line(f"r{i}", "/v1/completions", {"prompt": f"prompt {i}", "max_tokens": 6}) for i in range(6)])
    out = tmp_path / "out"
    run_openai_batch(root, "echo", source, out)
    answers_file = output_paths(source, out)[0]
    complete = answers_file.read_bytes().splitlines(keepends=True)
    answers_file.write_bytes(b"".join(complete[:2]) + complete[2][:20])  # stopped while writing line 3
    summary = run_openai_batch(root, "echo", source, out)
    again = answers_file.read_bytes().splitlines(keepends=True)
    assert again[:2] == complete[:2]  # the lines written before are kept as they were
    assert [a["custom_id"] for a in _answers(answers_file)] == [f"r{i}" for i in range(6)]
    assert [a["response"]["body"]["choices"][0]["text"] for a in _answers(answers_file)] == [
        f"prompt {i}"[:6] for i in range(6)]
    assert (summary.resumed_batches, summary.rows_out) == (2, 6)


def test_a_changed_input_is_not_resumed_onto_unless_restarted(root, tmp_path):
    source = _write(tmp_path / "requests.jsonl", [_line("a", "/v1/completions", {"prompt": "abc"})])
    out = tmp_path / "out"
    run_openai_batch(root, "echo", source, out)
    _write(source, [_line("a", "/v1/completions", {"prompt": "abc"}), _line("b", "/v1/completions", {"prompt": "d"})])
    with pytest.raises(BatchError, match="--restart"):
        run_openai_batch(root, "echo", source, out)
    run_openai_batch(root, "echo", source, out, restart=True)
    assert [a["custom_id"] for a in _answers(output_paths(source, out)[0])] == ["a", "b"]


@pytest.mark.parametrize(("line", "expected"), [
    (b'{"custom_id": "1", "url": "/v1/completions", "body": {}}', True),
    (b'{"messages": []}', True),
    (b'{"prompt": "x"}', True),
    (b'{"text_input": "x"}', False),
    (b'{"a": 1, "b": 2}', False),
    (b"[1, 2]", False),
])
def test_openai_batch_files_are_told_from_tables_of_records_by_their_first_line(line, expected):
    assert is_openai_lines(line) is expected
