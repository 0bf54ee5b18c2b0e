"""The TOML configuration: one schema, strict validation, precedence flags > env > file > defaults."""

# No `from __future__ import annotations`: NamedTuple would compile each field's annotation
# string at every start-up: about 1 ms for this module's tuples.
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from .errors import ConfigError
from .netaddr import normalize_network


class TLSConfig(NamedTuple):
    cert: str = ""
    key: str = ""
    keystore: str = ""


class ServerConfig(NamedTuple):
    host: str = "127.0.0.1"
    port: int = 8080
    auth_timeout_secs: int = 30
    max_message_bytes: int = 1048576
    max_program_lines: int = 10000
    trusted_proxies: tuple[str, ...] = ()
    allowed_ips: tuple[str, ...] = ()
    tls: TLSConfig = TLSConfig()


class SecurityConfig(NamedTuple):
    min_password_length: int = 8
    lockout_failures: int = 20
    lockout_window_secs: int = 60
    lockout_secs: int = 60
    account_lockout_failures: int = 50
    account_lockout_secs: int = 60
    argon2_memory_kib: int = 19456
    argon2_time_cost: int = 2
    argon2_parallelism: int = 1
    auth_mode: str = "managed"


class ShellConfig(NamedTuple):
    history_file: str = ""
    format: str = ""
    lock_wait_ms: int = 30_000          # how long a command waits for another process's write lock
    max_transaction_secs: int = 60      # how long a -1 script may hold the store's write lock


class ClusterConfig(NamedTuple):
    """scaleout.md: Redis for the counters and sessions the nodes of a cluster share."""
    redis_url: str = ""
    node: str = ""                  # this node's name in `.session list`; "" = host:port of its listener
    key_prefix: str = "inputlayer:"         # several clusters (or test runs) may share one Redis
    session_ttl_secs: int = 30      # a killed node's sessions leave the directory within this


class Profile(NamedTuple):
    """A named connection (`[profiles.NAME]`): where, as whom, how shown. Never a secret."""
    url: str = ""
    data_dir: str = ""
    user: str = ""
    ca_file: str = ""
    format: str = ""


class Config(NamedTuple):
    data_dir: str = ""
    store: str = ""    # a postgresql:// URL (or a data directory), instead of data_dir
    bootstrap_admin_password: str = ""
    server: ServerConfig = ServerConfig()
    security: SecurityConfig = SecurityConfig()
    shell: ShellConfig = ShellConfig()
    cluster: ClusterConfig = ClusterConfig()
    profiles: tuple[tuple[str, Profile], ...] = ()     # (name, profile), sorted by name
    source: str = ""   # the file it was read from, for messages


def _int_range(low: int, high: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"expected a whole number from {low} to {high}")
        return int(value)
    return check


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a string")
    return str(value)


