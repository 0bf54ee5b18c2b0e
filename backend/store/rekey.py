"""Re-encrypt a stopped store under a new key, or turn encryption on or off, atomically.

Everything is read and checked under the old key, written to a new file beside the old one,
flushed, then renamed over it: interrupted at any point, the directory holds either the old
store (opens with the old key) or the new one (opens with the new key), never a mix. The server
secrets file is re-sealed the same way: `secrets.new` under the new key, renamed after the
database (an interruption between the two is finished when the store is next opened). A
PostgreSQL store does the same in one transaction (PostgresStore.rekey).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from ..errors import StoreError
from .codec import Codec
from .postgres.url import is_postgres_url
from .secrets import pending_path, promote_pending, write_secrets
from .sqlite import DB_FILE, SQLiteStore, lockfile


def rekey_store(location: str, env: Mapping[str, str], old_key: bytes | None, new_key: bytes | None) -> int:
    """rekey() of a data directory, or of the PostgreSQL store a postgresql:// URL names."""
    if not is_postgres_url(location):
        return rekey(location, old_key, new_key)
    from .postgres.store import PostgresStore

    store = PostgresStore(location, encryption_key=old_key, secret_file=env.get("INPUTLAYER_SERVER_SECRET_FILE"))
    try:
        return store.rekey(new_key)
    finally:
        store.close()


def rekey(data_dir: str | os.PathLike, old_key: bytes | None, new_key: bytes | None) -> int:
    """Returns the number of rows copied. The store's lock is held exclusively throughout: a
    process that has the store open makes rekey refuse, one that tries to open it meanwhile is
    refused, so no acknowledged change can be written to the file being replaced."""
    data_dir = Path(data_dir)
    with lockfile.exclusively(data_dir, f"no store to rekey in {data_dir}") as db:
        return _rekey(data_dir, db, old_key, new_key)


def _rekey(data_dir: Path, db: Path, old_key: bytes | None, new_key: bytes | None) -> int:
    old = SQLiteStore(data_dir, encryption_key=old_key, take_lock=False)
    server_secrets = old.secrets
    try:
        with old.write():
            snapshot = old.export_rows()
            _, problem = old.verify_audit()
            if problem:
                raise StoreError(f"refusing to rekey: {problem}")
    finally:
        old.close()
    if Path(str(db) + "-wal").exists():     # a program that does not take the lock file
        raise StoreError(lockfile.IN_USE)
    tmp = data_dir / (DB_FILE + ".rekey")
    for leftover in (tmp, Path(str(tmp) + "-wal"), Path(str(tmp) + "-shm")):
        leftover.unlink(missing_ok=True)
    new = SQLiteStore(data_dir, encryption_key=new_key, path=tmp, take_lock=False, secrets=server_secrets)
    try:
        with new.write():
            copied = new.import_rows(snapshot)
        new.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        new.conn.execute("PRAGMA journal_mode=DELETE")
    finally:
        new.close()
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    new_codec = Codec(new_key)
    pending = pending_path(old.secrets_file)
    pending.unlink(missing_ok=True)
    write_secrets(pending, new_codec, server_secrets, replace=False)
    try:
        os.replace(tmp, db)
    except BaseException:
        pending.unlink(missing_ok=True)
        raise
    promote_pending(old.secrets_file, new_codec, server_secrets.fingerprint())
    dir_fd = os.open(data_dir, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return copied
