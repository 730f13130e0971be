"""KServe V1, Vertex AI and SageMaker routes over the real ASGI app and a real DataPlane."""

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from asgi_client import AppClient
from fakes import CLASSIFIER, SHOUT, UNBATCHED, write_model
from inferd.dataplane import DataPlane
from inferd.repository import ModelRepository
from inferd.server.rest.app import build_app
from inferd.server.rest.responses import HTTPError
from inferd.server.rest.sagemaker import model_from_target, negotiate, parse_content_type
from inferd.settings import ServerSettings

ROUTES = {"predict_route": "/predict/x", "health_route": "/health/x"}
FEATURES = [[1.0, 2.0, 3.0, 4.0], [-1.0, -2.0, -3.0, -4.0]]


def started(root: Path) -> DataPlane:
    plane = DataPlane(ModelRepository(root))
    asyncio.run(plane.start())
    return plane


def client_for(plane: DataPlane, root: Path, **settings: Any) -> AppClient:
    return AppClient(build_app(plane, ServerSettings(repository=root, **settings)))


@pytest.fixture
def plane(python_repo: Path) -> Iterator[DataPlane]:
    """adder (two inputs, two outputs), failing (INT64 rows, raises on negatives), shout (BYTES), classifier
    (FP32 [-1, 4] in, label and scores out), unbatched (FP32 [2, 2])."""
    write_model(python_repo, "shout", SHOUT)
    write_model(python_repo, "classifier", CLASSIFIER)
    write_model(python_repo, "unbatched", UNBATCHED)
    dataplane = started(python_repo)
    yield dataplane
    dataplane.close()


@pytest.fixture
def client(plane: DataPlane, python_repo: Path) -> AppClient:
    return client_for(plane, python_repo, **ROUTES)


@pytest.fixture
def single(tmp_path: Path) -> Iterator[tuple[DataPlane, Path]]:
    """A repository with only the classifier."""
    root = tmp_path / "single"
    write_model(root, "classifier", CLASSIFIER)
    dataplane = started(root)
    yield dataplane, root
    dataplane.close()


# -- KServe V1 ----------------------------------------------------------------------------------------------
def test_v1_model_metadata_and_listing(client: AppClient):
    assert client.get("/v1/models/adder").json() == {"name": "adder", "ready": True}
    missing = client.get("/v1/models/nope")
    assert missing.status_code == 404
    assert "Request for unknown model: 'nope' is not found" in missing.json()["error"]
    assert client.get("/v1/models").json() == {
        "models": ["adder", "classifier", "failing", "shout", "unbatched"]
    }


def test_v1_predict_with_rows(client: AppClient):
    reply = client.post("/v1/models/failing:predict", json={"instances": [1, 2, 3]})
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/json"
    assert reply.json() == {"predictions": [2, 4, 6]}
    text = client.post("/v1/models/shout:predict", json={"instances": ["hello, world", "ünï"]})
    assert text.json() == {"predictions": ["HELLO, WORLD", "ÜNÏ"]}


def test_v1_predict_with_several_outputs(client: AppClient):
    reply = client.post("/v1/models/classifier:predict", json={"instances": FEATURES})
    assert reply.json() == {"predictions": [
        {"label": 1, "scores": [-10.0, 10.0]},
        {"label": 0, "scores": [10.0, -10.0]},
    ]}


def test_v1_predict_with_several_inputs(client: AppClient):
    body = {"instances": [{"a": [1, 2, 3], "b": [1, 1, 1]}, {"a": [0, 0, 0], "b": [2, 2, 2]}]}
    reply = client.post("/v1/models/adder:predict", json=body)
    assert reply.json() == {"predictions": [
        {"sum": [2.0, 3.0, 4.0], "total": 9.0},
        {"sum": [2.0, 2.0, 2.0], "total": 6.0},
    ]}


def test_v1_predict_with_columns(client: AppClient):
    body = {"inputs": {"a": [[1, 2, 3]], "b": [[1, 1, 1]]}}
    assert client.post("/v1/models/adder:predict", json=body).json() == {
        "predictions": [{"sum": [2.0, 3.0, 4.0], "total": 9.0}]
    }
    assert client.post("/v1/models/failing:predict", json={"inputs": [5, 6]}).json() == {"predictions": [10, 12]}


