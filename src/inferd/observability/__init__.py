"""Observability: Prometheus metrics (:mod:`.metrics`), request ids and the access log
(:mod:`.request_context`), JSON logs (:mod:`.logging`) and data capture (:mod:`.capture`).

Nothing here registers metrics or configures logging at import; the server's composition root
(:mod:`inferd.server.runner`) and the CLI entry point create and configure what they use. See
docs/observability.md.
"""
