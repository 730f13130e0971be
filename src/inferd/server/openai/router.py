"""The OpenAI-compatible API: every route under :data:`OPENAI_BASE`, answering failures in OpenAI's form.

The base URL is ``/openai/v1`` as KServe's, so that ``/v1/models`` stays KServe V1's: point the stock client at
``OpenAI(base_url="http://host:8080/openai/v1", api_key=...)``. Each route module builds an
``APIRouter(route_class=OpenAIRoute)`` and is included here with one line.
"""

from __future__ import annotations

from fastapi import APIRouter

from inferd.dataplane import DataPlane
from inferd.server.openai.completions import completions_router
from inferd.server.openai.embeddings import embeddings_router
from inferd.server.openai.errors import OpenAIRoute
from inferd.server.openai.models import models_router
from inferd.settings import ServerSettings

OPENAI_BASE = "/openai/v1"


def openai_router(dataplane: DataPlane, settings: ServerSettings) -> APIRouter:
    router = APIRouter(prefix=OPENAI_BASE, tags=["OpenAI-compatible API"], route_class=OpenAIRoute)
    router.include_router(models_router(dataplane))
    router.include_router(embeddings_router(dataplane, settings))
    router.include_router(completions_router(dataplane, settings.max_body_bytes))
    return router


def is_openai_path(path: str) -> bool:
    """Whether a request path is under the OpenAI base URL (its failures are answered in OpenAI's form)."""
    return path == OPENAI_BASE or path.startswith(OPENAI_BASE + "/")
