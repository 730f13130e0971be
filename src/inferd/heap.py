"""Keep Python's cyclic garbage collector off the objects a server keeps for its whole life.

A loaded server holds millions of long-lived objects (numpy, scikit-learn, SciPy, pandas, FastAPI, the models).
Every full collection walks all of them: with the scikit-learn models of the benchmarks that is a pause of tens
of milliseconds in the event loop, a few times a second under load, and it was most of the p99 latency with
dynamic batching on (98 ms at 32 connections, 22 ms with the collector off; benchmarks/serve_bench.py).
``gc.freeze()`` moves what exists into a generation the collector never walks; objects made afterwards are
collected as usual.
"""

from __future__ import annotations

import gc


def settle() -> None:
    """After start-up or a model load: freeze what exists now. Reference counting still frees these objects;
    only cycles among them wait for :func:`release`."""
    gc.freeze()


def release() -> None:
    """After a model unload: let the collector see everything again, collect the model's cycles, freeze the
    rest. One full collection: a pause, once, at an unload."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
