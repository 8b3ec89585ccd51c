"""The client's address, as the audit and `source-ip` limits see it (DESIGN.md 2.10). Pure: the
trusted proxies are the caller's to pass (`gateway.v1.auth.client_address` passes the setting).

Invariant: `X-Forwarded-For` is believed only when the peer is a trusted proxy
(`VMX_TRUSTED_PROXIES`), and then only its nearest hop: read from the right, the first address
that is not itself a trusted proxy, which is what the last trusted proxy saw. Entries further
left were written by the client and are never used, so a client cannot pick its own counter by
sending the header. Anything unreadable leaves the peer's own address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from functools import cache

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@cache
def _networks(entries: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(entry.strip(), strict=False) for entry in entries if entry.strip())


def _parse(text: str) -> Address | None:
    """An address as proxies write it: `1.2.3.4`, `1.2.3.4:5678`, `::1`, `[::1]:5678`; IPv4-mapped
    IPv6 addresses as the IPv4 address they carry. None when it is none of these."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def forwarded_client_address(
    *, peer: str | None, forwarded_for: str | None, trusted_proxies: Sequence[str]
) -> str | None:
    """The client behind `peer`: the nearest `forwarded_for` hop not in `trusted_proxies` (networks)."""
    if not peer or not forwarded_for or not trusted_proxies:
        return peer
    networks = _networks(tuple(trusted_proxies))

    def trusted(address: Address | None) -> bool:
        return address is not None and any(address in network for network in networks)

    if not trusted(_parse(peer)):
        return peer
    nearest: Address | None = None
    # From the right: each entry was written by the proxy after it, so it is believed as long as
    # that proxy is ours. The first one that is not ours is the client; what it wrote is not read.
    for hop in reversed(forwarded_for.split(",")):
        nearest = _parse(hop)
        if not trusted(nearest):
            break
    return str(nearest) if nearest is not None else peer
