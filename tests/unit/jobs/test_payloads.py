"""Bodies kept inline while small and streamed to a payload file once large; the size limit; digests."""

import asyncio
import hashlib

import pytest

from inferd.jobs.payloads import BodyTooLargeError, PayloadFiles


def test_small_bodies_stay_inline(tmp_path):
    files = PayloadFiles(tmp_path / "payloads")
    files.prepare()
    writer = files.writer(inline_limit=10, max_bytes=100)
    for chunk in (b"abc", b"", b"def"):
        writer.write(chunk)
    payload = asyncio.run(writer.finish())
    assert (payload.inline, payload.file, payload.size) == (b"abcdef", None, 6)
    assert writer.digest.hexdigest() == hashlib.sha256(b"abcdef").hexdigest()
    assert files.names() == set()


def test_large_bodies_go_to_a_synced_file_chunk_by_chunk(tmp_path):
    files = PayloadFiles(tmp_path / "payloads")
    files.prepare()
    writer = files.writer(inline_limit=10, max_bytes=10_000)
    chunks = [bytes([i]) * 7 for i in range(100)]
    for chunk in chunks:
        writer.write(chunk)
    assert writer._chunks == []  # nothing of it held in memory after the spill (beyond the write buffer)
    payload = asyncio.run(writer.finish())
    assert payload.inline is None
    assert payload.size == 700
    assert files.path(payload.file).read_bytes() == b"".join(chunks)
    assert asyncio.run(files.read(payload.file)) == b"".join(chunks)


def test_over_the_limit_the_file_is_deleted(tmp_path):
    files = PayloadFiles(tmp_path / "payloads")
    files.prepare()
    writer = files.writer(inline_limit=4, max_bytes=20)
    writer.write(b"x" * 15)
    assert len(files.names()) == 1
    with pytest.raises(BodyTooLargeError, match="over the limit of 20 bytes"):
        writer.write(b"y" * 6)
    assert files.names() == set()


def test_results_are_stored_inline_or_as_files(tmp_path):
    files = PayloadFiles(tmp_path / "payloads", fsync=False)
    files.prepare()
    small = asyncio.run(files.store(b"tiny", inline_limit=4, kind="result"))
    big = asyncio.run(files.store(b"large", inline_limit=4, kind="result"))
    assert (small.inline, small.file) == (b"tiny", None)
    assert big.file.endswith(".result")
    assert files.path(big.file).read_bytes() == b"large"
    files.delete([big.file, "never-existed"])
    assert files.names() == set()
