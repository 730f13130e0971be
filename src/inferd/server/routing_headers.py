"""The HTTP headers of endpoint routing, for every REST route: the request's forced variant and route key in, the
variant that answered out.

A variant is forced by ``x-inferd-variant``, SageMaker's ``X-Amzn-SageMaker-Target-Variant`` or Azure ML's
``azureml-model-deployment``; ``x-inferd-route-key`` makes a request sticky. The answer names its variant in
``x-inferd-variant`` (and ``/invocations`` also in SageMaker's ``X-Amzn-Invoked-Production-Variant``).
"""

from __future__ import annotations

from collections.abc import Iterable

from inferd.calls import Routing

FORCED = frozenset({b"x-inferd-variant", b"x-amzn-sagemaker-target-variant", b"azureml-model-deployment"})
KEY = b"x-inferd-route-key"
ANSWERED = "x-inferd-variant"
SAGEMAKER_ANSWERED = "X-Amzn-Invoked-Production-Variant"
_ANSWERED_LINE = ANSWERED.encode() + b": %s\r\n"
GRPC_FORCED = frozenset(name.decode() for name in FORCED)
GRPC_KEY = KEY.decode()


def routing_from_headers(headers: Iterable[tuple[bytes, bytes]]) -> Routing | None:
    """What the (lower-case) headers ask of an endpoint; None when they ask nothing."""
    routing = None
    for name, value in headers:
        if name in FORCED or name == KEY:
            routing = routing or Routing()
            text = value.decode("latin-1").strip()
            if name == KEY:
                routing.key = text
            else:
                routing.variant = text
    return routing


def answered_header(routing: Routing | None) -> dict[str, str]:
    """The response header naming the variant that answered (none when the request named no endpoint)."""
    if routing is None or routing.answered is None:
        return {}
    return {ANSWERED: routing.answered}


def answered_line(routing: Routing | None) -> bytes:
    """:func:`answered_header` as a header line for the connection's own routes."""
    if routing is None or routing.answered is None:
        return b""
    return _ANSWERED_LINE % routing.answered.encode("latin-1", "replace")
