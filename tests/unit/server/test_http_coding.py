"""Content codings of HTTP bodies: which ``Content-Encoding`` values are read, inflating under a limit (a zip bomb
stops at the limit, in memory too), and which coding an ``Accept-Encoding`` gets."""

from __future__ import annotations

import gzip
import os
import tracemalloc
import zlib

import pytest

from inferd.server.http.coding import (
    CodingError,
    InflatedTooLargeError,
    Inflater,
    UnsupportedCodingError,
    compress,
    inflate,
    request_coding,
    response_coding,
)

DATA = os.urandom(3000) + b"inferd " * 20000


@pytest.mark.parametrize(("value", "coding"), [
    (None, None), ("", None), ("identity", None), ("gzip", "gzip"), (b" GZip ", "gzip"), ("x-gzip", "gzip"),
    ("deflate", "deflate"),
])
def test_request_codings(value, coding):
    assert request_coding(value) == coding


@pytest.mark.parametrize("value", ["br", "zstd", "gzip, deflate", "compress"])
def test_other_codings_are_refused_naming_the_supported_ones(value):
    with pytest.raises(UnsupportedCodingError, match="send the body as gzip or deflate, or uncompressed"):
        request_coding(value)


@pytest.mark.parametrize(("coding", "encoded"), [
    ("gzip", gzip.compress(DATA)),
    ("gzip", gzip.compress(DATA[:5000]) + gzip.compress(DATA[5000:])),  # two members
    ("deflate", zlib.compress(DATA)),  # the zlib format, as RFC 9110 and tritonclient have it
    ("deflate", zlib.compress(DATA)[2:-4]),  # raw deflate, as some clients send it
])
@pytest.mark.parametrize("piece", [1, 7, 65536])
def test_inflated_a_piece_at_a_time(coding, encoded, piece):
    inflater = Inflater(coding, len(DATA))
    out = b"".join(inflater.feed(encoded[i:i + piece]) for i in range(0, len(encoded), piece)) + inflater.finish()
    assert out == DATA


def test_a_zip_bomb_stops_at_the_limit_without_inflating_the_rest():
    limit = 1024 * 1024
    bomb = gzip.compress(b"\0" * (512 * limit))  # 512 MiB inflated
    tracemalloc.start()
    try:
        with pytest.raises(InflatedTooLargeError):
            inflate(bomb, "gzip", limit)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * limit


def test_what_arrives_counts_too():
    empty_member = gzip.compress(b"")
    inflater = Inflater("gzip", 100)
    inflater.feed(empty_member * 5)
    with pytest.raises(InflatedTooLargeError):
        inflater.feed(empty_member)  # nothing more inflated, but over 100 bytes sent


@pytest.mark.parametrize(("coding", "encoded", "message"), [
    ("gzip", gzip.compress(DATA)[:-5], r"not valid gzip data \(it stops before its end\)"),
    ("gzip", b"plain text", r"not valid gzip data \(Error -3"),
    ("deflate", zlib.compress(b"x") + b"junk", "4 bytes after the end of its deflate data"),
    ("deflate", b"x", r"not valid deflate data \(1 byte\)"),
])
def test_data_that_is_not_its_coding(coding, encoded, message):
    with pytest.raises(CodingError, match=message):
        inflate(encoded, coding, 1 << 20)


def test_an_empty_body_is_empty():
    assert inflate(b"", "gzip", 10) == b""
    assert inflate(b"", "deflate", 10) == b""


@pytest.mark.parametrize(("accept", "coding"), [
    (None, None), ("", None), ("identity", None), ("br", None), ("gzip", "gzip"), ("deflate", "deflate"),
    ("gzip, deflate", "gzip"), ("deflate, gzip", "gzip"), ("deflate;q=1, gzip;q=0.5", "deflate"),
    ("gzip;q=0, deflate", "deflate"), ("gzip;q=0", None), ("br, *", "gzip"), (b"DEFLATE;Q=0.9", "deflate"),
    ("gzip;q=oops, deflate", "deflate"),
])
def test_response_coding_follows_accept_encoding(accept, coding):
    assert response_coding(accept) == coding


def test_compressed_responses_inflate_as_clients_inflate_them():
    assert gzip.decompress(compress(DATA, "gzip")) == DATA
    assert zlib.decompress(compress(DATA, "deflate")) == DATA  # tritonclient: zlib.decompress
