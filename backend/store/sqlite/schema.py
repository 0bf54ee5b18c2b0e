"""The SQLite file's format: its marks, its tables, and creating it owner-only.

Every row is a lookup ref (or refs) plus one `data` value that the codec keeps as JSON or seals
with AES-256-GCM, so the same tables serve plain and encrypted stores.
"""

from __future__ import annotations

import os
from pathlib import Path

APPLICATION_ID = 0x494C4144   # "ILAD": marks the file as ours, so a foreign database is refused
SCHEMA_VERSION = 3
# 3: users carry an immutable `id`, keys their `owner_id`; tokens keep key_id and expires_at as
#    indexed columns (expiry and a key's end touch only the tokens concerned); the server
#    secrets moved out of `meta` into the `secrets` file (meta keeps `secrets_fingerprint`);
#    the audit chain is keyed (HMAC under the audit key) and its head carries a `mac`.
MIGRATES_FROM = 2            # the one older version opened (and upgraded in place)
DB_FILE = "inputlayer.db"

SCHEMA = """
CREATE TABLE meta (name TEXT PRIMARY KEY, data) WITHOUT ROWID;
CREATE TABLE users (ref TEXT PRIMARY KEY, data NOT NULL) WITHOUT ROWID;
CREATE TABLE kgs (ref TEXT PRIMARY KEY, data NOT NULL) WITHOUT ROWID;
CREATE TABLE acl (
    kg_ref TEXT NOT NULL REFERENCES kgs(ref) ON DELETE CASCADE,
    user_ref TEXT NOT NULL REFERENCES users(ref) ON DELETE CASCADE,
    data NOT NULL,
    PRIMARY KEY (kg_ref, user_ref)
) WITHOUT ROWID;
CREATE INDEX acl_by_user ON acl(user_ref);
CREATE TABLE api_keys (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    label_ref TEXT NOT NULL UNIQUE,
    owner_ref TEXT NOT NULL REFERENCES users(ref) ON DELETE CASCADE,
    digest_ref TEXT UNIQUE,
    prev_digest_ref TEXT UNIQUE,
    data NOT NULL
);
CREATE INDEX api_keys_by_owner ON api_keys(owner_ref);
CREATE TABLE api_key_kgs (
    key_id INTEGER NOT NULL REFERENCES api_keys(id) ON DELETE CASCADE,
    kg_ref TEXT NOT NULL REFERENCES kgs(ref) ON DELETE CASCADE,
    PRIMARY KEY (key_id, kg_ref)
) WITHOUT ROWID;
CREATE INDEX api_key_kgs_by_kg ON api_key_kgs(kg_ref);
CREATE TABLE audit (seq INTEGER PRIMARY KEY, data NOT NULL);
"""
TOKENS_SCHEMA = """
CREATE TABLE tokens (ref TEXT PRIMARY KEY, key_id INTEGER, expires_at REAL NOT NULL, data NOT NULL) WITHOUT ROWID;
CREATE INDEX tokens_by_expiry ON tokens(expires_at);
CREATE INDEX tokens_by_key ON tokens(key_id);
"""
SCHEMA += TOKENS_SCHEMA
TABLES = ("meta", "users", "kgs", "acl", "api_keys", "api_key_kgs", "tokens", "audit")


def private_file(path: Path) -> None:
    """Create `path` empty with mode 0600 if it does not exist (SQLite then keeps the mode for
    its -wal and -shm files)."""
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        pass
