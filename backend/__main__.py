"""`inputlayer-server` (also `python -m backend`): serve a data directory over WebSocket."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence

from . import __version__
from .config import (
    Config,
    TLSConfig,
    load_config,
    resolve_redis_url,
    resolve_store,
    with_values,
)
from .errors import ConfigError, StoreError

LOG_LEVELS = ("debug", "info", "warning", "error")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        self.exit(2, f"inputlayer-server: error: {message}\nTry 'inputlayer-server --help'.\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="inputlayer-server",
                description="Serve an InputLayer data directory over WebSocket (/ws) with HTTP "
                            "health and metrics endpoints on the same port.")
    p.add_argument("--host", help="address to bind (default 127.0.0.1, or server.host)")
    p.add_argument("--port", type=int, help="port to bind; 0 picks a free one (default 8080, or server.port)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--data-dir", metavar="DIR", help="data directory (else INPUTLAYER_DATA_DIR, data_dir, XDG)")
    where.add_argument("--store", metavar="URL",
                       help="postgresql:// URL (or a data directory); else INPUTLAYER_STORE, store")
    p.add_argument("--config", metavar="TOML", help="config file (else INPUTLAYER_CONFIG)")
    p.add_argument("--redis", metavar="URL",
                   help="Redis shared by the nodes of a cluster: lockouts, rate limits, sessions "
                        "(else INPUTLAYER_REDIS_URL, cluster.redis_url; none: counted in memory)")
    p.add_argument("--tls-cert", metavar="PEM", help="TLS certificate chain (PEM); needs --tls-key")
    p.add_argument("--tls-key", metavar="PEM", help="TLS private key (PEM)")
    p.add_argument("--tls-keystore", metavar="P12",
                   help="TLS PKCS#12 keystore; its password in INPUTLAYER_TLS_KEYSTORE_PASSWORD")
    p.add_argument("--log-level", choices=LOG_LEVELS, default="info", help="log level (default info)")
    p.add_argument("--version", action="version", version=f"inputlayer-server {__version__}")
    return p


class _OneLine(logging.Formatter):
    """One line an event: newlines inside a message (or an exception) are folded."""

    def format(self, record: logging.LogRecord) -> str:
        record.exc_info = None           # tracebacks span lines and may show values: never printed
        record.exc_text = None
        record.stack_info = None
        return super().format(record).replace("\r", "\\r").replace("\n", "\\n")


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_OneLine("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # The websockets library logs frames (passwords, keys) at DEBUG: never below INFO, and its
    # INFO lines (a connection opened or closed) only when debugging, since ours say more.
    for name in ("websockets", "inputlayer.websockets"):
        logging.getLogger(name).setLevel(logging.INFO if root.level <= logging.DEBUG else logging.WARNING)
    # asyncio's debug lines are not events of this server.
    logging.getLogger("asyncio").setLevel(max(logging.WARNING, root.level))


def server_config(args: argparse.Namespace, config: Config, env: Mapping[str, str]) -> Config:
    """Flags override the environment, which overrides the config file (then the defaults)."""
    values: dict = {"cluster.redis_url": resolve_redis_url(args.redis, env, config)}
    if args.host is not None:
        values["server.host"] = args.host
    if args.port is not None:
        if not 0 <= args.port <= 65535:
            raise ConfigError(f"--port {args.port}: expected a port from 0 to 65535")
        values["server.port"] = args.port
    if args.tls_cert or args.tls_key or args.tls_keystore:
        values["server.tls"] = TLSConfig(cert=args.tls_cert or "", key=args.tls_key or "",
                                         keystore=args.tls_keystore or "")
    return with_values(config, values)


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    env = dict(os.environ) if env is None else env
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["rekey"]:
        return rekey_main(argv[1:], env)
    if argv[:1] == ["copy-store"]:
        return copy_store_main(argv[1:], env)
    if argv[:1] == ["rotate-secrets"]:
        return rotate_secrets_main(argv[1:], env)
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    log = logging.getLogger("inputlayer.server")

    from .bootstrap import first_start
    from .netaddr import is_loopback
    from .server import Server, tls_context
    from .store.locate import open_store

    try:
        config = server_config(args, load_config(args.config, env), env)
        ssl_context = tls_context(config.server.tls, env.get("INPUTLAYER_TLS_KEYSTORE_PASSWORD"))
    except ConfigError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    if config.security.auth_mode == "disabled" and not is_loopback(config.server.host):
        sys.stderr.write(f"error: auth_mode \"disabled\" lets anyone in as an admin: it serves only a loopback "
                         f"address, not {config.server.host}\n")
        return 2
    try:
        store = open_store(resolve_store(args.store, args.data_dir, env, config), env)
    except StoreError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    try:
        try:
            server = Server(store, config, shared_key=env.get("INPUTLAYER_SHARED_KEY"), ssl_context=ssl_context)
        except ConfigError as exc:
            sys.stderr.write(f"error: {exc}\n")
            return 2
        first_start(server.engine, env, config, _show_banner)
        if ssl_context is None and not is_loopback(config.server.host):
            log.warning("listening on %s without TLS: traffic, passwords included, is readable on the "
                        "network unless a reverse proxy terminates TLS in front of this server",
                        config.server.host)
        return asyncio.run(_serve(server))
    except StoreError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    finally:
        store.close()


def copy_store_main(argv: Sequence[str], env: Mapping[str, str]) -> int:
    """`inputlayer-server copy-store FROM TO`: a whole store into another, empty one."""
    p = _Parser(prog="inputlayer-server copy-store",
                description="Copy a whole stopped store (a data directory or a postgresql:// URL) into "
                            "another, empty one: rows, audit chain and server secrets.")
    p.add_argument("source", metavar="FROM")
    p.add_argument("target", metavar="TO")
    args = p.parse_args(argv)
    from .store.copy import copy_store, summary

    try:
        counts = copy_store(args.source, args.target, env)
    except StoreError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    sys.stdout.write(summary(counts) + "\n")
    return 0


def _stopped_store_args(argv: Sequence[str], verb: str, description: str) -> argparse.Namespace:
    """The options of a maintenance command on a stopped store: where it is, and the config."""
    p = _Parser(prog=f"inputlayer-server {verb}", description=description)
    where = p.add_mutually_exclusive_group()
    where.add_argument("--data-dir", metavar="DIR")
    where.add_argument("--store", metavar="URL")
    p.add_argument("--config", metavar="TOML")
    return p.parse_args(argv)


def rekey_main(argv: Sequence[str], env: Mapping[str, str]) -> int:
    """`inputlayer-server rekey`: re-encrypt a stopped store (INPUTLAYER_ENCRYPTION_KEY is the
    current key, INPUTLAYER_NEW_ENCRYPTION_KEY the new one; either unset means plaintext)."""
    args = _stopped_store_args(argv, "rekey",
                               "Re-encrypt a stopped store under INPUTLAYER_NEW_ENCRYPTION_KEY (unset: decrypt "
                               "it), reading it with INPUTLAYER_ENCRYPTION_KEY (unset: it is plaintext).")
    from .store.codec import key_from_env
    from .store.locate import describe_store
    from .store.rekey import rekey_store

    try:
        config = load_config(args.config, env)
        old = key_from_env(env)
        new = key_from_env(env, "INPUTLAYER_NEW_ENCRYPTION_KEY")
        if old is None and new is None:
            sys.stderr.write("error: nothing to do: set INPUTLAYER_NEW_ENCRYPTION_KEY to encrypt the store, "
                             "or INPUTLAYER_ENCRYPTION_KEY (alone) to decrypt it\n")
            return 2
        location = resolve_store(args.store, args.data_dir, env, config)
        copied = rekey_store(location, env, old, new)
    except (ConfigError, StoreError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    state = "encrypted under the new key" if new else "decrypted (plaintext)"
    sys.stdout.write(f"Store in {describe_store(location)} {state}: {copied} rows re-written.\n")
    return 0


def rotate_secrets_main(argv: Sequence[str], env: Mapping[str, str]) -> int:
    """`inputlayer-server rotate-secrets`: new token-signing and audit keys for a stopped store."""
    args = _stopped_store_args(argv, "rotate-secrets",
                               "Replace the token-signing and audit keys of a stopped store: every session "
                               "token ends, the audit chain continues under the new key, API keys keep working.")
    from .store.codec import key_from_env
    from .store.locate import describe_store
    from .store.rotate import rotate_store

    try:
        config = load_config(args.config, env)
        location = resolve_store(args.store, args.data_dir, env, config)
        records = rotate_store(location, env, key_from_env(env))
    except (ConfigError, StoreError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    sys.stdout.write(f"Server secrets of {describe_store(location)} rotated: every token ended, {records} audit records "
                     "re-keyed.\n")
    return 0


def _show_banner(text: str) -> None:
    sys.stderr.write(text)
    sys.stderr.flush()


async def _serve(server) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await server.bind()
    except OSError as exc:
        sys.stderr.write(f"error: cannot listen on {server.cfg.host}:{server.cfg.port}: "
                         f"{exc.strerror or exc}\n")
        return 2
    # The port is known before the first connection is accepted (port 0 picks a free one).
    sys.stdout.write(f"listening on {server.url}\n")
    sys.stdout.flush()
    await server.start_serving()
    await stop.wait()
    await server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
