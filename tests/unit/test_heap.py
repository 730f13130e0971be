"""inferd.heap: objects that exist when the heap is settled are out of the collector's walks until released."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from inferd import heap


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


@pytest.fixture(autouse=True)
def _unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()  # leave the test process as it was


def test_settled_objects_are_not_walked_by_collections():
    node = Node()
    alive = weakref.ref(node)
    heap.settle()
    assert gc.get_freeze_count() > 0
    del node
    gc.collect()
    assert alive() is not None  # frozen: a full collection did not walk it


def test_release_collects_cycles_that_were_frozen_and_freezes_the_rest():
    node = Node()
    alive = weakref.ref(node)
    heap.settle()
    del node
    heap.release()
    assert alive() is None
    assert gc.get_freeze_count() > 0


def test_objects_made_after_settling_are_collected_as_usual():
    heap.settle()
    node = Node()
    alive = weakref.ref(node)
    del node
    gc.collect()
    assert alive() is None
