"""Input references: refused unless under an allowed root, at submission and again on the file a job opens
(a file swapped for a symbolic link after submission is refused); local files read whole, within the size
limit."""

import asyncio

import pytest

from inferd.errors import ErrorCode, InferError
from inferd.jobs.inputs import check_location, local_roots, location_size, read_location
from inferd.roots import ANYWHERE


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
    with pytest.raises(InferError, match="outside the folders the async_input_roots setting allows"):
        check_location(str(root / "link.json"), [str(root)])


def test_read_checks_the_size_and_existence(tmp_path):
    path = tmp_path / "req.bin"
    path.write_bytes(b"x" * 10)
    assert location_size(str(path)) == 10
    assert asyncio.run(read_location(str(path), 10, ANYWHERE)) == b"x" * 10
    with pytest.raises(InferError, match="over the limit of 9 bytes"):
        asyncio.run(read_location(str(path), 9, ANYWHERE))
    with pytest.raises(InferError, match="does not exist"):
        asyncio.run(read_location(str(tmp_path / "gone"), 9, ANYWHERE))


def test_fsspec_urls_under_an_allowed_prefix_are_read():
    fsspec = pytest.importorskip("fsspec")
    with fsspec.open("memory://inferd-inputs/req.json", "wb") as f:
        f.write(b'{"inputs": []}')
    roots = ["memory://inferd-inputs/"]
    assert check_location("memory://inferd-inputs/req.json", roots) == "memory://inferd-inputs/req.json"
    assert asyncio.run(read_location("memory://inferd-inputs/req.json", 100, ANYWHERE)) == b'{"inputs": []}'
    assert location_size("memory://inferd-inputs/req.json") is None  # checked when read
    with pytest.raises(InferError, match="not under an allowed root"):
        check_location("memory://elsewhere/req.json", roots)
    with pytest.raises(InferError, match="over the limit of 5 bytes"):
        asyncio.run(read_location("memory://inferd-inputs/req.json", 5, ANYWHERE))
    with pytest.raises(InferError, match="does not exist"):
        asyncio.run(read_location("memory://inferd-inputs/missing.json", 5, ANYWHERE))


def test_a_file_swapped_for_a_symbolic_link_after_submission_is_refused_when_read(tmp_path):
    """Time of check to time of use: the location was checked at submission; by the time the job runs, the file
    is a symbolic link out of the root. The job opens it and refuses what it opened."""
    root = tmp_path / "inputs"
    root.mkdir()
    (root / "req.json").write_text('{"inputs": []}')
    (tmp_path / "secret.json").write_text("secret")
    stored = check_location(str(root / "req.json"), [str(root)])
    (root / "req.json").unlink()
    (root / "req.json").symlink_to(tmp_path / "secret.json")
    with pytest.raises(InferError) as refused:
        asyncio.run(read_location(stored, 100, local_roots([str(root)])))
    assert refused.value.code is ErrorCode.INVALID_ARGUMENT
    assert refused.value.message == (f"input location {stored} leads to {tmp_path / 'secret.json'}, which is outside "
                                     f"the folders the async_input_roots setting allows ({root})")


def test_a_folder_swapped_for_a_symbolic_link_is_refused_too(tmp_path):
    root = tmp_path / "inputs"
    (root / "day").mkdir(parents=True)
    (root / "day" / "req.json").write_text("{}")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "req.json").write_text("secret")
    stored = check_location(str(root / "day" / "req.json"), [str(root)])
    (root / "day" / "req.json").unlink()
    (root / "day").rmdir()
    (root / "day").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(InferError, match="async_input_roots"):
        asyncio.run(read_location(stored, 100, local_roots([str(root)])))


def test_a_symbolic_link_that_stays_inside_the_root_is_read(tmp_path):
    root = tmp_path / "inputs"
    (root / "2024").mkdir(parents=True)
    (root / "2024" / "req.json").write_text("{}")
    (root / "latest.json").symlink_to(root / "2024" / "req.json")
    stored = check_location(str(root / "latest.json"), [str(root)])
    assert asyncio.run(read_location(str(root / "latest.json"), 100, local_roots([str(root)]))) == b"{}"
    assert stored == str(root / "2024" / "req.json")
