"""The one REST failure mapping: every code's status, Retry-After on each 503 and 429, WWW-Authenticate on each
401, whether the failure is the core's (InferError) or the transport's (HTTPError); anything else is a 500."""

from __future__ import annotations

import orjson
import pytest

from inferd.errors import ErrorCode, InferError
from inferd.server.rest.errors import HTTPError, failure_parts
from inferd.server.status import HTTP_STATUS


@pytest.mark.parametrize("code", list(ErrorCode))
def test_every_code_maps_with_the_headers_its_status_needs(code):
    status, headers, body = failure_parts(InferError(code, "what went wrong"))
    named = dict(headers)
    assert status == HTTP_STATUS[code]
    assert orjson.loads(body) == {"error": "what went wrong"}
    assert (b"retry-after" in named) == (status in (429, 503))
    assert (named.get(b"www-authenticate") == b"Bearer") == (status == 401)
    assert named[b"content-length"] == b"%d" % len(body)


def test_a_retry_time_given_is_kept():
    _, headers, _ = failure_parts(InferError(ErrorCode.UNAVAILABLE, "queue full", retry_after_s=7))
    assert dict(headers)[b"retry-after"] == b"7"


@pytest.mark.parametrize(("status", "retry", "challenge"), [(503, True, False), (429, True, False),
                                                             (401, False, True), (413, False, False)])
def test_transport_failures_follow_the_same_rules(status, retry, challenge):
    got, headers, _ = failure_parts(HTTPError(status, "no"))
    assert got == status
    assert (b"retry-after" in dict(headers)) == retry
    assert (b"www-authenticate" in dict(headers)) == challenge


def test_anything_else_is_a_500_naming_the_exception(caplog):
    status, _, body = failure_parts(ValueError("bad"), "a test")
    assert status == 500
    assert orjson.loads(body) == {"error": "internal server error: ValueError: bad"}
    assert "unexpected error answering a test" in caplog.text
