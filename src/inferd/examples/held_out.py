"""Held-out data for the demo models, with labels, for ``inferd optimize`` and ``inferd evaluate``
(docs/tuning.md): rows the models were not trained on, from the same simulations (other seeds) and, for the
digits, the quarter of scikit-learn's bundled images the model never saw.

``python -m inferd.examples.held_out FOLDER`` writes ``eta.csv``, ``digits.csv``, ``spam.csv`` and
``ranker.csv`` there. Each has the model's feature columns, then ``id`` and the truth (``minutes``, ``digit``,
``label``, ``relevance``; the ranker's also ``user``, the query group). ``NAME-features.csv`` beside each holds
the feature columns and ``id`` only: the input of ``inferd batch run NAME --key id``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HELD_OUT_SEED = 1001
TRUTH = {"eta": ("minutes",), "digits": ("digit",), "spam": ("label",), "ranker": ("relevance", "user")}
ROWS = 1000
USERS = 100


def tables() -> dict[str, dict[str, np.ndarray]]:
    """Each demo model's held-out columns, by model name."""
    from inferd.examples import digits, eta, ranker, spam

    trips, minutes = eta.make_trips(ROWS, HELD_OUT_SEED)
    found: dict[str, dict[str, np.ndarray]] = {
        "eta": {**{n: trips[:, i] for i, n in enumerate(eta.FEATURES)}, "id": np.arange(ROWS), "minutes": minutes}}
    _, pixels, _, digit = digits.load_split()
    found["digits"] = {**{f"pixel_{i}": pixels[:, i] for i in range(digits.PIXELS)},
                       "id": np.arange(len(digit)), "digit": digit}
    texts, labels = spam.make_messages(ROWS // 2, HELD_OUT_SEED)
    found["spam"] = {"text": np.array(texts, dtype=object), "id": np.arange(len(texts)),
                     "label": np.array(labels, dtype=object)}
    features, relevance, groups = ranker.make_sessions(USERS, HELD_OUT_SEED)
    found["ranker"] = {**{n: features[:, i] for i, n in enumerate(ranker.FEATURES)},
                       "id": np.arange(len(relevance)), "user": np.repeat(np.arange(len(groups)), groups),
                       "relevance": relevance}
    return found


def write(folder: Path) -> list[Path]:
    """Write the held-out CSV files into ``folder``; returns their paths."""
    import pyarrow as pa
    import pyarrow.csv as pc

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, columns in tables().items():
        path = folder / f"{name}.csv"
        table = pa.table({k: pa.array(v.tolist() if v.dtype == object else v) for k, v in columns.items()})
        pc.write_csv(table, path)
        features = folder / f"{name}-features.csv"
        pc.write_csv(table.drop_columns(list(TRUTH[name])), features)
        written += [path, features]
    return written


if __name__ == "__main__":  # pragma: no cover - exercised through docs/tuning.md
    for written_path in write(Path(sys.argv[1] if len(sys.argv) > 1 else "held-out")):
        print(written_path)
