"""Workers of one supervisor on one SQLite state folder (``inferd.jobs.sqlite_shared``): the supervisor holds the
folder, each worker's store claims jobs under its name, and the jobs of a worker that exited, only those, are
queued again."""

import pytest

from inferd.jobs.sqlite_shared import SharedStateFolder
from inferd.jobs.sqlite_store import SqliteJobStore, StoreLockedError
from inferd.jobs.store import JobStatus
from job_fakes import new_job


@pytest.fixture
def folder(tmp_path):
    shared = SharedStateFolder(tmp_path / "state")
    assert shared.open()
    yield shared
    shared.close()


def test_the_supervisor_holds_the_folder_for_its_workers_only(folder, run):
    lone = SqliteJobStore(folder.folder)
    with pytest.raises(StoreLockedError):  # another server on the folder is still refused
        run(lone.open())
    for name in ("1", "2"):
        worker = SqliteJobStore(folder.folder, worker=name)
        run(worker.open())  # the workers are not
        run(worker.close())
    second = SharedStateFolder(folder.folder)
    assert not second.open()  # nor a second supervisor


def test_only_the_jobs_of_the_worker_that_exited_are_queued_again(folder, run):
    one, two = SqliteJobStore(folder.folder, worker="101"), SqliteJobStore(folder.folder, worker="102")
    run(one.open())
    run(two.open())
    try:
        for i in range(4):
            run(one.submit(new_job(f"j{i}"), now=float(i)))
        assert [j.id for j in run(one.claim({"m": 2}, now=5.0))] == ["j0", "j1"]
        assert [j.id for j in run(two.claim({"m": 1}, now=5.0))] == ["j2"]
        assert run(two.recover(now=6.0)) == 0  # a (re)starting worker leaves its siblings' jobs alone
        assert folder.requeue("101") == 2
        assert folder.requeue("101") == 0
        states = {j: run(two.get(j)) for j in ("j0", "j1", "j2", "j3")}
        assert {j: s.status for j, s in states.items()} == {
            "j0": JobStatus.QUEUED, "j1": JobStatus.QUEUED, "j2": JobStatus.RUNNING, "j3": JobStatus.QUEUED}
        assert states["j0"].attempts == 1  # the run cut short counts, as after a crash of a lone server
        assert sorted(j.id for j in run(two.claim({"m": 5}, now=7.0))) == ["j0", "j1", "j3"]
    finally:
        run(one.close())
        run(two.close())


def test_a_new_supervisor_queues_again_what_the_last_server_left_running(tmp_path, run):
    lone = SqliteJobStore(tmp_path / "state")
    run(lone.open())
    run(lone.submit(new_job("a"), now=0.0))
    run(lone.claim({"m": 1}, now=1.0))
    run(lone.close())  # as if killed while running "a"
    shared = SharedStateFolder(tmp_path / "state")
    assert shared.open()
    try:
        worker = SqliteJobStore(tmp_path / "state", worker="7")
        run(worker.open())
        assert run(worker.get("a")).status is JobStatus.QUEUED
        run(worker.close())
    finally:
        shared.close()


def test_a_worker_never_takes_a_siblings_running_batch_job_only_a_dead_ones(folder, run):
    from inferd.jobs.batch_store import BatchRecord

    one, two = SqliteJobStore(folder.folder, worker="101"), SqliteJobStore(folder.folder, worker="102")
    run(one.open())
    run(two.open())
    try:
        run(one.batch_submit(BatchRecord("b1", "m", "in/", "out/", {}), now=1.0))
        claimed = run(one.batch_claim(now=2.0))
        assert claimed is not None
        assert claimed.id == "b1"
        assert run(two.batch_claim(now=3.0)) is None  # a lone server would take it over: its holder differs
        assert folder.requeue("101") == 1  # worker 101 exited
        again = run(two.batch_claim(now=4.0))
        assert again is not None
        assert (again.id, again.attempts) == ("b1", 2)
        assert not run(one.batch_update("b1", claimed.attempts, {"rows": 1}, now=5.0))  # the old run is told
    finally:
        run(one.close())
        run(two.close())
