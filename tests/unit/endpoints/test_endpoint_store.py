"""The endpoint store: compare-and-set changes (one of two wins), events, rollouts, and what survives reopening."""

from __future__ import annotations

import pytest

from inferd.endpoints.store import EndpointStore
from inferd.errors import ErrorCode, InferError


def test_a_change_against_an_old_version_is_aborted(tmp_path):
    store = EndpointStore(tmp_path / "endpoints.db")
    assert store.put("e", {"variants": []}, None, "changed", {}) == 1
    assert store.put("e", {"variants": [1]}, 1, "changed", {}) == 2
    with pytest.raises(InferError) as caught:
        store.put("e", {"variants": [2]}, 1, "changed", {})
    assert caught.value.code is ErrorCode.ABORTED
    assert store.endpoints() == {"e": ({"variants": [1]}, 2)}


def test_changes_events_and_rollouts_survive_reopening(tmp_path):
    store = EndpointStore(tmp_path / "endpoints.db")
    store.put("e", {"variants": []}, 0, "declared", {"source": "file"})
    store.start_rollout("e", {"to": "m:2"})
    with pytest.raises(InferError, match="rollout running"):
        store.start_rollout("e", {"to": "m:3"})
    store.update_rollout("e", "rolled_back", 1)
    store.event("e", "rollout_rolled_back", {"reason": "alarm"})
    store.close()
    again = EndpointStore(tmp_path / "endpoints.db")
    assert [e.kind for e in again.events("e")] == ["declared", "rollout_rolled_back"]
    assert again.events("e")[0].to_dict()["detail"] == {"source": "file", "version": 1}
    row = again.rollout("e")
    assert row is not None
    assert (row.state, row.step, row.spec) == ("rolled_back", 1, {"to": "m:2"})
    again.start_rollout("e", {"to": "m:3"})  # the last one finished: a new one may start


class StaleFirstRead(EndpointStore):
    """A store whose first read comes before another process's write (what two servers starting at once see)."""

    def __init__(self, path):
        super().__init__(path)
        self.reads = 0

    def endpoints(self):
        self.reads += 1
        return {} if self.reads == 1 else super().endpoints()


def test_two_processes_declaring_the_same_file_endpoint_both_start(tmp_path):
    """Server processes sharing a state folder (--workers N) start at once: the second finds the first's
    declaration instead of failing on it."""
    from fakes import ADDER, write_model
    from inferd.endpoints.service import Endpoints
    from inferd.repository import ModelRepository

    root = tmp_path / "models"
    write_model(root, "adder", ADDER)
    (root / "endpoints.toml").write_text('[front]\nvariants = [{name = "a", model = "adder", weight = 1}]\n')
    Endpoints(ModelRepository(root), EndpointStore(tmp_path / "endpoints.db")).open()
    late = Endpoints(ModelRepository(root), StaleFirstRead(tmp_path / "endpoints.db"))
    late.open()
    assert late.get("front").version == 1
    assert [e.kind for e in late.store.events("front")] == ["declared"]


def test_the_file_is_made_at_the_first_write_and_read_by_a_store_opened_before_it(tmp_path):
    """A server with no endpoint makes no file (reads find nothing); a store that found none sees what another
    process on the same state folder wrote since."""
    path = tmp_path / "state" / "endpoints.db"
    reader, writer = EndpointStore(path), EndpointStore(path)
    assert (reader.endpoints(), reader.events("e"), reader.rollouts()) == ({}, [], [])
    reader.close()
    assert not path.exists()
    writer.put("e", {"variants": []}, 0, "declared", {})
    assert path.exists()
    assert reader.endpoints() == {"e": ({"variants": []}, 1)}
    assert [e.kind for e in reader.events("e")] == ["declared"]
