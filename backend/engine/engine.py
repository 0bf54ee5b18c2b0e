"""The engine: runs dot-commands for sessions, over the store.

Every command is parsed, its caller's rights re-derived from the store, authorized by the rule
its declaration names, then run by the handler bound to it (handlers/). No terminal, socket or
global state in here: the clock, the hasher, the lockout table and the live-session directory
are handed in, so every rule is testable with a fake clock.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

from ..config import Config
from ..errors import CommandError, PermissionDenied, SessionEnded, StoreError, StoreFailure, StoreUnavailable
from ..language.parser import Invocation, parse, parse_program
from ..language.registry import COMMANDS
from ..result import Result
from ..store import Store
from .auth import Authenticator
from .clock import Clock, system_clock
from .handlers import EXTRA_CHECKS, HANDLERS, Call, Env, Handler, audit_target, with_credential
from .limits import Lockout, LockoutCounter, RateCounter, RateLimiter, account_lockout_config
from .passwords import PasswordHasher, check_password_policy
from .policy import (
    ACTION_LEVEL,
    LEVEL_RANK,
    Rights,
    Session,
    SessionDirectory,
    authorize,
    level_of,
    rights_of,
)

SECRET_COMMANDS = {c.words for c in COMMANDS if any(p.kind.secret for p in c.params)}
AuditRecord = tuple[float, str, str, str, str, str, str]
# What a program's lines come as when already parsed: (line number, text, invocation or its error).
PlannedLine = tuple[int, str, "Invocation | CommandError"]


class RateLimited(CommandError):
    """Over a key's `rate=` limit; carries what HTTP needs for its 429 headers."""

    def __init__(self, limit: int, reset_in: int):
        super().__init__(f"Rate limit exceeded: at most {limit} requests per window; try again in {reset_in}s")
        self.limit = limit
        self.reset_in = reset_in


class UnrecordedDenial(PermissionDenied):
    """A refusal not yet audited: the caller writes `audit_record` with record_denial()
    (off its event loop) before it tells the client."""

    def __init__(self, message: str, audit_record: AuditRecord):
        super().__init__(message)
        self.audit_record = audit_record


