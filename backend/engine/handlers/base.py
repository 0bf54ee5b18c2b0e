"""How handlers are bound to the commands they run, and what they run with.

`@handles("user create")` resolves the registry's Command when the module is imported (a word
that names no command fails there), and dispatch is `HANDLERS[command]`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from ...errors import CommandError
from ...language.parser import Invocation
from ...language.registry import COMMANDS, Command
from ...result import Result
from ...store import Store
from ..clock import Clock
from ..limits import LockoutCounter
from ..policy import Rights, Session, SessionDirectory


class Call(NamedTuple):
    """One command being run: who runs it, with which rights, and its parsed arguments."""
    session: Session
    rights: Rights
    inv: Invocation
    password_hash: str | None = None   # the new password, hashed before the store's lock was taken

    @property
    def args(self) -> dict[str, Any]:
        """The arguments, each already converted by its Kind (a str, a tuple, a duration...)."""
        return self.inv.args

    @property
    def options(self) -> dict[str, Any]:
        return self.inv.options


class Env:
    """What handlers work with: the same for every command an engine runs."""
    __slots__ = ("account_lockout", "clock", "directory", "lockout", "started_at", "store", "target")

    def __init__(self, store: Store, clock: Clock, lockout: LockoutCounter, directory: SessionDirectory | None,
                 target: Callable[[], str], started_at: float, account_lockout: LockoutCounter):
        self.store = store
        self.clock = clock
        self.lockout = lockout
        self.account_lockout = account_lockout     # keyed `user:<name>`
        self.directory = directory
        self.target = target
        self.started_at = started_at

    def audit(self, call: Call, detail: str = "", target: str | None = None) -> None:
        session = call.session
        self.store.append_audit(self.clock(), session.username, session.audit_source, call.inv.command.action,
                                audit_target(call.inv) if target is None else target, "ok",
                                with_credential(session, detail))

    def existing_user(self, name: str) -> dict[str, Any]:
        user = self.store.user(name)
        if user is None:
            raise CommandError(f"User '{name}' not found")
        return user


Handler = Callable[[Env, Call], Result]
# A check beyond the command's declared Rule, run with it (before any work): raises PermissionDenied.
ExtraCheck = Callable[[Session, Rights, Invocation], None]

HANDLERS: dict[Command, Handler] = {}
EXTRA_CHECKS: dict[Command, ExtraCheck] = {}
_BY_WORDS = {c.words: c for c in COMMANDS}


def handles(words: str, *, check: ExtraCheck | None = None) -> Callable[[Handler], Handler]:
    """Bind the decorated function to the command named by `words` (e.g. "kg acl grant")."""
    command = _BY_WORDS.get(tuple(words.split()))
    if command is None or command.shell_only:
        raise LookupError(f"no engine command named {words!r}")
    if command in HANDLERS:
        raise LookupError(f"command {words!r} already has a handler")

    def bind(fn: Handler) -> Handler:
        HANDLERS[command] = fn
        if check is not None:
            EXTRA_CHECKS[command] = check
        return fn
    return bind


def audit_target(inv: Invocation) -> str:
    for p in inv.command.params:
        value = inv.args.get(p.name)
        if isinstance(value, str) and not p.kind.secret:
            return value
    return ""


def with_credential(session: Session, detail: str) -> str:
    """Name the key or token a change was made with: the actor column names only its owner."""
    if session.method == "password":
        return detail
    return f"{detail}; via {session.auth}" if detail else f"via {session.auth}"
