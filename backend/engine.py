"""The engine: authentication, authorization and the command handlers, over the store.

No terminal, socket or global state in here: the clock, the hasher, the lockout table and the
live-session directory are handed in, so every rule is testable with a fake clock.
"""

from __future__ import annotations

import hmac
import secrets
import sqlite3
from typing import Callable, NamedTuple, Protocol

from . import __version__
from .config import Config
from .errors import AuthError, CommandError, ConfigError, LockedOut, PermissionDenied, SessionEnded, StoreError
from .language.parser import Invocation, parse, parse_program
from .language.registry import COMMANDS, GROUPS, clip, find_command
from .netaddr import address_in
from .result import Result
from .security import Clock, Lockout, LockoutCounter, PasswordHasher, RateCounter, RateLimiter, \
    check_password_policy, iso, key_digest, new_api_key, system_clock, well_formed_key
from .store import Store

ROLE_RANK = {"viewer": 1, "editor": 2, "admin": 3}
VIRTUAL_PRINCIPALS = ("shared_key", "anonymous")   # auth modes without users in the store
SECRET_COMMANDS = {c.words for c in COMMANDS if any(p.kind.secret for p in c.params)}
LEVEL_RANK = {"viewer": 1, "editor": 2, "owner": 3}
CAP_LEVEL = {"viewer": "viewer", "editor": "editor", "admin": "owner"}   # a key's role cap on KGs
ACTION_LEVEL = {"read": "viewer", "write": "editor", "manage": "owner"}
INVALID_CREDENTIALS = "Invalid credentials"
KEY_TOUCH_INTERVAL = 60      # last_used_at is written at most once a minute per key
DEFAULT_GRACE = 24 * 3600
DEFAULT_TOKEN_TTL = 15 * 60
MAX_TOKEN_TTL = 24 * 3600
LOCAL_ADDRESS = "127.0.0.1"  # what a key's `ips=` limit sees for the local shell


class Session:
    """One authenticated connection (or one shell run) and the KG it is bound to."""
    __slots__ = ("username", "method", "source", "address", "key_id", "key_label", "key_digest",
                 "password_version", "token_claims", "knowledge_graph", "connected_at", "id", "login_role")

    def __init__(self, username: str, method: str, source: str, address: str = "", *,
                 key_id: int | None = None, key_label: str | None = None, key_digest: str | None = None,
                 password_version: int | None = None, token_claims: dict | None = None,
                 knowledge_graph: str | None = None, connected_at: float = 0.0):
        self.username = username
        self.method = method                  # password | api_key | token | shared_key | anonymous
        self.source = source                  # "local", or "ws" for the server
        self.address = address
        self.key_id = key_id
        self.key_label = key_label
        self.key_digest = key_digest          # None for a token session: rotation does not end it
        self.password_version = password_version
        self.token_claims = token_claims
        self.knowledge_graph = knowledge_graph
        self.connected_at = connected_at
        self.id = new_session_id()
        self.login_role = ""                  # the effective role when it logged in (what a client is told)

    def __repr__(self) -> str:
        return f"Session({self.username!r}, {self.auth!r}, id={self.id!r})"

    @property
    def auth(self) -> str:
        if self.token_claims is not None:
            return f"token:{self.token_claims['jti']}"
        return f"api_key:{self.key_label}" if self.method == "api_key" else self.method

    @property
    def audit_source(self) -> str:
        return f"{self.source}:{self.address}" if self.address else self.source


