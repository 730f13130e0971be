#!/usr/bin/env bash
# Build inferd's container image and run it the ways the platforms do, against the demo models, on loopback:
#   SageMaker: `docker run IMAGE serve` with the models in /opt/ml/model, SAGEMAKER_BIND_TO_PORT, GET /ping;
#   Vertex AI: no argument, AIP_HTTP_PORT, AIP_STORAGE_URI (a local path), AIP_HEALTH_ROUTE;
# and checks the user (not root), the HEALTHCHECK turning healthy, and one prediction each way.
#
#   scripts/container_check.sh            needs a running Docker daemon and .venv (make demo or make test)
#
# Every container runs with the host's network but binds 127.0.0.1 (INFERD_HOST), and is removed at the end.
# BASE_PYTHON=3.11 builds FROM python:3.11-slim (the Dockerfile's PYTHON_VERSION); where Docker Hub cannot be
# reached, a local image of that name must stand in for it (docs/platforms.md says how this was checked here).
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE=${IMAGE:-inferd:check}
EXTRAS=${EXTRAS:-onnx,sklearn,xgboost,lightgbm}
BASE_PYTHON=${BASE_PYTHON:-3.12}
HTTP_PORT=${HTTP_PORT:-18090}
GRPC_PORT=${GRPC_PORT:-18091}
work=$(mktemp -d)
containers=()
cleanup() {
  for c in "${containers[@]}"; do docker rm -f "$c" >/dev/null 2>&1 || true; done
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "container_check: FAIL: $*" >&2; exit 1; }

echo "== building $IMAGE (extras $EXTRAS, python $BASE_PYTHON)"
DOCKER_BUILDKIT=${DOCKER_BUILDKIT:-0} docker build --network host --build-arg "EXTRAS=$EXTRAS" \
  --build-arg "PYTHON_VERSION=$BASE_PYTHON" -t "$IMAGE" . >"$work/build.log" 2>&1 \
  || { tail -20 "$work/build.log"; fail "docker build"; }

echo "== the demo models"
.venv/bin/python -c "from pathlib import Path; from inferd.examples.build import build_demo_repository as b; \
b(Path('$work/models'))" >/dev/null
chmod -R a+rX "$work/models"
digits_body=$(.venv/bin/python -c "import json; print(json.dumps({'inputs': [{'name': 'input', \
'datatype': 'FP32', 'shape': [1, 64], 'data': [0.0] * 64}]}))")

wait_ok() {  # url, seconds
  for _ in $(seq "$2"); do curl -sf -o /dev/null "$1" && return 0; sleep 1; done
  return 1
}

check_container() {  # name, container id, health url, infer url
  local name=$1 id=$2
  wait_ok "$3" 120 || { docker logs "$id" 2>&1 | tail -20; fail "$name: $3 never answered 200"; }
  [ "$(docker exec "$id" id -u)" = 10001 ] || fail "$name: the server does not run as uid 10001"
  curl -sf "$4" -d "$digits_body" | grep -q '"outputs"' || fail "$name: no prediction from $4"
  for _ in $(seq 40); do
    [ "$(docker inspect --format '{{.State.Health.Status}}' "$id")" = healthy ] && break
    sleep 1
  done
  [ "$(docker inspect --format '{{.State.Health.Status}}' "$id")" = healthy ] || fail "$name: HEALTHCHECK not healthy"
  echo "$name: ready, uid 10001, a digits prediction, HEALTHCHECK healthy"
}

echo "== SageMaker: serve, /opt/ml/model"
id=$(docker run -d --network host -v "$work/models:/opt/ml/model:ro" -e SAGEMAKER_BIND_TO_PORT="$HTTP_PORT" \
  -e INFERD_HOST=127.0.0.1 -e INFERD_GRPC_PORT="$GRPC_PORT" "$IMAGE" serve)
containers+=("$id")
check_container sagemaker "$id" "http://127.0.0.1:$HTTP_PORT/ping" \
  "http://127.0.0.1:$HTTP_PORT/v2/models/digits/infer"
docker rm -f "$id" >/dev/null

echo "== Vertex AI: AIP_* variables, no argument"
id=$(docker run -d --network host -v "$work/models:/models:ro" -e AIP_HTTP_PORT="$HTTP_PORT" \
  -e AIP_STORAGE_URI=/models -e AIP_HEALTH_ROUTE=/health -e AIP_PREDICT_ROUTE=/predict -e AIP_MODE=PREDICTION \
  -e INFERD_HOST=127.0.0.1 -e INFERD_GRPC_PORT="$GRPC_PORT" "$IMAGE")
containers+=("$id")
check_container vertex "$id" "http://127.0.0.1:$HTTP_PORT/health" \
  "http://127.0.0.1:$HTTP_PORT/v2/models/digits/infer"
echo "container_check: PASS"
