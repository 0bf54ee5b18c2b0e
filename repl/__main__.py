"""`inputlayer`: the administration shell. Script mode never imports prompt-toolkit."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from backend import __version__
from backend.config import (
    Config,
    config_target,
    load_config,
    resolve_redis_url,
    resolve_store,
    select_profile,
    with_values,
)
from backend.errors import AuthError, ConfigError, StoreError, TargetUnreachable
from backend.store.postgres.url import is_postgres_url
from backend.targets.protocols import Backend, Bootstrapping

from .environment import Environment, ExitStatus
from .script import Line, LineQueue, decode_lines, run_script

NO_CREDENTIALS = "error: no credentials: set INPUTLAYER_API_KEY, or INPUTLAYER_ADMIN_PASSWORD, or pass --user"


class _Ordered(argparse.Action):
    """-c and -f share one list so they run in the order given."""

    def __call__(self, parser, namespace, values, option_string=None):
        namespace.sources = [*(namespace.sources or []), (self.dest, values)]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        self.exit(ExitStatus.ERROR, f"inputlayer: error: {message}\nTry 'inputlayer --help'.\n")


def build_parser(columns: int = 80) -> argparse.ArgumentParser:
    # argparse makes a formatter for every argument; given no width, each imports shutil.
    p = _Parser(prog="inputlayer", description="Administration shell for InputLayer knowledge-graph servers.",
                epilog="Access as code: inputlayer export [-o FILE] | plan FILE [--prune] | "
                       "apply FILE [--prune] [--yes] (see inputlayer plan --help).",
                formatter_class=lambda prog: argparse.HelpFormatter(prog, width=columns - 2))
    add_connection_options(p)
    p.add_argument("-c", dest="command", metavar="COMMAND", action=_Ordered, help="run COMMAND (repeatable)")
    p.add_argument("-f", dest="file", metavar="FILE", action=_Ordered,
                   help="run the commands in FILE (- for stdin)")
    p.add_argument("--format", choices=("table", "plain", "json", "csv"), help="output format")
    p.add_argument("--on-error", choices=("stop", "continue"), default="stop",
                   help="in script mode: stop at the first failed command (default) or continue")
    p.add_argument("-1", "--single-transaction", action="store_true",
                   help="local target: commit all commands together or none")
    p.add_argument("--echo", action="store_true",
                   help="in script mode: print each line (passwords masked) before its result")
    p.add_argument("--quiet", action="store_true",
                   help="drop results that only report an action (errors still show)")
    p.add_argument("--print-completion", choices=("bash", "zsh"), metavar="{bash,zsh}",
                   help="print a completion script for the shell named, and exit")
    p.add_argument("--version", action="version", version=f"inputlayer {__version__}")
    p.set_defaults(sources=None)
    return p


def add_connection_options(p: argparse.ArgumentParser) -> None:
    """Target and credential options: the shell's, and those of export, plan and apply."""
    p.add_argument("--profile", metavar="NAME", help="connection profile from the config file (else INPUTLAYER_PROFILE)")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--data-dir", metavar="DIR", help="local data directory (the embedded default)")
    target.add_argument("--url", help="remote server, ws://HOST:PORT/ws or wss://HOST:PORT/ws")
    target.add_argument("--store", metavar="URL", help="local store: a postgresql:// URL or a data directory")
    p.add_argument("--user", metavar="NAME", help="log in as NAME (password from INPUTLAYER_PASSWORD or asked)")
    p.add_argument("--ca-file", metavar="PEM", help="extra trusted CA for wss://")
    p.add_argument("--config", metavar="TOML", help="config file")
    p.add_argument("--redis", metavar="URL",
                   help="local target: the cluster's Redis, to see and clear its lockouts (else INPUTLAYER_REDIS_URL)")


def main(argv: Sequence[str] | None = None, env: Environment | None = None) -> int:
    env = env or Environment()
    argv = sys.argv[1:] if argv is None else list(argv)
    verb_at = policy_verb(argv)
    if verb_at is not None:
        from .policy import run_policy
        return run_policy(argv, verb_at, env)
    parser = build_parser(env.columns)
    args = parser.parse_args(argv)
    if args.print_completion:
        import shtab  # only here: start-up stays fast
        env.out(shtab.complete(parser, args.print_completion))
        return ExitStatus.OK
    try:
        config = load_config(args.config, env.env)
        apply_profile(args, env, config)
    except ConfigError as exc:
        env.err(f"error: {exc}\n")
        return ExitStatus.ERROR
    return run_shell(args, env, config)


