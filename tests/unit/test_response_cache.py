"""The response cache: canonical keys, the byte budget with least-recently-used eviction, and the TTL."""

from __future__ import annotations

import time

import numpy as np

from inferd.response_cache import ENTRY_OVERHEAD_BYTES, ResponseCache, cache_key, cache_scope

SCOPE = cache_scope("m", 1, "abc", "{}")


def _bytes(*items: bytes) -> np.ndarray:
    array = np.empty(len(items), dtype=object)
    array[:] = list(items)
    return array


def test_equal_inputs_have_one_key_whatever_their_memory_layout():
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert cache_key(SCOPE, {"x": x}) == cache_key(SCOPE, {"x": np.asfortranarray(x)})
    assert cache_key(SCOPE, {"a": x, "b": x[:1]}) == cache_key(SCOPE, {"b": x[:1], "a": x})  # input order
    assert cache_key(SCOPE, {"t": _bytes(b"ab", b"c")}) == cache_key(SCOPE, {"t": _bytes(b"ab", b"c")})


def test_what_changes_the_result_changes_the_key():
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    key = cache_key(SCOPE, {"x": x})
    assert key != cache_key(SCOPE, {"x": x.astype(np.float64)})
    assert key != cache_key(SCOPE, {"x": x.reshape(3, 2)})
    assert key != cache_key(SCOPE, {"y": x})
    assert key != cache_key(cache_scope("m", 2, "abc", "{}"), {"x": x})  # another version
    assert key != cache_key(cache_scope("other", 1, "abc", "{}"), {"x": x})  # another model
    assert key != cache_key(cache_scope("m", 1, "def", "{}"), {"x": x})  # another artifact
    assert cache_key(SCOPE, {"t": _bytes(b"ab", b"c")}) != cache_key(SCOPE, {"t": _bytes(b"a", b"bc")})


def test_the_least_recently_used_results_leave_first_under_the_byte_budget():
    row = np.zeros(100, dtype=np.uint8)
    cache = ResponseCache(3 * (ENTRY_OVERHEAD_BYTES + 100))
    for key in (b"a", b"b", b"c"):
        cache.put(key, "m", {"y": row})
    assert cache.get(b"a") is not None  # a is now the most recently used
    cache.put(b"d", "m", {"y": row})
    assert cache.get(b"b") is None
    assert all(cache.get(k) is not None for k in (b"a", b"c", b"d"))
    assert cache.bytes == cache.held["m"] == 3 * (ENTRY_OVERHEAD_BYTES + 100)
    cache.put(b"huge", "m", {"y": np.zeros(10_000, dtype=np.uint8)})  # larger than the whole cache: not kept
    assert cache.get(b"huge") is None
    assert len(cache) == 3


def test_a_stored_result_is_a_copy_and_expires_after_its_ttl():
    y = np.ones(3)
    cache = ResponseCache(1 << 20)
    cache.put(b"k", "m", {"y": y}, ttl_s=0.05)
    y[:] = 7
    found = cache.get(b"k")
    assert found is not None
    assert found["y"].tolist() == [1.0, 1.0, 1.0]
    time.sleep(0.1)
    assert cache.get(b"k") is None
    assert cache.bytes == 0
