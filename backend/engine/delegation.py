"""Delegation limits: a credential never creates more than it is (security.md, Identity and
delegation; Vault's rule for child tokens).

A key made through a limited credential (a key with `kg=`, `expires=`, `ips=` or `rate=`, or a
token) inherits each limit it leaves out and may not exceed any it gives; the same holds for a
key such a credential rotates (the new secret would be a credential in its hands). Managing
users and lockouts needs a credential without a KG scope.
"""

from __future__ import annotations

import ipaddress
from typing import Any, NamedTuple

from ..display import iso
from ..errors import CommandError, PermissionDenied
from ..language.parser import Invocation
from .policy import ROLE_RANK, Rights, Session


class KeyLimits(NamedTuple):
    role: str
    kgs: tuple[str, ...]              # empty: every KG
    expires_at: float | None
    ips: tuple[str, ...]              # empty: any address
    rate: tuple[int, int] | None      # (requests, window in seconds)


def within_creator(rights: Rights, wanted: KeyLimits, *, never_expires: bool = False) -> KeyLimits:
    """`wanted`, with the limits it leaves out taken from the caller's credential; CommandError
    when it asks for more than that credential has (`never_expires`: `expires=never` was given)."""
    if never_expires and rights.expires_at is not None:
        raise CommandError(f"Exceeds the limits of the credential in use: expiry later than {iso(rights.expires_at)}")
    kgs = wanted.kgs or (tuple(sorted(rights.scope)) if rights.scope is not None else ())
    expires_at = wanted.expires_at if wanted.expires_at is not None else rights.expires_at
    ips = wanted.ips or rights.ips
    rate = wanted.rate or rights.rate
    limited = KeyLimits(wanted.role, kgs, expires_at, ips, rate)
    problem = exceeds(rights, limited)
    if problem:
        raise CommandError(f"Exceeds the limits of the credential in use: {problem}")
    return limited


def exceeds(rights: Rights, key: KeyLimits) -> str | None:
    """What in `key` goes beyond the caller's credential, or None."""
    if ROLE_RANK[key.role] > ROLE_RANK[rights.role]:
        return f"role '{key.role}' above '{rights.role}'"
    if rights.scope is not None:
        if not key.kgs:
            return "every knowledge graph, where it reaches " + (", ".join(sorted(rights.scope)) or "none")
        outside = sorted(set(key.kgs) - rights.scope)
        if outside:
            return f"knowledge graph '{outside[0]}' is outside its scope"
    if rights.expires_at is not None and (key.expires_at is None or key.expires_at > rights.expires_at):
        return f"expiry later than {iso(rights.expires_at)}"
    if rights.ips:
        outside = [net for net in key.ips or ("0.0.0.0/0",) if not _network_within(net, rights.ips)]
        if outside:
            return f"address range '{outside[0]}' is outside {','.join(rights.ips)}"
    if rights.rate is not None:
        limit, window = rights.rate
        if key.rate is None or key.rate[0] * window > limit * key.rate[1]:
            return f"a rate above {limit}/{window}s"
    return None


def key_limits(row: dict[str, Any], kgs: list[str]) -> KeyLimits:
    """The limits of a stored key (its KG list read apart: `kgs`)."""
    return KeyLimits(row["role"], tuple(kgs) if row["scoped"] else (), row["expires_at"],
                     tuple(row.get("ips") or ()), tuple(row["rate"]) if row.get("rate") else None)


def unscoped_only(what: str):
    """An extra check (handlers.base.ExtraCheck): `what` needs a credential without a KG scope."""
    def check(session: Session, rights: Rights, inv: Invocation) -> None:
        if rights.scope is not None:
            raise PermissionDenied(f"Permission denied: a credential limited to some knowledge graphs "
                                   f"cannot {what}")
    return check


def _network_within(text: str, allowed: tuple[str, ...]) -> bool:
    net = ipaddress.ip_network(text, strict=False)
    for other in allowed:
        outer = ipaddress.ip_network(other, strict=False)
        if net.version == outer.version and net.subnet_of(outer):  # type: ignore[arg-type]
            return True
    return False
