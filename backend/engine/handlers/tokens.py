"""Session tokens (JWTs): issue and revoke."""

from __future__ import annotations

import secrets

from ...display import iso
from ...errors import CommandError
from ...result import Result
from .base import Call, Env, handles

DEFAULT_TOKEN_TTL = 15 * 60
MAX_TOKEN_TTL = 24 * 3600


@handles("token issue")
def token_issue(env: Env, call: Call) -> Result:
    session, rights = call.session, call.rights
    import jwt

    ttl = call.options.get("ttl", DEFAULT_TOKEN_TTL)
    if not ttl or ttl > MAX_TOKEN_TTL:
        raise CommandError("Invalid ttl: a token lives from 1s to 24h")
    now = env.clock()
    expires_at = int(now + ttl)
    if rights.expires_at is not None:           # never outlives the key or token it came from
        expires_at = min(expires_at, int(rights.expires_at))
    jti = secrets.token_urlsafe(16)
    kgs = sorted(rights.scope) if rights.scope is not None else None
    claims = {"sub": session.username, "role": rights.role, "iat": int(now), "exp": expires_at, "jti": jti,
              "kgs": kgs}
    token = jwt.encode(claims, env.store.token_secret, algorithm="HS256")
    env.store.forget_expired_tokens(now)
    # The stored record is what the token stands for (its claims must agree with it), bound to
    # the principal's id and to the key it came through, which ends it when revoked or rotated.
    env.store.add_token({"jti": jti, "user_id": session.user_id, "username": session.username,
                         "role": rights.role, "kgs": kgs, "key_id": session.key_id,
                         "password_version": session.password_version if session.key_id is None else None,
                         "issued_at": now, "expires_at": expires_at})
    env.audit(call, f"jti={jti}; expires={iso(expires_at)}", target=session.username)
    return Result(["token", "jti", "expires_at"], [[token, jti, iso(expires_at)]])


@handles("token revoke")
def token_revoke(env: Env, call: Call) -> Result:
    jti = call.args["jti"]
    record = env.store.token(jti)
    assert record is not None            # the token_issuer rule found it
    if record["revoked_at"] is not None:
        raise CommandError(f"Token '{jti}' is already revoked")
    env.store.revoke_token(jti, env.clock())
    env.audit(call)
    return Result.message(f"Token '{jti}' revoked.")
