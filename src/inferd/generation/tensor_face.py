"""A generative model seen as a tensor model (``text_input`` → ``text_output``, both BYTES, as Triton's LLM
backends), so that the V2 infer route, gRPC, asynchronous jobs and batch jobs reach it through the one inference
path. Each call waits for its whole generation; the generation scheduler underneath batches concurrent ones."""

from __future__ import annotations

import queue
from typing import Any

import numpy as np

from inferd.errors import InferError, invalid
from inferd.generation.request import GenerationRequest, output_budget, prompt_tokens
from inferd.generation.scheduler import GenerationEvent, GenerationScheduler
from inferd.signature import Signature, TensorSpec

SIGNATURE = Signature((TensorSpec("text_input", "BYTES", (1,)),), (TensorSpec("text_output", "BYTES", (1,)),))


class GenerativeRuntime:
    """See the module docstring: a runtime whose ``predict`` runs one generation."""

    def __init__(self, name: str, scheduler: GenerationScheduler) -> None:
        self.name = name
        self.scheduler = scheduler
        self.signature = SIGNATURE

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raw = inputs["text_input"].reshape(-1)[0]
        try:
            prompt = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
        except UnicodeDecodeError:
            raise invalid("text_input is not valid UTF-8") from None
        return {"text_output": np.array([self.generate(GenerationRequest(self.name, prompt=prompt)).encode()],
                                        dtype=object)}

    def generate(self, request: GenerationRequest) -> str:
        """One whole generation, waited for on this thread."""
        scheduler = self.scheduler
        tokens = prompt_tokens(scheduler.engine, request)
        budget = output_budget(request, scheduler.limits, scheduler.context, len(tokens))
        events: queue.Queue[Any] = queue.Queue()
        scheduler.submit(tokens, budget, request.sampling(scheduler.limits), request.stop, events.put)
        parts = []
        while True:
            event = events.get()
            if isinstance(event, InferError):
                raise event
            if isinstance(event, BaseException):
                raise event
            assert isinstance(event, GenerationEvent)
            parts.append(event.text)
            if event.finish_reason is not None:
                return "".join(parts)

    def close(self) -> None:
        """The scheduler is closed by whoever loaded the model."""