def run_shell(args: argparse.Namespace, env: Environment, config: Config) -> int:
    """Open the target the options name, then log in and run the prompt or the script on it."""
    # stdin decides, as in psql: `inputlayer | tee log` keeps the prompt.
    interactive = env.stdin_isatty and not args.sources
    fmt = args.format or config.shell.format or ("table" if env.stdout_isatty or interactive else "plain")
    url = target_url(args, env)
    problem = local_only_problem(args, url)
    if problem:
        env.err(f"error: {problem}\n")
        return ExitStatus.ERROR
    if interactive:
        _preload_interactive()
    try:
        backend = open_backend(args, env, config, url)
    except (StoreError, TargetUnreachable, ConfigError) as exc:
        env.err(f"error: {exc}\n")
        return ExitStatus.ERROR
    except KeyboardInterrupt:      # Ctrl-C while connecting: no session, no traceback
        env.err("interrupted\n")
        return ExitStatus.ERROR
    try:
        return closing_failures(lambda: run_session(backend, args, env, config, interactive, fmt), env)
    except _Unreadable as exc:
        env.err(f"error: {exc}\n")
        return ExitStatus.ERROR
    finally:
        backend.close()


def target_url(args: argparse.Namespace, env: Environment) -> str | None:
    """The server to talk to: --url, else INPUTLAYER_URL unless a local store is named."""
    return args.url or (None if args.data_dir or args.store else env.env.get("INPUTLAYER_URL"))


def closing_failures(work: Callable[[], int], env: Environment) -> int:
    """Run `work` on an open target: a lost target or a store fault is one error line (exit 2),
    Ctrl-C is `interrupted` (exit 3), never a traceback."""
    try:
        return work()
    except (TargetUnreachable, StoreError) as exc:
        env.err(f"error: {exc}\n")
        return ExitStatus.ERROR
    except KeyboardInterrupt:
        env.err("interrupted\n")
        return ExitStatus.STOPPED


def local_only_problem(args: argparse.Namespace, url: str | None) -> str | None:
    """What is wrong when an option that needs a local data directory meets a remote target."""
    if args.single_transaction and url:
        return "--single-transaction needs a local data directory, not --url"
    if args.redis and url:
        return "--redis needs a local data directory, not --url (the server has its own)"
    return None


def run_session(backend: Backend, args: argparse.Namespace, env: Environment, config: Config,
                interactive: bool, fmt: str) -> int:
    """Log in to the opened target, then run the prompt or the script."""
    try:
        problem = log_in(backend, args, env, interactive)
    except StoreError as exc:
        problem = f"error: {exc}"
    except KeyboardInterrupt:
        problem = "interrupted"
    if problem:
        env.err(problem + "\n")
        return ExitStatus.ERROR
    from .settings import ShellSide
    shell = ShellSide(backend, config_target(args.config, env.env))
    if interactive:
        from .interactive import run_interactive  # prompt-toolkit only now
        return run_interactive(shell, env, config, fmt=fmt)
    lines = script_lines(args, env)
    return run_script(shell, lines, env, fmt=fmt, on_error=args.on_error,
                      single_transaction=args.single_transaction,
                      max_transaction_secs=config.shell.max_transaction_secs, echo=args.echo, quiet=args.quiet)


def apply_profile(args, env: Environment, config: Config) -> None:
    """Fill in from the selected profile what flags and environment variables leave open."""
    profile = select_profile(config, args.profile, env.env)
    variables = env.env
    if not (args.url or args.data_dir or args.store or variables.get("INPUTLAYER_URL")
            or variables.get("INPUTLAYER_DATA_DIR") or variables.get("INPUTLAYER_STORE")):
        args.url = profile.url or None
        args.data_dir = os.path.expanduser(profile.data_dir) if profile.data_dir else None
    if not (args.user or variables.get("INPUTLAYER_USER")):
        args.user = profile.user or None
    if not (args.ca_file or variables.get("INPUTLAYER_CA_FILE")) and profile.ca_file:
        args.ca_file = os.path.expanduser(profile.ca_file)
    args.format = args.format or profile.format or None


