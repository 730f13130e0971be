"""``inferd recommend`` on the demo digits model, on a short budget: real servers per configuration, a ranking
with measured figures, the choice written into model.toml, and a constraint no configuration meets."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from cli_runner import inferd
from inferd.examples import digits
from inferd.tools.recommend import merge_model_toml


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "digits" / "1").mkdir(parents=True)
    digits.build(root / "digits")
    return root


def test_recommend_ranks_measured_configurations_and_writes_the_choice(repo, tmp_path):
    ran = inferd("recommend", str(repo), "digits", "--p99", "1s", "--budget", "35s", "--concurrency", "1,4",
                 "--seconds", "0.3", "--price-per-hour", "0.1", "--write", "--report", str(tmp_path / "report"),
                 "--json", timeout=180)
    assert ran.returncode == 0, ran.stderr
    found = json.loads(ran.stdout)
    measured = [t for t in found["trials"] if t["best"] and not t["error"]]
    assert len(measured) >= 2
    for trial in measured:
        assert trial["meets"] is True
        assert trial["best"]["inferences_per_s"] > 0
        assert trial["best"]["p99_us"] <= 1e6
        assert trial["best"]["cost_per_1m"]["price_per_hour"] > 0
    speeds = [t["best"]["inferences_per_s"] for t in found["trials"] if t["meets"]]
    assert speeds == sorted(speeds, reverse=True)
    assert found["chosen"]["name"] == found["trials"][0]["name"]
    written = tomllib.loads((repo / "digits" / "model.toml").read_text())
    for table, values in found["chosen"]["settings"].items():
        assert {k: written[table][k] for k in values} == values
    assert (tmp_path / "report" / "recommend.png").stat().st_size > 5_000
    assert "data:image/png;base64," in (tmp_path / "report" / "recommend.html").read_text()


def test_a_constraint_nobody_meets_shows_the_closest(repo):
    ran = inferd("recommend", str(repo), "digits", "--p99", "1us", "--budget", "10s", "--concurrency", "1",
                 "--seconds", "0.3", timeout=120)
    assert ran.returncode == 1, ran.stderr
    assert "no configuration meets p99 <= 0.001 ms; the closest is" in ran.stdout
    assert "written: nothing" in ran.stdout
    assert not (repo / "digits" / "model.toml").exists()


def test_bad_input(repo):
    ran = inferd("recommend", str(repo), "digits", "--p99", "fast")
    assert ran.returncode == 2
    assert "'fast' is not a duration" in ran.stderr
    ran = inferd("recommend", str(repo), "nosuch", "--p99", "20ms")
    assert ran.returncode == 2
    assert "no model folder 'nosuch'" in ran.stderr
    ran = inferd("recommend", str(repo), "digits", "--p99", "20ms", "--price-per-hour", "x")
    assert ran.returncode == 2


def test_merge_model_toml_keeps_other_tables_and_keys():
    text = '[batching]\nenabled = false\npreferred_batch_sizes = [4]\n\n[[input]]\nname = "x"\n\n[queue]\nmax_size = 9\n'
    merged = tomllib.loads(merge_model_toml(text, {"batching": {"enabled": True}, "instances": {"count": 2}}))
    assert merged["batching"] == {"enabled": True, "preferred_batch_sizes": [4]}
    assert merged["input"] == [{"name": "x"}]
    assert merged["queue"] == {"max_size": 9}
    assert merged["instances"] == {"count": 2}
