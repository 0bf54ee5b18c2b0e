"""What the engine, the server, rekey and the shell need of a store, whichever database holds it.

`Store` is the one interface: the SQLite store implements it today and a PostgreSQL store will
implement it next, so no caller knows which one it has. Rows are plain dicts (the names below
are the keys callers read); times are seconds since the epoch. The audit chain's format is part
of the contract: a record's hash is the same whichever store computed it, so `.audit verify`
and a copy between stores agree.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Protocol, TypeVar

from ..errors import StoreError
from .codec import encode_json
from .secrets import ServerSecrets

T = TypeVar("T")

__all__ = ["AUDIT_FIELDS", "GENESIS_HASH", "ServerSecrets", "Store", "StoreError", "audit_hash", "audit_mac",
           "audit_payload", "head_mac"]

AUDIT_FIELDS = ("seq", "time", "actor", "source", "action", "target", "outcome", "detail")
GENESIS_HASH = "0" * 64         # the hash the first audit record links to


def audit_mac(key: bytes) -> hmac.HMAC:
    """The keyed hash of the audit chain: HMAC-SHA256 under the audit key (a server secret), so
    no one without the secrets can re-chain the log. Each record's hash starts from a copy of
    this one (making it anew would look SHA-256 up in OpenSSL again for every record)."""
    return hmac.new(key, digestmod=hashlib.sha256)


def audit_hash(mac: hmac.HMAC, prev_hash: str, record: tuple) -> str:
    return audit_payload(mac, prev_hash, record)[1]


def audit_payload(mac: hmac.HMAC, prev_hash: str, record: tuple) -> tuple[str, str]:
    """A record as stored, the JSON array [prev_hash, seq, time, actor, source, action, target,
    outcome, detail, hash], and its hash: HMAC-SHA256 (audit_mac) of the same array without its
    last element, so the record is encoded once to be both hashed and stored."""
    hashed = encode_json([prev_hash, *record])
    hasher = mac.copy()
    hasher.update(hashed.encode())
    digest = hasher.hexdigest()
    return f'{hashed[:-1]},"{digest}"]', digest


def head_mac(mac: hmac.HMAC, seq: int, digest: str) -> str:
    """The keyed seal of the chain's head ({"seq", "hash", "mac"}): cutting the newest records
    and writing the head of the last one left cannot be done without the audit key."""
    hasher = mac.copy()
    hasher.update(f"head\0{seq}\0{digest}".encode())
    return hasher.hexdigest()


class Store(Protocol):
    """Users, knowledge graphs, ACLs, API keys, session tokens and the audit chain.

    Every change runs inside `write()` (or a batch) and its audit record is appended in that same
    transaction; reads that must agree with each other run inside `read()`. Errors of the
    database itself are raised as StoreError.
    """

    # --- transactions and whole-store facts
    def read(self, cached: bool = False) -> AbstractContextManager[None]:
        """A consistent snapshot for a read-only command (`cached`: see consistent(), which is
        the only caller that may pass it)."""
        ...

    def consistent(self, fn: Callable[[], T]) -> T:
        """fn() reading one consistent state of the store, as inside read(). A server node on
        PostgreSQL may answer from what it cached of the changes it heard (never older than a
        second), and then runs fn again when that turns out behind part-way: so fn may change
        nothing but what it returns."""
        ...

    def write(self) -> AbstractContextManager[None]:
        """One change, atomically (a savepoint inside an open batch)."""
        ...

    def begin_batch(self, *, atomic: bool = False) -> None:
        """Every following write() joins one transaction; `atomic`: any failure ends it whole."""
        ...

    def end_batch(self, commit: bool) -> None: ...

    @property
    def in_batch(self) -> bool: ...

    def data_version(self) -> int:
        """Changes when another process commits: lets a server notice a local shell's change."""
        ...

    def close(self) -> None: ...

    # --- server secrets: never in the database, which keeps only their fingerprint (schema 3)
    @property
    def secrets(self) -> ServerSecrets:
        """The server secrets this store was opened with (their fingerprint matched)."""
        ...

    @property
    def secret(self) -> bytes:
        """The HMAC key of API-key digests (secrets.hmac)."""
        ...

    @property
    def token_secret(self) -> bytes:
        """The signing key of session tokens (secrets.token)."""
        ...

    def replace_secrets(self, new: ServerSecrets) -> None:
        """rotate-secrets, inside write(): every token ends, the audit chain is re-keyed under
        new.audit (it still verifies) and the fingerprint becomes new's. Where the secrets
        themselves are kept (a file) is the caller's or the store's own affair."""
        ...

    # --- users: id, name, role, password_hash, password_version, created_at, last_login_at.
    #     `id` (str) is immutable and never reused: a re-created name gets a new one, and every
    #     session, token and key is bound to it.
    def user(self, name: str) -> dict | None: ...
    def users(self) -> list[dict]: ...
    def user_count(self) -> int: ...
    def admin_count(self) -> int: ...

    def add_user(self, name: str, role: str, password_hash: str, now: float) -> str:
        """Returns the new user's id (random, 128 bits, never reused)."""
        ...

    def drop_user(self, name: str) -> None: ...
    def set_password(self, name: str, password_hash: str, *, new_version: bool) -> None: ...
    def set_role(self, name: str, role: str) -> None: ...
    def touch_login(self, name: str, now: float) -> None: ...

    # --- knowledge graphs: name, created_at, created_by
    def kg(self, name: str) -> dict | None: ...
    def kgs(self) -> list[dict]: ...
    def add_kg(self, name: str, creator: str, now: float) -> None: ...
    def drop_kg(self, name: str) -> None: ...

    # --- ACL entries: kg, username, role, granted_by, granted_at
    def acl_entry(self, kg: str, user: str) -> dict | None: ...
    def acl_for_kg(self, kg: str) -> list[dict]: ...
    def acl_for_user(self, user: str) -> list[dict]: ...
    def grant(self, kg: str, user: str, role: str, granted_by: str, now: float) -> None: ...
    def revoke(self, kg: str, user: str) -> None: ...

    # --- API keys: id, label, owner, owner_id, role, scoped, digest, prev_digest,
    #     prev_valid_until, created_at, expires_at, last_used_at, revoked_at, ips, rate.
    #     `id` (int) is never reused; `owner_id` is the owner's user id when the key was made.
    def key(self, label: str) -> dict | None: ...
    def key_by_id(self, key_id: int) -> dict | None: ...

    def key_by_digest(self, digest: str) -> dict | None:
        """The key whose current or previous (rotating) secret has this digest."""
        ...

    def keys(self, owner: str | None = None) -> list[dict]: ...
    def key_kgs(self, key_id: int) -> list[str]: ...

    def add_key(self, label: str, owner: str, role: str, kgs: tuple[str, ...], digest: str,
                now: float, expires_at: float | None, *, ips: tuple[str, ...] = (),
                rate: tuple[int, int] | None = None) -> None: ...

    def update_key(self, key_id: int, **changes: Any) -> None:
        """Change a key's role, expires_at, ips or rate in place (its secret stays)."""
        ...

    def set_key_scope(self, key_id: int, kgs: tuple[str, ...] | None) -> None:
        """Limit a key to `kgs`, or (None) let it reach every KG."""
        ...

    def revoke_key(self, key_id: int, now: float) -> None: ...
    def rotate_key(self, key_id: int, new_digest: str, old_valid_until: float | None) -> None: ...
    def touch_key(self, key_id: int, now: float) -> None: ...

    # --- session tokens: jti, user_id, username, role, kgs (list or None), key_id (or None),
    #     password_version (or None), issued_at, expires_at, revoked_at. The stored row is what
    #     a token stands for: its JWT must agree with it (sub = username, exp = expires_at).
    def token(self, jti: str) -> dict | None: ...

    def add_token(self, record: dict) -> None:
        """Store a token's row (the keys above but revoked_at); its cost must not grow with the
        number of live tokens."""
        ...

    def revoke_token(self, jti: str, now: float) -> None: ...

    def forget_expired_tokens(self, now: float) -> None:
        """Delete the rows of expired tokens, touching only those (by an index on expires_at)."""
        ...

    def end_key_tokens(self, key_id: int) -> None:
        """Delete every token issued through this key (it was revoked or rotated)."""
        ...

    # --- the audit chain: records of AUDIT_FIELDS plus prev_hash and hash
    def append_audit(self, now: float, actor: str, source: str, action: str, target: str,
                     outcome: str, detail: str) -> None:
        """Append one hash-chained record; must run inside write()."""
        ...

    def audit_records(self, *, limit: int, actor: str | None, action: str | None,
                      since: float | None, outcome: str | None = None,
                      hide_action: str | None = None) -> list[dict]:
        """Newest first; `actor` matches the actor or the target, `action` a name or a prefix,
        `outcome` exactly; records whose action `hide_action` names (or prefixes) are left out."""
        ...

    def verify_audit(self) -> tuple[int, str | None]:
        """(records checked, None) or (count, what is wrong) at the first record that fails;
        the head ({"seq", "hash", "mac"}) must carry head_mac() under the audit key."""
        ...

    # --- whole-store copy (rekey, and moving between stores)
    def export_rows(self) -> dict[str, Any]:
        """Every stored value, opened (not the server secrets: they are not in the store)."""
        ...

    def import_rows(self, rows: dict[str, Any]) -> int:
        """Fill this (new, empty) store with another's export_rows(); inside write(). Returns the
        number of rows copied."""
        ...
