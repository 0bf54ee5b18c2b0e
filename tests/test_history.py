"""The history file: where it lives, its mode, and that no secret is ever written to it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from backend.config import Config, ShellConfig
from repl.history import MASK, PrivateHistory, file_entry, history_path


def test_path_follows_config_then_xdg_state_home_then_home(tmp_path):
    assert history_path(Config(), {"XDG_STATE_HOME": "/st", "HOME": "/h"}) == Path("/st/inputlayer/history")
    assert history_path(Config(), {"HOME": "/h"}) == Path("/h/.local/state/inputlayer/history")
    configured = Config(shell=ShellConfig(history_file=str(tmp_path / "h")))
    assert history_path(configured, {"XDG_STATE_HOME": "/st"}) == tmp_path / "h"


def test_file_is_created_private(tmp_path):
    path = tmp_path / "state" / "inputlayer" / "history"
    PrivateHistory(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_an_existing_loose_file_is_tightened(tmp_path):
    path = tmp_path / "history"
    path.write_text("")
    os.chmod(path, 0o644)
    PrivateHistory(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_secrets_are_masked_in_the_file_but_kept_in_memory(tmp_path):
    path = tmp_path / "history"
    history = PrivateHistory(path)
    lines = [".user create bob 'S3cret pass!' viewer", ".user password bob N3w-pass-123", ".user list"]
    for line in lines:
        history.append_string(line)
    text = path.read_text()
    assert "S3cret" not in text and "N3w-pass" not in text
    assert f"+.user create bob {MASK} viewer" in text and f"+.user password bob {MASK}" in text
    assert "+.user list" in text
    assert history.get_strings() == lines                      # Up-arrow in this session
    assert list(PrivateHistory(path).load_history_strings())[0] == ".user list"


def test_file_entries():
    assert file_entry(".user create bob pw editor") == f".user create bob {MASK} editor"
    assert file_entry(".user create bob editor") == ".user create bob editor"     # role, no secret
    assert file_entry(".USER PASSWORD bob 'a b'") == f".USER PASSWORD bob {MASK}"
    assert file_entry(".kg list") == ".kg list"
    # A line that does not parse keeps nothing: its words may not sit where the grammar says.
    assert file_entry('.USER PASSWORD bob "a b') is None      # unclosed quote
    assert file_entry(".user password bob two words") is None
    assert file_entry(".kg lst") is None
    # A mistyped command: no grammar to find the secret by.
    assert file_entry(".user pasword bob N3w-pass-123") is None
    assert file_entry("select 1") is None


SECRET = "S3cret-Horse-77"


@pytest.mark.parametrize("line", [
    f".usr create bob {SECRET} viewer",                 # a mistyped group
    f"user create bob {SECRET} viewer",                 # the dot left out
    f".user\u00a0create bob {SECRET} viewer",          # a no-break space for a space
    f".user create bob viewer {SECRET}",                # password and role swapped
    f".user create erin correct horse battery {SECRET}",  # an unquoted password with blanks
    f".user create bob viewer\n{SECRET}",             # a pasted block: its second line
    f".user create bob {SECRET} viewer\r\n.kg list",
])
def test_unrecognised_or_unparsable_lines_never_reach_the_history_file(tmp_path, line):
    path = tmp_path / "history"
    history = PrivateHistory(path)
    history.append_string(line)
    history.append_string(f".user create carol {SECRET} viewer")   # recognised: masked
    assert SECRET not in path.read_text()
    assert f".user create carol {MASK} viewer" in path.read_text()
    assert history.get_strings()[0] == line                          # kept in memory only
