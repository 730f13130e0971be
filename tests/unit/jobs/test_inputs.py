"""Input references: refused unless under an allowed root; local files read whole, within the size limit."""

import asyncio

import pytest

from inferd.errors import ErrorCode, InferError
from inferd.jobs.inputs import check_location, location_size, read_location


def test_references_are_off_without_roots(tmp_path):
    with pytest.raises(InferError, match="set INFERD_ASYNC_INPUT_ROOTS"):
        check_location(str(tmp_path / "x.json"), [])


def test_only_files_under_a_root_are_allowed(tmp_path):
    root = tmp_path / "inputs"
    root.mkdir()
    (root / "req.json").write_text("{}")
    (tmp_path / "secret.json").write_text("{}")
    assert check_location(str(root / "req.json"), [str(root)]) == str((root / "req.json").resolve())
    assert check_location(f"file://{root}/req.json", [str(root)]).endswith("req.json")
    for outside in (str(root / ".." / "secret.json"), "/etc/passwd", "s3://bucket/x.json", "relative.json"):
        with pytest.raises(InferError) as info:
            check_location(outside, [str(root)])
        assert info.value.code is ErrorCode.INVALID_ARGUMENT
    with pytest.raises(InferError, match="is not a file"):
        check_location(str(root), [str(root)])
    (root / "link.json").symlink_to(tmp_path / "secret.json")
    with pytest.raises(InferError, match="not under an allowed root"):
        check_location(str(root / "link.json"), [str(root)])


def test_read_checks_the_size_and_existence(tmp_path):
    path = tmp_path / "req.bin"
    path.write_bytes(b"x" * 10)
    assert location_size(str(path)) == 10
    assert asyncio.run(read_location(str(path), 10)) == b"x" * 10
    with pytest.raises(InferError, match="over the limit of 9 bytes"):
        asyncio.run(read_location(str(path), 9))
    with pytest.raises(InferError, match="does not exist"):
        asyncio.run(read_location(str(tmp_path / "gone"), 9))


def test_fsspec_urls_under_an_allowed_prefix_are_read():
    fsspec = pytest.importorskip("fsspec")
    with fsspec.open("memory://inferd-inputs/req.json", "wb") as f:
        f.write(b'{"inputs": []}')
    roots = ["memory://inferd-inputs/"]
    assert check_location("memory://inferd-inputs/req.json", roots) == "memory://inferd-inputs/req.json"
    assert asyncio.run(read_location("memory://inferd-inputs/req.json", 100)) == b'{"inputs": []}'
    assert location_size("memory://inferd-inputs/req.json") is None  # checked when read
    with pytest.raises(InferError, match="not under an allowed root"):
        check_location("memory://elsewhere/req.json", roots)
    with pytest.raises(InferError, match="over the limit of 5 bytes"):
        asyncio.run(read_location("memory://inferd-inputs/req.json", 5))
    with pytest.raises(InferError, match="does not exist"):
        asyncio.run(read_location("memory://inferd-inputs/missing.json", 5))