def test_v1_predict_without_batch_dimension(client: AppClient):
    reply = client.post("/v1/models/unbatched:predict", json={"instances": [[1, 2], [3, 4]]})
    assert reply.json() == {"predictions": [[2.0, 4.0], [6.0, 8.0]]}


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/v1/models/nope:predict", b'{"instances": [1]}', 404, "Request for unknown model: 'nope' is not found"),
        ("/v1/models/classifier:predict", b'{"instances": [[1, 2, 3]]}', 400,
         "input 'features': expected shape [-1, 4], got [1, 3]"),
        ("/v1/models/classifier:predict", b'{"instances": [[1, 2, 3', 400, "malformed JSON"),
        ("/v1/models/classifier:predict", b"", 400, "malformed JSON"),
        ("/v1/models/classifier:predict", b'{"instances": 3}', 400, "'instances' must be a list, got int"),
        ("/v1/models/adder:predict", b'{"instances": [{"a": [1, 2, 3], "b": [1, 2, 3]}, {"a": [1, 2, 3]}]}', 400,
         "instance 1 is missing input 'b'"),
        ("/v1/models/failing:predict", b'{"instances": [1, -1]}', 500,
         "model 'failing' failed: ValueError: negative values are not allowed"),
    ],
)
def test_v1_errors(client: AppClient, path: str, body: bytes, status: int, message: str):
    reply = client.post(path, content=body, headers={"content-type": "application/json"})
    assert reply.status_code == status
    assert message in reply.json()["error"]


def test_v1_keeps_serving_after_a_model_fails(client: AppClient):
    assert client.post("/v1/models/failing:predict", json={"instances": [-1]}).status_code == 500
    assert client.post("/v1/models/failing:predict", json={"instances": [4]}).json() == {"predictions": [8]}


# -- Vertex AI ----------------------------------------------------------------------------------------------
def test_vertex_routes_exist_only_when_configured(plane: DataPlane, python_repo: Path):
    bare = client_for(plane, python_repo)
    assert bare.get("/health/x").status_code == 404
    assert bare.post("/predict/x", json={"instances": [1]}).status_code == 404


def test_vertex_predicts_with_the_only_model(single: tuple[DataPlane, Path]):
    client = client_for(*single, **ROUTES)
    assert client.get("/health/x").status_code == 200
    reply = client.post("/predict/x", json={"instances": FEATURES, "parameters": {"confidence": 0.5}})
    assert reply.status_code == 200
    assert [p["label"] for p in reply.json()["predictions"]] == [1, 0]


def test_vertex_routes_may_hold_colons(single: tuple[DataPlane, Path]):
    route = "/v1/endpoints/123/deployedModels/456:predict"
    client = client_for(*single, predict_route=route, health_route="/v1/endpoints/123/health")
    assert client.get("/v1/endpoints/123/health").json() == {"ready": True}
    reply = client.post(route, json={"instances": [[1, 1, 1, 1]]})
    assert reply.json() == {"predictions": [{"label": 1, "scores": [-4.0, 4.0]}]}


def test_vertex_with_several_models_needs_a_default(plane: DataPlane, python_repo: Path, client: AppClient):
    reply = client.post("/predict/x", json={"instances": [1]})
    assert reply.status_code == 400
    assert "INFERD_DEFAULT_MODEL" in reply.json()["error"]
    chosen = client_for(plane, python_repo, default_model="failing", **ROUTES)
    assert chosen.post("/predict/x", json={"instances": [1, 2]}).json() == {"predictions": [2, 4]}


def test_health_routes_follow_readiness(python_repo: Path):
    plane = DataPlane(ModelRepository(python_repo))
    try:
        client = client_for(plane, python_repo, **ROUTES)
        assert client.get("/health/x").status_code == 503
        assert client.get("/ping").status_code == 503
        asyncio.run(plane.start())
        assert client.get("/health/x").status_code == 200
        ping = client.get("/ping")
        assert ping.status_code == 200
        assert ping.content in (b"", b"{}")
    finally:
        plane.close()


# -- SageMaker ----------------------------------------------------------------------------------------------
def invoke(client: AppClient, body: bytes | str, content_type: str = "application/json",
           model: str | None = "classifier", **headers: str):
    sent = {"content-type": content_type, **headers}
    if model is not None:
        sent["X-Amzn-SageMaker-Target-Model"] = model
    return client.post("/invocations", content=body, headers=sent)


