"""The server's TLS context, from PEM files or a PKCS#12 keystore."""

from __future__ import annotations

import os
import secrets
import ssl
import tempfile

from ..config import TLSConfig
from ..errors import ConfigError


def tls_context(tls: TLSConfig, keystore_password: str | None) -> ssl.SSLContext | None:
    """A server context from PEM files or a PKCS#12 keystore, TLS 1.2 at least; None without TLS."""
    if not (tls.cert or tls.key or tls.keystore):
        return None
    if tls.keystore and (tls.cert or tls.key):
        raise ConfigError("TLS: give either a certificate and key (PEM) or a keystore (PKCS#12), not both")
    if not tls.keystore and not (tls.cert and tls.key):
        raise ConfigError("TLS: a PEM certificate needs its key, and a key its certificate "
                          "(--tls-cert and --tls-key)")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls.cert:
        try:
            ctx.load_cert_chain(tls.cert, tls.key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"TLS: cannot load {tls.cert} / {tls.key}: "
                              f"{getattr(exc, 'strerror', None) or exc}") from None
        return ctx
    _load_keystore(ctx, tls.keystore, keystore_password)
    return ctx


def _load_keystore(ctx: ssl.SSLContext, path: str, password: str | None) -> None:
    from cryptography.hazmat.primitives.serialization import (
        BestAvailableEncryption,
        Encoding,
        PrivateFormat,
        pkcs12,
    )

    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise ConfigError(f"TLS: cannot read keystore {path}: {exc.strerror or exc}") from None
    try:
        key, cert, extra = pkcs12.load_key_and_certificates(data, password.encode() if password else None)
    except (ValueError, TypeError):
        raise ConfigError(f"TLS: cannot open keystore {path}: wrong password "
                          "(INPUTLAYER_TLS_KEYSTORE_PASSWORD) or not a PKCS#12 file") from None
    if key is None or cert is None:
        raise ConfigError(f"TLS: keystore {path} must hold a private key and its certificate")
    # ssl loads keys from files only: the key goes to a private temporary file, encrypted under
    # a one-time password that never leaves this process, and is removed at once.
    one_time = secrets.token_bytes(32)
    key_pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, BestAvailableEncryption(one_time))
    chain = cert.public_bytes(Encoding.PEM) + b"".join(c.public_bytes(Encoding.PEM) for c in extra or ())
    with tempfile.TemporaryDirectory(prefix="inputlayer-tls-") as tmp:
        cert_file, key_file = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
        for name, content in ((cert_file, chain), (key_file, key_pem)):
            fd = os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(content)
        try:
            ctx.load_cert_chain(cert_file, key_file, password=one_time)
        except ssl.SSLError as exc:
            raise ConfigError(f"TLS: keystore {path} holds an unusable key or certificate: {exc}") from None
