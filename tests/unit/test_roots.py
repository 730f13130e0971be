"""The allowed-roots check (src/inferd/roots.py) over real symbolic links in tmp_path: what was opened is
checked, not the name, so a file or folder swapped for a link after a check is refused; writes never go
through a link; links that stay inside the roots work; ANYWHERE checks nothing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from inferd.batch.writers import write_atomic
from inferd.roots import ANYWHERE, OutsideRootsError, Roots


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Roots, Path, Path]:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "data").mkdir(parents=True)
    outside.mkdir()
    (root / "data" / "in.txt").write_text("inside")
    (outside / "secret.txt").write_text("secret")
    return Roots.of([root], "batch_roots"), root, outside


def test_a_name_is_resolved_and_checked(tree):
    roots, root, outside = tree
    assert roots.check(root / "data" / ".." / "data" / "in.txt") == root / "data" / "in.txt"
    with pytest.raises(OutsideRootsError) as refused:
        roots.check(root / ".." / "outside" / "secret.txt", "input")
    assert refused.value.message == (f"input {root / '..' / 'outside' / 'secret.txt'} leads to "
                                     f"{outside / 'secret.txt'}, which is outside the folders the batch_roots "
                                     f"setting allows ({root})")


def test_a_file_swapped_for_a_link_after_the_check_is_refused_when_opened(tree):
    roots, root, outside = tree
    checked = roots.check(root / "data" / "in.txt")
    checked.unlink()
    checked.symlink_to(outside / "secret.txt")
    with pytest.raises(OutsideRootsError, match="leads to .*secret.txt, which is outside .*batch_roots"):
        roots.read_bytes(checked)


def test_a_folder_swapped_for_a_link_after_the_check_is_refused_when_opened(tree):
    roots, root, outside = tree
    checked = roots.check(root / "data" / "in.txt")
    os.rename(root / "data", root / "moved")
    (root / "data").symlink_to(outside)
    (outside / "in.txt").write_text("planted")
    with pytest.raises(OutsideRootsError, match="batch_roots"):
        roots.read_bytes(checked)


def test_links_inside_the_roots_are_followed(tree):
    roots, root, _ = tree
    (root / "latest.txt").symlink_to(root / "data" / "in.txt")
    (root / "alias").symlink_to(root / "data")
    assert roots.read_bytes(root / "latest.txt") == b"inside"
    write_atomic(root / "alias" / "new" / "out.txt", [b"written"], roots)
    assert (root / "data" / "new" / "out.txt").read_bytes() == b"written"


def test_a_write_into_a_folder_swapped_for_a_link_lands_nowhere(tree):
    roots, root, outside = tree
    (root / "out").mkdir()
    roots.check(root / "out" / "result.txt")  # fine when checked...
    (root / "out").rmdir()
    (root / "out").symlink_to(outside)  # ...then swapped
    with pytest.raises(OutsideRootsError, match=f"folder {root / 'out'} leads to {outside}"):
        write_atomic(root / "out" / "result.txt", [b"x"], roots)
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]


def test_folders_are_not_created_through_a_link(tree):
    roots, root, outside = tree
    (root / "dangling").symlink_to(outside / "not-yet")
    with pytest.raises(OutsideRootsError, match="is a symbolic link to"):
        roots.makedirs(root / "dangling" / "deeper")
    assert not (outside / "not-yet").exists()


def test_a_link_planted_at_the_temporary_name_is_replaced_not_written_through(tree):
    roots, root, outside = tree
    (root / ".result.txt.tmp").symlink_to(outside / "secret.txt")
    write_atomic(root / "result.txt", [b"mine"], roots)
    assert (root / "result.txt").read_bytes() == b"mine"
    assert (outside / "secret.txt").read_text() == "secret"
    write_atomic(root / "result.txt", [b"again"], ANYWHERE)  # the command line's path: the same code
    assert (root / "result.txt").read_bytes() == b"again"


def test_a_final_component_that_must_not_be_a_link_is_refused(tree):
    roots, root, _ = tree
    (root / "journal.jsonl").symlink_to(root / "data" / "in.txt")  # inside, but a link where none may be
    with pytest.raises(OutsideRootsError, match="is a symbolic link; it is not followed"):
        roots.open(root / "journal.jsonl", os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW)


def test_a_tree_behind_a_link_is_not_deleted(tree):
    roots, root, outside = tree
    (root / "parts").symlink_to(outside)
    with pytest.raises(OutsideRootsError, match="is a symbolic link"):
        roots.remove_tree(root / "parts")
    assert (outside / "secret.txt").exists()
    roots.remove_tree(root / "data")
    assert not (root / "data").exists()
    roots.remove_tree(root / "gone")  # missing: nothing to do


def test_anywhere_checks_nothing(tree):
    _, _, outside = tree
    assert ANYWHERE.read_bytes(outside / "secret.txt") == b"secret"
    assert ANYWHERE.check(outside / "secret.txt") == outside / "secret.txt"
