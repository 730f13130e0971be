from __future__ import annotations

import pytest

from inferd.batch import BatchError, BatchOptions
from inferd.batch.options import error_limit, parse_max_errors


def test_defaults_are_valid() -> None:
    assert BatchOptions().validated() == BatchOptions()


def test_every_problem_is_named_at_once() -> None:
    with pytest.raises(BatchError) as caught:
        BatchOptions(batch_size=0, concurrency=-1, retries=-2, max_errors=1.5, output_format="xml").validated()
    message = str(caught.value)
    for name in ("batch_size", "concurrency", "retries", "max_errors", "output_format"):
        assert name in message


@pytest.mark.parametrize(("text", "value"), [("10", 10), ("0", 0), ("0.01", 0.01), ("1%", 0.01)])
def test_max_errors_parses_counts_and_fractions(text: str, value: float) -> None:
    parsed = parse_max_errors(text)
    assert parsed == pytest.approx(value)
    assert type(parsed) is type(value)


@pytest.mark.parametrize("text", ["1.5", "-3", "abc", "150%"])
def test_max_errors_rejects_nonsense(text: str) -> None:
    with pytest.raises(ValueError, match="count|could not convert"):
        parse_max_errors(text)


def test_error_limit() -> None:
    assert error_limit(None, 100) is None
    assert error_limit(3, None) == 3
    assert error_limit(0.1, None) is None
    assert error_limit(0.1, 1000) == 100


def test_fingerprint_holds_only_what_shapes_the_output() -> None:
    a = BatchOptions(concurrency=1, retries=0, max_errors=5).fingerprint()
    b = BatchOptions(concurrency=8, retries=3).fingerprint()
    assert a == b
    assert BatchOptions(batch_size=7).fingerprint() != b


def test_public_names_do_not_drift() -> None:
    import inferd.batch

    assert sorted(inferd.batch.__all__) == ["BatchError", "BatchOptions", "BatchSummary", "Progress",
                                            "ThresholdError", "run_batch"]
    assert all(hasattr(inferd.batch, name) for name in inferd.batch.__all__)
