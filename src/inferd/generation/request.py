"""A generation request as every transport hands it to the DataPlane, and turning it into prompt tokens."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from inferd.errors import invalid
from inferd.generation.engine import Engine, Message
from inferd.generation.sampling import SamplingParams
from inferd.generation.scheduler import GenerationLimits

if TYPE_CHECKING:
    from inferd.calls import Routing

ROLES = ("system", "user", "assistant")
MAX_STOP_SEQUENCES = 4
"""As OpenAI's API: up to 4 stop sequences."""
MAX_STOP_CHARS = 256


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """A prompt (``prompt``, raw text) or a conversation (``messages``, through the model's chat template)."""

    model_name: str
    prompt: str | None = None
    messages: Sequence[Message] | None = None
    model_version: str | None = None
    max_tokens: int | None = None
    """None: the model's ``max_tokens``, or what room the context has left."""
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = field(default=())
    routing: Routing | None = field(default=None, compare=False)
    """What the transport's headers ask of an endpoint (forced variant, route key); when ``model_name`` is an
    endpoint, the DataPlane records there the variant that answers."""

    def check(self) -> None:
        """INVALID_ARGUMENT for what no model could serve, naming the field."""
        if (self.prompt is None) == (self.messages is None):
            raise invalid("a generation request needs a prompt or messages (one of them)")
        if self.messages is not None:
            check_messages(self.messages)
        if self.max_tokens is not None and self.max_tokens < 1:
            raise invalid(f"max_tokens must be at least 1, got {self.max_tokens}")
        if self.temperature is not None and self.temperature < 0:
            raise invalid(f"temperature must be at least 0, got {self.temperature}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise invalid(f"top_p must be in (0, 1], got {self.top_p}")
        if len(self.stop) > MAX_STOP_SEQUENCES:
            raise invalid(f"stop has {len(self.stop)} sequences; at most {MAX_STOP_SEQUENCES} are allowed")
        for text in self.stop:
            if not text or len(text) > MAX_STOP_CHARS:
                raise invalid(f"each stop sequence must have 1 to {MAX_STOP_CHARS} characters, got {len(text)}")

    def sampling(self, limits: GenerationLimits) -> SamplingParams:
        default = limits.sampling
        return SamplingParams(default.temperature if self.temperature is None else self.temperature,
                              default.top_p if self.top_p is None else self.top_p, self.seed)


def check_messages(messages: Sequence[Message]) -> None:
    if not messages:
        raise invalid("messages is empty: it needs at least one message")
    for i, message in enumerate(messages):
        role = message.get("role")
        if role not in ROLES:
            raise invalid(f"messages[{i}].role must be one of {', '.join(ROLES)}, got {role!r}")
        if not isinstance(message.get("content"), str):
            raise invalid(f"messages[{i}].content must be a string")


def prompt_tokens(engine: Engine, request: GenerationRequest) -> list[int]:
    """The request's prompt as tokens (runs the chat template for messages). CPU work: call it off the loop."""
    if request.messages is not None:
        try:
            text = engine.render_chat(request.messages)
        except Exception as exc:  # a template that raise_exception()s on this conversation
            raise invalid(f"the model's chat template refused these messages: {exc}") from None
        return engine.tokenize(text, special=True)
    return engine.tokenize(request.prompt or "", special=False)


def output_budget(request: GenerationRequest, limits: GenerationLimits, context: int, prompt: int) -> int:
    """max_tokens asked for, else the model's default within the room the context leaves (at least 1)."""
    if request.max_tokens is not None:
        return request.max_tokens
    return max(1, min(limits.max_tokens, context - prompt))
