"""Server secrets: the HMAC key of API-key digests, the token-signing key and the audit-chain key.

They are not data: a copy of the database alone must not be enough to recognise a key, forge a
token or re-chain the audit log (security.md, Server secrets). On a data directory they live in
the file `secrets` (0600) beside the database, sealed with the codec when the store is encrypted;
the store keeps only their fingerprint, so a store opened with another directory's secrets is
refused. Replacing the file is atomic: a new one is written as `secrets.new`, flushed, and
renamed over the old one once the store has committed its new fingerprint (see promote_pending).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from ..errors import StoreError
from .codec import Codec

SECRETS_FILE = "secrets"
PENDING_SUFFIX = ".new"
SECRET_BYTES = 32


@dataclass(frozen=True)
class ServerSecrets:
    hmac: bytes       # keys the digests of API keys: kept across rotate-secrets, or every key breaks
    token: bytes      # signs session tokens (HS256)
    audit: bytes      # keys the audit chain (HMAC-SHA256)

    @classmethod
    def generate(cls, hmac: bytes | None = None) -> ServerSecrets:
        """Fresh token and audit keys; a fresh HMAC key too unless one is kept."""
        return cls(hmac or secrets.token_bytes(SECRET_BYTES), secrets.token_bytes(SECRET_BYTES),
                   secrets.token_bytes(SECRET_BYTES))

    def fingerprint(self) -> str:
        """What the store keeps to recognise its secrets; reveals nothing of them."""
        material = b"\0".join((b"inputlayer server secrets", self.hmac, self.token, self.audit))
        return hashlib.sha256(material).hexdigest()

    def to_json(self) -> str:
        return json.dumps({"hmac": self.hmac.hex(), "token": self.token.hex(), "audit": self.audit.hex()})

    @classmethod
    def from_json(cls, value: dict) -> ServerSecrets:
        return cls(bytes.fromhex(value["hmac"]), bytes.fromhex(value["token"]), bytes.fromhex(value["audit"]))


def secrets_path(data_dir: Path) -> Path:
    return data_dir / SECRETS_FILE


def pending_path(path: Path) -> Path:
    return path.with_name(path.name + PENDING_SUFFIX)


def read_secrets(path: Path, codec: Codec) -> ServerSecrets | None:
    """The secrets in `path`, or None when there is no such file. A file that does not open
    under the codec's key, or is not a secrets file, is a StoreError."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StoreError(f"cannot read the server secrets {path}: {exc.strerror or exc}") from None
    try:
        blob: bytes | str = raw if codec.encrypted else raw.decode()
        return ServerSecrets.from_json(codec.open("secrets", SECRETS_FILE, blob))
    except (StoreError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        raise StoreError(f"the server secrets file {path} is damaged or sealed with another key") from None


def write_secrets(path: Path, codec: Codec, value: ServerSecrets, *, replace: bool) -> bool:
    """Write `value` to `path` (0600, flushed, then renamed into place). With replace=False the
    file is only created if absent (another process may have won the race): returns whether
    this call created it."""
    sealed = codec.seal_text("secrets", SECRETS_FILE, value.to_json())
    data = sealed if isinstance(sealed, bytes) else sealed.encode()
    tmp = path.with_name(f"{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        if replace:
            os.replace(tmp, path)
            created = True
        else:
            try:
                os.link(tmp, path)       # atomic create-if-absent
                created = True
            except FileExistsError:
                created = False
        _sync_dir(path.parent)
        return created
    except OSError as exc:
        raise StoreError(f"cannot write the server secrets {path}: {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)


def promote_pending(path: Path, codec: Codec, fingerprint: str) -> None:
    """Finish or undo a replacement that was interrupted: `secrets.new` becomes the secrets when
    it is the one the store's fingerprint names (the store committed), else it is removed."""
    pending = pending_path(path)
    if not pending.exists():
        return
    try:
        candidate = read_secrets(pending, codec)
    except StoreError:
        candidate = None
    try:
        if candidate is not None and candidate.fingerprint() == fingerprint:
            os.replace(pending, path)
        else:
            pending.unlink()
        _sync_dir(path.parent)
    except OSError as exc:
        raise StoreError(f"cannot finish replacing the server secrets {path}: {exc.strerror or exc}") from None


def load_secrets(path: Path, codec: Codec, fingerprint: str) -> ServerSecrets:
    """The secrets of a store whose fingerprint is `fingerprint`; refuse any others."""
    promote_pending(path, codec, fingerprint)
    found = read_secrets(path, codec)
    if found is None:
        raise StoreError(f"the server secrets file {path} is missing: restore it from the backup of this "
                         "data directory (without it no key, token or audit record can be checked)")
    if found.fingerprint() != fingerprint:
        raise StoreError(f"the server secrets file {path} does not belong to this store")
    return found


def _sync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