class Engine:
    """Authenticates, authorizes and runs commands; one per store, shared by its sessions."""

    def __init__(self, store: Store, config: Config, *, clock: Clock = system_clock,
                 hasher: PasswordHasher | None = None, lockout: LockoutCounter | None = None,
                 rate_limiter: RateCounter | None = None, directory: SessionDirectory | None = None,
                 target: Callable[[], str] = lambda: "local", shared_key: str | None = None,
                 account_lockout: LockoutCounter | None = None):
        self._store = store
        self._config = config
        self._clock = clock
        self._hasher = hasher or PasswordHasher(config.security)
        self._lockout: LockoutCounter = lockout or Lockout(config.security, clock)
        account_lockout = account_lockout or Lockout(account_lockout_config(config.security), clock)
        self._auth = Authenticator(store, config, clock, self._hasher, self._lockout, shared_key, account_lockout)
        self._rate_limiter: RateCounter = rate_limiter or RateLimiter(clock)
        self._env = Env(store, clock, self._lockout, directory, target, clock(), account_lockout)
        self._batch_denials: list[AuditRecord] = []
        self._parsed_ahead: dict[str, Invocation] = {}     # see prepare()

    # Read-only: the server and the tests reach the parts the engine was built with.
    @property
    def store(self) -> Store:
        return self._store

    @property
    def lockout(self) -> LockoutCounter:
        return self._lockout

    @property
    def hasher(self) -> PasswordHasher:
        return self._hasher

    # --- authentication (see auth.py) ----------------------------------------------------

    def bootstrap(self, admin_password: str | None) -> tuple[bool, str | None]:
        return self._auth.bootstrap(admin_password)

    def login(self, username: str, password: str, *, source: str, address: str = "",
              record: bool = True) -> Session:
        return self._auth.login(username, password, source=source, address=address, record=record)

    def authenticate(self, api_key: str, *, source: str, address: str = "", record: bool = True) -> Session:
        return self._auth.authenticate(api_key, source=source, address=address, record=record)

    def check_api_key(self, api_key: str, *, source: str, address: str = "") -> Session | None:
        return self._auth.check_api_key(api_key, source=source, address=address)

    def flush_refusals(self, *, everything: bool = False) -> None:
        """Audit the refusals counted while addresses or names were locked, for the windows
        that have ended (`everything`: all, at shutdown)."""
        self._auth.flush_refusals(everything=everything)

    @property
    def refusals_pending(self) -> bool:
        return bool(self._auth.refusals)

    def record_api_key_logins(self, sessions: list[Session]) -> None:
        self._auth.record_api_key_logins(sessions)

    def trusted_session(self, username: str, *, source: str = "local") -> Session:
        return self._auth.trusted_session(username, source=source)

    # --- rights --------------------------------------------------------------------------

    def bind_kg(self, session: Session, kg: str) -> None:
        """Bind a new session to the KG its client asked for (`?kg=`), or refuse."""
        def allowed() -> bool:
            rights = rights_of(self._store, session, self._clock())
            return self._store.kg(kg) is not None and level_of(self._store, rights, kg) is not None

        if not self._store.consistent(allowed):
            raise PermissionDenied("Access denied")
        session.knowledge_graph = kg

    def check_session(self, session: Session) -> None:
        """Raise SessionEnded when the session's principal no longer exists or may not log in."""
        self._store.consistent(lambda: rights_of(self._store, session, self._clock()))

    def can(self, session: Session, kg: str, action: str) -> bool:
        """The authorization a query engine asks: may `session` read/write/manage `kg` now?"""
        if action not in ACTION_LEVEL:
            raise ValueError(f"unknown action {action!r}: use read, write or manage")

        def level() -> str | None:
            try:
                rights = rights_of(self._store, session, self._clock())
            except SessionEnded:
                return None
            return None if self._store.kg(kg) is None else level_of(self._store, rights, kg)

        held = self._store.consistent(level)
        return held is not None and LEVEL_RANK[held] >= LEVEL_RANK[ACTION_LEVEL[action]]

    def consume_rate(self, session: Session) -> tuple[int, int, int] | None:
        """For HTTP requests made with a key: its rate-limit state after counting this one."""
        rights = self._store.consistent(lambda: rights_of(self._store, session, self._clock()))
        return self._consume_rate(rights)

    # --- execution -----------------------------------------------------------------------

    def execute(self, session: Session, line: str, *, defer_denial_audit: bool = False) -> Result:
        """Run one command line for `session`. Raises CommandError with the user's message.

        A refusal is audited before it is raised, unless `defer_denial_audit`: then it is raised
        as an UnrecordedDenial for the caller to pass to record_denial() off its event loop."""
        inv = self._parsed_ahead.pop(line, None) if self._parsed_ahead else None
        try:
            return self._run(session, inv or parse(line.strip()), defer_denial_audit)
        except StoreUnavailable as exc:
            raise unavailable(exc) from None

    def execute_program(self, session: Session, program: str | list[PlannedLine], *,
                        defer_denial_audit: bool = False, numbered: bool | None = None) -> list[Result]:
        """Several lines, each parsed and authorized on its own; stops at the first failure,
        whose message is prefixed with its line number. Earlier lines stay done. `program`
        may come already parsed, by parse_program(), or be a part of a longer program (then
        `numbered` says whether the whole has several lines)."""
        results = []
        lines = parse_program(program) if isinstance(program, str) else program
        if numbered is None:
            numbered = len(lines) > 1
        for n, _, parsed in lines:
            try:
                if isinstance(parsed, CommandError):
                    raise parsed
                results.append(self._run(session, parsed, defer_denial_audit))
            except StoreUnavailable as exc:
                raise unavailable(exc) from None     # not a fault of this line: no line number
            except SessionEnded:
                raise
            except CommandError as exc:
                if numbered:
                    # The same error, its class and details kept, numbered for the reader.
                    exc.args = (f"line {n}: {exc.message}",)
                raise
        return results

    def execute_atomic(self, session: Session, program: str | list[PlannedLine], *, note: str = "") -> list[Result]:
        """A program's lines as one transaction, on any target: all of them, or none when one
        fails (its error then starts `line <n>: `). A refusal stays audited. `note` (where the
        program came from: a policy file) joins the audit source of every change."""
        self._auth.record_login(session)
        lines = parse_program(program) if isinstance(program, str) else program
        results: list[Result] = []
        denial: AuditRecord | None = None
        session.note = note
        try:
            with self._store.write():
                for n, _, parsed in lines:
                    try:
                        if isinstance(parsed, CommandError):
                            raise parsed
                        results.append(self._run(session, parsed, True))
                    except StoreUnavailable:
                        raise
                    except UnrecordedDenial as refused:
                        denial = refused.audit_record
                        raise PermissionDenied(f"line {n}: {refused.message}") from None
                    except SessionEnded:
                        raise
                    except CommandError as exc:
                        exc.args = (f"line {n}: {exc.message}",)
                        raise
        except StoreUnavailable as exc:
            raise unavailable(exc) from None
        except (sqlite3.DatabaseError, StoreError) as exc:
            raise StoreFailure(f"The store could not complete the commands: {exc}. Nothing was changed.") from None
        finally:
            session.note = ""
            if denial is not None:
                self.record_denial(denial)      # after the rollback: a refusal is a fact about its caller
        return results

    def _run(self, session: Session, inv: Invocation, defer_denial_audit: bool) -> Result:
        cmd = inv.command
        if cmd.shell_only:
            raise CommandError(f"{cmd.name} is a shell command: it only works at the shell")
        if cmd.server_only and self._env.directory is None:
            raise CommandError(f"{cmd.name} needs a server: sessions exist only there (connect with --url)")
        handler = HANDLERS[cmd]
        try:
            if cmd.writes:
                self._auth.record_login(session)
                password_hash = self._hash_ahead(session, inv) if cmd.words in SECRET_COMMANDS else None
                with self._store.write():
                    rights = self._admit(session, inv)
                    result = handler(self._env, Call(session, rights, inv, password_hash))
            else:
                result = self._read_command(session, inv, handler)
        except PermissionDenied as denied:
            record = (self._clock(), session.username, session.audit_source, cmd.action, audit_target(inv),
                      "denied", with_credential(session, denied.message))
            if defer_denial_audit:
                raise UnrecordedDenial(denied.message, record) from None
            self.record_denial(record)
            raise
        except StoreUnavailable:
            raise
        except (sqlite3.DatabaseError, StoreError) as exc:
            raise StoreFailure(f"The store could not complete the command: {exc}. Nothing was changed.") from None
        if result.switched_kg is not None:
            session.knowledge_graph = result.switched_kg
        return result

    def _read_command(self, session: Session, inv: Invocation, handler: Handler) -> Result:
        """A command that changes nothing, on one consistent view of the store (which may run
        it twice: its request is counted against the rate limit once)."""
        counted = False

        def run() -> Result:
            nonlocal counted
            rights = rights_of(self._store, session, self._clock())
            if not counted:
                self._consume_rate(rights)
                counted = True
            self._authorize(session, rights, inv)
            return handler(self._env, Call(session, rights, inv))

        return self._store.consistent(run)

    def _admit(self, session: Session, inv: Invocation) -> Rights:
        """The caller's rights now, once its rate limit and the command's rules admit it."""
        rights = rights_of(self._store, session, self._clock())
        self._consume_rate(rights)
        self._authorize(session, rights, inv)
        return rights

    def _authorize(self, session: Session, rights: Rights, inv: Invocation) -> None:
        authorize(self._store, session, rights, inv)
        extra = EXTRA_CHECKS.get(inv.command)
        if extra is not None:
            extra(session, rights, inv)

    def _consume_rate(self, rights: Rights) -> tuple[int, int, int] | None:
        """Count one request against a key's `rate=`: (limit, remaining, reset in), or raise."""
        if rights.rate is None:
            return None
        limit, window = rights.rate
        allowed, remaining, reset_in = self._rate_limiter.hit(rights.key_id, limit, window)
        if not allowed:
            raise RateLimited(limit, reset_in)
        return limit, remaining, reset_in

    def _hash_ahead(self, session: Session, inv: Invocation) -> str | None:
        """Check rights and policy, then hash the password before taking the store's lock, so
        argon2 never holds up other commands."""
        args: dict[str, Any] = inv.args
        password = args.get("password")
        if password is None:
            return None
        with self._store.read():
            rights = rights_of(self._store, session, self._clock())
            self._authorize(session, rights, inv)
        problem = check_password_policy(args["name"], password, self._config.security.min_password_length)
        if problem:
            raise CommandError(problem)
        return self._hasher.hash(password)

    def record_denial(self, record: AuditRecord) -> None:
        """Write the audit record of a refusal (see execute's defer_denial_audit)."""
        with self._store.write():
            self._store.append_audit(*record)
        if self._store.in_batch:
            self._batch_denials.append(record)

    # --- scripts: parsing ahead and batches ------------------------------------------------

    def prepare(self, lines: list[str]) -> None:
        """Script mode: parse upcoming lines ahead of their turn, for execute() to take, and
        start hashing their passwords on other cores. Parsing a few hundred lines in one go,
        apart from the store's work, saves ~3 us a line over parsing each as it comes (the CPU
        caches stay with one job). A line that does not parse is left to fail in its turn."""
        for line in lines:
            try:
                inv = parse(line.strip())
            except CommandError:
                continue
            self._parsed_ahead[line] = inv      # a repeated line keeps one: the next one re-parses
            args: dict[str, Any] = inv.args
            password = args.get("password") if inv.command.words in SECRET_COMMANDS else None
            if password is not None and not check_password_policy(
                    args["name"], password, self._config.security.min_password_length):
                self._hasher.hash_ahead(password)

    def discard_prepared(self) -> None:
        self._parsed_ahead.clear()
        self._hasher.discard_ahead()

    def begin_batch(self, *, atomic: bool = False) -> None:
        self._store.begin_batch(atomic=atomic)
        self._batch_denials = []

    def end_batch(self, commit: bool) -> None:
        self._store.end_batch(commit)
        denials, self._batch_denials = self._batch_denials, []
        if not commit and denials:
            # Refusals are facts about the caller, not part of the batch: keep them.
            with self._store.write():
                for record in denials:
                    self._store.append_audit(*record)


def unavailable(exc: StoreUnavailable) -> StoreFailure:
    """scaleout.md, Faults: a store that cannot be reached fails a command as `store unavailable`."""
    return StoreFailure(f"store unavailable: {exc}")
