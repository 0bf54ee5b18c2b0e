"""Handlers are bound to the registry's commands by reference, one each; what passes between
the engine and its callers travels in typed fields, not ad-hoc attributes."""

from __future__ import annotations

import pytest

from backend.engine import RateLimited, UnrecordedDenial
from backend.engine.handlers import HANDLERS
from backend.engine.handlers.base import handles
from backend.errors import AuthError
from backend.language.registry import COMMANDS


def test_every_engine_command_has_exactly_one_handler():
    engine_commands = [c for c in COMMANDS if not c.shell_only]
    assert set(HANDLERS) == set(engine_commands)
    assert len(HANDLERS) == len(engine_commands)


@pytest.mark.parametrize("words", ["user frobnicate", "quit", "user create"])
def test_binding_an_unknown_shell_only_or_bound_command_fails_at_once(words):
    with pytest.raises(LookupError):
        handles(words)


def last_audit(engine, actor):
    with engine.store.read():
        return engine.store.audit_records(limit=1, actor=actor, action=None, since=None)[0]


def test_a_numbered_program_error_keeps_its_class_and_details(engine, admin):
    key = engine.execute(admin, ".apikey create limited rate=1/m").rows[0][0]
    session = engine.authenticate(key, source="local")
    with pytest.raises(RateLimited, match="^line 2: Rate limit exceeded") as raised:
        engine.execute_program(session, ".whoami\n.whoami")
    assert (raised.value.limit, raised.value.reset_in) == (1, 60)


def test_a_deferred_refusal_carries_its_record_for_the_caller_to_write(engine, admin):
    engine.execute(admin, ".user create vic vic-passphrase viewer")
    vic = engine.login("vic", "vic-passphrase", source="local")
    with pytest.raises(UnrecordedDenial, match="^line 2: Permission denied") as raised:
        engine.execute_program(vic, ".whoami\n.user list", defer_denial_audit=True)
    assert last_audit(engine, "vic")["action"] == "auth.login"       # not written yet
    engine.record_denial(raised.value.audit_record)
    record = last_audit(engine, "vic")
    assert (record["action"], record["outcome"]) == ("user.list", "denied")


def test_a_locked_address_is_audited_with_the_callers_source(engine, clock):
    for _ in range(engine.lockout.limit):
        engine.lockout.record_failure("192.0.2.7")
    with pytest.raises(AuthError, match="Too many failed attempts"):
        engine.login("admin", "whatever", source="http", address="192.0.2.7")
    clock.advance(engine.lockout.lock_secs)
    engine.flush_refusals()             # the window's refusals: one record when it ends
    assert last_audit(engine, "-")["source"] == "http:192.0.2.7"
