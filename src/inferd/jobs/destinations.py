"""Where callbacks may go: the ``async_callback_allowed`` setting, checked when a job is submitted and again,
after DNS resolution, when its callback is delivered.

A caller names a callback URL, and the server POSTs to it: without a check that is a request forgery (SSRF)
to anything the server can reach, its own loopback and private network included. So:

- a URL is allowed only when an entry of the setting lists it: a host (``hooks.example.com``), an IP address
  (``10.0.0.5``, ``[fd00::5]``) or network (``10.0.0.0/24``), any port and path; or a URL prefix
  (``https://hooks.example.com/inferd/``: that scheme, host and port, and a path under it). The server's own
  ``async_callback_url`` and ``async_model_callback_urls`` count as listed;
- an address that is not global (loopback, private, link-local, shared, reserved, unspecified, multicast, and
  IPv4 written as IPv6) is refused unless an address or network entry (or a URL prefix on that address)
  covers it; a host name that resolves to one is refused the same way. IPv4 in any form the resolver takes
  (``2130706433``, ``0x7f.1``, ``127.1``) is read as the address it is;
- a delivery connects to the very address that was checked (the URL is rewritten to it; ``Host`` and TLS
  SNI and certificate checks keep the name), so a DNS answer that changes between check and connect
  (rebinding) cannot send it elsewhere. Redirects are not followed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from urllib.parse import SplitResult, urlsplit

from inferd.security.startup import SecurityConfigError

SETTING = "async_callback_allowed"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]

_DEFAULT_PORTS = {"http": 80, "https": 443}
_NUMERIC_IPV4 = re.compile(r"^[0-9a-fx.]+$")
_UNSAFE = re.compile(r"[\x00-\x20\x7f\\]")
_HOST_NAME = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,62})(?:\.[a-z0-9_-]{1,63})*$")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class RefusedDestinationError(ValueError):
    """A callback URL the server will not call; the message says why and names the setting."""


@dataclass(frozen=True, slots=True)
class Target:
    """A checked URL, pinned to one checked address: what to send and to where."""

    url: str
    """The URL with its host replaced by the checked address."""
    host_header: str
    """The ``Host`` header: the URL's own host (and port when not the default)."""
    sni_hostname: str | None
    """For https to a host name: the name TLS sends and checks the certificate against."""
    address: IPAddress


@dataclass(frozen=True, slots=True)
class _Url:
    scheme: str
    host: str
    """Lower case, no trailing dot, IDNA-encoded; an IP address in its canonical form."""
    address: IPAddress | None
    """The host as an IP address, when it is one."""
    port: int
    path: str
    query: str

    def origin(self) -> tuple[str, str, int]:
        return self.scheme, self.host, self.port


@dataclass(frozen=True, slots=True)
class _Prefix:
    url: _Url

    def allows(self, url: _Url) -> bool:
        if url.origin() != self.url.origin():
            return False
        base = self.url.path
        return base in ("", "/") or url.path == base or url.path.startswith(base.rstrip("/") + "/")


class Destinations:
    """The allowed callback destinations (``async_callback_allowed`` plus the server's own callback URLs)."""

    def __init__(self, allowed: Iterable[str], configured_urls: Iterable[str] = (),
                 resolver: Resolver | None = None) -> None:
        """``allowed``: the setting's entries; ``configured_urls``: the operator's own callback URLs, allowed as
        URL prefixes. Raises :class:`SecurityConfigError` naming an entry that is neither a host, an address,
        a network nor an http(s) URL."""
        self.hosts: set[str] = set()
        self.networks: list[IPNetwork] = []
        self.prefixes: list[_Prefix] = []
        for entry in allowed:
            self._add(entry, SETTING)
        for url in configured_urls:
            self._add(url, "async_callback_url / async_model_callback_urls")
        self._resolve = resolver or resolve

    def _add(self, entry: str, where: str) -> None:
        text = entry.strip()
        try:
            if "://" in text:
                self.prefixes.append(_Prefix(parse(text)))
                return
            if "/" in text:
                self.networks.append(ipaddress.ip_network(text.strip("[]"), strict=False))
                return
            host, address = _host(text.strip("[]") if text.startswith("[") else text)
        except (RefusedDestinationError, ValueError) as exc:
            raise SecurityConfigError(f"{where}: {entry!r} is neither a host, an IP address or network, nor "
                                      f"an http(s) URL prefix ({exc})") from None
        if address is not None:
            self.networks.append(ipaddress.ip_network(address))
        else:
            self.hosts.add(host)

    def check(self, url: str) -> None:
        """Whether ``url`` may be a callback, as far as can be told without DNS (at submission): refused with
        :class:`RefusedDestinationError` when it is not an http(s) URL, not listed, or an address not allowed."""
        self._listed(url, parse(url))

    async def pin(self, url: str) -> Target:
        """Check ``url``, resolve its host, and choose an address the setting allows (at delivery)."""
        parsed = self._listed(url, parse(url))
        if parsed.address is not None:
            return _target(parsed, parsed.address)
        try:
            addresses = await self._resolve(parsed.host, parsed.port)
        except OSError as exc:  # no such host (now): an attempt that failed, retried like a refused connection
            raise OSError(f"cannot resolve {parsed.host}: {exc}") from None
        refused = []
        for address in addresses:  # the first one allowed; a refused one is never connected to
            why = self._why_not(address, parsed)
            if why is None:
                return _target(parsed, address)
            refused.append(why)
        raise RefusedDestinationError(f"callback URL {url!r}: {parsed.host} resolves to "
                                      f"{'; '.join(refused) or 'no address'}")

    def _listed(self, given: str, url: _Url) -> _Url:
        if url.address is not None:
            if self._covers(url.address) or any(p.allows(url) for p in self.prefixes):
                return url
            raise RefusedDestinationError(f"callback URL {given!r}: address {_describe(url.address)} is not an "
                                          f"allowed destination: list the address or its network in {SETTING}")
        if url.host in self.hosts or any(p.allows(url) for p in self.prefixes):
            return url
        raise RefusedDestinationError(f"callback URL {given!r}: host {url.host} is not an allowed destination: "
                                      f"list it (or a URL prefix) in {SETTING}")

    def _covers(self, address: IPAddress) -> bool:
        """Whether an address (or network) entry lists ``address``."""
        plain = _unmapped(address)
        return any(candidate in network for network in self.networks for candidate in {plain, address}
                   if candidate.version == network.version)

    def _why_not(self, address: IPAddress, url: _Url) -> str | None:
        """None when ``url``, whose listed host name resolved to ``address``, may be called there, else why not
        (naming the setting). A URL prefix on that address allows only its own scheme, port and path."""
        if public(address) or self._covers(address):
            return None
        plain = _unmapped(address)
        for prefix in self.prefixes:
            listed = prefix.url.address
            if listed in (plain, address) and prefix.allows(replace(url, host=prefix.url.host, address=listed)):
                return None
        return f"{_describe(address)}, not an allowed destination: list the address or its network in {SETTING}"


