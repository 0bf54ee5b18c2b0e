"""The TOML config: strict keys and values, errors that name the key and the file, precedence."""

from __future__ import annotations

import pytest

from backend.config import load_config, parse_config, resolve_store
from backend.errors import ConfigError


def test_full_example_from_the_spec_parses():
    cfg = parse_config("""
data_dir = "/var/lib/inputlayer"
bootstrap_admin_password = "change-me-now"   # used only when the store has no users

[server]
host = "127.0.0.1"
port = 8080
auth_timeout_secs = 30
max_message_bytes = 1048576
trusted_proxies = ["10.0.0.0/8"]
allowed_ips = []

[server.tls]
cert = ""

[security]
min_password_length = 12
argon2_time_cost = 3

[shell]
history_file = "~/.local/state/inputlayer/history"
format = "json"
""", "spec.toml")
    assert cfg.data_dir == "/var/lib/inputlayer" and cfg.server.trusted_proxies == ("10.0.0.0/8",)
    assert cfg.security.min_password_length == 12 and cfg.security.argon2_time_cost == 3
    assert cfg.security.argon2_memory_kib == 19456 and cfg.shell.format == "json"


@pytest.mark.parametrize("text, message", [
    ("colour = 1", "c.toml: unknown key 'colour'"),
    ("[security]\nargon2_threads = 4", "c.toml: unknown key 'security.argon2_threads'"),
    ("[server]\nport = 70000", "c.toml: bad value for 'server.port': expected a whole number from 0 to 65535"),
    ("[server]\nport = \"80\"", "bad value for 'server.port'"),
    ("[shell]\nformat = \"xml\"", "bad value for 'shell.format'"),
    ("[server]\nallowed_ips = [\"not-an-ip\"]", "'not-an-ip' is not an address or CIDR range"),
    ("server = 3", "'server' must be a table"),
    ("[security\n", "c.toml: not valid TOML"),
])
def test_bad_config_names_key_and_file(text, message):
    with pytest.raises(ConfigError) as exc:
        parse_config(text, "c.toml")
    assert message in str(exc.value)


def test_file_location_and_precedence(tmp_path):
    flag_file = tmp_path / "flag.toml"
    flag_file.write_text('data_dir = "from-flag-file"')
    env_file = tmp_path / "env.toml"
    env_file.write_text('data_dir = "from-env-file"')
    env = {"INPUTLAYER_CONFIG": str(env_file), "HOME": str(tmp_path)}
    assert load_config(str(flag_file), env).data_dir == "from-flag-file"
    cfg = load_config(None, env)
    assert cfg.data_dir == "from-env-file"
    assert resolve_store(None, "flag-dir", {"INPUTLAYER_DATA_DIR": "env-dir"}, cfg) == "flag-dir"
    assert resolve_store(None, None, {"INPUTLAYER_DATA_DIR": "env-dir"}, cfg) == "env-dir"
    assert resolve_store(None, None, {}, cfg) == "from-env-file"
    xdg = tmp_path / "xdg" / "inputlayer"
    xdg.mkdir(parents=True)
    (xdg / "config.toml").write_text("[shell]\nformat = \"csv\"")
    assert load_config(None, {"XDG_CONFIG_HOME": str(tmp_path / "xdg")}).shell.format == "csv"
    assert load_config(None, {"HOME": str(tmp_path / "nobody")}).source == ""
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(str(tmp_path / "missing.toml"), {})


def test_the_store_comes_from_flags_then_environment_then_config():
    url = "postgresql://il@db.example/inputlayer"
    cfg = parse_config(f'store = "{url}"\ndata_dir = "/var/lib/il"', "test.toml")
    assert cfg.store == url
    assert resolve_store(None, None, {}, cfg) == url
    assert resolve_store(None, None, {"INPUTLAYER_DATA_DIR": "env-dir"}, cfg) == "env-dir"
    assert resolve_store(None, None, {"INPUTLAYER_STORE": "postgresql://env/x", "INPUTLAYER_DATA_DIR": "d"},
                         cfg) == "postgresql://env/x"
    assert resolve_store("postgresql://flag/x", None, {"INPUTLAYER_STORE": "postgresql://env/x"},
                         cfg) == "postgresql://flag/x"
    assert resolve_store(None, "flag-dir", {"INPUTLAYER_STORE": "postgresql://env/x"}, cfg) == "flag-dir"
    assert resolve_store(None, None, {}, parse_config('data_dir = "/d"', "t.toml")) == "/d"
