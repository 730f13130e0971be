"""``inferd jobs list|show|result|cancel``: asynchronous inference jobs (and, in ``list``, ``show`` and
``cancel``, batch jobs) of a running server."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Column, Table

from inferd.cli.common import console, fail

app = typer.Typer(help="Asynchronous inference jobs and batch jobs of a running server (an API key, if it needs "
                       "one, comes from $INFERD_API_KEY).", no_args_is_help=True)

DEFAULT_URL = "http://127.0.0.1:8080"
UrlOption = Annotated[str, typer.Option("--url", help="The server's HTTP address [default: $INFERD_URL or "
                                                      f"{DEFAULT_URL}].")]
IdArg = Annotated[str, typer.Argument(metavar="ID", help="Job id (what infer-async answered).")]
OwnerOption = Annotated[str | None, typer.Option(
    "--owner", help="With an admin key: the job of this key name, where several keys use the same id.")]
_COLOURS = {"succeeded": "green", "failed": "red", "cancelled": "yellow", "expired": "dim", "running": "cyan"}


def _url(given: str) -> str:
    return (given or os.environ.get("INFERD_URL") or DEFAULT_URL).rstrip("/")


def _request(method: str, url: str, missing_ok: bool = False, batch: bool = False, **kwargs: Any) -> Any:
    """One HTTP call; an unreachable server or an error answer ends the command with a clear message (with
    ``missing_ok``, a 404 answer is returned as None instead; with ``batch`` too, a 403: batch jobs need an admin
    key, and a key without one has none to see)."""
    import httpx  # only these commands need an HTTP client

    key = os.environ.get("INFERD_API_KEY")
    headers = {"authorization": f"Bearer {key}"} if key else None
    try:
        response = httpx.request(method, url, timeout=30, headers=headers, **kwargs)
    except httpx.HTTPError as exc:
        fail(f"cannot reach the inferd server at {url}: {exc or type(exc).__name__} "
             "(is `inferd serve` running? --url or INFERD_URL says where)")
    if missing_ok and (response.status_code == 404 or (batch and response.status_code == 403)):
        return None
    if response.status_code >= 400:
        try:
            message = response.json().get("error", response.text)
        except ValueError:
            message = response.text
        fail(f"HTTP {response.status_code}: {message}")
    return response


@app.command("list")
def list_jobs(
    url: UrlOption = "",
    status: Annotated[str | None, typer.Option(help="Only jobs in this status (queued, running, succeeded, "
                                                    "failed, cancelled, expired).")] = None,
    model: Annotated[str | None, typer.Option(help="Only jobs of this model.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 50,
) -> None:
    """List asynchronous jobs, newest first, then the batch jobs in the server's job store."""
    params: dict[str, Any] = {"limit": limit}
    params.update({k: v for k, v in (("status", status), ("model", model)) if v})
    jobs = _request("GET", f"{_url(url)}/v2/jobs", params=params).json()["jobs"]
    listed = _request("GET", f"{_url(url)}/v2/batch/jobs", missing_ok=True, batch=True, params={"limit": limit})
    batch_jobs = [j for j in (listed.json()["jobs"] if listed is not None else [])
                  if (status is None or j["state"] == status) and (model is None or j["model"] == model)]
    if not jobs and not batch_jobs:
        console.print("No jobs.")
        return
    if jobs:
        # ids and timestamps are never cut, whatever the width: the error text wraps instead
        table = Table(Column("id", no_wrap=True), "model", "status", "attempts", Column("created", no_wrap=True),
                      Column("finished", no_wrap=True), "error", title="asynchronous inference")
        for job in jobs:
            error = (job.get("error") or {}).get("message") or ""
            table.add_row(escape(job["id"]), escape(job["model_name"]), _status(job["status"]), str(job["attempts"]),
                          job["created_at"], job["finished_at"] or "", escape(error))
        console.print(table)
    if batch_jobs:
        table = Table(Column("id", no_wrap=True), "model", "status", "rows done", "rows failed", "input", "output",
                      "error", title="batch")
        for job in batch_jobs[-limit:]:
            total = job["rows_total"]
            about = "~" if job["rows_total_is_estimate"] else ""
            done = f"{job['rows_done']} / {about}{total}" if total else str(job["rows_done"])
            table.add_row(escape(job["id"]), escape(job["model"]), _status(job["state"]), done,
                          str(job["rows_failed"]), escape(job["input"]), escape(job["output"]),
                          escape(job["error"] or ""))
        console.print(table)


