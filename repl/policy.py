"""`inputlayer export | plan | apply`: access as code (policy.md), through the same Backend and
dot-commands as the shell, on every target."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from backend.config import load_config
from backend.display import iso
from backend.errors import CommandError, ConfigError, StoreError, TargetUnreachable
from backend.policy import Plan, PolicyError, make_plan, read_policy, render_policy
from backend.policy.read import read_caller, read_state
from backend.targets.protocols import Atomic, QuietLogin

from .environment import Environment, ExitStatus
from .output import render

CONFIRM = "Apply these changes? [y/N] "


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        self.exit(ExitStatus.ERROR, f"{self.prog}: error: {message}\nTry '{self.prog} --help'.\n")


def build_parser(verb: str, columns: int = 80) -> argparse.ArgumentParser:
    from .__main__ import add_connection_options

    descriptions = {"export": "Write the store's users, KGs, ACLs and API keys as a policy file.",
                    "plan": "Show what applying a policy file would change, changing nothing.",
                    "apply": "Bring the store to a policy file, in one transaction."}
    p = _Parser(prog=f"inputlayer {verb}", description=descriptions[verb],
                formatter_class=lambda prog: argparse.HelpFormatter(prog, width=columns - 2))
    add_connection_options(p)
    p.add_argument("--format", choices=("table", "plain", "json", "csv"),
                   help="output format of what apply prints for each change")
    if verb == "export":
        p.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    else:
        p.add_argument("file", metavar="FILE", help="the policy file")
        p.add_argument("--prune", action="store_true",
                       help="also remove what the store has and the file does not")
    if verb == "apply":
        p.add_argument("--yes", action="store_true", help="apply without asking")
    return p


def run_policy(argv: list[str], at: int, env: Environment) -> int:
    """Run the verb at argv[at], with the options around it."""
    from .__main__ import apply_profile

    verb = argv[at]
    args = build_parser(verb, env.columns).parse_args(argv[:at] + argv[at + 1:])
    policy = None
    try:
        config = load_config(args.config, env.env)
        apply_profile(args, env, config)
        if verb != "export":
            policy = read_policy(_read(args.file), os.path.basename(args.file))
    except (ConfigError, _Unreadable) as exc:
        env.err(f"error: {exc}\n")
        return ExitStatus.ERROR
    except PolicyError as exc:
        env.err("".join(f"{line}\n" for line in exc.lines))
        return ExitStatus.ERROR
    backend = _connect(args, env, config)
    if backend is None:
        if policy is not None and policy.problems:
            env.err("".join(f"{line}\n" for line in policy.failure().lines))
        return ExitStatus.ERROR
    from .__main__ import closing_failures

    try:
        return closing_failures(lambda: _Verb(backend, args, env, verb).run(policy), env)
    finally:
        backend.close()


class _Unreadable(Exception):
    pass


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8-sig") as fh:     # a BOM some editors add is not TOML
            return fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise _Unreadable(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None


def _connect(args, env: Environment, config):
    """The logged-in backend, or None after saying why not."""
    from .__main__ import log_in, open_backend, target_url

    url = target_url(args, env)
    try:
        backend = open_backend(args, env, config, url)
    except (StoreError, TargetUnreachable, ConfigError) as exc:
        env.err(f"error: {exc}\n")
        return None
    if isinstance(backend, QuietLogin):
        backend.record_login = False     # an apply with nothing to do writes nothing, not even a login
    interactive = env.stdin_isatty and env.stdout_isatty
    try:
        problem = log_in(backend, args, env, interactive)
    except (StoreError, TargetUnreachable) as exc:
        problem = f"error: {exc}"
    if problem:
        env.err(problem + "\n")
        backend.close()
        return None
    return backend


class _Verb:
    def __init__(self, backend, args, env: Environment, verb: str):
        self.backend, self.args, self.env, self.verb = backend, args, env, verb

    def run(self, policy) -> int:
        try:
            caller = read_caller(self.backend.execute)
            state = read_state(self.backend.execute, caller)
        except CommandError as exc:
            if policy is not None and policy.problems:    # the file's own problems come first
                self.env.err("".join(f"{line}\n" for line in policy.failure().lines))
                return ExitStatus.ERROR
            self.env.err(f"error: {exc.message}\n")
            return ExitStatus.STOPPED
        if self.verb == "export":
            return self.export(render_policy(state))
        try:
            plan = make_plan(policy, state, prune=self.args.prune, caller=caller.username,
                             current_kg=caller.knowledge_graph, env=self.env.env, now_text=iso(time.time()))
        except PolicyError as exc:
            self.env.err("".join(f"{line}\n" for line in exc.lines))
            return ExitStatus.ERROR
        self.env.out(plan.report())
        if self.verb == "plan" or not plan.changes:
            return ExitStatus.OK
        return self.apply(plan)

    def export(self, text: str) -> int:
        if not self.args.output:
            self.env.out(text)
            return ExitStatus.OK
        target = Path(self.args.output)
        partial = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            partial.write_text(text, encoding="utf-8")
            os.replace(partial, target)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            self.env.err(f"error: cannot write {target}: {exc.strerror or exc}\n")
            return ExitStatus.ERROR
        return ExitStatus.OK

    def apply(self, plan: Plan) -> int:
        if not self.args.yes:
            if not (self.env.stdin_isatty and self.env.stdout_isatty):
                self.env.err("error: apply needs --yes when it does not run at a terminal; nothing was changed\n")
                return ExitStatus.ERROR
            self.env.out(CONFIRM)
            if self.env.stdin.readline().decode("utf-8", "replace").strip().lower() not in ("y", "yes"):
                self.env.out("Nothing was changed.\n")
                return ExitStatus.OK
        program = plan.program()
        if not isinstance(self.backend, Atomic):
            self.env.err("error: this target cannot apply changes in one transaction; nothing was changed\n")
            return ExitStatus.STOPPED
        try:
            results = self.backend.run_atomic([command for command, _ in program],
                                              note=f"apply {os.path.basename(self.args.file)}")
        except CommandError as exc:
            self.env.err(f"error: {_failed_change(program, exc.message)}\n"
                         "error: the apply was rolled back; nothing was changed\n")
            return ExitStatus.STOPPED
        fmt = self.args.format or ("table" if self.env.stdout_isatty else "plain")
        self.env.out("".join(render(result, fmt) for result in results))
        return ExitStatus.OK


def _failed_change(program: list, message: str) -> str:
    """`<change>: <why>` for an error prefixed `line N: ` by the backend."""
    head, _, rest = message.partition(": ")
    if head.startswith("line ") and head[5:].isdigit() and 0 < int(head[5:]) <= len(program):
        return f"{program[int(head[5:]) - 1][1].line}: {rest}"
    return message
