# syntax=docker/dockerfile:1
# inferd's serving image: `docker build --build-arg EXTRAS=onnx,sklearn -t inferd .`
# Runs as SageMaker expects (`docker run IMAGE serve`: the models in /opt/ml/model), as Vertex AI expects
# (AIP_HTTP_PORT, AIP_STORAGE_URI; add gcsfs to EXTRA_PACKAGES for gs://), and under Kubernetes/KServe (deploy/).
ARG PYTHON_VERSION=3.12

FROM python:${PYTHON_VERSION}-slim AS build
# The extras of pyproject.toml to install (the runtimes the models need), comma separated; empty: the core only.
ARG EXTRAS=onnx,sklearn
# Further pip requirements, space separated (such as gcsfs for a gs:// AIP_STORAGE_URI).
ARG EXTRA_PACKAGES=""
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
# hadolint ignore=SC2086
RUN python -m venv /opt/inferd \
    && /opt/inferd/bin/pip install ".${EXTRAS:+[${EXTRAS}]}" ${EXTRA_PACKAGES}

FROM python:${PYTHON_VERSION}-slim
# The OpenMP runtime that LightGBM's and XGBoost's wheels load (slim images leave it out: 'libgomp.so.1: cannot open
# shared object file'), a few hundred kB, installed whatever the extras.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/inferd /opt/inferd
RUN groupadd --system --gid 10001 inferd \
    && useradd --system --uid 10001 --gid inferd --create-home --home-dir /home/inferd inferd
# Bind every interface: the platform's endpoint (SageMaker, Vertex AI, a Kubernetes Service) is what callers reach,
# and it authenticates them; give INFERD_API_KEYS_FILE to have inferd check API keys itself.
ENV PATH=/opt/inferd/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    INFERD_HOST=0.0.0.0 \
    INFERD_ALLOW_UNAUTHENTICATED=true \
    INFERD_STATE_DIR=/home/inferd/state
USER 10001:10001
WORKDIR /home/inferd
EXPOSE 8080 8081
# Liveness on the HTTP port the platform chose (Vertex AI and SageMaker set their own variables).
HEALTHCHECK --interval=10s --timeout=3s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; port = os.environ.get('AIP_HTTP_PORT') or os.environ.get('SAGEMAKER_BIND_TO_PORT') or os.environ.get('INFERD_HTTP_PORT') or '8080'; urllib.request.urlopen(f'http://127.0.0.1:{port}/v2/health/live', timeout=2)"]
ENTRYPOINT ["inferd"]
CMD ["serve"]
