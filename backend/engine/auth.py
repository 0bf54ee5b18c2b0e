"""Authentication: passwords, API keys, session tokens and the shared-key / disabled modes.

Every refusal costs the same work (one argon2 verification) and says the same thing, is
audited, and counts towards the address's lockout; a locked address costs no argon2 at all, and
its refusals are audited once per lockout window with their count. Failed password logins are
counted per user name too (any name: existing and unknown names take the same path), and a name
past its limit has its password logins refused at once for a while; its keys keep working.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Any, NoReturn

from ..config import Config
from ..errors import AuthError, ConfigError, LockedOut, SessionEnded
from ..language.kinds import ACCOUNT_KEY, MAX_USERNAME_CHARS
from ..netaddr import lockout_key
from ..store import Store
from .clock import Clock
from .keys import key_digest, well_formed_key
from .limits import LockoutCounter
from .passwords import PasswordHasher, argon2_parameters
from .policy import (
    REFUSED_KEY_STATES,
    Rights,
    Session,
    address_allowed,
    audit_source,
    key_state,
    level_of,
    rights_of,
)
from .refusals import RefusalCounter

INVALID_CREDENTIALS = "Invalid credentials"
KEY_TOUCH_INTERVAL = 60      # last_used_at is written at most once a minute per key
HASH_SAMPLE_TTL = 60         # how long the stored hashes' parameter sets are reused (see _hash_like)


class Authenticator:
    """Turns credentials into Sessions, bound to the `default` KG when they may use it."""

    def __init__(self, store: Store, config: Config, clock: Clock, hasher: PasswordHasher, lockout: LockoutCounter,
                 shared_key: str | None, account_lockout: LockoutCounter):
        self.store = store
        self.clock = clock
        self.hasher = hasher
        self.lockout = lockout
        self.account_lockout = account_lockout     # keyed by ACCOUNT_KEY + the user name as given
        self.refusals = RefusalCounter(clock)
        self.auth_mode = config.security.auth_mode
        if self.auth_mode == "shared_key" and not shared_key:
            raise ConfigError("auth_mode \"shared_key\" needs the key in INPUTLAYER_SHARED_KEY")
        self._shared_key = shared_key or ""
        # One stored hash per argon2 parameter set in the store, with how many users have it, and
        # when that was read: an unknown user is verified against a dummy of one of these sets.
        self._hash_samples: list[tuple[str, int]] = []
        self._hash_samples_at: float | None = None
        self._pick_key = secrets.token_bytes(16)

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

    def login(self, username: str, password: str, *, source: str, address: str = "",
              record: bool = True) -> Session:
        """A password session. With record=False a good login writes nothing (no audit record,
        no last_login_at) until the session first changes something (record_login): a policy
        apply with nothing to do leaves the store as it was."""
        if self.auth_mode != "managed":
            return self._mode_login(None, username, source, address)
        self._refuse_if_locked(address, source, "auth.login", username)
        if len(username) > MAX_USERNAME_CHARS:
            self._auth_failed(address, source, "auth.login", "", f"user name too long ({len(username)} characters)")
        self._refuse_if_account_locked(username, address, source)
        user = self.store.consistent(lambda: self.store.user(username))
        ok = self.hasher.verify(user["password_hash"] if user else None, password,
                                like=None if user else self._hash_like(username))
        if not ok or user is None:
            self._auth_failed(address, source, "auth.login", username,
                              "unknown user" if user is None else "wrong password", account=username)
        now = self.clock()
        if not record:
            quiet = Session(username, "password", source, address, password_version=user["password_version"],
                            connected_at=now, user_id=user["id"])
            quiet.login_unrecorded = True
            self.bind_default_kg(quiet)
            return quiet
        with self.store.write():
            current = self.store.user(username)
            if current is None or (current["id"], current["password_version"]) != (user["id"], user["password_version"]):
                # Dropped or changed while we were verifying: the old password no longer counts.
                self._auth_failed(address, source, "auth.login", username, "changed during login", account=username)
            if self.hasher.needs_rehash(current["password_hash"]):
                self.store.set_password(username, self.hasher.hash(password), new_version=False)
            self.store.touch_login(username, now)
            self.store.append_audit(now, username, audit_source(source, address), "auth.login", username, "ok",
                                    "method=password")
        session = Session(username, "password", source, address, password_version=current["password_version"],
                          connected_at=now, user_id=current["id"])
        self.bind_default_kg(session)
        return session

    def authenticate(self, api_key: str, *, source: str, address: str = "", record: bool = True) -> Session:
        """Log in with an API key, or with a session token (a JWT), wherever a key is accepted.
        record=False: as for login()."""
        if self.auth_mode != "managed":
            return self._mode_login(api_key, "", source, address)
        quiet = None if record else self.check_api_key(api_key, source=source, address=address)
        if quiet is not None:
            quiet.login_unrecorded = True
            return quiet
        if api_key.startswith("eyJ") and api_key.count(".") == 2:
            return self._authenticate_token(api_key, source=source, address=address)
        self._refuse_if_locked(address, source, "auth.api_key", "")
        session, row, reason = self._api_key_session(api_key, source, address)
        if session is None:
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
        if self.auth_mode != "managed" or (address and self.lockout.remaining(lockout_key(address))):
            return None
        return self._api_key_session(api_key, source, address)[0]

    def record_api_key_logins(self, sessions: list[Session]) -> None:
        """Audit the logins of sessions from check_api_key(), in one transaction."""
        with self.store.write():
            for session in sessions:
                now = session.connected_at
                row = self.store.key_by_id(session.key_id) if session.key_id is not None else None
                if row is not None and (not row["last_used_at"] or now - row["last_used_at"] >= KEY_TOUCH_INTERVAL):
                    self.store.touch_key(row["id"], now)
                self.store.append_audit(now, session.username, session.audit_source, "auth.api_key",
                                        session.key_label or "", "ok", "method=api_key")

    def record_login(self, session: Session) -> None:
        """Audit a login made with record=False, now that its session is about to change something."""
        if not session.login_unrecorded:
            return
        session.login_unrecorded = False
        if session.method == "api_key":
            self.record_api_key_logins([session])
            return
        with self.store.write():
            self.store.touch_login(session.username, session.connected_at)
            self.store.append_audit(session.connected_at, session.username, session.audit_source, "auth.login",
                                    session.username, "ok", "method=password")

    def trusted_session(self, username: str, *, source: str = "local") -> Session:
        """A password session for a user this very process just bootstrapped."""
        user = self.store.consistent(lambda: self.store.user(username))
        if user is None:
            raise AuthError(INVALID_CREDENTIALS)
        session = Session(username, "password", source, password_version=user["password_version"],
                          connected_at=self.clock(), user_id=user["id"])
        self.bind_default_kg(session)
        return session

    def bind_default_kg(self, session: Session) -> None:
        def rights_and_default() -> tuple[Rights, bool]:
            rights = rights_of(self.store, session, self.clock())
            return rights, self.store.kg("default") is not None and bool(level_of(self.store, rights, "default"))

        rights, default = self.store.consistent(rights_and_default)
        if default:
            session.knowledge_graph = "default"
        session.login_role = rights.role

    def _hash_like(self, username: str) -> str | None:
        """A stored hash whose parameters an unknown user's dummy verification uses, so it costs
        what an existing user's does, also while hashes made before an argon2 parameter change
        await their re-hash. Picked among the store's parameter sets in proportion to their
        users, the same for a name every time (a keyed hash of it picks)."""
        now = self.clock()
        if self._hash_samples_at is None or now - self._hash_samples_at >= HASH_SAMPLE_TTL:
            samples: dict[tuple | None, list] = {}
            with self.store.read():
                for user in self.store.users():
                    entry = samples.setdefault(argon2_parameters(user["password_hash"]), [user["password_hash"], 0])
                    entry[1] += 1
            self._hash_samples = sorted((h, n) for h, n in samples.values())
            self._hash_samples_at = now
        total = sum(n for _, n in self._hash_samples)
        if not total:
            return None
        pick = int.from_bytes(hmac.new(self._pick_key, username.encode("utf-8", "replace"), "sha256").digest()[:8],
                              "big") % total
        for stored_hash, count in self._hash_samples:
            if pick < count:
                return stored_hash
            pick -= count
        return None

    def _api_key_session(self, api_key: str, source: str,
                         address: str) -> tuple[Session | None, dict[str, Any] | None, str]:
        """(session, key row, "") for a key that may log in from `address`, else (None, the row
        if any, why not)."""
        if not well_formed_key(api_key):
            return None, None, "malformed key"
        digest = key_digest(self.store.secret, api_key)

        def opened() -> tuple[Session | None, dict[str, Any] | None, str]:
            row = self.store.key_by_digest(digest)
            if row is None:
                return None, None, "unknown key"
            state = key_state(row, self.clock(), digest)
            reason = f"{state} key" if state in REFUSED_KEY_STATES else ""
            if not reason and not address_allowed(row, address):
                reason = "address not allowed for this key"
            if reason:
                return None, row, reason
            session = Session(row["owner"], "api_key", source, address, key_id=row["id"], key_label=row["label"],
                              key_digest=digest, connected_at=self.clock(), user_id=row["owner_id"])
            self.bind_default_kg(session)
            return session, row, ""

        return self.store.consistent(opened)          # one view: the key, and the rights it opens with

    def _mode_login(self, key: str | None, username: str, source: str, address: str) -> Session:
        """auth_mode shared_key: the one shared key is an admin named `shared-key`; disabled:
        everyone is an admin named `anonymous` (the server allows that on loopback only)."""
        if self.auth_mode == "disabled":
            principal = Session("anonymous", "anonymous", source, address, connected_at=self.clock())
        else:
            self._refuse_if_locked(address, source, "auth.shared_key", username)
            if key is None or not hmac.compare_digest(key.encode(), self._shared_key.encode()):
                self.hasher.verify(None, key or "")
                self._auth_failed(address, source, "auth.shared_key", username, "wrong shared key")
            principal = Session("shared-key", "shared_key", source, address, connected_at=self.clock())
        with self.store.write():
            self.store.append_audit(self.clock(), principal.username, audit_source(source, address),
                                    f"auth.{principal.method}", principal.username, "ok", f"auth_mode={self.auth_mode}")
        self.bind_default_kg(principal)
        return principal

    def _authenticate_token(self, token: str, *, source: str, address: str) -> Session:
        self._refuse_if_locked(address, source, "auth.token", "")
        claims, reason = self._decode_token(token)
        session = None
        if claims is not None and not reason:
            session, reason = self._token_session(claims, source, address)
        if claims is None or session is None or reason:
            self.hasher.verify(None, token)
            self._auth_failed(address, source, "auth.token", (claims or {}).get("sub", ""), reason or "")
        with self.store.write():
            self.store.append_audit(self.clock(), session.username, audit_source(source, address), "auth.token",
                                    session.username, "ok", f"jti={claims['jti']}")
        self.bind_default_kg(session)
        return session

    def _token_session(self, claims: dict[str, Any], source: str, address: str) -> tuple[Session | None, str | None]:
        """The session a well-signed, unexpired token opens, from its stored record: the token
        stands for what was recorded when it was issued, and its claims must agree with that."""
        record = self.store.consistent(lambda: self.store.token(claims["jti"]))
        if record is None:
            return None, "REVOKED_TOKEN"
        if record["username"] != claims["sub"] or record["expires_at"] != claims["exp"]:
            return None, "INVALID_TOKEN: does not match its record"
        session = Session(record["username"], "token", source, address, key_id=record["key_id"],
                          password_version=record["password_version"], token_claims=claims,
                          connected_at=self.clock(), user_id=record["user_id"])
        return session, self._token_problem(session)

    def _token_problem(self, session: Session) -> str | None:
        """Why a well-signed, unexpired token may not log in now (its issuer's state), or None."""
        with self.store.read():
            try:
                rights_of(self.store, session, self.clock())
            except SessionEnded as ended:
                return "REVOKED_TOKEN" if ended.reason == "token revoked" else f"INVALID_TOKEN: {ended.reason}"
            if session.key_id is not None:
                key = self.store.key_by_id(session.key_id)
                assert key is not None       # rights_of() just found it
                session.key_label = key["label"]
                if not address_allowed(key, session.address):
                    return "INVALID_TOKEN: address not allowed for the issuing key"
        return None

    def _decode_token(self, token: str) -> tuple[dict[str, Any] | None, str | None]:
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

    def _refuse_if_locked(self, address: str, source: str, action: str, target: str) -> None:
        """Refuse at once from a locked address. Counted, not audited one by one: the count is
        audited when the lock ends: by the next attempt from anywhere, or the server's watcher."""
        self.flush_refusals()
        if not address:
            return
        key = lockout_key(address)
        left = self.lockout.remaining(key)
        if left:
            self.refusals.count("address", key, self.clock() + left, audit_source(source, key), action, "")
            raise LockedOut(f"Too many failed attempts. Try again in {left}s")

    def _refuse_if_account_locked(self, username: str, address: str, source: str) -> None:
        """A name past its failures is refused at once, whether or not it exists (the same
        path and answer for both). Server logins only: a local shell holds the store anyway."""
        if not address:
            return
        left = self.account_lockout.remaining(ACCOUNT_KEY + username)
        if left:
            self.refusals.count("account", username, self.clock() + left, audit_source(source, lockout_key(address)),
                                "auth.login", username)
            raise LockedOut(f"Too many failed attempts. Try again in {left}s")

    def flush_refusals(self, *, everything: bool = False) -> None:
        """Audit the counted refusals of lock windows that have ended (all: at shutdown)."""
        if not self.refusals:
            return
        summaries = self.refusals.due(everything=everything)
        if not summaries:
            return
        with self.store.write():
            for s in summaries:
                self.store.append_audit(self.clock(), s.target or "-", s.source, s.action, s.target, "locked",
                                        s.detail())

    def _auth_failed(self, address: str, source: str, action: str, target: str, reason: str, *,
                     account: str | None = None) -> NoReturn:
        key = lockout_key(address) if address else ""
        locked = self.lockout.record_failure(key) if key else False
        if key and account is not None and self.account_lockout.record_failure(ACCOUNT_KEY + account):
            reason += "; user name locked"
        with self.store.write():
            self.store.append_audit(self.clock(), target or "-", audit_source(source, address), action, target,
                                    "failed", reason + ("; address locked" if locked else ""))
        raise AuthError(INVALID_CREDENTIALS)
