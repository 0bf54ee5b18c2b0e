"""Security primitives on their own: key format, digests, hashing, password policy, lockout."""

from __future__ import annotations

import pytest

from backend.config import SecurityConfig
from backend.engine.keys import key_digest, new_api_key, well_formed_key
from backend.engine.limits import Lockout
from backend.engine.passwords import PasswordHasher, argon2_parameters, check_password_policy
from fakes import FakeClock


def test_api_keys_have_256_bits_and_a_checksum():
    keys = {new_api_key() for _ in range(200)}
    assert len(keys) == 200
    for key in keys:
        prefix, body, check = key.split("_")
        assert prefix == "il" and len(body) == 43 and len(check) == 6 and well_formed_key(key)
    key = keys.pop()
    typo = key[:10] + ("A" if key[10] != "A" else "B") + key[11:]
    assert not well_formed_key(typo)
    assert not well_formed_key(key + "x") and not well_formed_key("il_short_abc") and not well_formed_key("")


def test_digest_is_keyed():
    key = new_api_key()
    assert key_digest(b"a" * 32, key) != key_digest(b"b" * 32, key)
    assert key not in key_digest(b"a" * 32, key)


def test_real_parameters_by_default_and_rehash_detection():
    # The hashing tests use the real defaults (OWASP minimum), not the cheap test parameters.
    real = PasswordHasher(SecurityConfig())
    stored = real.hash("correct horse")
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert real.verify(stored, "correct horse") and not real.verify(stored, "wrong horse")
    assert not real.needs_rehash(stored)
    assert PasswordHasher(SecurityConfig(argon2_time_cost=3)).needs_rehash(stored)


def test_verification_agrees_with_argon2_cffi():
    # verify() calls the C verifier directly; argon2-cffi's own verify is the reference.
    import argon2

    hasher = PasswordHasher(SecurityConfig(argon2_memory_kib=8, argon2_time_cost=1))
    reference = argon2.PasswordHasher(memory_cost=8, time_cost=1, parallelism=1)
    stored = hasher.hash("pässword-1")
    tampered = stored[:-2] + ("AA" if not stored.endswith("AA") else "BB")
    other_type = argon2.PasswordHasher(type=argon2.Type.I, memory_cost=8, time_cost=1, parallelism=1).hash("pässword-1")
    for candidate, password, expected in [(stored, "pässword-1", True), (stored, "pässword-2", False),
                                          (stored, "", False), (tampered, "pässword-1", False),
                                          (other_type, "pässword-1", False), ("$argon2id$v=19$m=8", "x", False),
                                          ("not-a-hash", "x", False), ("$argon2id$ü", "x", False)]:
        assert hasher.verify(candidate, password) is expected, (candidate, password)
    assert reference.verify(stored, "pässword-1")


def test_argon2_parameters_read_back_what_argon2_cffi_wrote():
    import argon2

    for m, t, p in [(8, 1, 1), (19456, 2, 1), (65536, 3, 4)]:
        stored = argon2.PasswordHasher(memory_cost=m, time_cost=t, parallelism=p, salt_len=16,
                                       hash_len=32).hash("x")
        found = argon2.extract_parameters(stored)
        assert argon2_parameters(stored) == (m, t, p, 16, 32) == (found.memory_cost, found.time_cost,
                                                                  found.parallelism, found.salt_len,
                                                                  found.hash_len)
    assert argon2_parameters(argon2.PasswordHasher(salt_len=20, hash_len=40).hash("x"))[3:] == (20, 40)
    for broken in ["", "not-a-hash", "$argon2i$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaA",
                   "$argon2id$v=16$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaA", "$argon2id$v=19$m=8,t=1$c2FsdA$aGFzaA",
                   "$argon2id$v=19$m=x,t=1,p=1$c2FsdA$aGFzaA"]:
        assert argon2_parameters(broken) is None


def test_unknown_user_costs_one_verification_and_never_succeeds():
    hasher = PasswordHasher(SecurityConfig(argon2_memory_kib=8, argon2_time_cost=1))
    assert not hasher.verify(None, "anything")
    assert not hasher.verify("not-a-hash", "anything")
    assert hasher.verifications == 2


@pytest.mark.parametrize("password, problem", [
    ("short", "Password too short: at least 8 characters"),
    ("x" * 1025, "Password too long: at most 1024 characters"),
    ("alice-smith", "Password must differ from the user name"),
    ("a perfectly fine one", None),
])
def test_password_policy(password, problem):
    assert check_password_policy("alice-smith", password, 8) == problem


def test_lockout_locks_on_the_limit_and_lifts_after_the_lock_time():
    clock = FakeClock()
    lock = Lockout(SecurityConfig(), clock)
    for attempt in range(1, 20):
        assert not lock.record_failure("192.0.2.1"), attempt
        assert lock.remaining("192.0.2.1") == 0
    assert lock.record_failure("192.0.2.1")           # the 20th failure locks
    assert lock.remaining("192.0.2.1") == 60          # so the 21st attempt is refused
    assert lock.remaining("192.0.2.2") == 0           # other addresses are unaffected
    assert lock.entries()[0][0] == "192.0.2.1" and lock.entries()[0][1] == 20
    clock.advance(59.5)
    assert lock.remaining("192.0.2.1") == 1
    clock.advance(0.5)
    assert lock.remaining("192.0.2.1") == 0
    assert not lock.record_failure("192.0.2.1")       # a fresh count after the lock lifts


def test_failures_outside_the_window_do_not_count():
    clock = FakeClock()
    lock = Lockout(SecurityConfig(), clock)
    for _ in range(19):
        lock.record_failure("198.51.100.7")
    clock.advance(61)
    assert not lock.record_failure("198.51.100.7")
    assert lock.clear("198.51.100.7") and not lock.clear("198.51.100.7")
