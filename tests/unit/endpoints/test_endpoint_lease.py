"""The rollout lease in the endpoint store: renewed by its owner only, released at stop, taken over by one
process when it lapses; and the judgement of a lapsed owner (expired, or a process of this host that is gone)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from inferd.endpoints.lease import lapsed, new_owner
from inferd.endpoints.store import EndpointStore, RolloutRow


def test_only_the_owner_renews_and_one_of_two_takes_a_lapsed_rollout_over(tmp_path: Path):
    one, two = EndpointStore(tmp_path / "e.db"), EndpointStore(tmp_path / "e.db")
    one.start_rollout("e", {"to": "m:2"}, "host:1:a", lease_s=60)
    assert one.renew("e", "host:1:a", 60)
    assert not two.renew("e", "host:2:b", 60)
    seen = two.rollout("e")
    assert seen is not None
    assert seen.owner == "host:1:a"
    assert two.take_over("e", "host:2:b", 60, seen)
    assert not one.take_over("e", "host:3:c", 60, seen)  # it is no longer as seen: the second try loses
    assert not one.renew("e", "host:1:a", 60)  # the old owner learns it lost the rollout
    two.release("host:2:b")
    released = one.rollout("e")
    assert released is not None
    assert released.lease_until == 0


def test_a_store_made_before_leases_gains_the_columns(tmp_path: Path):
    import sqlite3

    db = sqlite3.connect(tmp_path / "e.db")
    db.execute("CREATE TABLE rollouts (endpoint TEXT PRIMARY KEY, spec TEXT NOT NULL, state TEXT NOT NULL, "
               "step INTEGER NOT NULL, updated REAL NOT NULL)")
    db.execute("INSERT INTO rollouts VALUES ('e', '{}', 'running', 1, 0)")
    db.commit()
    db.close()
    row = EndpointStore(tmp_path / "e.db").rollout("e")
    assert row == RolloutRow("e", {}, "running", 1, None, None)
    assert lapsed(row, new_owner())  # no lease at all: whoever looks takes it over


def test_data_version_moves_when_another_connection_commits(tmp_path: Path):
    one, two = EndpointStore(tmp_path / "e.db"), EndpointStore(tmp_path / "e.db")
    assert one.data_version() == two.data_version() == -1  # no file yet: following makes none
    one.put("e", {"variants": []}, None, "changed", {})
    assert two.data_version() != -1  # the file appeared: the follower reads it
    before = one.data_version()
    one.put("e", {"variants": []}, None, "changed", {})
    assert one.data_version() == before  # its own commit: nothing to reload
    two.put("e", {"variants": []}, None, "changed", {})
    assert one.data_version() != before


def test_an_owner_is_lapsed_when_its_lease_ran_out_or_its_process_is_gone():
    me = new_owner()
    host = socket.gethostname()
    later = time.time() + 60
    assert not lapsed(RolloutRow("e", {}, "running", 0, me, 0.0), me)  # never its own
    assert lapsed(RolloutRow("e", {}, "running", 0, "elsewhere:1:x", time.time() - 1), me)
    assert not lapsed(RolloutRow("e", {}, "running", 0, "elsewhere:1:x", later), me)  # another host: trust it
    assert not lapsed(RolloutRow("e", {}, "running", 0, f"{host}:{os.getppid()}:x", later), me)  # alive here
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True).stdout.strip()
    assert lapsed(RolloutRow("e", {}, "running", 0, f"{host}:{gone}:x", later), me)
    assert lapsed(RolloutRow("e", {}, "running", 0, f"{host}:{os.getpid()}:older", later), me)  # a pid reused