def new_session_id() -> str:
    """A random (version 4) UUID in its usual text form, without importing uuid (and platform)
    on the shell's start-up path."""
    raw = bytearray(secrets.token_bytes(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class ListedSession(NamedTuple):
    """A live session as `.session list` shows it; on a cluster, it may live on another node."""
    id: str
    username: str
    auth: str
    address: str
    knowledge_graph: str
    connected_at: float
    node: str


class SessionDirectory(Protocol):
    """What a server offers the engine for `.session` and `.status`: this node's sessions, or
    with Redis every node's (scaleout.md)."""
    def sessions(self) -> list[ListedSession]: ...
    def kill(self, session_id: str, reason: str) -> bool: ...


class Rights:
    """The caller's rights now, computed from the store for every command."""
    __slots__ = ("username", "user_role", "role", "key_cap", "scope", "key_id", "rate")

    def __init__(self, username: str, user_role: str, role: str, key_cap: str | None,
                 scope: frozenset[str] | None, key_id: int | None = None, rate: tuple[int, int] | None = None):
        self.username = username
        self.user_role = user_role
        self.role = role                  # effective: the lower of the user's role and a key's cap
        self.key_cap = key_cap
        self.scope = scope                # the KGs a scoped key reaches; None = all
        self.key_id = key_id
        self.rate = rate                  # a key's limit: requests per window (seconds)

    def in_scope(self, kg: str) -> bool:
        return self.scope is None or kg in self.scope

    def sees_all(self, kg: str) -> bool:
        """May be told that `kg` does not exist (it could see it if it did)."""
        return self.role == "admin" and self.in_scope(kg)


def lower_role(a: str, b: str) -> str:
    return a if ROLE_RANK[a] <= ROLE_RANK[b] else b


def lower_level(a: str, b: str) -> str:
    return a if LEVEL_RANK[a] <= LEVEL_RANK[b] else b


class RateLimited(CommandError):
    """Over a key's `rate=` limit; carries what HTTP needs for its 429 headers."""

    def __init__(self, limit: int, reset_in: int):
        super().__init__(f"Rate limit exceeded: at most {limit} requests per window; try again in {reset_in}s")
        self.limit = limit
        self.reset_in = reset_in


class Engine:
    def __init__(self, store: Store, config: Config, *, clock: Clock = system_clock,
                 hasher: PasswordHasher | None = None, lockout: LockoutCounter | None = None,
                 rate_limiter: RateCounter | None = None, directory: SessionDirectory | None = None,
                 target: Callable[[], str] = lambda: "local", shared_key: str | None = None):
        self.store = store
        self.config = config
        self.clock = clock
        self.hasher = hasher or PasswordHasher(config.security)
        self.lockout: LockoutCounter = lockout or Lockout(config.security, clock)
        self.directory = directory
        self.target = target
        self.auth_mode = config.security.auth_mode
        if self.auth_mode == "shared_key" and not shared_key:
            raise ConfigError("auth_mode \"shared_key\" needs the key in INPUTLAYER_SHARED_KEY")
        self._shared_key = shared_key
        self.rate_limiter: RateCounter = rate_limiter or RateLimiter(clock)
        self.started_at = clock()
        self._batch_denials: list[tuple] = []
        self._parsed_ahead: dict[str, Invocation] = {}     # see prepare()

    # --- bootstrap and authentication ----------------------------------------------------

    def bootstrap(self, admin_password: str | None) -> tuple[bool, str | None]:
        """Create `admin` and `default` in an empty store. Returns (created, generated password);
        the generated password is None when one was given."""
        with self.store.read():
            if self.store.user_count():
                return False, None
        generated = None
        if not admin_password:
            generated = admin_password = secrets.token_urlsafe(24)
        password_hash = self.hasher.hash(admin_password)
        with self.store.write():
            if self.store.user_count():      # another process won the race
                return False, None
            now = self.clock()
            self.store.add_user("admin", "admin", password_hash, now)
            if self.store.kg("default") is None:
                self.store.add_kg("default", "admin", now)
            self.store.append_audit(now, "system", "bootstrap", "user.create", "admin", "ok",
                                    "role=admin; bootstrap")
            self.store.append_audit(now, "system", "bootstrap", "kg.create", "default", "ok", "bootstrap")
        return True, generated

    def login(self, username: str, password: str, *, source: str, address: str = "") -> Session:
        if self.auth_mode != "managed":
            return self._mode_login(None, username, source, address)
        self._refuse_if_locked(address, "auth.login", username)
        with self.store.read():
            user = self.store.user(username)
        ok = self.hasher.verify(user["password_hash"] if user else None, password)
        if not ok:
            self._auth_failed(address, source, "auth.login", username,
                              "unknown user" if user is None else "wrong password")
        now = self.clock()
        with self.store.write():
            current = self.store.user(username)
            if current is None or current["password_version"] != user["password_version"]:
                # Dropped or changed while we were verifying: the old password no longer counts.
                self._auth_failed(address, source, "auth.login", username, "changed during login")
            if self.hasher.needs_rehash(current["password_hash"]):
                self.store.set_password(username, self.hasher.hash(password), new_version=False)
            self.store.touch_login(username, now)
            self.store.append_audit(now, username, _src(source, address), "auth.login", username, "ok",
                                    "method=password")
        session = Session(username, "password", source, address, password_version=current["password_version"],
                          connected_at=now)
        self._bind_default_kg(session)
        return session

    def authenticate(self, api_key: str, *, source: str, address: str = "") -> Session:
        """Log in with an API key, or with a session token (a JWT), wherever a key is accepted."""
        if self.auth_mode != "managed":
            return self._mode_login(api_key, "", source, address)
        if api_key.startswith("eyJ") and api_key.count(".") == 2:
            return self._authenticate_token(api_key, source=source, address=address)
        self._refuse_if_locked(address, "auth.api_key", "")
        session, row, reason = self._api_key_session(api_key, source, address)
        if reason:
            # The same work as a wrong password, so failures cannot be told apart by timing.
            self.hasher.verify(None, api_key)
            self._auth_failed(address, source, "auth.api_key", row["label"] if row else "", reason)
        self.record_api_key_logins([session])
        return session

    def check_api_key(self, api_key: str, *, source: str, address: str = "") -> Session | None:
        """The session a valid API key opens, found without writing or hashing anything: cheap
        enough for a server's event loop. None for any refusal, token or other auth mode; the
        caller then runs authenticate(), which refuses at the same cost whatever the reason.
        A session returned here counts once record_api_key_logins() has audited it."""
        if self.auth_mode != "managed" or (address and self.lockout.remaining(address)):
            return None
        return self._api_key_session(api_key, source, address)[0]

    def record_api_key_logins(self, sessions: list[Session]) -> None:
        """Audit the logins of sessions from check_api_key(), in one transaction."""
        with self.store.write():
            for session in sessions:
                now = session.connected_at
                row = self.store.key_by_id(session.key_id)
                if row is not None and (not row["last_used_at"] or now - row["last_used_at"] >= KEY_TOUCH_INTERVAL):
                    self.store.touch_key(row["id"], now)
                self.store.append_audit(now, session.username, session.audit_source, "auth.api_key",
                                        session.key_label, "ok", "method=api_key")

    def _api_key_session(self, api_key: str, source: str,
                         address: str) -> tuple[Session | None, dict | None, str]:
        """(session, key row, "") for a key that may log in from `address`, else (None, the row
        if any, why not)."""
        if not well_formed_key(api_key):
            return None, None, "malformed key"
        digest = key_digest(self.store.secret, api_key)
        with self.store.read():          # one snapshot: the key, and the rights it opens with
            row = self.store.key_by_digest(digest)
            reason = self._key_problem(row, digest) if row else "unknown key"
            if not reason and not _address_allowed(row, address):
                reason = "address not allowed for this key"
            if reason:
                return None, row, reason
            session = Session(row["owner"], "api_key", source, address, key_id=row["id"], key_label=row["label"],
                              key_digest=digest, connected_at=self.clock())
            self._bind_default_kg(session)
        return session, row, ""

    def _mode_login(self, key: str | None, username: str, source: str, address: str) -> Session:
        """auth_mode shared_key: the one shared key is an admin named `shared-key`; disabled:
        everyone is an admin named `anonymous` (the server allows that on loopback only)."""
        if self.auth_mode == "disabled":
            principal = Session("anonymous", "anonymous", source, address, connected_at=self.clock())
        else:
            self._refuse_if_locked(address, "auth.shared_key", username)
            if key is None or not hmac.compare_digest(key.encode(), self._shared_key.encode()):
                self.hasher.verify(None, key or "")
                self._auth_failed(address, source, "auth.shared_key", username, "wrong shared key")
            principal = Session("shared-key", "shared_key", source, address, connected_at=self.clock())
        with self.store.write():
            self.store.append_audit(self.clock(), principal.username, _src(source, address),
                                    f"auth.{principal.method}", principal.username, "ok", f"auth_mode={self.auth_mode}")
        self._bind_default_kg(principal)
        return principal

    def _authenticate_token(self, token: str, *, source: str, address: str) -> Session:
        self._refuse_if_locked(address, "auth.token", "")
        claims, reason = self._decode_token(token)
        session = None
        if not reason:
            session = Session(claims["sub"], "token", source, address, key_id=claims.get("kid"),
                              password_version=claims.get("pv"), token_claims=claims,
                              connected_at=self.clock())
            with self.store.read():
                try:
                    self._rights(session)
                except SessionEnded as ended:
                    reason = "REVOKED_TOKEN" if ended.reason == "token revoked" else f"INVALID_TOKEN: {ended.reason}"
                if not reason and session.key_id is not None:
                    key = self.store.key_by_id(session.key_id)
                    session.key_label = key["label"]
                    if not _address_allowed(key, address):
                        reason = "INVALID_TOKEN: address not allowed for the issuing key"
        if reason:
            self.hasher.verify(None, token)
            self._auth_failed(address, source, "auth.token", (claims or {}).get("sub", ""), reason)
        with self.store.write():
            self.store.append_audit(self.clock(), session.username, _src(source, address), "auth.token",
                                    session.username, "ok", f"jti={claims['jti']}")
        self._bind_default_kg(session)
        return session

    def _decode_token(self, token: str) -> tuple[dict | None, str | None]:
        import jwt

        try:
            claims = jwt.decode(token, self.store.token_secret, algorithms=["HS256"],
                                options={"verify_exp": False, "verify_iat": False,
                                         "require": ["sub", "role", "iat", "exp", "jti"]})
        except jwt.InvalidSignatureError:
            return None, "INVALID_SIGNATURE"
        except jwt.PyJWTError:
            return None, "INVALID_TOKEN"
        if claims["exp"] <= self.clock():        # checked on our clock, so tests can fake it
            return claims, "EXPIRED_TOKEN"
        return claims, None

    def trusted_session(self, username: str, *, source: str = "local") -> Session:
        """A password session for a user this very process just bootstrapped."""
        with self.store.read():
            user = self.store.user(username)
        if user is None:
            raise AuthError(INVALID_CREDENTIALS)
        session = Session(username, "password", source, password_version=user["password_version"],
                          connected_at=self.clock())
        self._bind_default_kg(session)
        return session

    def bind_kg(self, session: Session, kg: str) -> None:
        """Bind a new session to the KG its client asked for (`?kg=`), or refuse."""
        with self.store.read():
            rights = self._rights(session)
            if self.store.kg(kg) is None or self._level(rights, kg) is None:
                raise PermissionDenied("Access denied")
        session.knowledge_graph = kg

    def _bind_default_kg(self, session: Session) -> None:
        with self.store.read():
            rights = self._rights(session)
            if self.store.kg("default") is not None and self._level(rights, "default"):
                session.knowledge_graph = "default"
        session.login_role = rights.role

    def _key_problem(self, row: dict, digest: str) -> str | None:
        now = self.clock()
        if row["revoked_at"] is not None:
            return "revoked key"
        if row["expires_at"] is not None and row["expires_at"] <= now:
            return "expired key"
        if digest is not None and not _same_digest(row["digest"], digest) and \
                not (_same_digest(row["prev_digest"], digest) and (row["prev_valid_until"] or 0) > now):
            return "rotated-out key"
        return None

    def _refuse_if_locked(self, address: str, action: str, target: str) -> None:
        if not address:
            return
        left = self.lockout.remaining(address)
        if left:
            with self.store.write():
                self.store.append_audit(self.clock(), target or "-", _src("ws", address), action, target,
                                        "locked", f"address locked for {left}s more")
            raise LockedOut(f"Too many failed attempts. Try again in {left}s")

    def _auth_failed(self, address: str, source: str, action: str, target: str, reason: str):
        locked = self.lockout.record_failure(address) if address else False
        with self.store.write():
            self.store.append_audit(self.clock(), target or "-", _src(source, address), action, target,
                                    "failed", reason + ("; address locked" if locked else ""))
        raise AuthError(INVALID_CREDENTIALS)

    # --- rights --------------------------------------------------------------------------

    def _rights(self, session: Session) -> Rights:
        """Re-derive the caller's rights from the store; end the session if its principal is gone."""
        if session.method in VIRTUAL_PRINCIPALS:
            return Rights(session.username, "admin", "admin", None, None)
        user = self.store.user(session.username)
        if user is None:
            raise SessionEnded("user dropped")
        claims = session.token_claims
        if claims is not None:
            record = self.store.token(claims["jti"])
            if record is None or record["revoked_at"] is not None:
                raise SessionEnded("token revoked")
            if claims["exp"] <= self.clock():
                raise SessionEnded("token expired")
        if session.key_id is None:
            if session.password_version is not None and user["password_version"] != session.password_version:
                raise SessionEnded("password changed")
            rights = Rights(session.username, user["role"], user["role"], None, None)
        else:
            row = self.store.key_by_id(session.key_id)
            if row is None or row["revoked_at"] is not None:
                raise SessionEnded("API key revoked")
            problem = self._key_problem(row, session.key_digest)
            if problem == "expired key":
                raise SessionEnded("API key expired")
            if problem:
                raise SessionEnded("API key rotated")
            scope = frozenset(self.store.key_kgs(row["id"])) if row["scoped"] else None
            rights = Rights(session.username, user["role"], lower_role(user["role"], row["role"]), row["role"],
                            scope, row["id"], tuple(row["rate"]) if row.get("rate") else None)
        if claims is not None:
            # A token narrows its issuer's current rights to those it was issued with.
            rights.key_cap = lower_role(rights.key_cap or rights.user_role, claims["role"])
            rights.role = lower_role(rights.role, claims["role"])
            if claims.get("kgs") is not None:
                token_scope = frozenset(claims["kgs"])
                rights.scope = token_scope if rights.scope is None else rights.scope & token_scope
        return rights

    def _level(self, rights: Rights, kg: str) -> str | None:
        """The caller's level on `kg` now (None: no access). Assumes `kg` exists."""
        if not rights.in_scope(kg):
            return None
        if rights.user_role == "admin":
            level = "owner"
        else:
            entry = self.store.acl_entry(kg, rights.username)
            level = entry["role"] if entry else None
        if level is not None and rights.key_cap is not None:
            level = lower_level(level, CAP_LEVEL[rights.key_cap])
        return level

    def check_session(self, session: Session) -> None:
        """Raise SessionEnded when the session's principal no longer exists or may not log in."""
        with self.store.read():
            self._rights(session)

    def can(self, session: Session, kg: str, action: str) -> bool:
        """The authorization a query engine asks: may `session` read/write/manage `kg` now?"""
        if action not in ACTION_LEVEL:
            raise ValueError(f"unknown action {action!r}: use read, write or manage")
        with self.store.read():
            try:
                rights = self._rights(session)
            except SessionEnded:
                return False
            if self.store.kg(kg) is None:
                return False
            level = self._level(rights, kg)
        return level is not None and LEVEL_RANK[level] >= LEVEL_RANK[ACTION_LEVEL[action]]

    # --- execution -----------------------------------------------------------------------

    def execute(self, session: Session, line: str, *, defer_denial_audit: bool = False) -> Result:
        """Run one command line for `session`. Raises CommandError with the user's message.

        A refusal is audited before it is raised, unless `defer_denial_audit`: then the record
        rides on the exception (`audit_record`) for the caller to pass to record_denial() off
        its event loop."""
        inv = self._parsed_ahead.pop(line, None) if self._parsed_ahead else None
        return self._run(session, inv or parse(line.strip()), defer_denial_audit)

    def _run(self, session: Session, inv: Invocation, defer_denial_audit: bool) -> Result:
        cmd = inv.command
        if cmd.shell_only:
            raise CommandError(f"{cmd.name} is a shell command: it only works at the shell")
        if cmd.server_only and self.directory is None:
            raise CommandError(f"{cmd.name} needs a server: sessions exist only there (connect with --url)")
        handler: Callable[[Session, Rights, Invocation], Result] = getattr(self, "_cmd_" + cmd.handler)
        prepared = None
        try:
            if cmd.writes:
                if cmd.words in SECRET_COMMANDS:
                    prepared = self._hash_ahead(session, inv)
                with self.store.write():
                    rights = self._rights(session)
                    self._consume_rate(rights)
                    self._authorize(session, rights, inv)
                    inv.args["_hash"] = prepared
                    result = handler(session, rights, inv)
            else:
                with self.store.read():
                    rights = self._rights(session)
                    self._consume_rate(rights)
                    self._authorize(session, rights, inv)
                    result = handler(session, rights, inv)
        except PermissionDenied as denied:
            record = (self.clock(), session.username, session.audit_source, cmd.action, _target(inv),
                      "denied", _with_credential(session, denied.message))
            if defer_denial_audit:
                denied.audit_record = record
            else:
                self.record_denial(record)
            raise
        except (sqlite3.DatabaseError, StoreError) as exc:
            raise CommandError(f"The store could not complete the command: {exc}. Nothing was changed.") from None
        if result.switched_kg is not None:
            session.knowledge_graph = result.switched_kg
        return result

    def execute_program(self, session: Session, program: str | list, *,
                        defer_denial_audit: bool = False) -> list[Result]:
        """Several lines, each parsed and authorized on its own; stops at the first failure,
        whose message is prefixed with its line number. Earlier lines stay done. `program`
        may come already parsed, by parse_program()."""
        results = []
        lines = parse_program(program) if isinstance(program, str) else program
        for n, _, parsed in lines:
            try:
                if isinstance(parsed, CommandError):
                    raise parsed
                results.append(self._run(session, parsed, defer_denial_audit))
            except SessionEnded:
                raise
            except CommandError as exc:
                if len(lines) == 1:
                    raise
                numbered = (PermissionDenied if isinstance(exc, PermissionDenied) else CommandError)(
                    f"line {n}: {exc.message}")
                numbered.audit_record = getattr(exc, "audit_record", None)
                raise numbered from None
        return results

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
            password = inv.args.get("password") if inv.command.words in SECRET_COMMANDS else None
            if password is not None and not check_password_policy(
                    inv.args["name"], password, self.config.security.min_password_length):
                self.hasher.hash_ahead(password)

    def discard_prepared(self) -> None:
        self._parsed_ahead.clear()
        self.hasher.discard_ahead()

    def begin_batch(self, *, atomic: bool = False) -> None:
        self.store.begin_batch(atomic=atomic)
        self._batch_denials = []

    def end_batch(self, commit: bool) -> None:
        self.store.end_batch(commit)
        denials, self._batch_denials = self._batch_denials, []
        if not commit and denials:
            # Refusals are facts about the caller, not part of the batch: keep them.
            with self.store.write():
                for record in denials:
                    self.store.append_audit(*record)

    def _consume_rate(self, rights: Rights) -> tuple[int, int, int] | None:
        """Count one request against a key's `rate=`: (limit, remaining, reset in), or raise."""
        if rights.rate is None:
            return None
        limit, window = rights.rate
        allowed, remaining, reset_in = self.rate_limiter.hit(rights.key_id, limit, window)
        if not allowed:
            raise RateLimited(limit, reset_in)
        return limit, remaining, reset_in

    def consume_rate(self, session: Session) -> tuple[int, int, int] | None:
        """For HTTP requests made with a key: its rate-limit state after counting this one."""
        with self.store.read():
            return self._consume_rate(self._rights(session))

    def _hash_ahead(self, session: Session, inv: Invocation) -> str | None:
        """Check rights and policy, then hash the password before taking the store's lock, so
        argon2 never holds up other commands."""
        password = inv.args.get("password")
        if password is None:
            return None
        with self.store.read():
            rights = self._rights(session)
            self._authorize(session, rights, inv)
        problem = check_password_policy(inv.args["name"], password, self.config.security.min_password_length)
        if problem:
            raise CommandError(problem)
        return self.hasher.hash(password)

    def record_denial(self, record: tuple) -> None:
        """Write the audit record of a refusal (see execute's defer_denial_audit)."""
        with self.store.write():
            self.store.append_audit(*record)
        if self.store.in_batch:
            self._batch_denials.append(record)

    def _authorize(self, session: Session, rights: Rights, inv: Invocation) -> None:
        rule = inv.command.rule
        if rule.kind == "anyone":
            return
        if rule.kind == "admin":
            if rights.role != "admin":
                raise PermissionDenied(rule.denied)
            return
        if rule.kind == "admin_or_self":
            if rights.role == "admin":
                return
            if inv.args.get(rule.self_param) != session.username:
                raise PermissionDenied(rule.denied)
            if inv.command.handler == "user_password" and session.method != "password":
                raise PermissionDenied("Permission denied: change your password in a session that "
                                       "logged in with it, not with an API key")
            return
        if rule.kind == "kg_creator":
            if ROLE_RANK[rights.role] < ROLE_RANK["editor"]:
                raise PermissionDenied(rule.denied)
            if rights.scope is not None:
                raise PermissionDenied("Permission denied: an API key limited to some knowledge graphs "
                                       "cannot create knowledge graphs")
            return
        if rule.kind == "kg":
            kg = inv.args.get(rule.kg_param) or session.knowledge_graph
            if kg is None:
                raise CommandError("No knowledge graph selected. Name one, or switch with .kg use <name>.")
            inv.args[rule.kg_param] = kg
            if self.store.kg(kg) is None:
                if rights.sees_all(kg):
                    raise CommandError(f"Knowledge graph '{kg}' not found")
                raise PermissionDenied("Access denied")
            level = self._level(rights, kg)
            if level is None:
                raise PermissionDenied("Access denied")
            if LEVEL_RANK[level] >= LEVEL_RANK[rule.level]:
                return
            if rule.self_param and inv.args.get(rule.self_param) == session.username:
                return
            raise PermissionDenied(rule.denied)
        if rule.kind == "token_issuer":
            record = self.store.token(inv.args["jti"])
            if rights.role == "admin":
                if record is None:
                    raise CommandError(f"Token '{inv.args['jti']}' not found")
                return
            if record is None or record["username"] != session.username:
                raise PermissionDenied(rule.denied)
            return
        raise AssertionError(f"unknown rule {rule.kind}")

    def _audit(self, session: Session, inv: Invocation, detail: str = "", target: str | None = None) -> None:
        self.store.append_audit(self.clock(), session.username, session.audit_source, inv.command.action,
                                _target(inv) if target is None else target, "ok", _with_credential(session, detail))

    # --- general -------------------------------------------------------------------------

    def _cmd_help(self, session: Session, rights: Rights, inv: Invocation) -> Result:
        topic = inv.args.get("command")
        if not topic:
            return Result(["command", "description"], [[c.usage, c.summary] for c in COMMANDS])
        cmd = find_command(topic)
        if cmd is None:
            group = topic.lstrip(".").split()[0].lower() if topic.strip(". ") else ""
            if group in GROUPS and len(topic.lstrip(".").split()) == 1:
                return Result(["command", "description"], [[c.usage, c.summary] for c in GROUPS[group]])
            raise CommandError(f"Unknown command: .{clip(topic.lstrip('.'), 40)}. Type .help for the list.")
        lines = [f"Usage: {cmd.usage}", cmd.summary + ".", f"Who may run it: {cmd.who}."]
        lines += [f"Example: {e}" for e in cmd.examples]
        return Result.message(*lines)

    def _cmd_whoami(self, session: Session, rights: Rights, inv: Invocation) -> Result:
        return Result(["username", "role", "auth", "knowledge_graph"],
                      [[session.username, rights.role, session.auth, session.knowledge_graph or ""]])

    def _cmd_status(self, session: Session, rights: Rights, inv: Invocation) -> Result:
        rows = [["version", __version__], ["target", self.target()],
                ["uptime", f"{int(self.clock() - self.started_at)}s"]]
        if self.directory is not None:
            rows.append(["sessions", str(len(self.directory.sessions()))])
        rows.append(["role", rights.role])
        return Result(["key", "value"], rows)

    # --- users ---------------------------------------------------------------------------

    def _cmd_user_list(self, session: Session, rights: Rights, inv: Invocation) -> Result:
        return Result(["username", "role", "created_at", "last_login_at"],
                      [[u["name"], u["role"], iso(u["created_at"]), iso(u["last_login_at"])]
                       for u in self.store.users()])

    def _cmd_user_create(self, session: Session, rights: Rights, inv: Invocation) -> Result:
        name, role = inv.args["name"], inv.args["role"] or "viewer"
        if self.store.user(name) is not None:
            raise CommandError(f"User '{name}' already exists")
        if inv.args["_hash"] is None:
            raise CommandError("Password required: give it after the user name, or leave it out at the "
                               "interactive shell to be asked for it")
        self.store.add_user(name, role, inv.args["_hash"], self.clock())
        self._audit(session, inv, f"role={role}")
        return Result.message(f"User '{name}' created with role '{role}'.")

    def _existing_user(self, name: str) -> dict:
        user = self.store.user(name)
        if user is None:
            raise CommandError(f"User '{name}' not found")
        return user

    def _cmd_user_drop(self, session: Session, rights: Rights, inv: Invocation) -> Result:
        name = inv.args["name"]
        user = self._existing_user(name)
        if user["role"] == "admin" and self.store.admin_count() == 1:
            raise CommandError("Cannot drop the last admin")
        keys = len(self.store.keys(owner=name))
        grants = len(self.store.acl_for_user(name))
        self.store.drop_user(name)
        self._audit(session, inv, f"role={user['role']}; api_keys={keys}; acl_entries={grants}")
        return Result.message(f"User '{name}' dropped.")

    def _cmd_user_password(self, session: Session, rights: Rights, inv: Invocation) -> Result:
        name = inv.args["name"]
        self._existing_user(name)
        if inv.args["_hash"] is None:
            raise CommandError("Password required: give the new password after the user name, or leave "
                               "it out at the interactive shell to be asked for it")
        self.store.set_password(name, inv.args["_hash"], new_version=True)
        if name == session.username and session.method == "password":
            # The session that changed the password stays; the user's others end.
            session.password_version = self.store.user(name)["password_version"]
        self._audit(session, inv, "password changed")
        return Result.message(f"Password updated for '{name}'.")

    def _cmd_user_role(self, session: Session, rights: Rights, inv: Invocation) -> Result:
        name, role = inv.args["name"], inv.args["role"]
        user = self._existing_user(name)
        if user["role"] == "admin" and role != "admin" and self.store.admin_count() == 1:
            raise CommandError("Cannot change the role of the last admin")
        self.store.set_role(name, role)
        self._audit(session, inv, f"role={user['role']}->{role}")
        return Result.message(f"Role updated to '{role}' for '{name}'.")

    def _cmd_user_show(self, session: Session, rights: Rights, inv: Invocation) -> Result:
        user = self._existing_user(inv.args["name"])
        rows = [["role", user["role"]], ["created_at", iso(user["created_at"])],
                ["last_login_at", iso(user["last_login_at"])]]
        rows += [["grant", f"{g['kg']}: {g['role']}"] for g in self.store.acl_for_user(user["name"])]
        rows += [["api_key", k["label"]] for k in self.store.keys(owner=user["name"]) if k["revoked_at"] is None]
        return Result(["key", "value"], rows)

    # --- knowledge graphs ----------------------------------------------------------------

    def _cmd_kg_current(self, session: Session, rights: Rights, inv: Invocation) -> Result:
        kg = session.knowledge_graph
        if kg is None or self.store.kg(kg) is None:
            return Result.message("No knowledge graph selected.")
        return Result.message(f"Current knowledge graph: {kg}")

    def _cmd_kg_list(self, session: Session, rights: Rights, inv: Invocation) -> Result:
        rows = []
        for kg in self.store.kgs():
            level = self._level(rights, kg["name"])
            if level is not None:
                rows.append([kg["name"], level])
        return Result(["name", "access"], rows)

    def _cmd_kg_create(self, session: Session, rights: Rights, inv: Invocation) -> Result:
        name = inv.args["name"]
        if name.startswith("_"):
            raise CommandError(f"Invalid name '{name}': names starting with '_' are reserved for the system")
        if self.store.kg(name) is not None:
            raise CommandError(f"Knowledge graph '{name}' already exists")
        now = self.clock()
        self.store.add_kg(name, session.username, now)
        if rights.user_role != "admin":
            self.store.grant(name, session.username, "owner", session.username, now)
        self._audit(session, inv)
        return Result.message(f"Knowledge graph '{name}' created.", f"Switched to knowledge graph: {name}",
                              switched_kg=name)

    def _cmd_kg_use(self, session: Session, rights: Rights, inv: Invocation) -> Result:
        name = inv.args["name"]
        return Result.message(f"Switched to knowledge graph: {name}", switched_kg=name)

    def _cmd_kg_drop(self, session: Session, rights: Rights, inv: Invocation) -> Result:
        name = inv.args["name"]
        if name == session.knowledge_graph:
            raise CommandError("Cannot drop current knowledge graph. Switch to another first.")
        entries = len(self.store.acl_for_kg(name))
        self.store.drop_kg(name)
        self._audit(session, inv, f"acl_entries={entries}")
        return Result.message(f"Knowledge graph '{name}' dropped.")

    # --- ACLs ----------------------------------------------------------------------------

    def _cmd_acl_list(self, session: Session, rights: Rights, inv: Invocation) -> Result:
        return Result(["username", "role", "granted_by", "granted_at"],
                      [[e["username"], e["role"], e["granted_by"], iso(e["granted_at"])]
                       for e in self.store.acl_for_kg(inv.args["kg"])])

    def _cmd_acl_grant(self, session: Session, rights: Rights, inv: Invocation) -> Result:
        kg, user, role = inv.args["kg"], inv.args["user"], inv.args["role"]
        self._existing_user(user)
        self.store.grant(kg, user, role, session.username, self.clock())
        self._audit(session, inv, f"kg={kg}; role={role}", target=user)
        return Result.message(f"Granted '{role}' access on '{kg}' to '{user}'.")

    def _cmd_acl_revoke(self, session: Session, rights: Rights, inv: Invocation) -> Result:
        kg, user = inv.args["kg"], inv.args["user"]
        self._existing_user(user)
        if self.store.acl_entry(kg, user) is None:
            raise CommandError(f"No ACL entry found for user '{user}' on '{kg}'")
        self.store.revoke(kg, user)
        self._audit(session, inv, f"kg={kg}", target=user)
        return Result.message(f"Revoked access on '{kg}' from '{user}'.")

    def _cmd_acl_check(self, session: Session, rights: Rights, inv: Invocation) -> Result:
        kg, name = inv.args["kg"], inv.args["user"]
        user = self._existing_user(name)
        if user["role"] == "admin":
            access, because = "owner", "global role admin"
        else:
            entry = self.store.acl_entry(kg, name)
            access, because = (entry["role"], "ACL entry") if entry else ("none", "no ACL entry")
        return Result(["username", "kg", "access", "because"], [[name, kg, access, because]])

    # --- API keys ------------------------------------------------------------------------

    def _key_row(self, row: dict) -> tuple[str, str]:
        kgs = ",".join(self.store.key_kgs(row["id"])) if row["scoped"] else "*"
        return kgs, iso(row["expires_at"])

    def _key_status(self, row: dict) -> str:
        now = self.clock()
        if row["revoked_at"] is not None:
            return "revoked"
        if row["expires_at"] is not None and row["expires_at"] <= now:
            return "expired"
        if row["prev_digest"] and (row["prev_valid_until"] or 0) > now:
            return "rotating"
        return "active"

    def _cmd_apikey_create(self, session: Session, rights: Rights, inv: Invocation) -> Result:
        label = inv.args["label"]
        owner = inv.options.get("user") or session.username
        owner_row = self._existing_user(owner)
        role = inv.options.get("role") or owner_row["role"]
        if ROLE_RANK[role] > ROLE_RANK[owner_row["role"]]:
            raise CommandError(f"Role '{role}' exceeds the owner's role '{owner_row['role']}'")
        kgs = tuple(inv.options.get("kg") or ())
        for kg in kgs:
            if self.store.kg(kg) is None:
                raise CommandError(f"Knowledge graph '{kg}' not found")
        existing = self.store.key(label)
        if existing is not None and existing["revoked_at"] is None:
            raise CommandError(f"API key with label '{label}' already exists")
        lifetime = inv.options.get("expires")
        if lifetime == 0:
            raise CommandError("Invalid duration '0s': a key's expiry must be in the future")
        now = self.clock()
        expires_at = None if lifetime is None else now + lifetime
        secret = new_api_key()
        ips, rate = inv.options.get("ips", ()), inv.options.get("rate")
        self.store.add_key(label, owner, role, kgs, key_digest(self.store.secret, secret), now, expires_at,
                           ips=ips, rate=rate)
        shown_kgs = ",".join(sorted(kgs)) if kgs else "*"
        limits = (f"; ips={','.join(ips)}" if ips else "") + (f"; rate={rate[0]}/{rate[1]}s" if rate else "")
        self._audit(session, inv, f"owner={owner}; role={role}; kgs={shown_kgs}; "
                                  f"expires={iso(expires_at) or 'never'}{limits}")
        return Result(["api_key", "label", "owner", "role", "kgs", "expires_at"],
                      [[secret, label, owner, role, shown_kgs, iso(expires_at)]])

    def _cmd_apikey_list(self, session: Session, rights: Rights, inv: Invocation) -> Result:
        owner = inv.options.get("user")
        if owner is not None:
            self._existing_user(owner)
        rows = []
        for k in self.store.keys(owner=owner):
            kgs, expires = self._key_row(k)
            rows.append([k["label"], iso(k["created_at"]), k["owner"], k["role"], kgs, expires,
                         iso(k["last_used_at"]), self._key_status(k)])
        return Result(["label", "created_at", "owner", "role", "kgs", "expires_at", "last_used_at", "status"], rows)

    def _live_key(self, label: str) -> dict:
        row = self.store.key(label)
        if row is None:
            raise CommandError(f"API key '{label}' not found")
        if row["revoked_at"] is not None:
            raise CommandError(f"API key '{label}' is already revoked")
        return row

    def _cmd_apikey_revoke(self, session: Session, rights: Rights, inv: Invocation) -> Result:
        label = inv.args["label"]
        row = self._live_key(label)
        self.store.revoke_key(row["id"], self.clock())
        self._audit(session, inv, f"owner={row['owner']}")
        return Result.message(f"API key '{label}' revoked.")

    def _cmd_apikey_rotate(self, session: Session, rights: Rights, inv: Invocation) -> Result:
        label = inv.args["label"]
        row = self._live_key(label)
        grace = inv.options.get("grace", DEFAULT_GRACE)
        if grace is None:
            raise CommandError("Invalid grace 'never': the old secret must stop working at some point")
        now = self.clock()
        valid_until = now + grace if grace > 0 else None
        secret = new_api_key()
        self.store.rotate_key(row["id"], key_digest(self.store.secret, secret), valid_until)
        self._audit(session, inv, f"grace={grace}s")
        return Result(["api_key", "label", "previous_valid_until"], [[secret, label, iso(valid_until or now)]])

    # --- session tokens ------------------------------------------------------------------

    def _cmd_token_issue(self, session: Session, rights: Rights, inv: Invocation) -> Result:
        import jwt

        ttl = inv.options.get("ttl", DEFAULT_TOKEN_TTL)
        if not ttl or ttl > MAX_TOKEN_TTL:
            raise CommandError("Invalid ttl: a token lives from 1s to 24h")
        now = self.clock()
        expires_at = int(now + ttl)
        if session.token_claims is not None:        # a token never outlives the one it came from
            expires_at = min(expires_at, session.token_claims["exp"])
        jti = secrets.token_urlsafe(16)
        claims = {"sub": session.username, "role": rights.role, "iat": int(now), "exp": expires_at, "jti": jti,
                  "kgs": sorted(rights.scope) if rights.scope is not None else None}
        if session.key_id is not None:
            claims["kid"] = session.key_id
        else:
            claims["pv"] = session.password_version
        token = jwt.encode(claims, self.store.token_secret, algorithm="HS256")
        self.store.forget_expired_tokens(now)
        self.store.add_token(jti, session.username, now, expires_at)
        self._audit(session, inv, f"jti={jti}; expires={iso(expires_at)}", target=session.username)
        return Result(["token", "jti", "expires_at"], [[token, jti, iso(expires_at)]])

    def _cmd_token_revoke(self, session: Session, rights: Rights, inv: Invocation) -> Result:
        jti = inv.args["jti"]
        if self.store.token(jti)["revoked_at"] is not None:
            raise CommandError(f"Token '{jti}' is already revoked")
        self.store.revoke_token(jti, self.clock())
        self._audit(session, inv)
        return Result.message(f"Token '{jti}' revoked.")

    # --- audit and lockouts --------------------------------------------------------------

    def _cmd_audit(self, session: Session, rights: Rights, inv: Invocation) -> Result:
        since = inv.options.get("since")
        records = self.store.audit_records(limit=inv.options.get("limit", 50), actor=inv.options.get("user"),
                                           action=inv.options.get("action"),
                                           since=None if since is None else self.clock() - since)
        return Result(["seq", "time", "actor", "source", "action", "target", "outcome", "detail"],
                      [[str(r["seq"]), iso(r["time"]), r["actor"], r["source"], r["action"], r["target"],
                        r["outcome"], r["detail"]] for r in records])

    def _cmd_audit_verify(self, session: Session, rights: Rights, inv: Invocation) -> Result:
        count, problem = self.store.verify_audit()
        if problem:
            raise CommandError(problem)
        return Result.message(f"Audit log intact: {count} records.")

    def _cmd_lockout_list(self, session: Session, rights: Rights, inv: Invocation) -> Result:
        return Result(["address", "failures", "locked_until"],
                      [[a, str(n), iso(until)] for a, n, until in self.lockout.entries()])

    def _cmd_lockout_clear(self, session: Session, rights: Rights, inv: Invocation) -> Result:
        address = inv.args["address"]
        if not self.lockout.clear(address):
            raise CommandError(f"No lockout for {address}")
        self._audit(session, inv)
        return Result.message(f"Lockout cleared for {address}.")

    # --- sessions (server) ---------------------------------------------------------------

    def _cmd_session_list(self, session: Session, rights: Rights, inv: Invocation) -> Result:
        live = self.directory.sessions()
        if rights.role != "admin":
            live = [s for s in live if s.username == session.username]
        return Result(["session_id", "username", "auth", "address", "knowledge_graph", "connected_at", "node"],
                      [[s.id, s.username, s.auth, s.address, s.knowledge_graph, iso(s.connected_at), s.node]
                       for s in sorted(live, key=lambda s: s.connected_at)])

    def _cmd_session_kill(self, session: Session, rights: Rights, inv: Invocation) -> Result:
        sid = inv.args["session_id"]
        if not self.directory.kill(sid, "killed by an administrator"):
            raise CommandError(f"Session '{sid}' not found")
        self._audit(session, inv)
        return Result.message(f"Session '{sid}' closed.")


def _address_allowed(key: dict, address: str) -> bool:
    """A key with `ips=` works only from those networks; the local shell counts as loopback."""
    if not key.get("ips"):
        return True
    return address_in(address or LOCAL_ADDRESS, key["ips"])


def _same_digest(stored: str | None, digest: str) -> bool:
    """Constant-time: the index found the row, the comparison must not tell how close a guess came."""
    return stored is not None and hmac.compare_digest(stored, digest)


def _with_credential(session: Session, detail: str) -> str:
    """Name the key or token a change was made with: the actor column names only its owner."""
    if session.method == "password":
        return detail
    return f"{detail}; via {session.auth}" if detail else f"via {session.auth}"


def _src(source: str, address: str) -> str:
    return f"{source}:{address}" if address else source


def _target(inv: Invocation) -> str:
    for p in inv.command.params:
        value = inv.args.get(p.name)
        if isinstance(value, str) and not p.kind.secret:
            return value
    return ""


def missing_handlers() -> list[str]:
    """Names of registry handlers the engine lacks (a test keeps this empty)."""
    return [c.handler for c in COMMANDS if c.handler and not hasattr(Engine, "_cmd_" + c.handler)]
