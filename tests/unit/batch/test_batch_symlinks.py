"""Batch jobs the server runs, over real symbolic-link layouts in tmp_path (issue 23): a link out of
``batch_roots`` (an input file, an input folder, the output's ``.inferd-batch`` journal, an output subfolder)
fails the job with a message naming the path and the setting, and nothing is read from or written outside;
links that stay inside the roots work."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from test_batch_routes import run_scenario, wait_finished

from batch_models import FEATURES, PICKY, feature_table, read_output, write_python_model, write_table

MAPPING = {"input": ",".join(FEATURES)}


def layout(tmp_path: Path) -> tuple[Path, Path, Path]:
    """models/ with the picky model; work/ (the root) with in/ holding a.csv; outside/ holding secret.csv."""
    write_python_model(tmp_path / "models", "picky", PICKY)
    work, outside = tmp_path / "work", tmp_path / "outside"
    write_table(feature_table(20, seed=1), work / "in" / "a.csv")
    write_table(feature_table(20, seed=2), outside / "secret.csv")
    return tmp_path / "models", work, outside


def run_job(root: Path, work: Path, body: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = {}

    async def scenario(client: httpx.AsyncClient) -> None:
        reply = await client.post("/v2/batch/jobs", json={"model": "picky", "mapping": MAPPING, "batch_size": 8,
                                                          **body})
        assert reply.status_code == 202, reply.text
        found.update(await wait_finished(client, reply.json()["status_url"]))

    run_scenario(root, scenario, batch_roots=[str(work)])
    return found


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_an_input_file_linked_out_of_the_roots_is_not_read(tmp_path):
    models, work, outside = layout(tmp_path)
    (work / "in" / "b.csv").symlink_to(outside / "secret.csv")
    status = run_job(models, work, {"input": str(work / "in"), "output": str(work / "out")})
    assert status["state"] == "failed"
    assert status["error"] == (f"input file {work / 'in' / 'b.csv'} leads to {outside / 'secret.csv'}, which is "
                               f"outside the folders the batch_roots setting allows ({work})")
    assert not (work / "out" / "b.csv").exists()
    assert not (work / "out" / "a.csv").exists()


def test_an_input_folder_linked_out_of_the_roots_is_not_read(tmp_path):
    """The folder listing does not descend into a linked folder (fsspec's own rule); if it ever did, the
    check on each listed file would refuse the job."""
    models, work, outside = layout(tmp_path)
    (work / "in" / "more").symlink_to(outside)
    status = run_job(models, work, {"input": str(work / "in"), "output": str(work / "out")})
    if status["state"] == "failed":
        assert "outside the folders the batch_roots setting allows" in status["error"]
    else:
        assert status["summary"]["outputs"] == [str(work / "out" / "a.csv")]
        assert status["summary"]["rows_in"] == 20
    assert not (work / "out" / "more").exists()


def test_a_journal_folder_linked_out_of_the_roots_is_not_written_through(tmp_path):
    models, work, outside = layout(tmp_path)
    (work / "out").mkdir()
    (outside / "journal").mkdir()
    (work / "out" / ".inferd-batch").symlink_to(outside / "journal")
    status = run_job(models, work, {"input": str(work / "in"), "output": str(work / "out")})
    assert status["state"] == "failed"
    assert f"{work / 'out' / '.inferd-batch'}" in status["error"]
    assert "batch_roots" in status["error"]
    assert listing(outside / "journal") == []  # nothing landed outside
    assert listing(work / "out") == [".inferd-batch"]


def test_a_journal_link_is_refused_on_restart_too_and_its_target_is_not_deleted(tmp_path):
    models, work, outside = layout(tmp_path)
    (work / "out").mkdir()
    (outside / "journal").mkdir()
    (outside / "journal" / "keep.txt").write_text("precious")
    (work / "out" / ".inferd-batch").symlink_to(outside / "journal")
    status = run_job(models, work, {"input": str(work / "in"), "output": str(work / "out"), "restart": True})
    assert status["state"] == "failed"
    assert f"folder {work / 'out' / '.inferd-batch'} is a symbolic link" in status["error"]
    assert (outside / "journal" / "keep.txt").read_text() == "precious"


def test_an_output_subfolder_linked_out_of_the_roots_is_not_written_through(tmp_path):
    models, work, outside = layout(tmp_path)
    (work / "in" / "a.csv").rename(work / "in" / "day.csv")
    (work / "in" / "sub").mkdir()
    write_table(feature_table(10, seed=3), work / "in" / "sub" / "c.csv")
    (work / "out").mkdir()
    (work / "out" / "sub").symlink_to(outside)
    status = run_job(models, work, {"input": str(work / "in"), "output": str(work / "out")})
    assert status["state"] == "failed"
    assert "batch_roots" in status["error"]
    assert listing(outside) == ["secret.csv"]


def test_links_that_stay_inside_the_roots_work(tmp_path):
    models, work, _ = layout(tmp_path)
    (work / "shared").mkdir()
    write_table(feature_table(12, seed=4), work / "shared" / "s.csv")
    (work / "in" / "s.csv").symlink_to(work / "shared" / "s.csv")
    (work / "real-out").mkdir()
    (work / "out").symlink_to(work / "real-out")
    status = run_job(models, work, {"input": str(work / "in"), "output": str(work / "out")})
    assert status["state"] == "succeeded", status
    assert read_output(work / "real-out" / "a.csv").num_rows + read_output(work / "real-out" / "s.csv").num_rows \
        == status["summary"]["rows_out"]
