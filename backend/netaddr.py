"""Addresses and CIDR lists: one parser for the server's `allowed_ips` / `trusted_proxies`, an API
key's `ips=`, and the configuration. An IPv4 address seen as IPv6 (`::ffff:10.0.0.1`, what a
dual-stack socket reports) is treated as the IPv4 address it is, so IPv4 ranges match it."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_ip(text: str) -> IPAddress | None:
    """The address in `text` (brackets and spaces allowed), unwrapped from IPv4-mapped IPv6;
    None when it is not an address."""
    try:
        ip = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def normalize_network(text: str) -> str:
    """`10.1.2.3/8` -> `10.0.0.0/8`; a bare address is its own /32 or /128. ValueError otherwise."""
    return str(ipaddress.ip_network(text, strict=False))


def normalize_address(text: str) -> str:
    """The canonical spelling of one address; ValueError when it is not one."""
    return str(ipaddress.ip_address(text))


def networks(cidrs: Iterable[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


def ip_in(ip: IPAddress | None, nets: Iterable[Network]) -> bool:
    return ip is not None and any(ip.version == n.version and ip in n for n in nets)


def address_in(address: str, cidrs: Iterable[str]) -> bool:
    """Whether the address (text) lies in one of the ranges (text); False for a non-address."""
    return ip_in(parse_ip(address), networks(cidrs))


def client_address(peer: str, forwarded_for: list[str], trusted_proxies: Iterable[Network]) -> str:
    """The address a connection is accounted to (security.md, Lockout): the TCP peer, unless the
    peer is a trusted proxy; then the right-most X-Forwarded-For entry that is not itself a
    trusted proxy. Entries left of that one are the client's own words and are never believed."""
    trusted = tuple(trusted_proxies)
    peer_ip = parse_ip(peer)
    address = str(peer_ip) if peer_ip is not None else peer
    if not ip_in(peer_ip, trusted):
        return address
    entries = [e.strip() for header in forwarded_for for e in header.split(",") if e.strip()]
    for entry in reversed(entries):
        ip = parse_ip(entry)
        if ip is None:
            return address          # a garbled header: account the request to the proxy itself
        if not ip_in(ip, trusted):
            return str(ip)
        address = str(ip)
    return address


def lockout_key(address: str) -> str:
    """What the lockout counts an address as: an IPv4 address itself, an IPv6 address its /64
    (one subscriber's prefix: one client holds all of it). Anything else as it is."""
    ip = parse_ip(address)
    if ip is None:
        return address
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    ip = parse_ip(host)
    return ip is not None and ip.is_loopback
