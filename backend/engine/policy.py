"""Who may do what: sessions, the rights they hold now, API-key state and KG access levels.

Rights are re-derived from the store for every command, so a dropped user, a revoked key or a
changed password takes effect at the next command of every session that relied on it.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Any, NamedTuple, Protocol

from ..errors import CommandError, PermissionDenied, SessionEnded
from ..language.kinds import KG_ROLES, ROLES
from ..language.parser import Invocation
from ..netaddr import address_in
from ..store import Store

# Ranks derive from the language's lists (weakest last), so the order is stated once.
ROLE_RANK = {role: len(ROLES) - i for i, role in enumerate(ROLES)}
LEVEL_RANK = {level: len(KG_ROLES) - i for i, level in enumerate(KG_ROLES)}
CAP_LEVEL = {"viewer": "viewer", "editor": "editor", "admin": "owner"}   # a key's role cap on KGs
ACTION_LEVEL = {"read": "viewer", "write": "editor", "manage": "owner"}
VIRTUAL_PRINCIPALS = ("shared_key", "anonymous")   # auth modes without users in the store
LOCAL_ADDRESS = "127.0.0.1"  # what a key's `ips=` limit sees for the local shell
REFUSED_KEY_STATES = ("revoked", "expired", "rotated-out")


class Session:
    """One authenticated connection (or one shell run) and the KG it is bound to."""
    __slots__ = (
        "address",
        "connected_at",
        "id",
        "key_digest",
        "key_id",
        "key_label",
        "knowledge_graph",
        "login_role",
        "login_unrecorded",
        "method",
        "note",
        "password_version",
        "pending_password_hash",
        "source",
        "token_claims",
        "user_id",
        "username",
    )

    def __init__(self, username: str, method: str, source: str, address: str = "", *,
                 key_id: int | None = None, key_label: str | None = None, key_digest: str | None = None,
                 password_version: int | None = None, token_claims: dict[str, Any] | None = None,
                 knowledge_graph: str | None = None, connected_at: float = 0.0, user_id: str | None = None):
        self.username = username
        self.user_id = user_id                # the principal's immutable id: a re-created name is another user
        self.method = method                  # password | api_key | token | shared_key | anonymous
        self.source = source                  # "local", or how a server was reached: "ws", "http"
        self.address = address
        self.key_id = key_id
        self.key_label = key_label
        self.key_digest = key_digest          # None for a token session: rotation does not end it
        self.password_version = password_version
        # The hash this session set for its own password, until it sees that change committed: a
        # check reading between the change and its commit sees the older version, one after it the
        # newer, and neither may end the session that made the change.
        self.pending_password_hash: str | None = None
        self.token_claims = token_claims
        self.knowledge_graph = knowledge_graph
        self.connected_at = connected_at
        self.id = new_session_id()
        self.login_role = ""                  # the effective role when it logged in (what a client is told)
        self.note = ""                        # where its commands come from (a policy file), for the audit
        self.login_unrecorded = False         # logged in with record=False: audited with its first change

    def __repr__(self) -> str:
        return f"Session({self.username!r}, {self.auth!r}, id={self.id!r})"

    @property
    def auth(self) -> str:
        if self.token_claims is not None:
            return f"token:{self.token_claims['jti']}"
        return f"api_key:{self.key_label}" if self.method == "api_key" else self.method

    @property
    def audit_source(self) -> str:
        source = audit_source(self.source, self.address)
        return f"{source} ({self.note})" if self.note else source


def audit_source(source: str, address: str) -> str:
    return f"{source}:{address}" if address else source


def new_session_id() -> str:
    """A random (version 4) UUID in its usual text form, without importing uuid (and platform)
    on the shell's start-up path."""
    raw = bytearray(secrets.token_bytes(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class ListedSession(NamedTuple):
    """A live session as `.session list` shows it; on a cluster, it may live on another node."""
    id: str
    username: str
    auth: str
    address: str
    knowledge_graph: str
    connected_at: float
    node: str


class SessionDirectory(Protocol):
    """What a server offers the engine for `.session` and `.status`: this node's sessions, or
    with Redis every node's (scaleout.md)."""
    def sessions(self) -> list[ListedSession]: ...
    def kill(self, session_id: str, reason: str) -> bool: ...


class Rights:
    """The caller's rights now, computed from the store for every command."""
    __slots__ = ("expires_at", "ips", "key_cap", "key_id", "rate", "role", "scope", "user_role", "username")

    def __init__(self, username: str, user_role: str, role: str, key_cap: str | None,
                 scope: frozenset[str] | None, key_id: int | None = None, rate: tuple[int, int] | None = None):
        self.username = username
        self.user_role = user_role
        self.role = role                  # effective: the lower of the user's role and a key's cap
        self.key_cap = key_cap
        self.scope = scope                # the KGs a scoped key reaches; None = all
        self.key_id = key_id
        self.rate = rate                  # a key's limit: requests per window (seconds)
        # When the credential ends (the earlier of its key's expiry and its token's), and the
        # networks its key may be used from: what it may hand on to what it creates, at most.
        self.expires_at: float | None = None
        self.ips: tuple[str, ...] = ()

    def in_scope(self, kg: str) -> bool:
        return self.scope is None or kg in self.scope

    def sees_all(self, kg: str) -> bool:
        """May be told that `kg` does not exist (it could see it if it did)."""
        return self.role == "admin" and self.in_scope(kg)


def lower_role(a: str, b: str) -> str:
    return a if ROLE_RANK[a] <= ROLE_RANK[b] else b


def lower_level(a: str, b: str) -> str:
    return a if LEVEL_RANK[a] <= LEVEL_RANK[b] else b


def key_state(row: dict[str, Any], now: float, digest: str | None = None) -> str:
    """revoked | expired | rotated-out | rotating | active. `rotated-out`: the secret with
    `digest` no longer opens the key (only asked when a digest is given)."""
    if row["revoked_at"] is not None:
        return "revoked"
    if row["expires_at"] is not None and row["expires_at"] <= now:
        return "expired"
    in_grace = bool(row["prev_digest"]) and (row["prev_valid_until"] or 0) > now
    if digest is not None and not same_digest(row["digest"], digest) and \
            not (in_grace and same_digest(row["prev_digest"], digest)):
        return "rotated-out"
    return "rotating" if in_grace else "active"


def same_digest(stored: str | None, digest: str) -> bool:
    """Constant-time: the index found the row, the comparison must not tell how close a guess came."""
    return stored is not None and hmac.compare_digest(stored, digest)


def address_allowed(key: dict[str, Any], address: str) -> bool:
    """A key with `ips=` works only from those networks; the local shell counts as loopback."""
    if not key.get("ips"):
        return True
    return address_in(address or LOCAL_ADDRESS, key["ips"])


def rights_of(store: Store, session: Session, now: float) -> Rights:
    """Re-derive the caller's rights from the store; end the session if its principal is gone."""
    if session.method in VIRTUAL_PRINCIPALS:
        return Rights(session.username, "admin", "admin", None, None)
    user = store.user(session.username)
    if user is None or user["id"] != session.user_id:
        raise SessionEnded("user dropped")
    if session.key_id is None:
        if session.password_version is not None and user["password_version"] != session.password_version:
            if session.pending_password_hash is None or user["password_hash"] != session.pending_password_hash:
                raise SessionEnded("password changed")
            session.password_version, session.pending_password_hash = user["password_version"], None
        rights = Rights(session.username, user["role"], user["role"], None, None)
    else:
        rights = _key_rights(store, session, session.key_id, user["role"], now)
    claims = session.token_claims
    if claims is not None:
        record = store.token(claims["jti"])
        if record is None or record["revoked_at"] is not None or record["user_id"] != session.user_id:
            raise SessionEnded("token revoked")
        if record["expires_at"] <= now:
            raise SessionEnded("token expired")
        # A token narrows its issuer's current rights to those it was issued with, as stored.
        rights.key_cap = lower_role(rights.key_cap or rights.user_role, record["role"])
        rights.role = lower_role(rights.role, record["role"])
        if record["kgs"] is not None:
            token_scope = frozenset(record["kgs"])
            rights.scope = token_scope if rights.scope is None else rights.scope & token_scope
        rights.expires_at = min(record["expires_at"], rights.expires_at or record["expires_at"])
    return rights


def _key_rights(store: Store, session: Session, key_id: int, user_role: str, now: float) -> Rights:
    row = store.key_by_id(key_id)
    if row is None or row["revoked_at"] is not None or row["owner_id"] != session.user_id:
        raise SessionEnded("API key revoked")
    if not address_allowed(row, session.address):     # its `ips=` may have been narrowed since
        raise SessionEnded("API key not allowed from this address")
    state = key_state(row, now, session.key_digest)
    if state == "expired":
        raise SessionEnded("API key expired")
    if state in REFUSED_KEY_STATES:
        raise SessionEnded("API key rotated")
    scope = frozenset(store.key_kgs(row["id"])) if row["scoped"] else None
    rights = Rights(session.username, user_role, lower_role(user_role, row["role"]), row["role"],
                    scope, row["id"], tuple(row["rate"]) if row.get("rate") else None)
    rights.expires_at, rights.ips = row["expires_at"], tuple(row.get("ips") or ())
    return rights


def level_of(store: Store, rights: Rights, kg: str) -> str | None:
    """The caller's level on `kg` now (None: no access). Assumes `kg` exists."""
    if not rights.in_scope(kg):
        return None
    level: str | None
    if rights.user_role == "admin":
        level = "owner"
    else:
        entry = store.acl_entry(kg, rights.username)
        level = entry["role"] if entry else None
    if level is not None and rights.key_cap is not None:
        level = lower_level(level, CAP_LEVEL[rights.key_cap])
    return level


# --- authorization: a command's declared Rule, checked before its handler runs --------------

def authorize(store: Store, session: Session, rights: Rights, inv: Invocation) -> None:
    """Raise PermissionDenied (or CommandError for a missing KG the caller may know about)
    unless the command's Rule admits the caller now. Fills in the current KG when the
    command's KG argument was left out."""
    rule = inv.command.rule
    args: dict[str, Any] = inv.args
    if rule.kind == "anyone":
        return
    if rule.kind == "admin":
        if rights.role != "admin":
            raise PermissionDenied(rule.denied)
    elif rule.kind == "admin_or_self":
        if rights.role != "admin" and args.get(rule.self_param or "") != session.username:
            raise PermissionDenied(rule.denied)
    elif rule.kind == "kg_creator":
        if ROLE_RANK[rights.role] < ROLE_RANK["editor"]:
            raise PermissionDenied(rule.denied)
        if rights.scope is not None:
            raise PermissionDenied("Permission denied: an API key limited to some knowledge graphs "
                                   "cannot create knowledge graphs")
    elif rule.kind == "kg":
        _authorize_kg(store, session, rights, inv)
    elif rule.kind == "token_issuer":
        record = store.token(args["jti"])
        if rights.role == "admin":
            if record is None:
                raise CommandError(f"Token '{args['jti']}' not found")
        elif record is None or record["user_id"] != session.user_id:
            raise PermissionDenied(rule.denied)
    else:
        raise AssertionError(f"unknown rule {rule.kind}")


def _authorize_kg(store: Store, session: Session, rights: Rights, inv: Invocation) -> None:
    rule = inv.command.rule
    args: dict[str, Any] = inv.args
    kg_param = rule.kg_param or ""
    kg = args.get(kg_param) or session.knowledge_graph
    if kg is None:
        raise CommandError("No knowledge graph selected. Name one, or switch with .kg use <name>.")
    args[kg_param] = kg
    if store.kg(kg) is None:
        if rights.sees_all(kg):
            raise CommandError(f"Knowledge graph '{kg}' not found")
        raise PermissionDenied("Access denied")
    level = level_of(store, rights, kg)
    if level is None:
        raise PermissionDenied("Access denied")
    if LEVEL_RANK[level] >= LEVEL_RANK[rule.level or "owner"]:
        return
    if rule.self_param and args.get(rule.self_param) == session.username:
        return
    raise PermissionDenied(rule.denied)
