"""Generative models: an engine seam (tokenize, prefill, batched decode), sampling, stop sequences, and the
per-model generation scheduler that runs continuous batching over a fixed number of slots."""
