"""The OpenAI chat completions and completions routes, with the stock ``openai`` client, against a real server
serving the echo language model (it answers a prompt by repeating it: greedy output is known exactly)."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import openai
import orjson
import pytest

from generative_models import write_echo_llm
from server_process import ServerProcess


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("gen") / "models"
    write_echo_llm(root, "echo", slots=4, context=512, delay_ms=1)
    write_echo_llm(root, "slow", slots=4, context=2048, delay_ms=20)
    write_echo_llm(root, "tiny-queue", slots=1, context=2048, delay_ms=20, queue_size=1)
    write_echo_llm(root, "breaks", slots=2, fail_after=5)
    process = ServerProcess(root, tmp_path_factory.mktemp("logs") / "serve.log",
                            extra_args=["--max-body-bytes", str(4 * 1024 * 1024)])
    yield from process.serving(timeout=120)


@pytest.fixture
def client(server: ServerProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.url + "/openai/v1", api_key="none", max_retries=0, timeout=60) as client:
        yield client


def _chatml(user: str) -> str:
    return f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"


def _gauge(server: ServerProcess, name: str, model: str) -> float:
    text = httpx.get(server.url + "/metrics").text
    match = re.search(rf'^{name}{{model="{model}",version="1"}} (\S+)$', text, re.M)
    assert match, text
    return float(match.group(1))


def test_chat_completion_through_the_chat_template_with_usage(client):
    reply = client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "hi"}],
                                           temperature=0)
    expected = _chatml("hi")
    assert reply.object == "chat.completion"
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content == expected
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage.prompt_tokens == len(expected.encode())
    assert reply.usage.completion_tokens == len(expected.encode())
    assert reply.usage.total_tokens == 2 * len(expected.encode())


def test_max_tokens_and_max_completion_tokens_end_with_length(client):
    for limit in ({"max_tokens": 5}, {"max_completion_tokens": 5}, {"max_tokens": 5, "max_completion_tokens": 5}):
        reply = client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "x"}], **limit)
        assert reply.choices[0].message.content == "<|im_"
        assert reply.choices[0].finish_reason == "length"
        assert reply.usage.completion_tokens == 5


def test_a_stop_list_is_matched_across_tokens_and_stripped(client):
    reply = client.completions.create(model="echo", prompt="alpha beta gamma", stop=["gam", "zzz"])
    assert reply.choices[0].text == "alpha beta "
    assert reply.choices[0].finish_reason == "stop"
    # usage counts the tokens generated, the stop sequence's included: "alpha beta gam", one byte each
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.total_tokens) == (16, 14, 30)
    reply = client.completions.create(model="echo", prompt="alpha beta gamma", stop="beta")
    assert reply.choices[0].text == "alpha "


def test_a_streamed_chat_completion_with_usage(client):
    stream = client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "héllo"}],
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == _chatml("héllo")
    assert chunks[0].choices[0].delta.role == "assistant"
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == ["stop"]
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == len(_chatml("héllo").encode())
    assert all(c.usage is None for c in chunks[:-1])


def test_a_streamed_completion_without_usage(client):
    chunks = list(client.completions.create(model="echo", prompt="stream me", stream=True, max_tokens=6))
    assert "".join(c.choices[0].text for c in chunks) == "stream"
    assert chunks[-1].choices[0].finish_reason == "length"
    assert all(c.usage is None for c in chunks)


def test_a_whole_and_a_streamed_completion_with_usage(client):
    whole = client.completions.create(model="echo", prompt="count me")
    assert whole.object == "text_completion"
    assert (whole.choices[0].text, whole.choices[0].finish_reason) == ("count me", "stop")
    assert (whole.usage.prompt_tokens, whole.usage.completion_tokens, whole.usage.total_tokens) == (8, 8, 16)
    chunks = list(client.completions.create(model="echo", prompt="count me", stream=True, max_tokens=5,
                                            stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "count"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == []
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (8, 5)


def test_seeded_sampling_repeats_per_request(client):
    def run(seed):
        return client.completions.create(model="echo", prompt="abcdefghijklmnop", temperature=2.0, top_p=1.0,
                                         seed=seed).choices[0].text

    first = run(5)
    other = run(6)
    assert run(5) == first, "another seed in between changes nothing: the seed is the request's, not the process's"
    assert other != first
    seeds = (5, 6, 5, 6)
    side_by_side: list[str] = ["" for _ in seeds]
    threads = [threading.Thread(target=lambda i=i, s=s: side_by_side.__setitem__(i, run(s)))
               for i, s in enumerate(seeds)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert side_by_side == [first, other, first, other], "sequences decoded in one batch keep their own seeds"


@pytest.mark.parametrize(("body", "param", "words"), [
    ({"messages": []}, "messages", "empty"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role", "robot"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content", "string"),
    ({"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, "max_tokens", "at least 1"),
    ({"messages": [{"role": "user", "content": "x"}], "max_tokens": -3}, "max_tokens", "at least 1"),
    ({"messages": [{"role": "user", "content": "x"}], "temperature": -0.5}, "temperature", "at least 0"),
    ({"messages": [{"role": "user", "content": "x"}], "stop": [f"s{i}" for i in range(100)]}, "stop", "100"),
    ({"messages": [{"role": "user", "content": "x"}], "n": 2}, "n", "n = 1"),
    ({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]}, "tools", "tool"),
    ({"messages": [{"role": "user", "content": "x"}], "logprobs": True}, "logprobs", "not supported"),
    ({"messages": [{"role": "user", "content": "x"}], "extra_body": {"frobnicate": 1}}, "frobnicate", "Unrecognized"),
    ({"messages": [{"role": "user", "content": "x"}], "max_completion_tokens": 0}, "max_completion_tokens",
     "at least 1"),
    ({"messages": [{"role": "user", "content": "x"}], "max_completion_tokens": 5, "max_tokens": 7}, "max_tokens",
     "'max_tokens' (7) and 'max_completion_tokens' (5) disagree"),
    ({"messages": [{"role": "user", "content": "x"}], "max_completion_tokens": 5, "max_tokens": 0}, "max_tokens",
     "at least 1"),
    ({"messages": [{"role": "user", "content": "x"}], "temperature": 2.5}, "temperature", "at most 2"),
    ({"messages": [{"role": "user", "content": "x"}], "top_p": 0}, "top_p", "above 0"),
    ({"messages": [{"role": "user", "content": "x"}], "top_p": 1.5}, "top_p", "at most 1"),
    ({"messages": [{"role": "user", "content": "x"}], "stop": ["a", "b", "c", "d", "e"]}, "stop", "at most 4"),
    ({"messages": [{"role": "user", "content": "x"}], "stop": "s" * 300}, "stop", "at most 256 characters"),
    ({"messages": [{"role": "user", "content": "x"}], "stop": [""]}, "stop", "must not be empty"),
    ({"messages": [{"role": "user", "content": "x"}], "stream_options": {"include_usage": True}},
     "stream_options", "only allowed with stream"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}]}]}, "messages[0].content", "string"),
    ({"messages": ["hello"]}, "messages[0]", "must be an object"),
    ({"messages": [{"role": "user", "content": "x"}], "seed": 1.5}, "seed", "integer"),
])
def test_bad_chat_requests_are_400_naming_the_field(client, body, param, words):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="echo", **body)
    error = info.value.body
    assert error["param"] == param, error
    assert words in error["message"], error
    assert error["type"] == "invalid_request_error", error
    assert client.completions.create(model="echo", prompt="still").choices[0].text == "still"  # keeps serving


@pytest.mark.parametrize(("body", "param", "words"), [
    ({"prompt": ""}, "prompt", "empty"),
    ({"prompt": ["one", "two"]}, "prompt", "a list of prompts"),
    ({"prompt": 5}, "prompt", "string"),
    ({"prompt": "x", "max_tokens": 0}, "max_tokens", "at least 1"),
    ({"prompt": "x", "temperature": -1}, "temperature", "at least 0"),
    ({"prompt": "x", "stop": [f"s{i}" for i in range(100)]}, "stop", "100"),
    ({"prompt": "x", "best_of": 3}, "best_of", "best_of = 1"),
    ({"prompt": "x", "logprobs": 2}, "logprobs", "not supported"),
])
def test_bad_completion_requests_are_400_naming_the_field(client, body, param, words):
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model="echo", **body)
    error = info.value.body
    assert error["param"] == param, error
    assert words in error["message"], error


def test_prompt_and_max_tokens_beyond_the_context_name_both_numbers(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model="echo", prompt="x" * 500, max_tokens=100)
    message = info.value.body["message"]
    assert "500 tokens" in message
    assert "max_tokens is 100" in message
    assert "context of 512" in message
    with pytest.raises(openai.BadRequestError, match="context of 512") as info:
        client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "x"}], max_tokens=600)
    assert info.value.body["param"] == "max_tokens"
    with pytest.raises(openai.BadRequestError, match="max_tokens is 600") as info:
        client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "x"}],
                                       max_completion_tokens=600)
    assert info.value.body["param"] == "max_completion_tokens"


def test_a_1_mb_prompt_is_a_400_and_the_server_keeps_serving(client):
    with pytest.raises(openai.BadRequestError, match="1048576 tokens"):
        client.completions.create(model="echo", prompt="y" * 1024 * 1024)
    assert client.completions.create(model="echo", prompt="ok").choices[0].text == "ok"


def test_invalid_utf8_and_unknown_models(server, client):
    for path, raw in (("chat/completions", b'{"model": "echo", "messages": [{"role": "user", "content": "\xff"}]}'),
                      ("completions", b'{"model": "echo", "prompt": "ab\xc3"}'),
                      ("completions", b'{"model": "echo", "prompt": "\\ud800"}')):
        reply = httpx.post(f"{server.url}/openai/v1/{path}", content=raw, headers={"content-type": "application/json"})
        assert reply.status_code == 400, reply.text
        assert reply.json()["error"]["type"] == "invalid_request_error"
        assert "not valid" in reply.json()["error"]["message"] or "UTF-8" in reply.json()["error"]["message"]
    reply = httpx.post(server.url + "/v2/models/echo/generate", content=b'{"text_input": "\xfe\xff"}')
    assert reply.status_code == 400, reply.text
    assert "not valid JSON" in reply.json()["error"]
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])


def test_a_model_failure_is_an_error_and_the_model_serves_again(client):
    with pytest.raises(openai.InternalServerError, match="fail_after"):
        client.completions.create(model="breaks", prompt="long enough to fail")
    with pytest.raises(openai.APIError):
        list(client.completions.create(model="breaks", prompt="long enough to fail", stream=True))
    assert client.completions.create(model="breaks", prompt="ok").choices[0].text == "ok"


def _wait_for(condition, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def _raw_stream(server: ServerProcess, model: str, prompt: str) -> socket.socket:
    """A streaming request on a raw socket, read until the first token: the test then closes it mid-stream."""
    body = orjson.dumps({"model": model, "prompt": prompt, "stream": True})
    sock = socket.create_connection(("127.0.0.1", server.http_port))
    sock.sendall(b"POST /openai/v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                 b"content-length: %d\r\n\r\n%s" % (len(body), body))
    received = b""
    while b"data: " not in received:
        received += sock.recv(65536)
    return sock


def test_a_client_that_disconnects_mid_stream_frees_its_slot(server):
    sock = _raw_stream(server, "slow", "z" * 1000)
    _wait_for(lambda: _gauge(server, "inferd_generation_running_sequences", "slow") == 1)
    sock.close()
    _wait_for(lambda: _gauge(server, "inferd_generation_running_sequences", "slow") == 0)


def test_a_client_that_disconnects_before_a_whole_answer_frees_its_slot(server):
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server.url + "/openai/v1/completions", json={"model": "slow", "prompt": "q" * 1000},
                   timeout=httpx.Timeout(5, read=0.5))
    _wait_for(lambda: _gauge(server, "inferd_generation_running_sequences", "slow") == 0)


def _finished(server: ServerProcess, model: str) -> dict[str, float]:
    text = httpx.get(server.url + "/metrics").text
    pattern = rf'^inferd_generation_sequences_finished_total{{model="{model}",reason="(\w+)",version="1"}} (\S+)$'
    return {m.group(1): float(m.group(2)) for m in re.finditer(pattern, text, re.M)}


def test_clients_that_leave_right_after_sending_are_cancelled_not_run_to_their_end(server):
    before = _finished(server, "slow")
    for stream in (True, True, False, False):
        body = orjson.dumps({"model": "slow", "prompt": "w" * 1000, "stream": stream, "max_tokens": 500})
        with socket.create_connection(("127.0.0.1", server.http_port)) as sock:
            sock.sendall(b"POST /openai/v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                         b"content-length: %d\r\n\r\n%s" % (len(body), body))
    # 500 tokens at 20 ms a step would take 10 s: each ends cancelled long before
    _wait_for(lambda: _finished(server, "slow").get("cancelled", 0) == before.get("cancelled", 0) + 4, timeout=8)
    assert _finished(server, "slow").get("length", 0) == before.get("length", 0)
    _wait_for(lambda: _gauge(server, "inferd_generation_running_sequences", "slow") == 0)


def test_50_concurrent_streams_against_4_slots_all_finish_and_no_slot_leaks(server, client):
    results: dict[int, str] = {}

    def one(i: int) -> None:
        prompt = f"stream {i:02d}"
        stream = client.completions.create(model="echo", prompt=prompt, stream=True)
        results[i] = "".join(c.choices[0].text for c in stream)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert results == {i: f"stream {i:02d}" for i in range(50)}
    assert _gauge(server, "inferd_generation_running_sequences", "echo") == 0
    assert _gauge(server, "inferd_generation_waiting_sequences", "echo") == 0


def test_a_full_queue_is_503_with_retry_after(server):
    first = _raw_stream(server, "tiny-queue", "a" * 1000)
    second = None
    try:
        _wait_for(lambda: _gauge(server, "inferd_generation_running_sequences", "tiny-queue") == 1)
        second = _raw_stream_async(server, "tiny-queue", "b" * 1000)
        _wait_for(lambda: _gauge(server, "inferd_generation_waiting_sequences", "tiny-queue") == 1)
        reply = httpx.post(server.url + "/openai/v1/completions", json={"model": "tiny-queue", "prompt": "c"})
        assert reply.status_code == 503
        assert int(reply.headers["retry-after"]) >= 1
        assert "queue is full" in reply.json()["error"]["message"]
    finally:
        first.close()
        if second is not None:
            second.close()
    _wait_for(lambda: _gauge(server, "inferd_generation_running_sequences", "tiny-queue") == 0)


def _raw_stream_async(server: ServerProcess, model: str, prompt: str) -> socket.socket:
    body = orjson.dumps({"model": model, "prompt": prompt, "stream": True})
    sock = socket.create_connection(("127.0.0.1", server.http_port))
    sock.sendall(b"POST /openai/v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                 b"content-length: %d\r\n\r\n%s" % (len(body), body))
    return sock


def test_models_list_shows_the_generative_models(client):
    assert {"echo", "slow"} <= {m.id for m in client.models.list()}


# -- Triton's generate extension -------------------------------------------------------------------------------
def test_triton_generate_answers_text_output(server):
    reply = httpx.post(server.url + "/v2/models/echo/generate",
                       json={"text_input": "What is Triton?", "parameters": {"max_tokens": 7, "temperature": 0,
                                                                             "stream": False}})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["text_output"] == "What is"
    assert body["model_name"] == "echo"
    assert (body["finish_reason"], body["completion_tokens"]) == ("length", 7)
    reply = httpx.post(server.url + "/v2/models/echo/versions/1/generate",
                       json={"text_input": "one two", "parameters": {"stop": ["two"]}})
    assert reply.json()["text_output"] == "one "


def test_triton_generate_stream_sends_server_sent_events(server):
    with httpx.stream("POST", server.url + "/v2/models/echo/generate_stream",
                      json={"text_input": "streamed text", "parameters": {"max_tokens": 100}}) as reply:
        assert reply.headers["content-type"].startswith("text/event-stream")
        events = [orjson.loads(line[len("data: "):]) for line in reply.iter_lines() if line.startswith("data: ")]
    assert len(events) > 3
    assert "".join(e["text_output"] for e in events) == "streamed text"
    assert events[-1]["finish_reason"] == "stop"


@pytest.mark.parametrize(("body", "words"), [
    ({"parameters": {}}, "text_input"),
    ({"text_input": "x", "parameters": {"beam_width": 4}}, "beam_width"),
    ({"text_input": "x", "parameters": {"max_tokens": 0}}, "max_tokens"),
    ({"text_input": "x", "parameters": {"temperature": -1}}, "temperature"),
])
def test_triton_generate_bad_requests_are_400(server, body, words):
    reply = httpx.post(server.url + "/v2/models/echo/generate", json=body)
    assert reply.status_code == 400
    assert words in reply.json()["error"]


def test_triton_generate_stream_reports_a_model_failure_as_an_error_event(server):
    with httpx.stream("POST", server.url + "/v2/models/breaks/generate_stream",
                      json={"text_input": "long enough to fail for sure"}) as reply:
        lines = [line for line in reply.iter_lines() if line.startswith("data: ")]
    assert "fail_after" in orjson.loads(lines[-1][len("data: "):])["error"]
