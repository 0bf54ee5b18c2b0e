"""Property-based: any text fed to the parser and the engine gives a result or a clean error,
and a failed command leaves the store exactly as it was."""

from __future__ import annotations

import json
import tempfile

from hypothesis import HealthCheck, given, settings, strategies as st

from backend.config import Config, with_values
from backend.engine import Engine
from backend.errors import CommandError
from backend.language.lexer import split_words, tokenize
from backend.language.parser import parse
from backend.language.registry import COMMANDS
from backend.result import Result
from backend.store import SQLiteStore
from backend.store.codec import encode_json, json_encoder
from backend.store.sqlite import TABLES
from conftest import ADMIN_PASSWORD, CHEAP_ARGON2

WORDS = ["alice", "bob", "sales", "default", "admin", "viewer", "editor", "owner", "role=admin",
         "kg=sales", "expires=1d", "user=alice", "'quoted word'", '"unclosed', "a-long-passphrase",
         "x" * 70, "\x00", "\x1b[2J", "grace=0s", "limit=3"]

command_lines = st.builds(
    lambda cmd, args: " ".join([cmd, *args]),
    st.sampled_from([c.name for c in COMMANDS] + [".kg acl", ".user", ".nope", "select"]),
    st.lists(st.one_of(st.sampled_from(WORDS), st.text(max_size=12)), max_size=5))
any_line = st.one_of(st.text(max_size=200), command_lines)


def snapshot(store: SQLiteStore) -> dict:
    return {t: store.conn.execute(f"SELECT * FROM {t}").fetchall() for t in TABLES}


@given(any_line)
@settings(max_examples=400, deadline=None)
def test_parser_answers_or_refuses_cleanly(line):
    try:
        parse(line)
    except CommandError as exc:
        assert exc.message and "\n" not in exc.message


class _World:
    """One engine for the whole property run (hypothesis re-runs the body many times)."""
    def __init__(self):
        self.dir = tempfile.TemporaryDirectory()
        self.engine = Engine(SQLiteStore(self.dir.name), with_values(Config(), CHEAP_ARGON2))
        self.engine.bootstrap(ADMIN_PASSWORD)
        self.admin = self.engine.login("admin", ADMIN_PASSWORD, source="local")
        for line in (".user create alice alice-passphrase editor", ".kg create sales",
                     ".kg acl grant sales alice editor", ".apikey create k1 user=alice"):
            self.engine.execute(self.admin, line)
        self.alice = self.engine.login("alice", "alice-passphrase", source="local")


WORLD = _World()


@given(any_line, st.booleans())
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_engine_failures_change_nothing(line, as_admin):
    session = WORLD.admin if as_admin else WORLD.alice
    before = snapshot(WORLD.engine.store)
    try:
        result = WORLD.engine.execute(session, line)
    except CommandError as exc:
        assert exc.message and "\n" not in exc.message
        after = snapshot(WORLD.engine.store)
        if exc.__class__.__name__ == "PermissionDenied":
            # A refusal adds exactly its audit record and nothing else.
            assert {t: after[t] for t in TABLES if t not in ("audit", "meta")} == \
                   {t: before[t] for t in TABLES if t not in ("audit", "meta")}
            assert len(after["audit"]) == len(before["audit"]) + 1
        else:
            assert after == before
    else:
        assert isinstance(result, Result)
        assert all(len(row) == len(result.columns) for row in result.rows)
    # A generated `.user drop alice` ends alice's session: start a fresh world for the next example.
    for session_ in (WORLD.admin, WORLD.alice):
        try:
            WORLD.engine.check_session(session_)
        except CommandError:
            WORLD.__init__()
            break


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)


@given(json_values)
@settings(max_examples=300, deadline=None)
def test_stored_json_is_exactly_what_json_dumps_writes(value):
    # Audit hashes are computed over this text: it must never drift from the standard encoding.
    assert encode_json(value) == json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    assert json_encoder(", ", ": ")(value) == json.dumps(value, ensure_ascii=False)


@given(st.text(alphabet=st.sampled_from(["a", "b", " ", "\t", "\n", "\x0b", "\x1c", "\xa0", "\u2003", "é", "="]),
               max_size=30))
@settings(max_examples=300, deadline=None)
def test_words_are_split_only_at_spaces_and_tabs(line):
    # split_words takes a str.split() shortcut; it must cut exactly where tokenize() does.
    assert split_words(line)[0] == [t.text for t in tokenize(line)]