@app.command("show")
def show(job_id: IdArg, url: UrlOption = "", owner: OwnerOption = None) -> None:
    """A job's status, timestamps, attempts, error and callback deliveries (for a batch job: its progress)."""
    found = _request("GET", f"{_url(url)}/v2/jobs/{job_id}", missing_ok=True, params=_owner(owner))
    if found is None:
        batch = _request("GET", f"{_url(url)}/v2/batch/jobs/{job_id}", missing_ok=True, batch=True)
        if batch is None:
            fail(f"HTTP 404: no asynchronous or batch job {job_id!r}")
        _show_batch(batch.json())
        return
    job = found.json()
    table = Table("field", "value", show_header=False)
    for key in ("id", "owner", "model_name", "model_version", "status", "attempts", "created_at", "started_at",
                "finished_at", "result_url"):
        value = job.get(key)
        table.add_row(key, _status(value) if key == "status" else "" if value is None else escape(str(value)))
    if job.get("error"):
        table.add_row("error", escape(f"[{job['error']['code']}] {job['error']['message']}"))
    callback = job.get("callback")
    if callback:
        table.add_row("callback", escape(f"{callback['url']} ({callback['state']})"))
        for attempt in callback["attempts"]:
            table.add_row("", escape(f"{attempt['at']}: {attempt['status_code'] or attempt['error']}"))
    console.print(table)


def _show_batch(job: dict[str, Any]) -> None:
    table = Table("field", "value", show_header=False)
    for key in ("id", "model", "state", "input", "output", "rows_done", "rows_failed", "rows_total", "rows_per_s",
                "eta_s", "elapsed_s", "error"):
        value = job.get(key)
        table.add_row(key, "" if value is None else _status(value) if key == "state" else escape(str(value)))
    summary = job.get("summary")
    if summary:
        table.add_row("summary", escape(", ".join(f"{k} {v}" for k, v in summary.items())))
    console.print(table)


@app.command("result")
def result(
    job_id: IdArg,
    url: UrlOption = "",
    owner: OwnerOption = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the result to this file "
                                                                        "instead of standard output.")] = None,
) -> None:
    """The job's result: exactly the body the synchronous infer route would have returned."""
    response = _request("GET", f"{_url(url)}/v2/jobs/{job_id}/result", params=_owner(owner))
    if output is not None:
        output.write_bytes(response.content)
        console.print(f"wrote {len(response.content)} bytes to {output}")
        return
    sys.stdout.buffer.write(response.content)
    sys.stdout.buffer.write(b"\n")
    sys.stdout.flush()


@app.command("cancel")
def cancel(job_id: IdArg, url: UrlOption = "", owner: OwnerOption = None) -> None:
    """Cancel a queued asynchronous job (a running or finished one cannot be), or a queued or running batch job."""
    found = _request("DELETE", f"{_url(url)}/v2/jobs/{job_id}", missing_ok=True, params=_owner(owner))
    if found is None:
        batch = _request("DELETE", f"{_url(url)}/v2/batch/jobs/{job_id}", missing_ok=True, batch=True)
        if batch is None:
            fail(f"HTTP 404: no asynchronous or batch job {job_id!r}")
        console.print(f"batch job {escape(job_id)}: {_status(batch.json()['state'])}")
        return
    job = found.json()
    console.print(f"job {escape(job['id'])}: {_status(job['status'])}")


def _owner(owner: str | None) -> dict[str, str]:
    return {"owner": owner} if owner is not None else {}


def _status(status: str) -> str:
    colour = _COLOURS.get(status)
    return f"[{colour}]{status}[/]" if colour else status
