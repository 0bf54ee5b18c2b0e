"""`inputlayer-server copy-store FROM TO`: a whole store into another, empty one (scaleout.md).

Every row, the audit chain as it is (it still verifies) and the server secrets, so existing API
keys and tokens keep working. The source is read under its write lock; the target is filled in
one transaction, so a failure leaves it as empty as it was. To a PostgreSQL target the secrets
go to INPUTLAYER_SERVER_SECRET_FILE: written (0600) when it does not exist yet, else required to
hold the source's secrets already.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from ..errors import StoreError
from .locate import describe_store, open_store
from .postgres import serversecrets
from .postgres.url import is_postgres_url

# What the summary line counts, in its order.
COUNTED = (("users", "users"), ("kgs", "knowledge graphs"), ("acl", "ACL entries"),
           ("api_keys", "API keys"), ("tokens", "session tokens"), ("audit", "audit records"))


def copy_store(source: str, target: str, env: Mapping[str, str]) -> dict[str, int]:
    """Copy `source` into the empty store at `target`; how many rows of each kind were copied."""
    if source == target:
        raise StoreError("copy-store: FROM and TO are the same store")
    rows = _export(source, env)
    if is_postgres_url(target):
        _provide_secrets(rows["secrets"], env)
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


def _export(source: str, env: Mapping[str, str]) -> dict:
    store = open_store(source, env)
    try:
        with store.write():        # the write lock: no other process changes it meanwhile
            rows = store.export_rows()
            problem = store.verify_audit()[1]
    finally:
        store.close()
    if problem:
        raise StoreError(f"copy-store: refusing to copy a store whose audit log is broken: {problem}")
    return rows


def _provide_secrets(secrets: dict[str, str], env: Mapping[str, str]) -> None:
    path = env.get("INPUTLAYER_SERVER_SECRET_FILE")
    if not path:
        raise StoreError(f"copy-store to PostgreSQL needs a place for the server secrets: {serversecrets.HINT}; "
                         "copy-store writes the source's secrets there when the file does not exist yet")
    if not os.path.exists(path):
        serversecrets.write_new(path, secrets)
    elif serversecrets.fingerprint(serversecrets.load(path)) != serversecrets.fingerprint(secrets):
        raise StoreError(f"copy-store: the server secrets file {path} holds other secrets than the source's; "
                         "name a file that does not exist yet and copy-store writes them there")


def summary(counts: dict[str, int]) -> str:
    return "Copied " + ", ".join(f"{counts[name]} {label}" for name, label in COUNTED) + "."
