"""A generative model seen as a tensor model (``text_input`` → ``text_output``, BYTES, one row per prompt, as
Triton's LLM backends), so that the V2 infer route, gRPC, asynchronous jobs and batch jobs reach it through the one
inference path. Each call waits for the whole answers of its rows; their generations run side by side in the
generation scheduler (at most ``slots`` of one call at a time, so a large batch never floods the queue)."""

from __future__ import annotations

import queue
from collections.abc import Sequence

import numpy as np

from inferd.errors import invalid
from inferd.generation.request import GenerationRequest, output_budget, prompt_tokens
from inferd.generation.scheduler import GenerationEvent, GenerationScheduler, Ticket
from inferd.signature import Signature, TensorSpec

SIGNATURE = Signature((TensorSpec("text_input", "BYTES", (-1,)),), (TensorSpec("text_output", "BYTES", (-1,)),))


class GenerativeRuntime:
    """See the module docstring: a runtime whose ``predict`` runs one generation per row."""

    def __init__(self, name: str, scheduler: GenerationScheduler) -> None:
        self.name = name
        self.scheduler = scheduler
        self.signature = SIGNATURE

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        prompts = []
        for i, raw in enumerate(inputs["text_input"].reshape(-1)):
            try:
                prompts.append(raw.decode("utf-8") if isinstance(raw, bytes) else str(raw))
            except UnicodeDecodeError:
                raise invalid(f"text_input[{i}] is not valid UTF-8") from None
        texts = self.generate([GenerationRequest(self.name, prompt=p) for p in prompts])
        out = np.empty(len(texts), dtype=object)
        out[:] = [t.encode("utf-8") for t in texts]
        return {"text_output": out}

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        """Whole generations, waited for on this thread; the first failure fails the call (and stops the rest)."""
        scheduler = self.scheduler
        events: queue.Queue[tuple[int, GenerationEvent | BaseException]] = queue.Queue()
        parts: list[list[str]] = [[] for _ in requests]
        tickets: list[Ticket] = []

        def submit(index: int) -> None:
            request = requests[index]
            request.check()
            tokens = prompt_tokens(scheduler.engine, request)
            budget = output_budget(request, scheduler.limits, scheduler.context, len(tokens))
            tickets.append(scheduler.submit(tokens, budget, request.sampling(scheduler.limits), request.stop,
                                            lambda event: events.put((index, event))))

        following = iter(range(len(requests)))
        running = 0
        try:
            for index in following:
                submit(index)
                running += 1
                if running >= scheduler.engine.slots:
                    break
            while running:
                index, event = events.get()
                if isinstance(event, BaseException):
                    raise event
                parts[index].append(event.text)
                if event.finish_reason is not None:
                    running -= 1
                    for index in following:
                        submit(index)
                        running += 1
                        break
        finally:
            for ticket in tickets:
                ticket.cancel()
        return ["".join(p) for p in parts]

    def close(self) -> None:
        """The scheduler is closed by whoever loaded the model."""
