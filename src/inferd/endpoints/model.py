"""What an endpoint is: a name in front of variants (a model, maybe one version of it), each with a weight.

Plain frozen dataclasses, read from ``endpoints.toml`` or an admin request (:func:`parse_endpoint`) and written
back as the same mapping (:meth:`Endpoint.to_dict`). Checks that need the repository (does the model exist?)
are made by :func:`check_against`, so that the model can be built without one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from inferd.errors import invalid, not_found

NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")


@dataclass(frozen=True, slots=True)
class Variant:
    name: str
    model: str
    version: int | None = None
    """None: the model's newest ready version."""
    weight: float = 0.0
    """Share of live traffic, relative to the other live variants' weights."""
    shadow: bool = False
    """A shadow variant gets copies of requests, never the answer (``weight`` is then unused)."""
    sample: float = 100.0
    """Shadow only: the percentage of live requests copied to it."""

    @property
    def version_text(self) -> str | None:
        return None if self.version is None else str(self.version)

    @property
    def target(self) -> str:
        return self.model if self.version is None else f"{self.model}:{self.version}"

    def to_dict(self) -> dict[str, Any]:
        found: dict[str, Any] = {"name": self.name, "model": self.model}
        if self.version is not None:
            found["version"] = self.version
        if self.shadow:
            found["shadow"] = True
            found["sample"] = self.sample
        else:
            found["weight"] = self.weight
        return found


@dataclass(frozen=True, slots=True)
class Endpoint:
    name: str
    variants: tuple[Variant, ...]
    sticky: bool = False
    """Informational: a request's route key (header or parameter) makes it sticky whether or not this is set."""
    version: int = 0
    """The change counter (the ETag of the admin API): each accepted change adds one."""
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def live(self) -> tuple[Variant, ...]:
        return tuple(v for v in self.variants if not v.shadow)

    @property
    def shadows(self) -> tuple[Variant, ...]:
        return tuple(v for v in self.variants if v.shadow)

    def variant(self, name: str) -> Variant:
        """The variant named; NOT_FOUND naming the endpoint's variants."""
        for variant in self.variants:
            if variant.name == name:
                return variant
        listed = ", ".join(repr(v.name) for v in self.live)
        raise not_found(f"endpoint {self.name!r} has no variant {name!r}; its variants: {listed}")

    def with_weights(self, weights: Mapping[str, float]) -> Endpoint:
        """The same endpoint with these live variants' weights (the others keep theirs)."""
        variants = tuple(replace(v, weight=weights[v.name]) if v.name in weights else v for v in self.variants)
        return replace(self, variants=variants)

    def to_dict(self) -> dict[str, Any]:
        found: dict[str, Any] = {"name": self.name, "version": self.version,
                                 "variants": [v.to_dict() for v in self.variants]}
        if self.sticky:
            found["sticky"] = True
        return found


def parse_endpoint(name: str, spec: Mapping[str, Any], version: int = 0) -> Endpoint:
    """An endpoint from its mapping (a table of ``endpoints.toml`` or an admin request's body); INVALID_ARGUMENT
    naming what is wrong. Variants: a list of tables, or a table of tables keyed by variant name."""
    check_name(name, "endpoint")
    raw = spec.get("variants")
    if isinstance(raw, Mapping):
        raw = [{"name": key, **value} if isinstance(value, Mapping) else value for key, value in raw.items()]
    if not isinstance(raw, list) or not raw:
        raise invalid(f"endpoint {name!r}: 'variants' must be a non-empty list of variants")
    variants = tuple(_variant(name, item) for item in raw)
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise invalid(f"endpoint {name!r}: variant names repeat: {sorted({n for n in names if names.count(n) > 1})}")
    live = [v for v in variants if not v.shadow]
    total = sum(v.weight for v in live)
    if not live or not total > 0:
        raise invalid(f"endpoint {name!r}: the live variants' weights must sum to a positive number (they sum "
                      f"to {total:g})")
    return Endpoint(name, variants, bool(spec.get("sticky", False)), version)


def _variant(endpoint: str, item: Any) -> Variant:
    if not isinstance(item, Mapping):
        raise invalid(f"endpoint {endpoint!r}: each variant must be a table, got {item!r}")
    name, model = item.get("name"), item.get("model")
    if not isinstance(model, str) or not model:
        raise invalid(f"endpoint {endpoint!r}: each variant needs a 'model' (a model name), got {model!r}")
    model, _, pinned = model.partition(":")
    version = item.get("version", int(pinned) if pinned.isdigit() else None)
    if pinned and not pinned.isdigit():
        raise invalid(f"endpoint {endpoint!r}: {item.get('model')!r}: the version after ':' must be a number")
    if version is not None and (not isinstance(version, int) or isinstance(version, bool) or version < 1):
        raise invalid(f"endpoint {endpoint!r}: variant version must be a positive integer, got {version!r}")
    name = name if name is not None else (model if version is None else f"{model}-{version}")
    check_name(name, "variant")
    shadow = bool(item.get("shadow", False))
    weight = _number(endpoint, name, "weight", item.get("weight", 0.0 if shadow else 1.0))
    sample = _number(endpoint, name, "sample", item.get("sample", 100.0))
    if weight < 0 or not 0 <= sample <= 100:
        raise invalid(f"endpoint {endpoint!r}: variant {name!r}: weight must be >= 0 and sample within 0-100")
    return Variant(name, model, version, weight, shadow, sample)


def _number(endpoint: str, variant: str, key: str, value: Any) -> float:
    if isinstance(value, str) and value.endswith("%"):
        value = value[:-1]
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise invalid(f"endpoint {endpoint!r}: variant {variant!r}: {key} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise invalid(f"endpoint {endpoint!r}: variant {variant!r}: {key} must be finite")
    return number


def check_name(name: Any, what: str) -> None:
    if not isinstance(name, str) or not name or not set(name) <= NAME_CHARS or len(name) > 128:
        raise invalid(f"{what} name {name!r}: use 1 to 128 letters, digits, '_', '-' or '.'")


def check_against(endpoint: Endpoint, has_model: Callable[[str], bool],
                  has_version: Callable[[str, int], bool]) -> None:
    """Refuse an endpoint that shares a model's name, or a variant naming an unknown model or version
    (INVALID_ARGUMENT; NOT_FOUND for the unknown ones)."""
    if has_model(endpoint.name):
        raise invalid(f"endpoint {endpoint.name!r}: a model of the repository has that name; an endpoint and a "
                      f"model may not share one")
    for variant in endpoint.variants:
        if not has_model(variant.model):
            raise not_found(f"endpoint {endpoint.name!r}: variant {variant.name!r} names unknown model "
                            f"{variant.model!r}")
        if variant.version is not None and not has_version(variant.model, variant.version):
            raise not_found(f"endpoint {endpoint.name!r}: variant {variant.name!r}: model {variant.model!r} has no "
                            f"version {variant.version}")
