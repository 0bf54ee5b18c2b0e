"""How stored values and lookup keys are represented: plain JSON, or sealed with AES-256-GCM.

Sealed: each value is encrypted with a fresh 96-bit nonce and associated data that binds it to
its table, its row and the key id, so a value moved to another row (or another store) fails to
open. Lookups use blind indexes (HMAC of the name under a key derived apart from the sealing
key), so no name appears in the file. Plain: values are JSON text and refs are the names
themselves, so an unencrypted store stays readable with the sqlite3 tool.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os

from ..errors import StoreError

NONCE_BYTES = 12
REF_CACHE_SIZE = 10_000           # bounds the memory of Codec's blind-index cache


def json_encoder(item_separator: str = ",", key_separator: str = ":"):
    """A function writing JSON exactly as json.dumps(separators=..., ensure_ascii=False) does.
    JSONEncoder.encode() builds a new C encoder on every call, which is ~40 % of the cost of a
    small record; this builds it once. Our values are never circular, so no cycle check."""
    standard = json.JSONEncoder(separators=(item_separator, key_separator), ensure_ascii=False)
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:                    # an interpreter without the C accelerator
        return standard.encode
    encoder = make(None, standard.default, json.encoder.encode_basestring, None, key_separator,
                   item_separator, False, False, True)
    return lambda value: "".join(encoder(value, 0))


encode_json = json_encoder()            # stored values: compact


def parse_encryption_key(text: str) -> bytes:
    """32 bytes from 64 hex digits or base64; anything else is refused."""
    text = text.strip()
    candidates = []
    if len(text) == 64:
        try:
            candidates.append(bytes.fromhex(text))
        except ValueError:
            pass
    try:
        candidates.append(base64.b64decode(text, validate=True))
    except (binascii.Error, ValueError):
        try:
            candidates.append(base64.urlsafe_b64decode(text))
        except (binascii.Error, ValueError):
            pass
    for key in candidates:
        if len(key) == 32:
            return key
    raise StoreError("INPUTLAYER_ENCRYPTION_KEY must be 32 bytes written as 64 hex digits or as base64 "
                     "(make one with: python3 -c 'import secrets; print(secrets.token_hex(32))')")


class Codec:
    def __init__(self, key: bytes | None):
        self.encrypted = key is not None
        self.key_id = ""
        if key is not None:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM

            self.key_id = hashlib.sha256(b"inputlayer key id\0" + key).hexdigest()[:16]
            self._aead = AESGCM(_derive(key, b"seal"))
            self._index_key = _derive(key, b"index")
        # Blind indexes already computed: a command looks up the same few names several times,
        # and an HMAC costs more than the rest of a lookup.
        self._refs: dict[tuple[str, str], str] = {}

    def ref(self, kind: str, value: str) -> str:
        """The lookup key of a name (user, kg, label, digest)."""
        if not self.encrypted:
            return value
        ref = self._refs.get((kind, value))
        if ref is None:
            if len(self._refs) >= REF_CACHE_SIZE:
                self._refs.clear()
            ref = hmac.new(self._index_key, f"{kind}\0{value}".encode(), hashlib.sha256).hexdigest()
            self._refs[(kind, value)] = ref
        return ref

    def seal(self, table: str, ref: str, value: object) -> bytes | str:
        return self.seal_text(table, ref, encode_json(value))

    def seal_text(self, table: str, ref: str, text: str) -> bytes | str:
        """Seal a value already encoded as JSON."""
        if not self.encrypted:
            return text
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, text.encode(), self._context(table, ref))

    def open(self, table: str, ref: str, blob: bytes | str):
        if not self.encrypted:
            if not isinstance(blob, str):
                raise StoreError(f"stored value in {table} is sealed, but no encryption key was given")
            return json.loads(blob)
        from cryptography.exceptions import InvalidTag

        if not isinstance(blob, bytes) or len(blob) <= NONCE_BYTES:
            raise StoreError(f"stored value in {table} is not sealed: the store was altered")
        try:
            plain = self._aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], self._context(table, ref))
        except InvalidTag:
            raise StoreError(f"a sealed value in {table} failed authentication: it was altered, moved "
                             "or sealed with another key") from None
        return json.loads(plain)

    def _context(self, table: str, ref: str) -> bytes:
        return f"inputlayer\0{table}\0{ref}\0{self.key_id}".encode()


def _derive(key: bytes, purpose: bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"inputlayer " + purpose).derive(key)


def key_from_env(env, name: str = "INPUTLAYER_ENCRYPTION_KEY") -> bytes | None:
    """The encryption key named by `name`, or None when the variable is unset or empty."""
    text = env.get(name)
    if not text:
        return None
    try:
        return parse_encryption_key(text)
    except StoreError as exc:
        raise StoreError(str(exc).replace("INPUTLAYER_ENCRYPTION_KEY", name)) from None
