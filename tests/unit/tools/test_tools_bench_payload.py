"""The requests ``inferd bench`` builds from model metadata, and its price and duration parsing."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from inferd.tools.bench import BenchError, parse_price, read_prices
from inferd.tools.bench_payload import build_payload, raw_bytes
from inferd.tools.recommend import parse_duration_us

SPAM = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1, 1]}]}
DIGITS = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}]}


def test_json_request_from_metadata_fills_the_batch():
    payload = build_payload("spam", SPAM, "json", 3)
    body = json.loads(payload.body)
    (tensor,) = body["inputs"]
    assert tensor["shape"] == [3, 1]
    assert len(tensor["data"]) == 3
    assert all(isinstance(v, str) and v for v in tensor["data"])
    assert payload.path == "/v2/models/spam/infer"
    assert payload.rows == 3


def test_binary_request_has_the_header_length_and_raw_tensor():
    payload = build_payload("digits", DIGITS, "binary", 2)
    headers = dict(payload.headers)
    size = int(headers["inference-header-content-length"])
    header = json.loads(payload.body[:size])
    assert header["inputs"][0]["parameters"]["binary_data_size"] == 2 * 64 * 4
    assert len(payload.body) == size + 2 * 64 * 4


def test_bytes_are_length_prefixed():
    assert raw_bytes("BYTES", np.array(["ab", "c"], dtype=object)) == struct.pack("<I", 2) + b"ab" + \
        struct.pack("<I", 1) + b"c"


def test_grpc_and_generative_routes():
    assert build_payload("digits", DIGITS, "grpc", 1).path == "ModelInfer"
    assert json.loads(build_payload("echo", {}, "generate", 1).body)["text_input"]
    assert build_payload("echo", {}, "openai", 1).path == "/openai/v1/chat/completions"
    with pytest.raises(BenchError, match="states no inputs"):
        build_payload("echo", {}, "json", 1)
    with pytest.raises(BenchError, match="unknown route"):
        build_payload("digits", DIGITS, "carrier-pigeon", 1)


def test_prices(tmp_path):
    assert parse_price("0.25") == 0.25
    with pytest.raises(BenchError, match="not a number"):
        parse_price("cheap")
    table = tmp_path / "prices.csv"
    table.write_text("name,price\nsmall,0.1\nbig,1.5\n")
    assert read_prices(table) == {"small": 0.1, "big": 1.5}


def test_durations():
    assert parse_duration_us("20ms") == 20_000
    assert parse_duration_us("500us") == 500
    assert parse_duration_us("10m") == 600e6
    assert parse_duration_us("2") == 2_000
    with pytest.raises(BenchError):
        parse_duration_us("soon")