def parse(url: str) -> _Url:
    """An http(s) URL's parts, normalised; :class:`RefusedDestinationError` for anything else."""
    if _UNSAFE.search(url):
        raise RefusedDestinationError(f"callback URL {url!r} holds spaces, control characters or backslashes")
    try:
        parts: SplitResult = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise RefusedDestinationError(f"callback URL {url!r} is not a valid URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise RefusedDestinationError(f"callback URL must be an http:// or https:// URL with a host, got {url!r}")
    host, address = _host(parts.hostname)
    return _Url(scheme, host, address, port or _DEFAULT_PORTS[scheme], parts.path, parts.query)


def _host(name: str) -> tuple[str, IPAddress | None]:
    """The canonical host name, and the address when it is one (IPv4 in any form ``inet_aton`` reads)."""
    host = name.lower().rstrip(".")
    if not host:
        raise RefusedDestinationError("empty host")
    try:
        address: IPAddress = ipaddress.ip_address(host)
    except ValueError:
        if _NUMERIC_IPV4.match(host):
            try:
                address = ipaddress.IPv4Address(socket.inet_aton(host))
            except OSError:
                pass
            else:
                return str(address), address
        return _host_name(name, host), None
    return str(address), address


def _host_name(name: str, host: str) -> str:
    try:
        encoded = host.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise RefusedDestinationError(f"host {name!r} is not a valid host name: {exc}") from None
    if not _HOST_NAME.match(encoded):
        raise RefusedDestinationError(f"host {name!r} is not a valid host name")
    return encoded


def _unmapped(address: IPAddress) -> IPAddress:
    """The IPv4 address inside an IPv6 one that carries it (IPv4-mapped ``::ffff:127.0.0.1``, IPv4-compatible
    ``::127.0.0.1``, 6to4, NAT64 ``64:ff9b::7f00:1``), else the address itself."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.sixtofour is not None:
            return address.sixtofour
        if (address in _IPV4_COMPATIBLE and int(address) > 1) or address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def public(address: IPAddress) -> bool:
    """Whether an address is globally reachable (not loopback, private, link-local, multicast, ...)."""
    plain = _unmapped(address)
    return plain.is_global and not plain.is_multicast


def _describe(address: IPAddress) -> str:
    """``127.0.0.1 (a loopback address)``, or the address alone when it is global."""
    plain = _unmapped(address)
    if public(address):
        return str(address)
    kind = next((k for k in ("loopback", "link_local", "unspecified", "multicast", "private", "reserved")
                 if getattr(plain, f"is_{k}")), "non-global")
    inside = f", IPv4 {plain} inside" if plain != address else ""
    return f"{address} (a {kind.replace('_', '-')} address{inside})"


def _target(url: _Url, address: IPAddress) -> Target:
    literal = f"[{address}]" if address.version == 6 else str(address)
    default = url.port == _DEFAULT_PORTS[url.scheme]
    host = f"[{url.host}]" if url.address is not None and url.address.version == 6 else url.host
    query = f"?{url.query}" if url.query else ""
    return Target(f"{url.scheme}://{literal}:{url.port}{url.path or '/'}{query}",
                  host if default else f"{host}:{url.port}",
                  url.host if url.scheme == "https" and url.address is None else None, address)


async def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to (TCP), in the resolver's order."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    found: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in found:
            found.append(address)
    return found
