"""Endpoints: a name in front of variants with weights, shadow traffic, and staged rollout with rollback.

See docs/endpoints.md. The DataPlane resolves an endpoint name once per request (:meth:`Endpoints.route`);
every transport gets endpoints through it.
"""

from inferd.endpoints.model import Endpoint, Variant, parse_endpoint
from inferd.endpoints.service import Endpoints
from inferd.endpoints.store import EndpointStore

__all__ = ["Endpoint", "EndpointStore", "Endpoints", "Variant", "parse_endpoint"]