def test_invocations_with_a_v2_body_answers_v2(client: AppClient):
    body = b'{"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 4], "data": [1, 1, 1, 1]}]}'
    reply = invoke(client, body)
    assert reply.status_code == 200
    payload = reply.json()
    assert payload["model_name"] == "classifier"
    assert {o["name"]: o["data"] for o in payload["outputs"]} == {"label": [1], "scores": [-4.0, 4.0]}


def test_invocations_with_instances_a_bare_list_or_a_mapping(client: AppClient):
    expected = {"predictions": [{"label": 1, "scores": [-10.0, 10.0]}, {"label": 0, "scores": [10.0, -10.0]}]}
    assert invoke(client, b'{"instances": [[1, 2, 3, 4], [-1, -2, -3, -4]]}').json() == expected
    assert invoke(client, b"[[1, 2, 3, 4], [-1, -2, -3, -4]]").json() == expected
    assert invoke(client, b'{"inputs": [[1, 2, 3, 4], [-1, -2, -3, -4]]}').json() == expected
    assert invoke(client, b'{"features": [[1, 2, 3, 4], [-1, -2, -3, -4]]}').json() == expected


def test_invocations_csv_in_json_out(client: AppClient):
    reply = invoke(client, "1,2,3,4\n-1,-2,-3,-4\n", "text/csv; charset=utf-8")
    assert reply.status_code == 200
    assert [p["label"] for p in reply.json()["predictions"]] == [1, 0]


def test_invocations_csv_in_csv_out(client: AppClient):
    reply = invoke(client, "1,2,3,4\n-1,-2,-3,-4\n", "text/csv", accept="text/csv")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/csv")
    assert reply.text == "1,-10.0,10.0\n0,10.0,-10.0\n"


def test_invocations_csv_for_a_bytes_input_with_quoted_commas(client: AppClient):
    reply = invoke(client, 'hi\n"hello, world"\n', "text/csv", model="shout", accept="text/csv")
    assert reply.text == 'HI\n"HELLO, WORLD"\n'


@pytest.mark.parametrize("kind", ["application/jsonlines", "application/x-jsonlines"])
def test_invocations_json_lines(client: AppClient, kind: str):
    reply = invoke(client, "[1, 2, 3, 4]\n\n[-1, -2, -3, -4]\n", kind, accept=kind)
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith(kind)
    assert reply.text == '{"label":1,"scores":[-10.0,10.0]}\n{"label":0,"scores":[10.0,-10.0]}\n'


SHORT = "0.99924076"
"""A float32 value, as its shortest decimal; widened to float64 it would print as 0.9992407560348511."""


def test_fp32_prints_in_its_shortest_form_in_v1_and_sagemaker(client: AppClient):
    """adder's sum is FP32, its total FP64: the FP32 value prints as the FP32 value it is, the FP64 one in full."""
    instance = f'{{"a": [{SHORT}, 0, 0], "b": [0, 0, 0]}}'
    for reply in (client.post("/v1/models/adder:predict", content=f'{{"instances": [{instance}]}}'),
                  invoke(client, f'{{"instances": [{instance}]}}', model="adder"),
                  invoke(client, instance + "\n", "application/jsonlines", model="adder",
                         accept="application/jsonlines")):
        assert reply.status_code == 200, reply.text
        assert f'"sum":[{SHORT},0.0,0.0]' in reply.text
        assert '"total":0.9992407560348511' in reply.text  # FP64: every digit is the value's
    csv = invoke(client, f"{SHORT},0,0,0\n", "text/csv", model="classifier", accept="text/csv")
    assert csv.text == f"1,-{SHORT},{SHORT}\n"  # CSV had it right already


@pytest.mark.parametrize("target", ["failing", "failing.tar.gz", "failing/model.tar.gz", "/failing.tgz"])
def test_the_target_model_header_picks_the_model(client: AppClient, target: str):
    assert invoke(client, b"[1, 2]", model=target).json() == {"predictions": [2, 4]}


def test_invocations_without_a_target(plane: DataPlane, python_repo: Path, client: AppClient,
                                      single: tuple[DataPlane, Path]):
    several = invoke(client, b"[1]", model=None)
    assert several.status_code == 400
    assert "X-Amzn-SageMaker-Target-Model" in several.json()["error"]
    assert "INFERD_DEFAULT_MODEL" in several.json()["error"]
    chosen = client_for(plane, python_repo, default_model="failing")
    assert invoke(chosen, b"[3]", model=None).json() == {"predictions": [6]}
    only = client_for(*single)
    assert invoke(only, "1,1,1,1\n", "text/csv", model=None).json()["predictions"][0]["label"] == 1


