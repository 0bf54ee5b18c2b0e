"""Upgrading a version-2 store to version 3 in place, when it is opened (schema.py says what
changed). One transaction: a process that meets a store another is upgrading waits for it, and
an interrupted upgrade leaves version 2 (and, at worst, a secrets file the next try reuses).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from typing import TYPE_CHECKING

from ...errors import StoreError
from ..codec import encode_json
from ..interface import AUDIT_FIELDS, GENESIS_HASH
from ..secrets import SECRET_BYTES, ServerSecrets, read_secrets, write_secrets
from .schema import MIGRATES_FROM, SCHEMA_VERSION, TOKENS_SCHEMA

if TYPE_CHECKING:
    from .store import SQLiteStore


def migrate_from_v2(store: SQLiteStore) -> None:
    with store.write():
        if store.conn.execute("PRAGMA user_version").fetchone()[0] != MIGRATES_FROM:
            return                                   # another process upgraded it meanwhile
        server_secrets = _move_secrets_out(store)
        checked, problem = _verify_unkeyed_chain(store)
        _give_ids(store)
        _rebuild_tokens(store)
        store._use_secrets(server_secrets)
        store._rechain()
        outcome = f"{checked} records verified" if problem is None else \
            f"the unkeyed chain was already broken: {problem}"
        store.append_audit(time.time(), "system", "upgrade", "store.upgrade", f"schema {SCHEMA_VERSION}", "ok",
                           f"server secrets moved to the secrets file; audit chain keyed; {outcome}")
        store._main.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _move_secrets_out(store: SQLiteStore) -> ServerSecrets:
    """The secrets version 2 kept in `meta` (the hex text itself was the key), plus a new audit
    key, into the secrets file; `meta` keeps only their fingerprint. Existing keys keep working."""
    old = store._meta("secrets")
    wanted = ServerSecrets(old["hmac"].encode(), old["token"].encode(), secrets.token_bytes(SECRET_BYTES))
    found = read_secrets(store.secrets_file, store.codec)
    if found is not None and (found.hmac, found.token) == (wanted.hmac, wanted.token):
        wanted = found                               # written by an upgrade that did not commit
    else:
        write_secrets(store.secrets_file, store.codec, wanted, replace=True)
    store._main.execute("DELETE FROM meta WHERE name = 'secrets'")
    store._set_meta("secrets_fingerprint", {"sha256": wanted.fingerprint()})
    return wanted


def _verify_unkeyed_chain(store: SQLiteStore) -> tuple[int, str | None]:
    """Version 2's check (plain SHA-256 links): what the keyed chain starts from is recorded."""
    prev_hash, count = GENESIS_HASH, 0
    try:
        for rec in store._audit_rows("ASC"):
            hashed = encode_json([prev_hash, *(rec[f] for f in AUDIT_FIELDS)])
            if rec["prev_hash"] != prev_hash or hashlib.sha256(hashed.encode()).hexdigest() != rec["hash"]:
                return count, f"record {count + 1} does not match its hash"
            prev_hash, count = rec["hash"], count + 1
    except StoreError:
        return count, f"record {count + 1} was altered"
    head = store._meta("audit_head")
    if (head["seq"], head["hash"]) != (count, prev_hash):
        return count, "the latest records were removed"
    return count, None


def _give_ids(store: SQLiteStore) -> None:
    ids = {}
    for user in store.users():
        ids[user["name"]] = user["id"] = secrets.token_hex(16)
        store._put("users", store._user_ref(user["name"]), user, insert=False)
    for key in store.keys():
        store._key_put({**key, "owner_id": ids[key["owner"]]})


def _rebuild_tokens(store: SQLiteStore) -> None:
    """Version 3 indexes tokens by expiry and by key, and binds each to its principal's id and
    limits, which version 2 did not record: its tokens (24 hours at most) end with the upgrade."""
    store._main.execute("DROP TABLE tokens")
    for statement in filter(str.strip, TOKENS_SCHEMA.split(";")):
        store._main.execute(statement)

