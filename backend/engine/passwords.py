"""Password hashing (argon2id) and the password policy.

Nothing here touches the store or the network, so each piece is tested on its own.
"""

from __future__ import annotations

import functools
import os
import secrets
import threading
from typing import TYPE_CHECKING, Any

from ..config import SecurityConfig
from ..language.kinds import MAX_PASSWORD_CHARS

if TYPE_CHECKING:     # imported when first needed: script mode's start-up stays fast
    from concurrent.futures import Future, ThreadPoolExecutor

SALT_BYTES, HASH_BYTES = 16, 32


class PasswordHasher:
    """argon2id with the configured parameters. Counts verifications so tests can check that
    every failure path spends exactly the same work (one verification), without timing."""

    def __init__(self, cfg: SecurityConfig):
        self._cfg = cfg
        self._dummies: dict[tuple[int, int, int, int, int] | None, str] = {}   # parameters -> a dummy hash
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._ahead: dict[str, list[Future[str]]] = {}     # password -> futures of hashes made ahead of time
        self.verifications = 0
        self.last_parameters: tuple[int, int, int, int, int] | None = None   # of the last verification
        self.parameters = (f"argon2id m={cfg.argon2_memory_kib} KiB, t={cfg.argon2_time_cost}, "
                           f"p={cfg.argon2_parallelism}")

    @functools.cached_property
    def _hasher(self) -> Any:
        # argon2 is imported on first use: an API-key login in script mode never needs it.
        from argon2 import PasswordHasher as Argon2Hasher
        from argon2 import Type

        cfg = self._cfg
        return Argon2Hasher(time_cost=cfg.argon2_time_cost, memory_cost=cfg.argon2_memory_kib,
                            parallelism=cfg.argon2_parallelism, hash_len=HASH_BYTES, salt_len=SALT_BYTES,
                            type=Type.ID)

    def hash(self, password: str) -> str:
        with self._lock:
            queued = self._ahead.get(password)
            future = queued.pop(0) if queued else None
            if queued == []:
                del self._ahead[password]
        return future.result() if future else self._hasher.hash(password)

    def hash_ahead(self, password: str) -> None:
        """Start hashing `password` on another core; hash() will collect it. argon2 releases the
        GIL, so a script of user creations hashes on every core and still commits in order."""
        from concurrent.futures import ThreadPoolExecutor

        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="argon2")
            self._ahead.setdefault(password, []).append(self._pool.submit(self._hasher.hash, password))

    def discard_ahead(self) -> None:
        with self._lock:
            for futures in self._ahead.values():
                for future in futures:
                    future.cancel()
            self._ahead.clear()

    def verify(self, stored_hash: str | None, password: str, *, like: str | None = None) -> bool:
        """One argon2 verification, against a dummy hash when there is no user, so an unknown
        user costs what a wrong password costs: a dummy made with the parameters of `like` (a
        stored hash), or else the configured ones."""
        target = stored_hash or self._dummy_hash(argon2_parameters(like) if like else None)
        with self._lock:
            self.verifications += 1
            self.last_parameters = argon2_parameters(target)
        try:
            encoded, secret = target.encode("ascii"), password.encode("utf-8")
        except UnicodeEncodeError:
            return False
        if not encoded.startswith(b"$argon2id$"):
            return False
        # The C verifier straight from argon2-cffi's own bindings: importing argon2-cffi itself
        # costs ~10 ms (its dataclasses), and every password log-in in script mode verifies.
        from _argon2_cffi_bindings import ffi, lib  # type: ignore[import-untyped]

        outcome = lib.argon2_verify(ffi.new("char[]", encoded), ffi.new("char[]", secret), len(secret),
                                    lib.Argon2_id)
        return outcome == lib.ARGON2_OK and stored_hash is not None

    def needs_rehash(self, stored_hash: str) -> bool:
        cfg = self._cfg
        return argon2_parameters(stored_hash) != (cfg.argon2_memory_kib, cfg.argon2_time_cost,
                                                  cfg.argon2_parallelism, SALT_BYTES, HASH_BYTES)

    def _dummy_hash(self, parameters: tuple[int, int, int, int, int] | None) -> str:
        # Made lazily, one per parameter set: most runs never meet an unknown user and start-up
        # must stay fast.
        dummy = self._dummies.get(parameters)
        if dummy is None:
            if parameters is None:
                dummy = self._hasher.hash(secrets.token_urlsafe(16))
            else:
                from argon2 import Type
                from argon2.low_level import hash_secret

                memory, time_cost, parallelism, salt_bytes, hash_bytes = parameters
                dummy = hash_secret(secrets.token_bytes(16), secrets.token_bytes(max(salt_bytes, 8)),
                                    time_cost=time_cost, memory_cost=memory, parallelism=parallelism,
                                    hash_len=max(hash_bytes, 4), type=Type.ID).decode("ascii")
            self._dummies[parameters] = dummy
        return dummy


def argon2_parameters(encoded: str) -> tuple[int, int, int, int, int] | None:
    """(memory KiB, time cost, parallelism, salt bytes, hash bytes) of an argon2id v1.3 hash in
    its standard text form ($argon2id$v=19$m=..,t=..,p=..$salt$hash), or None."""
    parts = encoded.split("$")
    if len(parts) != 6 or parts[:3] != ["", "argon2id", "v=19"]:
        return None
    settings = dict(item.partition("=")[::2] for item in parts[3].split(","))
    try:
        memory, time_cost, parallelism = (int(settings[name]) for name in ("m", "t", "p"))
    except (KeyError, ValueError):
        return None
    return memory, time_cost, parallelism, len(parts[4]) * 3 // 4, len(parts[5]) * 3 // 4


def check_password_policy(name: str, password: str, min_length: int) -> str | None:
    """The policy violation as a user-facing message, or None."""
    if len(password) < min_length:
        return f"Password too short: at least {min_length} characters"
    if len(password) > MAX_PASSWORD_CHARS:
        return f"Password too long: at most {MAX_PASSWORD_CHARS} characters"
    if password == name:
        return "Password must differ from the user name"
    return None
