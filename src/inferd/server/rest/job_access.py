"""Who may see which asynchronous job: the one place every job route asks.

A job belongs to the API key that submitted it, named by the key's configured ``name`` (never the key itself):
its owner. Job ids are each owner's own: two keys may both submit ``Inference-Id: order-17`` and get a job each.
A key sees only its own jobs; another key's job answers 404 like a job that does not exist (never 403, so ids
do not leak). An ``admin`` key sees every key's jobs; where several owners use the same id, ``?owner=NAME``
picks one (the admin's own job of that id is picked without it). Without keys there is one owner, and every
caller sees every job, as before.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from inferd.jobs.store import Job, JobStore
from inferd.security.scopes import Scope
from inferd.server.rest.errors import HTTPError

NO_KEY = ""
"""The owner of jobs submitted without a key (as the store keeps it)."""


@dataclass(frozen=True, slots=True)
class JobAccess:
    """What one request may do with jobs."""

    owner: str | None
    """The caller's key name, which its submissions are stored under; None when the server runs without keys."""
    sees_all: bool
    """An ``admin`` key, or no keys at all: every owner's jobs."""

    @classmethod
    def of(cls, scope: Mapping[str, Any]) -> JobAccess:
        """From the ASGI scope, where the API-key wrapper put the caller's principal (absent without keys)."""
        principal = scope.get("inferd.principal")
        if principal is None:
            return cls(None, sees_all=True)
        return cls(str(principal.name), sees_all=Scope.ADMIN in principal.allowed)

    @property
    def _own(self) -> str:
        return self.owner or NO_KEY

    def listing_owner(self, asked: str | None) -> str | None:
        """Whose jobs a listing shows (None: everyone's): a key's own; for an admin, ``?owner=`` or all."""
        if not self.sees_all:
            return self._own
        return asked

    async def job(self, store: JobStore, public_id: str, asked: str | None = None) -> Job:
        """The job the caller calls ``public_id`` (``asked``: an admin's ``?owner=``); 404 if it may not see one,
        409 when an admin's id names several owners' jobs and none is its own."""
        if not self.sees_all:
            found = [] if asked not in (None, self.owner) else await store.find(public_id, self._own)
        elif asked is not None:
            found = await store.find(public_id, asked)
        else:
            found = await store.find(public_id)
            if len(found) > 1:
                own = [job for job in found if (job.owner or NO_KEY) == self._own]
                if not own:
                    owners = ", ".join(repr(job.owner or NO_KEY) for job in found)
                    raise HTTPError(409, f"{len(found)} jobs are called {public_id!r} (owners {owners}): "
                                         "add ?owner=NAME to pick one")
                found = own
        if not found:
            raise HTTPError(404, f"no job {public_id!r}")
        return found[0]
