"""`inputlayer-server copy-store FROM TO`: a whole store into another, empty one (scaleout.md).

Every row, the audit chain as it is (it still verifies) and the server secrets, so existing API
keys and tokens keep working. The source is read under its write lock; the target is filled in
one transaction, so a failure leaves it as empty as it was. The secrets go where the target
keeps them: to INPUTLAYER_SERVER_SECRET_FILE for PostgreSQL, to the data directory's `secrets`
file otherwise; written (0600) when absent, else required to hold the source's secrets already.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from ..errors import StoreError
from .codec import Codec, key_from_env
from .locate import describe_store, open_store
from .postgres import serversecrets
from .postgres.url import is_postgres_url
from .secrets import ServerSecrets, read_secrets, secrets_path, write_secrets

# What the summary line counts, in its order.
COUNTED = (("users", "users"), ("kgs", "knowledge graphs"), ("acl", "ACL entries"),
           ("api_keys", "API keys"), ("tokens", "session tokens"), ("audit", "audit records"))


def copy_store(source: str, target: str, env: Mapping[str, str]) -> dict[str, int]:
    """Copy `source` into the empty store at `target`; how many rows of each kind were copied."""
    if source == target:
        raise StoreError("copy-store: FROM and TO are the same store")
    rows, secrets = _export(source, env)
    _provide_secrets(target, secrets, env)
    into = open_store(target, env)
    try:
        with into.read():
            if into.user_count() or into.verify_audit()[0]:
                raise StoreError(f"copy-store: the target {describe_store(target)} is not empty")
        with into.write():
            into.import_rows(rows)
    finally:
        into.close()
    return {name: len(rows[name]) for name, _ in COUNTED}


def _export(source: str, env: Mapping[str, str]) -> tuple[dict, ServerSecrets]:
    store = open_store(source, env)
    try:
        with store.write():        # the write lock: no other process changes it meanwhile
            rows = store.export_rows()
            problem = store.verify_audit()[1]
        secrets = store.secrets
    finally:
        store.close()
    if problem:
        raise StoreError(f"copy-store: refusing to copy a store whose audit log is broken: {problem}")
    return rows, secrets


def _provide_secrets(target: str, secrets: ServerSecrets, env: Mapping[str, str]) -> None:
    """Put the source's secrets where the target store will look for them."""
    if not is_postgres_url(target):
        directory = Path(target)
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot make {directory}: {exc.strerror or exc}") from None
        codec = Codec(key_from_env(env))
        write_secrets(secrets_path(directory), codec, secrets, replace=False)    # unless one is there
        found = read_secrets(secrets_path(directory), codec)
        if found is None or found.fingerprint() != secrets.fingerprint():
            raise StoreError(f"copy-store: the target {target} is not empty: it has server secrets of its own")
        return
    path = env.get("INPUTLAYER_SERVER_SECRET_FILE")
    if not path:
        raise StoreError(f"copy-store to PostgreSQL needs a place for the server secrets: {serversecrets.HINT}; "
                         "copy-store writes the source's secrets there when the file does not exist yet")
    if not os.path.exists(path):
        serversecrets.write_new(path, secrets)
    if serversecrets.load(path).fingerprint() != secrets.fingerprint():
        raise StoreError(f"copy-store: the server secrets file {path} holds other secrets than the source's; "
                         "name a file that does not exist yet and copy-store writes them there")


def summary(counts: dict[str, int]) -> str:
    return "Copied " + ", ".join(f"{counts[name]} {label}" for name, label in COUNTED) + "."
