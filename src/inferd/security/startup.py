"""What the server decides about security before it binds: its keys, and whether it may run without them.

Without keys every call is open, which is only allowed on a loopback address (127.0.0.0/8, ::1, localhost).
Bound anywhere else without keys, the server refuses to start unless told explicitly
(``--allow-unauthenticated`` / ``INFERD_ALLOW_UNAUTHENTICATED=true``), and then says so loudly in its log.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import TYPE_CHECKING

from inferd.security.auth import Authenticator
from inferd.security.keys import KeysError, load_keys

if TYPE_CHECKING:
    from inferd.settings import ServerSettings

log = logging.getLogger(__name__)


class SecurityConfigError(ValueError):
    """The security settings do not allow the server to start; the message says what to change."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name other than localhost: it may resolve to anything
        return False


def build_authenticator(settings: ServerSettings) -> Authenticator | None:
    """The configured keys' :class:`Authenticator`, or None when there are none and that is allowed."""
    try:
        keys = load_keys(settings.api_keys_file, list(settings.api_keys))
    except KeysError as exc:
        raise SecurityConfigError(str(exc)) from None
    if keys:
        log.info("API keys required: %d key(s) configured", len(keys))
        return Authenticator(keys)
    if is_loopback(settings.host):
        return None
    if not settings.allow_unauthenticated:
        raise SecurityConfigError(
            f"refusing to serve on {settings.host} without API keys: anyone who can reach it could run and "
            "manage models. Configure keys (--api-keys-file / INFERD_API_KEYS_FILE or INFERD_API_KEYS; "
            "create one with `inferd keys create`), bind to 127.0.0.1, or pass --allow-unauthenticated "
            "(INFERD_ALLOW_UNAUTHENTICATED=true) if something in front of it authenticates callers.")
    log.warning("SECURITY WARNING: serving on %s WITHOUT AUTHENTICATION (allow_unauthenticated is set): "
                "anyone who can reach this address can run inference, read every job and load or unload "
                "models.", settings.host)
    return None
