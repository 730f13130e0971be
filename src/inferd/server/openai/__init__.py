"""OpenAI-compatible routes (models, embeddings, chat completions, completions) under ``/openai/v1``: they only
translate OpenAI's bodies to V2 requests on the one :meth:`~inferd.dataplane.DataPlane.infer` path and back."""
