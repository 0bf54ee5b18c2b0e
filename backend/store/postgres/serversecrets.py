"""The server secrets of a PostgreSQL store (security.md): a file every node reads, never a table.

A copy of the database alone must not be enough to recognise an API key, forge a token or
re-chain the audit log, so the secrets live in the file named by INPUTLAYER_SERVER_SECRET_FILE
and the store keeps only their fingerprint, which makes a node with other secrets refuse to
start. The file is either at least 32 random bytes, from which the three keys are derived, or
(as `copy-store` writes it to carry a data directory's secrets over) the keys themselves under a
header line.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

from ...errors import StoreError
from ..secrets import ServerSecrets

MIN_SECRET_BYTES = 32
NAMES = ("hmac", "token", "audit")
HEADER = b"inputlayer server secrets v1\n"
HINT = ("set INPUTLAYER_SERVER_SECRET_FILE to a file of at least 32 random bytes, the same on every "
        "node (make one with: head -c 64 /dev/urandom > FILE && chmod 600 FILE)")


def load(path: str | os.PathLike | None) -> ServerSecrets:
    """The secrets the file at `path` holds or yields."""
    if not path:
        raise StoreError(f"a PostgreSQL store needs the server secrets: {HINT}")
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise StoreError(f"cannot read the server secrets file {path}: {exc.strerror or exc}") from None
    if raw.startswith(HEADER):
        return _parse(raw[len(HEADER):], path)
    if len(raw) < MIN_SECRET_BYTES:
        raise StoreError(f"the server secrets file {path} holds {len(raw)} bytes, fewer than "
                         f"{MIN_SECRET_BYTES}: {HINT}")
    keys = [hmac.new(raw, f"inputlayer server secret\0{name}".encode(), hashlib.sha256).digest() for name in NAMES]
    return ServerSecrets(*keys)


def _parse(body: bytes, path: str | os.PathLike) -> ServerSecrets:
    try:
        found = dict(line.split("=", 1) for line in body.decode().splitlines() if "=" in line)
        keys = [bytes.fromhex(found[name]) for name in NAMES]
    except (UnicodeDecodeError, KeyError, ValueError):
        keys = []
    if len(keys) != len(NAMES) or any(len(key) < MIN_SECRET_BYTES for key in keys):
        raise StoreError(f"the server secrets file {path} is damaged: {HINT}")
    return ServerSecrets(*keys)


def write_new(path: str | os.PathLike, secrets: ServerSecrets) -> None:
    """Create the file (0600) holding exactly `secrets`; an existing file is never overwritten."""
    text = HEADER + "".join(f"{name}={getattr(secrets, name).hex()}\n" for name in NAMES).encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise StoreError(f"cannot create the server secrets file {path}: {exc.strerror or exc}") from None
    try:
        os.write(fd, text)
        os.fsync(fd)
    finally:
        os.close(fd)


def write_pending(path: str | os.PathLike, secrets: ServerSecrets) -> Path:
    """`secrets` in a new file beside `path` (PATH.new), to become it by promote()."""
    pending = Path(f"{os.fspath(path)}.new")
    pending.unlink(missing_ok=True)
    write_new(pending, secrets)
    return pending


def promote(pending: Path, path: str | os.PathLike) -> None:
    """Move the pending file over `path`, durably."""
    try:
        os.replace(pending, path)
        fd = os.open(Path(path).parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise StoreError(f"the database has the new secrets, but moving {pending} over {path} failed "
                         f"({exc.strerror or exc}): move it by hand") from None
