"""Connection profiles, and the config file written back with tomlkit (`.config`)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from backend.config import Profile, parse_config, select_profile
from backend.config_edit import set_value, settings, unset_value, write_private
from backend.errors import ConfigError
from conftest import ADMIN_PASSWORD, CHEAP_TOML, cli_env, run_cli

COMMENTED = """\
# My InputLayer settings.   (two spaces, on purpose)
data_dir = "/srv/il"          # the big disk

[shell]
# json for scripts, table for me
format    = "table"   # aligned
history_file = "~/.il_history"

[profiles.prod]               # production, read-mostly
url = "wss://il.example.com/ws"
user = "alice"
"""


def test_profiles_are_read_and_a_secret_in_one_is_refused_naming_it():
    config = parse_config(COMMENTED, "c.toml")
    assert select_profile(config, "prod", {}) == Profile(url="wss://il.example.com/ws", user="alice")
    assert select_profile(config, None, {"INPUTLAYER_PROFILE": "prod"}).user == "alice"
    assert select_profile(config, None, {}) == Profile()
    with pytest.raises(ConfigError, match=r"unknown profile 'dev' in c.toml; known profiles: prod"):
        select_profile(config, "dev", {})
    with pytest.raises(ConfigError, match=r"c.toml: profiles never hold passwords or keys: remove 'profiles.x.api_key'"):
        parse_config('[profiles.x]\nurl = "ws://h:1/ws"\napi_key = "il_x"\n', "c.toml")


def test_set_changes_only_the_value_and_keeps_every_other_byte():
    path = Path("c.toml")
    changed = set_value(COMMENTED, "shell.format", "json", path)
    assert changed == COMMENTED.replace('format    = "table"', 'format    = "json"')
    assert set_value(changed, "shell.format", "table", path) == COMMENTED
    added = set_value(COMMENTED, "profiles.prod.format", "csv", path)
    assert added.startswith(COMMENTED.rstrip("\n")) and added.endswith('format = "csv"\n')
    port = set_value(COMMENTED, "server.port", "9090", path)
    assert "[server]\nport = 9090\n" in port and port.replace("[server]\nport = 9090\n", "").replace("\n\n\n", "\n\n") \
        .startswith(COMMENTED.split("[shell]")[0])
    assert unset_value(changed, "data_dir", path) == changed.replace('data_dir = "/srv/il"          # the big disk\n', "")


@pytest.mark.parametrize("key, value, message", [
    ("colour", "red", "unknown key 'colour'"),
    ("shell.format", "xml", "bad value for 'shell.format': expected one of"),
    ("server.port", "eighty", "bad value for 'server.port'"),
    ("bootstrap_admin_password", "x", "secrets do not belong in the config file"),
    ("profiles.prod.password", "x", "secrets do not belong in the config file"),
    ("profiles.prod.url", "http://x", "bad value for 'profiles.prod.url'"),
])
def test_bad_keys_and_values_are_refused(key, value, message):
    with pytest.raises(ConfigError, match=message):
        set_value(COMMENTED, key, value, Path("c.toml"))


def test_list_masks_secrets_and_writes_are_private(tmp_path):
    listed = dict(settings('bootstrap_admin_password = "s"\n' + COMMENTED, Path("c.toml")))
    assert listed["bootstrap_admin_password"] == "********" and listed["profiles.prod.user"] == "alice"
    target = tmp_path / "new" / "config.toml"
    write_private(target, "data_dir = \"/x\"\n")
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600 and target.read_text() == "data_dir = \"/x\"\n"


def test_profile_supplies_target_user_and_format_and_flags_win(tmp_path):
    config = tmp_path / "config.toml"
    data = tmp_path / "prof-data"
    config.write_text(CHEAP_TOML + f'\n[profiles.here]\ndata_dir = "{data}"\nformat = "csv"\n')
    env = cli_env(config, INPUTLAYER_ADMIN_PASSWORD=ADMIN_PASSWORD)
    proc = run_cli(["--profile", "here", "-c", ".whoami"], env=env)
    assert proc.returncode == 0 and proc.stdout.decode().startswith("username,role,auth,knowledge_graph\r\n")
    assert data.exists()
    proc = run_cli(["-c", ".whoami", "--format", "plain"], env={**env, "INPUTLAYER_PROFILE": "here"})
    assert proc.stdout.decode().startswith("admin\tadmin")
    proc = run_cli(["--profile", "nope", "-c", ".whoami"], env=env)
    assert proc.returncode == 2 and "unknown profile 'nope'" in proc.stderr.decode() and "known profiles: here" in \
        proc.stderr.decode()


def test_config_command_in_the_shell_edits_the_file_in_use(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(CHEAP_TOML.replace("[security]", "# cheap hashing for tests\n[security]  # keep"))
    before = config.read_text()
    env = cli_env(config, INPUTLAYER_ADMIN_PASSWORD=ADMIN_PASSWORD)
    data = ["--data-dir", str(tmp_path / "d")]
    proc = run_cli([*data, "-c", ".config set shell.format json", "-c", ".config get shell.format"], env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode().splitlines() == [f"Set shell.format in {config}.", "shell.format\tjson"]
    assert config.read_text() == before + '\n[shell]\nformat = "json"\n'
    assert stat.S_IMODE(os.stat(config).st_mode) == 0o600
    proc = run_cli([*data, "-c", ".config set security.argon2_time_cost 0"], env=env)
    assert proc.returncode == 3 and "bad value for 'security.argon2_time_cost'" in proc.stderr.decode()
    assert config.read_text() == before + '\n[shell]\nformat = "json"\n'
    proc = run_cli([*data, "-c", ".config unset shell.format", "-c", ".config list"], env={**env})
    assert "shell.format" not in proc.stdout.decode().split("\n", 1)[1]
