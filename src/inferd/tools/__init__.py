"""Tools around serving: library functions first, each with a CLI command (docs/tuning.md).

- :func:`inferd.tools.optimize.optimize` (``inferd optimize``): ONNX conversion, graph optimisation and int8
  quantization, gated on held-out data;
- :func:`inferd.tools.evaluate.evaluate` (``inferd evaluate``): predictions against labels.

Shared pieces: :mod:`~inferd.tools.metrics` (numpy metrics), :mod:`~inferd.tools.tables` (reading CSV, JSON
Lines, Parquet and batch outputs), :mod:`~inferd.tools.reports` (PNG plots, self-contained HTML) and
:mod:`~inferd.tools.measure` (timing a model). ``bench`` and ``recommend`` are to join them here.
"""