def _preload_interactive() -> None:
    """Import prompt-toolkit (~0.1 s) in a thread while the store opens and argon2 checks the
    password (which releases the GIL): the first prompt comes that much sooner."""
    import importlib
    import threading
    threading.Thread(target=importlib.import_module, args=("repl.interactive",),
                     daemon=True).start()


def open_backend(args: argparse.Namespace, env: Environment, config: Config, url: str | None) -> Backend:
    if url:
        from backend.targets.remote import RemoteBackend
        return RemoteBackend(url, ca_file=args.ca_file or env.env.get("INPUTLAYER_CA_FILE"))
    from backend.store.locate import describe_store
    from backend.targets.local import LocalBackend
    config = with_values(config, {"cluster.redis_url": resolve_redis_url(args.redis, env.env, config)})
    location = resolve_store(args.store, args.data_dir, env.env, config)
    if not is_postgres_url(location):
        location = os.path.abspath(os.path.expanduser(location))
        if os.path.exists(location) and not os.path.isdir(location):
            raise StoreError(f"{location}: not a directory")
    local = LocalBackend(location, config, env.env)
    try:
        local.first_start(env.env, config, env.err)
    except BaseException:
        local.close()
        raise
    if local.bootstrapped:      # a mistyped --data-dir must not go unnoticed
        env.err(f"Created a new store in {describe_store(location)}; admin bootstrapped.\n")
    return local


def log_in(backend: Backend, args: argparse.Namespace, env: Environment, interactive: bool) -> str | None:
    """Authenticate by the first credentials that apply (cli.md); an error line, or None."""
    variables = env.env
    try:
        if variables.get("INPUTLAYER_API_KEY"):
            backend.authenticate(variables["INPUTLAYER_API_KEY"])
        elif args.user or variables.get("INPUTLAYER_USER"):
            user = args.user or variables["INPUTLAYER_USER"]
            password = variables.get("INPUTLAYER_PASSWORD")
            if password is None:
                if not interactive:
                    return f"error: no password for user '{user}': set INPUTLAYER_PASSWORD"
                password = env.getpass(f"Password for {user}: ")
            backend.login(user, password)
        elif variables.get("INPUTLAYER_ADMIN_PASSWORD"):
            backend.login("admin", variables["INPUTLAYER_ADMIN_PASSWORD"])
        elif isinstance(backend, Bootstrapping) and backend.bootstrapped:
            backend.use_bootstrap_admin()
        elif interactive:
            env.out("Username: ")
            user = env.stdin.readline().decode("utf-8", "replace").strip()
            backend.login(user, env.getpass("Password: "))
        else:
            return NO_CREDENTIALS
    except AuthError as exc:
        return f"error: authentication failed: {exc.message}"
    return None


# Options of the shell that take a value: a word after one of them is not a verb.
VALUE_OPTIONS = {"--profile", "--data-dir", "--store", "--url", "--user", "-c", "-f", "--format", "--on-error", "--ca-file",
                 "--config", "-o", "--output"}
POLICY_VERBS = ("export", "plan", "apply")


def policy_verb(argv: list[str]) -> int | None:
    """The index of `export`, `plan` or `apply` when it is the first word that is not an option."""
    i = 0
    while i < len(argv):
        word = argv[i]
        if word == "--":
            return None
        if not word.startswith("-"):
            return i if word in POLICY_VERBS else None
        i += 2 if word in VALUE_OPTIONS else 1
    return None


class _Unreadable(Exception):
    pass


def script_lines(args, env: Environment) -> LineQueue:
    """Every -c and -f in order (files read before anything runs, so an unreadable one changes
    nothing), else stdin, streamed as it arrives."""
    if not args.sources:
        return LineQueue(stream=env.stdin)
    if args.sources == [("file", "-")]:
        return LineQueue(stream=env.stdin)       # streamed, as stdin without -f
    lines: list[Line] = []
    command_number = 0
    for kind, value in args.sources:
        if kind == "command":
            command_number += 1
            lines.append(Line("-c", command_number, value))
            continue
        if value == "-":
            lines += decode_lines(env.stdin.read(), "<stdin>")
            continue
        try:
            with open(value, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            raise _Unreadable(f"cannot read {value}: {exc.strerror or exc}") from None
        lines += decode_lines(data, value)
    return LineQueue(lines)

if __name__ == "__main__":
    sys.exit(main())
