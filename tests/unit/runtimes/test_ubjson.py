"""The UBJSON reader: XGBoost's own binary models read as XGBoost's JSON says, and malformed input refused
with an error, bounded by the input's size."""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
import pytest

import ubjson_writer
from inferd.runtimes import ubjson

xgb = pytest.importorskip("xgboost")


def plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return [plain(v) for v in value.tolist()]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return round(value, 3) if isinstance(value, float) else value


def test_reads_an_xgboost_model_as_its_json_form() -> None:
    x = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32)
    booster = xgb.XGBClassifier(n_estimators=3, max_depth=2).fit(x, x[:, 0] > 0).get_booster()
    assert plain(ubjson.loads(bytes(booster.save_raw("ubj")))) == plain(json.loads(bytes(booster.save_raw("json"))))


@pytest.mark.parametrize("value", [None, True, False, 7, -3, 2.5, "naïve", [], {}, [1, 2, 3], [1.5, 2.0],
                                   {"a": [{"b": None}], "c": "d"}])
def test_round_trip(value: Any) -> None:
    assert plain(ubjson.loads(ubjson_writer.dumps(value))) == plain(value)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param(b"", "ends inside", id="empty"),
        pytest.param(b"[$l#L" + struct.pack(">q", 2**40) + b"\x00" * 8, "beyond the end", id="huge-count"),
        pytest.param(b"[$Z#L" + struct.pack(">q", 2**60), "beyond the end", id="huge-count-of-nothing"),
        pytest.param(b"[" * 100, "nested deeper", id="too-deep"),
        pytest.param(b"{L" + struct.pack(">q", 3) + b"ab", "beyond the end", id="cut-key"),
        pytest.param(b"X", "unknown marker", id="unknown-marker"),
        pytest.param(b"ZZ", "after the end", id="trailing-bytes"),
        pytest.param(b"SD" + b"\x00" * 8, "must be an integer", id="float-length"),
        pytest.param(b"[$l" + b"\x00", "needs a count", id="type-without-count"),
        pytest.param(b"SU\x02\xff\xfe", "not UTF-8", id="bad-utf8"),
    ],
)
def test_malformed_input_is_an_error(data: bytes, message: str) -> None:
    with pytest.raises(ubjson.UBJSONError, match=message):
        ubjson.loads(data)
