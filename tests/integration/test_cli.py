"""The ``inferd`` command as a user runs it: a real process over real model folders."""

import json
import socket

import pytest

from fakes import ADDER, FAILING, write_model


@pytest.fixture
def repo(repo_root):
    write_model(repo_root, "adder", ADDER)
    write_model(repo_root, "failing", FAILING)
    return repo_root


def test_models_list_shows_state_and_reasons(cli, repo):
    (repo / "broken" / "1").mkdir(parents=True)
    (repo / "broken" / "1" / "model.onnx").write_bytes(b"garbage")
    result = cli("models", "list", str(repo))
    assert result.returncode == 1, result.stderr  # not every model loaded
    lines = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if "│" in line}
    assert "READY" in lines["adder"]
    assert "a FP32[-1, 3], b FP32[-1, 3]" in lines["adder"]
    assert "UNAVAILABLE" in lines["broken"]
    assert "onnx runtime" in result.stdout


def test_models_list_of_an_empty_and_a_missing_repository(cli, repo_root, tmp_path):
    empty = cli("models", "list", str(repo_root))
    assert empty.returncode == 0
    assert "No models in" in empty.stdout
    missing = cli("models", "list", str(tmp_path / "nowhere"))
    assert missing.returncode == 2
    assert "does not exist" in missing.stderr


def test_models_show(cli, repo):
    result = cli("models", "show", str(repo), "adder")
    assert result.returncode == 0, result.stderr
    assert "version 1: READY  python" in result.stdout
    assert "output" in result.stdout
    assert "total" in result.stdout
    unknown = cli("models", "show", str(repo), "nope")
    assert unknown.returncode == 1
    assert "no model 'nope'" in unknown.stderr


def test_models_show_reports_a_bad_model_toml(cli, repo):
    (repo / "adder" / "model.toml").write_text('[versions]\npolicy = "newest"\n')
    result = cli("models", "show", str(repo), "adder")
    assert result.returncode == 1
    assert "model.toml:2: key 'versions.policy'" in result.stderr


def test_predict_from_a_v2_file(cli, repo, tmp_path):
    body = {"id": "x1", "inputs": [
        {"name": "a", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]},
        {"name": "b", "datatype": "FP32", "shape": [1, 3], "data": [10, 20, 30]},
    ], "outputs": [{"name": "total"}]}
    path = tmp_path / "req.json"
    path.write_text(json.dumps(body))
    result = cli("predict", str(repo), "adder", "--input", str(path))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "model_name": "adder", "model_version": "1", "id": "x1",
        "outputs": [{"name": "total", "datatype": "FP64", "shape": [1], "data": [66.0]}],
    }


def test_predict_from_a_plain_mapping_on_stdin(cli, repo):
    result = cli("predict", str(repo), "adder", "--input", "-", stdin='{"a": [1, 1, 1], "b": [[2, 2, 2]]}')
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["outputs"][1]["data"] == [9.0]


@pytest.mark.parametrize(
    ("model", "stdin", "message"),
    [
        ("adder", '{"a": [[1, 2]], "b": [[1, 2]]}', r"[INVALID_ARGUMENT] input 'a': expected shape [-1, 3], got [1, 2]"),
        ("adder", "{not json", "[INVALID_ARGUMENT] malformed JSON"),
        ("failing", '{"x": [-1]}', "[INTERNAL] model 'failing' failed: ValueError: negative values are not allowed"),
        ("failing", '{"x": [7]}', "[INTERNAL] model output 'y' has 2 rows for a batch of 1"),
    ],
)
def test_predict_errors_name_the_problem(cli, repo, model, stdin, message):
    result = cli("predict", str(repo), model, "--input", "-", stdin=stdin)
    assert result.returncode == 1
    assert message in " ".join(result.stderr.split())
    assert result.stdout == ""


def test_predict_unknown_model_and_missing_file(cli, repo, tmp_path):
    assert "no model 'ghost'" in cli("predict", str(repo), "ghost", "--input", "-", stdin="{}").stderr
    missing = cli("predict", str(repo), "adder", "--input", str(tmp_path / "none.json"))
    assert missing.returncode == 2
    assert "cannot read input file" in missing.stderr


@pytest.mark.slow
def test_demo_trains_serves_and_predicts(cli, tmp_path):
    from server_process import free_port

    ports = ["--http-port", str(free_port()), "--grpc-port", str(free_port())]
    from inferd.examples import minilm
    from inferd.examples.build import installed

    result = cli("demo", "--repo", str(tmp_path / "demo"), "--once", *ports, timeout=300)
    assert result.returncode == 0, result.stderr
    for name in ("spam", "eta", "ranker", "digits"):
        assert name in result.stdout
    with_embeddings = installed(minilm)
    if with_embeddings:  # the embeddings extra is installed: the demo serves MiniLM too
        assert "384 dimensions; cosine to 'hello world'" in result.stdout
        assert "/openai/v1/embeddings" in result.stdout
    else:
        assert "Skipping minilm" in result.stdout
        assert "pip install 'inferd[embeddings]'" in result.stdout
    assert "over HTTP" in result.stdout
    assert "spam (p=" in result.stdout
    assert "ETA" in result.stdout
    assert "digit " in result.stdout
    assert "INVALID" not in result.stdout
    assert "INTERNAL" not in result.stdout
    listed = cli("models", "list", str(tmp_path / "demo"))
    assert listed.returncode == 0, listed.stdout
    from inferd.examples import smollm2

    # the embedder comes with the embeddings extra, the chat model with the llm extra
    assert listed.stdout.count("READY") == 4 + with_embeddings + smollm2.available()


def _listening() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def test_a_busy_port_is_one_clear_line_and_a_non_zero_exit(cli, repo):
    from server_process import free_port

    with _listening() as taken:
        port = taken.getsockname()[1]
        http = cli("serve", str(repo), "--http-port", str(port), "--grpc-port", str(free_port()),
                   "--state-dir", str(repo.parent / "state-http"))
        grpc = cli("serve", str(repo), "--http-port", str(free_port()), "--grpc-port", str(port),
                   "--state-dir", str(repo.parent / "state-grpc"))
    assert http.returncode == 1
    assert http.stderr.strip().splitlines()[-1] == (f"error: cannot serve: HTTP port {port} on 127.0.0.1 is in use; "
                                                    "choose another with --http-port")
    assert "Traceback" not in http.stderr
    assert grpc.returncode == 1
    assert f"error: cannot serve: gRPC port {port} on 127.0.0.1 is in use" in grpc.stderr
    assert "choose another with --grpc-port" in grpc.stderr
    assert "Traceback" not in grpc.stderr


@pytest.mark.slow
def test_the_demo_on_a_busy_port_says_which_option_to_change(cli, tmp_path):
    with _listening() as taken:
        port = taken.getsockname()[1]
        result = cli("demo", "--repo", str(tmp_path / "demo"), "--once", "--http-port", str(port), timeout=300)
    assert result.returncode == 1
    assert f"error: cannot serve: HTTP port {port} on 127.0.0.1 is in use; choose another with --http-port" \
        in result.stderr
    assert "Traceback" not in result.stderr