@pytest.mark.parametrize(
    ("body", "content_type", "model", "status", "message"),
    [
        (b"[1]", "application/json", "nope.tar.gz", 404, "Request for unknown model: 'nope' is not found"),
        (b"1,2,3\n", "text/csv", "classifier", 400, "input 'features': expected shape [-1, 4], got [1, 3]"),
        (b"1,2,3,4\n1,2\n", "text/csv", "classifier", 400, "CSV row 2 has 2 fields but row 1 has 4"),
        (b"a,b,c,d\n", "text/csv", "classifier", 400, "no header row"),
        (b"[1, 2", "application/json", "classifier", 400, "malformed JSON"),
        (b"", "application/json", "classifier", 400, "the request body is empty"),
        (b"1,2\n", "text/csv", "adder", 400, "text/csv is for models with one input"),
        (b"[-5]", "application/json", "failing", 500, "negative values are not allowed"),
    ],
)
def test_invocation_errors(client: AppClient, body: bytes, content_type: str, model: str, status: int,
                           message: str):
    reply = invoke(client, body, content_type, model=model)
    assert reply.status_code == status
    assert message in reply.json()["error"]


def test_unsupported_content_type_is_415(client: AppClient):
    reply = invoke(client, b"<x/>", "application/xml")
    assert reply.status_code == 415
    assert "text/csv" in reply.json()["error"]
    assert "application/jsonlines" in reply.json()["error"]


def test_unsupported_accept_is_406(client: AppClient):
    reply = invoke(client, b"[[1, 2, 3, 4]]", accept="application/xml")
    assert reply.status_code == 406
    assert "text/csv" in reply.json()["error"]


def test_a_body_over_the_limit_is_413(plane: DataPlane, python_repo: Path):
    tiny = client_for(plane, python_repo, max_body_bytes=1024, **ROUTES)
    big = b"[" + b"1," * 1024 + b"1]"
    assert invoke(tiny, big, model="failing").status_code == 413
    assert tiny.post("/v1/models/failing:predict", content=big).status_code == 413
    assert tiny.post("/predict/x", content=big).status_code == 413
    assert invoke(tiny, b"[1]", model="failing").status_code == 200


# -- header parsing -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("accept", "chosen"),
    [
        (None, "application/json"),
        ("", "application/json"),
        ("*/*", "application/json"),
        ("text/csv", "text/csv"),
        ("text/*", "text/csv"),
        ("application/xml, text/csv;q=0.5", "text/csv"),
        ("application/json;q=0.2, text/csv", "text/csv"),
        ("text/csv;q=0, application/jsonlines", "application/jsonlines"),
        ("Application/JSON; charset=utf-8", "application/json"),
    ],
)
def test_negotiate(accept: str | None, chosen: str):
    assert negotiate(accept) == chosen


def test_negotiate_refuses_what_it_cannot_write():
    with pytest.raises(HTTPError) as info:
        negotiate("image/png, text/csv;q=0")
    assert info.value.status == 406


def test_parse_content_type():
    assert parse_content_type(None) == ("application/json", "utf-8")
    assert parse_content_type("text/csv; charset=ISO-8859-1") == ("text/csv", "ISO-8859-1")
    with pytest.raises(HTTPError) as info:
        parse_content_type("application/octet-stream")
    assert info.value.status == 415


def test_model_from_target():
    assert model_from_target("digits.tar.gz") == "digits"
    assert model_from_target("digits/model.tar.gz") == "digits"
    assert model_from_target("digits.tar") == "digits"
    assert model_from_target("digits") == "digits"
    with pytest.raises(HTTPError):
        model_from_target("/")


def test_csv_in_another_charset(client: AppClient):
    reply = invoke(client, "é\n".encode("latin-1"), "text/csv; charset=latin-1", model="shout")
    assert reply.json() == {"predictions": ["É"]}
    bad = invoke(client, b"\xff\n", "text/csv", model="shout")
    assert bad.status_code == 400


def test_invocations_with_a_mapping_for_several_inputs(client: AppClient):
    reply = invoke(client, b'{"a": [1, 2, 3], "b": [1, 1, 1]}', model="adder")
    assert reply.json() == {"predictions": [{"sum": [2.0, 3.0, 4.0], "total": 9.0}]}
