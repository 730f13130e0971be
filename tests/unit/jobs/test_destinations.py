"""Callback destinations (issue 23, SSRF): what ``async_callback_allowed`` lets through, in every form an address
can be written, and the check after DNS resolution with the real resolver."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest

from inferd.jobs.destinations import Destinations, RefusedDestinationError
from inferd.security.startup import SecurityConfigError

REFUSED_FORMS = [
    "http://127.0.0.1:27999/internal/admin?x=1",  # the probe's own
    "http://localhost/",  # not listed (a name: it would need listing, and then its address too)
    "http://10.1.2.3/", "http://172.16.0.1/", "http://192.168.1.1/",  # private
    "http://169.254.169.254/latest/meta-data/",  # link-local (cloud metadata)
    "http://100.64.0.1/",  # shared address space
    "http://0.0.0.0:8080/", "http://[::]/",  # unspecified: the local host on Linux
    "http://[::1]/", "http://[fe80::1]/", "http://[fd00::1]/",
    "http://[::ffff:127.0.0.1]/", "http://[::ffff:7f00:1]/", "http://[::127.0.0.1]/",  # IPv4 inside IPv6
    "http://[64:ff9b::7f00:1]/", "http://[2002:7f00:1::]/",
    "http://2130706433/", "http://0x7f000001/", "http://0177.0.0.1/", "http://127.1/", "http://0x7f.1/",  # decimal..
    "http://127.0.0.1./", "http://224.0.0.1/",
    "http://8.8.8.8/",  # global, but not listed
    "http://hooks.example.com.evil.test/", "http://evil.test/?hooks.example.com",
    "https://api.example.org/callbacksx", "http://api.example.org/callbacks/",  # prefix: path and scheme
    "ftp://hooks.example.com/", "hooks.example.com", "http:///x", "http://hooks.example.com\\@127.0.0.1/",
    "http://hooks.example.com /", "http://hooks.example.com:99999/",
]
ALLOWED = ["hooks.example.com", "https://api.example.org/callbacks/", "203.0.113.0/24"]


@pytest.mark.parametrize("url", REFUSED_FORMS)
def test_refused_forms(url):
    with pytest.raises(RefusedDestinationError) as refused:
        Destinations(ALLOWED).check(url)
    message = str(refused.value)
    assert "async_callback_allowed" in message or "http:// or https://" in message or "valid" in message \
        or "backslashes" in message, message


@pytest.mark.parametrize("url", ["http://hooks.example.com/x", "https://HOOKS.Example.com.:8443/y?z=1",
                                 "https://api.example.org/callbacks/", "https://api.example.org/callbacks/a/b",
                                 "https://api.example.org:443/callbacks/a", "http://203.0.113.7:81/"])
def test_allowed_forms(url):
    Destinations(ALLOWED).check(url)


@pytest.mark.parametrize(("entry", "url"), [
    ("127.0.0.1", "http://127.0.0.1:8080/done"), ("127.0.0.0/8", "http://127.0.0.2/"), ("[::1]", "http://[::1]:9/"),
    ("127.0.0.1", "http://2130706433/"), ("127.0.0.1", "http://[::ffff:127.0.0.1]/"),
    ("http://127.0.0.1:9/hook", "http://127.0.0.1:9/hook/x"), ("10.0.0.5", "https://10.0.0.5/"),
])
def test_non_global_addresses_pass_when_listed(entry, url):
    Destinations([entry]).check(url)


def test_a_listed_url_prefix_on_an_address_allows_that_prefix_only():
    allowed = Destinations(["http://127.0.0.1:9/hook"])
    allowed.check("http://127.0.0.1:9/hook?job=1")
    for other in ("http://127.0.0.1:9/hookx", "http://127.0.0.1:9/admin", "http://127.0.0.1:10/hook"):
        with pytest.raises(RefusedDestinationError, match="127.0.0.1 \\(a loopback address\\)"):
            allowed.check(other)


def test_the_operators_own_callback_urls_count_as_listed():
    allowed = Destinations([], ["http://127.0.0.1:9/default"])
    allowed.check("http://127.0.0.1:9/default")
    with pytest.raises(RefusedDestinationError):
        allowed.check("http://127.0.0.1:9/elsewhere")


def test_nothing_is_allowed_by_default():
    with pytest.raises(RefusedDestinationError, match="not an allowed destination: list it"):
        Destinations([]).check("https://hooks.example.com/")


@pytest.mark.parametrize("entry", ["ftp://x/", "not a host", "10.0.0.0/33", "http://"])
def test_a_bad_entry_stops_the_server_naming_the_setting(entry):
    with pytest.raises(SecurityConfigError, match=f"async_callback_allowed: {entry!r}"):
        Destinations([entry])


def test_dns_resolution_is_checked_with_the_real_resolver():
    """``localhost`` is listed by name but resolves to loopback: refused until its address is listed too."""
    with pytest.raises(RefusedDestinationError) as refused:
        asyncio.run(Destinations(["localhost"]).pin("http://localhost:8080/done"))
    assert "localhost resolves to" in str(refused.value)
    assert "(a loopback address), not an allowed destination" in str(refused.value)
    assert "async_callback_allowed" in str(refused.value)
    target = asyncio.run(Destinations(["localhost", "127.0.0.1", "::1"]).pin("http://localhost:8080/done?a=b"))
    assert target.address.is_loopback
    assert target.host_header == "localhost:8080"
    assert target.url in ("http://127.0.0.1:8080/done?a=b", "http://[::1]:8080/done?a=b")


def test_only_an_allowed_address_among_several_is_chosen():
    async def mixed(host, port):
        return [ipaddress.ip_address("10.9.9.9"), ipaddress.ip_address("8.8.4.4")]

    target = asyncio.run(Destinations(["hooks.example.com"], resolver=mixed).pin("https://hooks.example.com/x"))
    assert (target.url, target.host_header, target.sni_hostname) == ("https://8.8.4.4:443/x",
                                                                     "hooks.example.com", "hooks.example.com")


def test_an_ipv6_literal_is_pinned_with_brackets():
    target = asyncio.run(Destinations(["[::1]"]).pin("http://[::1]:9/x"))
    assert (target.url, target.host_header, target.sni_hostname) == ("http://[::1]:9/x", "[::1]:9", None)


@pytest.mark.parametrize("address", ["::ffff:127.0.0.1", "64:ff9b::7f00:1", "2002:a00:1::", "::10.0.0.1", "fe80::1",
                                     "0.0.0.0", "100.64.1.1", "224.0.0.251", "198.18.0.1"])
def test_a_listed_name_that_resolves_to_a_non_global_address_in_any_form_is_refused(address):
    async def resolver(host, port):
        return [ipaddress.ip_address(address)]

    with pytest.raises(RefusedDestinationError, match="not an allowed destination: list the address"):
        asyncio.run(Destinations(["hooks.example.com"], resolver=resolver).pin("https://hooks.example.com/"))


def test_a_url_prefix_on_an_address_does_not_open_that_address_to_every_name_resolving_there():
    """The server's own callback URL is on loopback; a listed name whose DNS answer turns loopback reaches that
    URL's port and path only, not the rest of the machine."""
    async def loopback(host, port):
        return [ipaddress.ip_address("127.0.0.1")]

    allowed = Destinations(["hooks.example.com"], ["http://127.0.0.1:9/default"], resolver=loopback)
    assert asyncio.run(allowed.pin("http://hooks.example.com:9/default")).url == "http://127.0.0.1:9/default"
    for other in ("http://hooks.example.com:8080/default", "http://hooks.example.com:9/admin",
                  "https://hooks.example.com:9/default"):
        with pytest.raises(RefusedDestinationError, match="127.0.0.1 \\(a loopback address\\)"):
            asyncio.run(allowed.pin(other))
