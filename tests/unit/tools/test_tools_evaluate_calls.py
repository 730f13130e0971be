"""inferd.tools.evaluate called as a library: text classes, ranking, joins, gates, and the tables it reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pc
import pytest
from sklearn import metrics as sk

from inferd.tools.evaluate import Columns, EvaluateError, check_gate, evaluate
from inferd.tools.optimize import parse_drop
from inferd.tools.optimize_data import OptimizeError
from inferd.tools.tables import read_table


def test_text_classes_with_probabilities(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    rows = [("spam", [0.2, 0.8], "spam"), ("ham", [0.9, 0.1], "ham"), ("ham", [0.6, 0.4], "spam"),
            ("spam", [0.3, 0.7], "ham")]
    path.write_text("".join(f'{{"label": "{p}", "probabilities": {q}, "truth": "{t}"}}\n' for p, q, t in rows))
    found = evaluate(path, "truth", "classification")
    truth = [t for _, _, t in rows]
    score = [q[1] for _, q, _ in rows]
    assert found.metrics["accuracy"] == 0.5
    assert found.classes == ["ham", "spam"]
    assert found.metrics["roc_auc"] == pytest.approx(sk.roc_auc_score([t == "spam" for t in truth], score))
    assert found.metrics["log_loss"] == pytest.approx(sk.log_loss(truth, [q for _, q, _ in rows]))


def test_ranking_per_group(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    pc.write_csv(pa.table({"score": [3.0, 2.0, 1.0, 1.0, 2.0], "rel": [2, 1, 0, 0, 3], "user": [1, 1, 1, 2, 2]}),
                 path)
    found = evaluate(path, "rel", "ranking", Columns(group="user"), k=2)
    assert found.metrics["ndcg@2"] == pytest.approx(1.0)
    assert found.metrics["groups"] == 2
    ungrouped = evaluate(path, "rel", "ranking", k=2)
    assert ungrouped.notes
    assert ungrouped.metrics["ndcg@2"] < 1.0


def test_join_on_a_key_with_a_missing_label(tmp_path: Path) -> None:
    predictions, labels = tmp_path / "p.csv", tmp_path / "l.csv"
    pc.write_csv(pa.table({"id": [1, 2, 3], "prediction": [1.0, 2.0, 3.0]}), predictions)
    pc.write_csv(pa.table({"id": [3, 1], "y": [3.0, 1.0]}), labels)
    with pytest.raises(EvaluateError, match=r"1 prediction key\(s\) have no label .*first: 2"):
        evaluate(predictions, labels, "regression", Columns(key="id"))
    pc.write_csv(pa.table({"id": [3, 2, 1], "y": [3.0, 2.0, 1.0]}), labels)
    assert evaluate(predictions, labels, "regression", Columns(key="id")).metrics["mae"] == 0.0


def test_fractional_class_labels_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    pc.write_csv(pa.table({"label": [1, 0], "y": [0.5, 1.0]}), path)
    with pytest.raises(EvaluateError, match="fractional"):
        evaluate(path, "y", "classification")


def test_gates() -> None:
    values = {"accuracy": 0.9, "rmse": 3.0}
    assert check_gate(values, {"accuracy": 0.8}, {"rmse": 4.0}) == []
    assert check_gate(values, {"accuracy": 0.95}, {"rmse": 2.0}) == ["accuracy 0.9 is under 0.95", "rmse 3 is over 2"]
    with pytest.raises(EvaluateError, match="no metric 'f1'"):
        check_gate(values, {"f1": 0.5}, {})


def test_drop_is_relative_with_a_percent_sign_and_absolute_without() -> None:
    assert parse_drop("0.5%", 0.9) == pytest.approx(0.0045)
    assert parse_drop("0.005", 0.9) == 0.005
    with pytest.raises(OptimizeError):
        parse_drop("-1", 0.9)


def test_csv_list_columns_read_back_as_lists(tmp_path: Path) -> None:
    path = tmp_path / "out.csv"
    path.write_text('id,probabilities,text\n0,"[0.25,0.75]","[not json"\n1,"[1.0,0.0]","x]"\n')
    table = read_table(path)
    assert pa.types.is_list(table.schema.field("probabilities").type)
    assert table.column("probabilities").to_pylist()[0] == [0.25, 0.75]
    assert pa.types.is_string(table.schema.field("text").type)
    assert np.asarray(table.column("id")).tolist() == [0, 1]