def _choice(*allowed: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in allowed:
            raise ValueError("expected one of " + ", ".join(f'"{a}"' for a in allowed))
        return str(value)
    return check


def _networks(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ValueError("expected a list of addresses or CIDR ranges")
    out = []
    for item in value:
        try:
            out.append(normalize_network(str(item)))
        except ValueError:
            raise ValueError(f"'{item}' is not an address or CIDR range") from None
    return tuple(out)


def _redis_url(value: Any) -> str:
    text = _string(value)
    if text and not text.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("expected a redis://, rediss:// or unix:// URL")
    return text


SCHEMA: dict[str, Callable[[Any], Any]] = {
    "data_dir": _string,
    "store": _string,
    "bootstrap_admin_password": _string,
    "server.host": _string,
    "server.port": _int_range(0, 65535),
    "server.auth_timeout_secs": _int_range(1, 86400),
    "server.max_message_bytes": _int_range(1024, 1 << 30),
    "server.max_program_lines": _int_range(1, 1_000_000),
    "server.trusted_proxies": _networks,
    "server.allowed_ips": _networks,
    "server.tls.cert": _string,
    "server.tls.key": _string,
    "server.tls.keystore": _string,
    "security.min_password_length": _int_range(1, 1024),
    "security.lockout_failures": _int_range(1, 1_000_000),
    "security.lockout_window_secs": _int_range(1, 86400),
    "security.lockout_secs": _int_range(1, 86400 * 7),
    "security.account_lockout_failures": _int_range(1, 1_000_000),
    "security.account_lockout_secs": _int_range(1, 86400 * 7),
    "security.argon2_memory_kib": _int_range(8, 4 * 1024 * 1024),
    "security.argon2_time_cost": _int_range(1, 100),
    "security.argon2_parallelism": _int_range(1, 64),
    "security.auth_mode": _choice("managed", "shared_key", "disabled"),
    "shell.history_file": _string,
    "shell.format": _choice("table", "plain", "json", "csv"),
    "shell.lock_wait_ms": _int_range(0, 3_600_000),
    "shell.max_transaction_secs": _int_range(1, 86400),
    "cluster.redis_url": _redis_url,
    "cluster.node": _string,
    "cluster.key_prefix": _string,
    "cluster.session_ttl_secs": _int_range(3, 3600),
}
SECTIONS = {"server", "server.tls", "security", "shell", "cluster"}


def _url(value: Any) -> str:
    if not isinstance(value, str) or not value.startswith(("ws://", "wss://")):
        raise ValueError("expected ws://HOST:PORT/ws or wss://HOST:PORT/ws")
    return value


PROFILE_SCHEMA: dict[str, Callable[[Any], Any]] = {
    "url": _url,
    "data_dir": _string,
    "user": _string,
    "ca_file": _string,
    "format": SCHEMA["shell.format"],
}
PROFILE_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
# Words that mark a key as holding a secret: refused in a profile, and by `.config set`.
SECRET_WORDS = ("password", "secret", "api_key", "apikey", "token", "private_key")


def holds_secret(key: str) -> bool:
    return any(word in key.lower() for word in SECRET_WORDS)


def _profiles(value: Any, path: str) -> tuple[tuple[str, Profile], ...]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{path}: 'profiles' must be a table of tables ([profiles.NAME])")
    profiles = []
    for name, table in value.items():
        if not name or not set(name) <= PROFILE_NAME_CHARS:
            raise ConfigError(f"{path}: bad profile name '{name}': use letters, digits, '_', '-'")
        if not isinstance(table, Mapping):
            raise ConfigError(f"{path}: 'profiles.{name}' must be a table ([profiles.{name}])")
        fields = {}
        for key, raw in table.items():
            dotted = f"profiles.{name}.{key}"
            if holds_secret(key):
                raise ConfigError(f"{path}: profiles never hold passwords or keys: remove '{dotted}'")
            if key not in PROFILE_SCHEMA:
                raise ConfigError(f"{path}: unknown key '{dotted}'")
            try:
                fields[key] = PROFILE_SCHEMA[key](raw)
            except ValueError as exc:
                raise ConfigError(f"{path}: bad value for '{dotted}': {exc}") from None
        profiles.append((name, Profile(**fields)))
    return tuple(sorted(profiles))


def _flatten(table: Mapping[str, Any], prefix: str, path: str, out: dict[str, Any]) -> None:
    for key, value in table.items():
        dotted = f"{prefix}{key}"
        if dotted == "profiles":
            out[dotted] = _profiles(value, path)
        elif dotted in SECTIONS:
            if not isinstance(value, Mapping):
                raise ConfigError(f"{path}: '{dotted}' must be a table ([{dotted}])")
            _flatten(value, dotted + ".", path, out)
        elif dotted in SCHEMA:
            out[dotted] = value
        else:
            raise ConfigError(f"{path}: unknown key '{dotted}'")


def parse_config(text: str, path: str) -> Config:
    # The standard library's reader: tomlkit's import cost every start-up ~5 ms, and the shell
    # only reads the file.
    import tomllib

    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    flat: dict[str, Any] = {}
    _flatten(document, "", path, flat)
    profiles = flat.pop("profiles", ())
    checked = {}
    for key, value in flat.items():
        try:
            checked[key] = SCHEMA[key](value)
        except ValueError as exc:
            raise ConfigError(f"{path}: bad value for '{key}': {exc}") from None
    return with_values(Config(profiles=profiles, source=path), checked)


def with_values(config: Config, values: Mapping[str, Any]) -> Config:
    """A copy of `config` with dotted keys (`security.argon2_time_cost`) replaced."""
    nested: dict[str, Any] = {}
    for key, value in values.items():
        parts = key.split(".")
        node = nested
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return _apply(config, nested)


def _apply(obj: Any, changes: dict[str, Any]) -> Any:
    updates = {}
    names = set(obj._fields)
    for key, value in changes.items():
        if key not in names:
            raise ConfigError(f"unknown key '{key}'")
        updates[key] = _apply(getattr(obj, key), value) if isinstance(value, dict) else value
    return obj._replace(**updates)


def config_path(flag: str | None, env: Mapping[str, str]) -> Path | None:
    """--config, else INPUTLAYER_CONFIG, else the XDG file when it exists."""
    if flag:
        return Path(flag)
    if env.get("INPUTLAYER_CONFIG"):
        return Path(env["INPUTLAYER_CONFIG"])
    base = env.get("XDG_CONFIG_HOME") or os.path.join(env.get("HOME", "~"), ".config")
    default = Path(os.path.expanduser(base)) / "inputlayer" / "config.toml"
    return default if default.is_file() else None


def config_target(flag: str | None, env: Mapping[str, str]) -> Path:
    """Where `.config set` writes: the file in use, else the XDG path (created then)."""
    found = config_path(flag, env)
    if found is not None:
        return found
    base = env.get("XDG_CONFIG_HOME") or os.path.join(env.get("HOME", "~"), ".config")
    return Path(os.path.expanduser(base)) / "inputlayer" / "config.toml"


def select_profile(config: Config, flag: str | None, env: Mapping[str, str]) -> Profile:
    """--profile, else INPUTLAYER_PROFILE, else no profile (empty); unknown names are an error."""
    name = flag or env.get("INPUTLAYER_PROFILE")
    if not name:
        return Profile()
    profiles = dict(config.profiles)
    if name not in profiles:
        known = ", ".join(profiles) or "none"
        where = f" in {config.source}" if config.source else ""
        raise ConfigError(f"unknown profile '{name}'{where}; known profiles: {known}")
    return profiles[name]


def load_config(flag: str | None, env: Mapping[str, str]) -> Config:
    path = config_path(flag, env)
    if path is None:
        return Config()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    return parse_config(text, str(path))


def default_data_dir(env: Mapping[str, str]) -> str:
    base = env.get("XDG_DATA_HOME") or os.path.join(env.get("HOME", "~"), ".local", "share")
    return os.path.join(os.path.expanduser(base), "inputlayer")


def resolve_store(store_flag: str | None, data_dir_flag: str | None, env: Mapping[str, str],
                  config: Config) -> str:
    """Where the store is: a postgresql:// URL or a data directory. Flags, then environment,
    then config file; at each level `store` before `data_dir` (argparse refuses both flags)."""
    return (store_flag or data_dir_flag or env.get("INPUTLAYER_STORE") or env.get("INPUTLAYER_DATA_DIR")
            or config.store or config.data_dir or default_data_dir(env))


def resolve_redis_url(flag: str | None, env: Mapping[str, str], config: Config) -> str:
    """--redis, else INPUTLAYER_REDIS_URL, else [cluster] redis_url; "" = counters in memory."""
    url = flag or env.get("INPUTLAYER_REDIS_URL") or config.cluster.redis_url
    try:
        return _redis_url(url)
    except ValueError as exc:
        raise ConfigError(f"Redis URL: {exc}") from None
