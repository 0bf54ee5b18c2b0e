"""`inputlayer-server rotate-secrets`: replace the token-signing and audit keys of a stopped
store, atomically. Every token ends; the audit chain continues under the new key (re-keyed from
its first record, after it verified under the old one). The API-key HMAC key is kept: replacing
it would break every key, and keys are rotated one by one with `.apikey rotate`. A process
that has the store open would keep the secrets it opened with, so, like rekey, this holds the
store's lock file exclusively: it refuses while a server or shell has the store open. On
PostgreSQL the new secrets go to INPUTLAYER_SERVER_SECRET_FILE (written beside it first, moved
over it once the database has committed): every node must then be given the new file.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path

from ..errors import StoreError
from .interface import Store
from .postgres.url import is_postgres_url
from .secrets import ServerSecrets, pending_path, promote_pending
from .sqlite import SQLiteStore, lockfile


def rotate_store(location: str, env: Mapping[str, str], key: bytes | None) -> int:
    """rotate_secrets() of a data directory, or of the PostgreSQL store a postgresql:// URL names."""
    if not is_postgres_url(location):
        return rotate_secrets(location, key)
    from .postgres import serversecrets
    from .postgres.store import PostgresStore

    path = env.get("INPUTLAYER_SERVER_SECRET_FILE")
    store = PostgresStore(location, encryption_key=key, secret_file=path)
    try:
        assert path is not None            # PostgresStore refuses to open without it
        new = ServerSecrets.generate(hmac=store.secret)
        pending = serversecrets.write_pending(path, new)
        try:
            count = _replace(store, new)
        except BaseException:
            pending.unlink(missing_ok=True)
            raise
        serversecrets.promote(pending, path)
    finally:
        store.close()
    return count


def rotate_secrets(data_dir: str | os.PathLike, key: bytes | None) -> int:
    """Returns the number of audit records re-keyed (the rotation's own record included)."""
    data_dir = Path(data_dir)
    with lockfile.exclusively(data_dir, f"no store in {data_dir}"):
        return _rotate(data_dir, key)


def _rotate(data_dir: Path, key: bytes | None) -> int:
    store = SQLiteStore(data_dir, encryption_key=key, take_lock=False)
    try:
        new = ServerSecrets.generate(hmac=store.secret)
        try:
            count = _replace(store, new)
        except BaseException:
            pending_path(store.secrets_file).unlink(missing_ok=True)
            raise
        promote_pending(store.secrets_file, store.codec, new.fingerprint())
    finally:
        store.close()
    return count


def _replace(store: Store, new: ServerSecrets) -> int:
    """The rotation itself, in one transaction, after the chain verified under the old key."""
    with store.write():
        count, problem = store.verify_audit()
        if problem:
            raise StoreError(f"refusing to rotate the secrets: {problem}")
        store.replace_secrets(new)
        store.append_audit(time.time(), "system", "rotate-secrets", "secrets.rotate", "server", "ok",
                           "token-signing and audit keys replaced; every token ended")
    return count + 1

