"""Running a batch job: :func:`run_batch` from Python or the CLI, :func:`run_job` on a DataPlane already
serving (the server's batch routes)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from inferd.batch.job import BatchSummary, Job, Tripped, plan_files
from inferd.batch.journal import Journal, model_fingerprint
from inferd.batch.options import BatchError, BatchOptions
from inferd.batch.progress import Progress, Tracker
from inferd.batch.readers import count_rows, fingerprint, list_inputs
from inferd.batch.score import Scorer
from inferd.config import CONFIG_FILE
from inferd.dataplane import DataPlane
from inferd.errors import InferError
from inferd.repository import ModelRepository, ModelVersion, why_unavailable
from inferd.roots import ANYWHERE, OutsideRootsError, Roots

ProgressCallback = Callable[[Progress], None]


def run_batch(repository: str | Path, model: str, input: str | Path, output: str | Path,
              options: BatchOptions | None = None, *, on_progress: ProgressCallback | None = None) -> BatchSummary:
    """Score every record of ``input`` with ``model`` from the model ``repository`` folder, into ``output``.

    ``input`` is a CSV, JSON Lines or Parquet file (CSV and JSON Lines optionally gzipped) or a folder of
    them, as a local path or an fsspec URL; ``output`` is a local folder. It gets one output file per input
    file, with rows in input order, ``_errors.jsonl`` when records failed and ``_summary.json``. Running the
    same call again after an interruption resumes where it stopped, and the output is the same, byte for byte,
    as if nothing had happened. ``on_progress`` is called once the job's model, inputs and options are checked
    and it starts scoring, then after each mini-batch.

    Raises :class:`BatchError` when the job cannot run (the message says why) and
    :class:`~inferd.batch.job.ThresholdError` (a BatchError carrying the summary) when more records failed
    than ``options.max_errors`` allows.
    """
    options = (options or BatchOptions()).validated()
    try:
        repo = ModelRepository(Path(repository))
    except FileNotFoundError as exc:
        raise BatchError(str(exc)) from None
    if model not in repo.names():
        raise BatchError(f"no model {model!r} in {repository}; models there: {', '.join(repo.names()) or 'none'}")
    loaded = repo.load(model)
    if loaded.latest_ready() is None:
        raise BatchError(f"model {model!r} failed to load: {why_unavailable(loaded)}")
    dataplane = DataPlane(repo)
    try:
        return asyncio.run(run_job(dataplane, model, str(input), Path(output), options, on_progress))
    finally:
        dataplane.close()


async def run_job(dataplane: DataPlane, model: str, input: str, output: Path, options: BatchOptions,
                  on_progress: ProgressCallback | None = None, roots: Roots = ANYWHERE) -> BatchSummary:
    """Run a batch job on a DataPlane that has ``model`` loaded; every file it reads and writes must lie under
    ``roots`` as opened (a :class:`BatchError` names the one that does not)."""
    options = options.validated()
    try:
        version = await dataplane.ensure_loaded(model, options.model_version)  # on demand, loads it first
    except InferError as exc:
        raise BatchError(exc.message) from None
    if version.max_batch_size and options.batch_size > version.max_batch_size:
        raise BatchError(f"batch_size {options.batch_size} exceeds model {model!r}'s max_batch_size of "
                         f"{version.max_batch_size}; use a smaller batch size or raise max_batch_size in model.toml")
    folder = dataplane.repository.find(model).folder
    try:
        job = await asyncio.to_thread(_prepare, version, folder, input, output, options, roots)
    except OutsideRootsError as exc:
        raise BatchError(exc.message) from None
    if on_progress is not None:
        job.tracker.listener = on_progress
    try:
        if job.journal.summary is not None and all(p.destination.exists() for p in job.plans):
            return BatchSummary(**{**job.journal.summary, "seconds": 0.0, "rows_per_s": 0.0,
                                   "resumed_batches": job.journal.summary["batches"]})
        scorer = Scorer(dataplane, model, str(version.version), version.signature, options.timeout_s, options.retries)
        if on_progress is not None:  # checked and starting: where a progress display begins
            on_progress(job.tracker.snapshot())
        try:
            await _engine(job, scorer, dataplane)
            return await asyncio.to_thread(job.finish)
        except Tripped:
            raise job.tripped() from None
        except OutsideRootsError as exc:
            raise BatchError(exc.message) from None
    finally:
        job.close()


async def _engine(job: Job, scorer: Scorer, dataplane: DataPlane) -> None:
    if job.options.engine == "ray":
        from inferd.batch.engine_ray import run_ray

        await asyncio.to_thread(run_ray, job, dataplane.repository.root, scorer)
    else:
        from inferd.batch.engine_local import run_local

        await run_local(job, scorer)


def _prepare(version: ModelVersion, model_folder: Path, input: str, output: Path,
             options: BatchOptions, roots: Roots) -> Job:
    """List and fingerprint the inputs, plan each file, open (or resume) the journal."""
    files = list_inputs(input, roots)
    plans = plan_files(files, version.signature, options, output)
    source = version.source
    assert source is not None, "a ready model version has a source"
    identity = {
        "inputs": [fingerprint(f) for f in files],
        "model": model_fingerprint(version.name, version.version, source.runtime.name, source.artifact,
                                   model_folder / CONFIG_FILE),
        "options": options.fingerprint(),
    }
    roots.makedirs(output)
    journal = Journal.open(output, identity, options.restart, roots)
    counts = [count_rows(f) for f in files]
    rows_total = sum(c for c in counts if c is not None) if all(c is not None for c in counts) else None
    tracker = Tracker(rows_total, sum(f.size for f in files))
    return Job(output, plans, options, journal, tracker, rows_total)
