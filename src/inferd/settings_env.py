"""The ``INFERD_*`` environment variables of the server settings, read the way pydantic-settings reads them, without
importing it (about a tenth of a second of every cold start, for one lookup per setting).

The rules are pydantic-settings' defaults for a prefix: a setting's variable is the prefix plus its name, matched
in any case (``INFERD_HTTP_PORT`` and ``inferd_http_port`` alike); an empty value is a value; a setting that holds
a list, a mapping or a model takes JSON, and JSON that does not parse is an error (unless the setting also takes a
plain value: then the text goes to validation as it is); every other value goes to validation as text.
``tests/unit/test_settings_env.py`` checks that this and pydantic-settings build equal settings.
"""

from __future__ import annotations

import json
import os
import types
from collections.abc import Mapping, Sequence
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel

_CONTAINERS = (list, tuple, set, frozenset, dict, Sequence, Mapping)


class EnvJSONError(ValueError):
    """A variable of a setting that takes JSON holds text that does not parse."""

    def __init__(self, setting: str, cause: json.JSONDecodeError) -> None:
        super().__init__(f"{setting}: {cause}")
        self.setting = setting
        self.cause = cause


def environment_values(model: type[BaseModel], prefix: str,
                       environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The values ``environ`` (default ``os.environ``) gives ``model``'s fields, by field name."""
    env = {name.lower(): value for name, value in (os.environ if environ is None else environ).items()}
    found: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        text = env.get((prefix + name).lower())
        if text is None:
            continue
        complex_, plain_allowed = _takes_json(field.annotation)
        if not complex_:
            found[name] = text
            continue
        try:
            found[name] = json.loads(text)
        except json.JSONDecodeError as exc:
            if not plain_allowed:
                raise EnvJSONError(name, exc) from None
            found[name] = text
    return found


def _takes_json(annotation: Any) -> tuple[bool, bool]:
    """(whether a value of this type is JSON in the environment, whether plain text is also allowed)."""
    if get_origin(annotation) in (Union, types.UnionType):
        arms = [arm for arm in get_args(annotation) if arm is not type(None)]
        complex_arms = [arm for arm in arms if _is_complex(arm)]
        return bool(complex_arms), len(complex_arms) < len(arms)
    return _is_complex(annotation), False


def _is_complex(annotation: Any) -> bool:
    target = get_origin(annotation) or annotation
    if not isinstance(target, type) or issubclass(target, (str, bytes)):
        return False
    return issubclass(target, BaseModel) or issubclass(target, _CONTAINERS)
