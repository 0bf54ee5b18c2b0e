"""API keys: their format (prefix, base62 body, checksum) and the digest the store keeps."""

from __future__ import annotations

import hmac
import secrets
import zlib
from hashlib import sha256

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
KEY_BODY_CHARS = 43      # 62**43 > 2**256
KEY_CHECK_CHARS = 6      # CRC32 fits in 6 base62 digits


def _base62(number: int, width: int) -> str:
    digits = []
    for _ in range(width):
        number, rem = divmod(number, 62)
        digits.append(BASE62[rem])
    return "".join(reversed(digits))


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode()), KEY_CHECK_CHARS)


def new_api_key() -> str:
    body = _base62(secrets.randbits(256), KEY_BODY_CHARS)
    return f"il_{body}_{_checksum(body)}"


def well_formed_key(key: str) -> bool:
    """Shape and checksum: a mistyped key is refused before any lookup."""
    parts = key.split("_")
    if len(parts) != 3 or parts[0] != "il":
        return False
    body, check = parts[1], parts[2]
    if len(body) != KEY_BODY_CHARS or len(check) != KEY_CHECK_CHARS:
        return False
    if not all(c in BASE62 for c in body + check):
        return False
    return hmac.compare_digest(_checksum(body), check)


def key_digest(secret: bytes, key: str) -> str:
    """HMAC-SHA256 of the key under the server-side secret: what the store keeps and looks up."""
    return hmac.new(secret, key.encode(), sha256).hexdigest()
