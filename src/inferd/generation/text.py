"""Text around tokens: incremental detokenizing that never splits a UTF-8 character, stop sequences matched
across token boundaries, and chat templates."""

from __future__ import annotations

import codecs
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from inferd.generation.engine import Message


class Detokenizer:
    """Token bytes in, text out: bytes of a character split over two tokens wait for the second one."""

    __slots__ = ("_decoder",)

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, piece: bytes) -> str:
        text: str = self._decoder.decode(piece)
        return text

    def flush(self) -> str:
        """What is left at the end (an unfinished character becomes U+FFFD)."""
        text: str = self._decoder.decode(b"", final=True)
        return text


class StopMatcher:
    """Finds stop sequences in generated text as it grows. Text that could be the start of a stop sequence is
    held back until the next piece tells; a stop sequence found is cut off with everything after it."""

    __slots__ = ("_held", "_stops")

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._held = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """The text that can be sent now, and whether a stop sequence was found (then nothing more is sent)."""
        if not self._stops:
            return text, False
        buffer = self._held + text
        first = -1
        for stop in self._stops:
            at = buffer.find(stop)
            if at >= 0 and (first < 0 or at < first):
                first = at
        if first >= 0:
            self._held = ""
            return buffer[:first], True
        hold = 0
        for stop in self._stops:
            for k in range(min(len(stop) - 1, len(buffer)), hold, -1):
                if buffer.endswith(stop[:k]):
                    hold = k
                    break
        cut = len(buffer) - hold
        self._held = buffer[cut:]
        return buffer[:cut], False

    def flush(self) -> str:
        """The text held back, at the end of a sequence that stopped for another reason."""
        held, self._held = self._held, ""
        return held


@lru_cache(maxsize=8)
def _compiled(template: str) -> Any:
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)

    def raise_exception(message: str) -> None:
        raise ValueError(message)

    env.globals["raise_exception"] = raise_exception
    return env.from_string(template)


def render_chat(template: str | None, messages: Sequence[Message], bos: str = "", eos: str = "") -> str:
    """A conversation through a chat template (Jinja, as Hugging Face and GGUF metadata carry it), in a sandbox;
    ChatML, with no Jinja needed, when there is none."""
    if template is None:
        turns = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
        return turns + "<|im_start|>assistant\n"
    rendered: str = _compiled(template).render(
        messages=[dict(m) for m in messages], add_generation_prompt=True, bos_token=bos, eos_token=eos)
    return rendered
