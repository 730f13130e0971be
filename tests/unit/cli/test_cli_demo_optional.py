"""Optional demo examples: built when their extra is installed, else one line naming the extra."""

from __future__ import annotations

from types import SimpleNamespace

from inferd.cli.demo import skip_notes
from inferd.examples import minilm
from inferd.examples.build import OPTIONAL_EXAMPLES, installed


def test_minilm_is_an_optional_example_of_the_embeddings_extra():
    assert minilm in OPTIONAL_EXAMPLES
    assert minilm.EXTRA == "embeddings"


def test_an_example_whose_modules_are_missing_is_skipped_with_one_line():
    absent = SimpleNamespace(NAME="thing", DESCRIPTION="a thing", EXTRA="things", REQUIRES=("no_such_module_x",))
    present = SimpleNamespace(NAME="other", DESCRIPTION="", EXTRA="", REQUIRES=("json",))
    assert not installed(absent)  # type: ignore[arg-type]
    assert installed(present)  # type: ignore[arg-type]
    assert skip_notes([absent, present], installed) == [
        "Skipping thing (a thing): install it with pip install 'inferd[things]'"]
