"""The lock file beside the database: every open store holds it shared, `rekey` holds it
exclusive for its whole run, so a rekey never replaces a file that another process may still
write to (its acknowledged change would be lost with the old file).

SQLite's own locks cannot say this: they are taken per transaction, and a process that merely
has the file open holds none that would keep a rename away.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ...errors import StoreError
from .schema import DB_FILE

IN_USE = "the store is in use by another process: stop the server and shells first"
REKEYING = "the store is being rekeyed (inputlayer-server rekey): try again when it has finished"


def lock_path(db: Path) -> Path:
    return Path(str(db) + ".lock")


def acquire(db: Path, *, exclusive: bool) -> int:
    """Hold the lock of the database at `db` (until release()), or raise StoreError at once."""
    try:
        fd = os.open(lock_path(db), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise StoreError(f"cannot open the store's lock file {lock_path(db)}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StoreError(IN_USE if exclusive else f"cannot open the store: {REKEYING}") from None
    return fd


def release(fd: int) -> None:
    os.close(fd)        # closing the descriptor drops its lock


@contextmanager
def exclusively(data_dir: Path, missing: str) -> Iterator[Path]:
    """The database in `data_dir`, held exclusively for the `with` (rekey, rotate-secrets): a
    process with the store open makes this refuse, and one trying to open it meanwhile is
    refused. StoreError(`missing`) when there is no store."""
    db = data_dir / DB_FILE
    if not db.exists():
        raise StoreError(missing)
    held = acquire(db, exclusive=True)
    try:
        yield db
    finally:
        release(held)
