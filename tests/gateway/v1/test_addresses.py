"""Which address a request counts under (`source-ip` limits, the audit)."""

from __future__ import annotations

import pytest

from gateway.v1.auth import client_address


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "expected"),
    [
        ("10.0.0.5", "203.0.113.7", "203.0.113.7"),  # the balancer says who connected to it
        ("10.0.0.5", "6.6.6.6, 203.0.113.7", "203.0.113.7"),  # the client's own header is ignored
        ("10.0.0.5", "203.0.113.7, 10.0.0.9", "203.0.113.7"),  # two proxies of ours
        ("192.0.2.1", "203.0.113.7", "192.0.2.1"),  # not a proxy of ours: the header is not believed
        ("10.0.0.5", "not-an-address", "10.0.0.5"),
        ("10.0.0.5", None, "10.0.0.5"),
        ("10.0.0.5", "10.0.0.9", "10.0.0.9"),
    ],
)
def test_forwarded_addresses_are_believed_only_from_trusted_proxies(settings, peer, forwarded_for, expected):
    settings.VMX_TRUSTED_PROXIES = ["10.0.0.0/8"]
    assert client_address(peer=peer, forwarded_for=forwarded_for) == expected


def test_without_trusted_proxies_the_peer_is_the_client(settings):
    settings.VMX_TRUSTED_PROXIES = []
    assert client_address(peer="10.0.0.5", forwarded_for="203.0.113.7") == "10.0.0.5"


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "expected"),
    [
        # Whatever a client writes further left, even unreadable, changes nothing.
        ("10.0.0.5", "garbage, 203.0.113.9", "203.0.113.9"),
        ("10.0.0.5", "203.0.113.9:4711", "203.0.113.9"),
        ("10.0.0.5", "[2001:db8::7]:4711", "2001:db8::7"),
        ("::ffff:10.0.0.5", "203.0.113.9", "203.0.113.9"),  # an IPv4 proxy seen through an IPv6 socket
        ("10.0.0.5", "::ffff:203.0.113.9", "203.0.113.9"),
        # The nearest entry unreadable: nothing to believe, the proxy's own address stays.
        ("10.0.0.5", "203.0.113.9, garbage", "10.0.0.5"),
    ],
)
def test_forwarded_addresses_are_read_from_the_right_as_proxies_write_them(settings, peer, forwarded_for, expected):
    settings.VMX_TRUSTED_PROXIES = ["10.0.0.0/8"]
    assert client_address(peer=peer, forwarded_for=forwarded_for) == expected
