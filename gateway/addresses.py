"""The client's address, as the audit and `source-ip` limits see it (DESIGN.md 2.10).

Invariant: `X-Forwarded-For` is believed only when the peer is a trusted proxy
(`VMX_TRUSTED_PROXIES`), and then only its nearest hop: read from the right, the first address
that is not itself a trusted proxy, which is what the last trusted proxy saw. Entries further
left were written by the client and are never used, so a client cannot pick its own counter by
sending the header. Anything unreadable leaves the peer's own address.
"""

from __future__ import annotations

import ipaddress
from functools import cache

from django.conf import settings

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@cache
def _networks(entries: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(entry.strip(), strict=False) for entry in entries if entry.strip())


def client_address(*, peer: str | None, forwarded_for: str | None) -> str | None:
    if not peer or not forwarded_for or not settings.VMX_TRUSTED_PROXIES:
        return peer
    networks = _networks(tuple(settings.VMX_TRUSTED_PROXIES))

    def trusted(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(address in network for network in networks)

    try:
        if not trusted(ipaddress.ip_address(peer)):
            return peer
        hops = [ipaddress.ip_address(hop.strip()) for hop in forwarded_for.split(",")]
    except ValueError:
        return peer
    for hop in reversed(hops):
        if not trusted(hop):
            return str(hop)
    return str(hops[0])  # every hop is a proxy of ours: the farthest is the closest to a client
