"""The PostgreSQL job store's schema: its tables, its version in ``inferd_schema``, and the check (or migration)
every server makes when it opens the store. A database of a newer inferd, or of an older one this inferd has no
migration for, is refused naming both versions, and nothing in it is changed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from inferd.jobs.postgres_batch import BATCH_TABLE
from inferd.jobs.store import StoreOpenError

if TYPE_CHECKING:
    from psycopg import AsyncConnection

SCHEMA_VERSION = 2
MIGRATIONS: dict[int, str] = {1: BATCH_TABLE}
"""SQL that brings schema ``n`` to ``n + 1``: 1 → 2 adds the table of batch jobs submitted over HTTP."""
LOCK_KEY = 7_301_982_021
"""``pg_advisory_xact_lock`` key: servers starting together create or migrate the schema one at a time."""
_SCHEMA = """
CREATE TABLE inferd_schema (version integer NOT NULL);
CREATE TABLE inferd_jobs (
    seq bigserial PRIMARY KEY,
    id text NOT NULL UNIQUE,
    model text NOT NULL,
    version text,
    status text NOT NULL,
    created_at double precision NOT NULL,
    updated_at double precision NOT NULL,
    started_at double precision,
    finished_at double precision,
    attempts integer NOT NULL DEFAULT 0,
    not_before double precision NOT NULL DEFAULT 0,
    error_code text,
    error text,
    digest text NOT NULL,
    header_length bigint,
    input_location text,
    request_size bigint,
    request_inline bytea,
    request_file text,
    result_size bigint,
    result_inline bytea,
    result_file text,
    result_header_length bigint,
    callback_url text,
    callback_state text,
    owner text NOT NULL DEFAULT '',
    public_id text NOT NULL,
    holder text,
    lease_until double precision,
    callback_holder text,
    callback_lease_until double precision
);
CREATE UNIQUE INDEX inferd_jobs_public ON inferd_jobs (owner, public_id);
CREATE INDEX inferd_jobs_queued ON inferd_jobs (model, seq) WHERE status = 'queued';
CREATE INDEX inferd_jobs_running ON inferd_jobs (lease_until) WHERE status = 'running';
CREATE INDEX inferd_jobs_finished ON inferd_jobs (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX inferd_jobs_callbacks ON inferd_jobs (seq) WHERE callback_state = 'pending';
CREATE TABLE inferd_callback_attempts (
    seq bigserial PRIMARY KEY,
    job_id text NOT NULL,
    at double precision NOT NULL,
    status_code integer,
    error text
);
CREATE INDEX inferd_callback_attempts_job ON inferd_callback_attempts (job_id);
""" + BATCH_TABLE
class PostgresSchemaError(StoreOpenError):
    """The database's inferd schema is one this inferd cannot use."""


async def migrate(conn: AsyncConnection[Any], dsn: str) -> None:
    """Create the schema in an empty database, or check (and migrate) the one there, under an advisory lock so
    that servers starting together do it once. Refuses a schema it does not know, changing nothing."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
        tables = await (await conn.execute(
            "SELECT to_regclass('inferd_schema') IS NOT NULL, to_regclass('inferd_jobs') IS NOT NULL")).fetchone()
        has_schema, has_jobs = tables if tables else (False, False)
        if not has_schema:
            if has_jobs:
                raise PostgresSchemaError(f"{safe_dsn(dsn)} has an inferd_jobs table but no inferd_schema version: it "
                                          "was not made by this inferd; use another database")
            await conn.execute(_SCHEMA)
            await conn.execute("INSERT INTO inferd_schema (version) VALUES (%s)", (SCHEMA_VERSION,))
            return
        row = await (await conn.execute("SELECT max(version) FROM inferd_schema")).fetchone()
        version = row[0] if row and row[0] is not None else 0
        if version > SCHEMA_VERSION:
            raise PostgresSchemaError(f"{safe_dsn(dsn)} has job store schema {version}, newer than this inferd's "
                                      f"{SCHEMA_VERSION}: use a newer inferd or another database")
        while version < SCHEMA_VERSION:
            step = MIGRATIONS.get(version)
            if step is None:
                raise PostgresSchemaError(f"{safe_dsn(dsn)} has job store schema {version}, older than this inferd's "
                                          f"{SCHEMA_VERSION}, and no migration from it is known: use the inferd "
                                          "that made it, or another database")
            await conn.execute(step)
            version += 1
            await conn.execute("UPDATE inferd_schema SET version = %s", (version,))


def safe_dsn(dsn: str) -> str:
    """The DSN without its password, for messages."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))
