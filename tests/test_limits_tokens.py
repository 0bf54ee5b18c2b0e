"""Per-key limits (ips=, rate=) and short-lived session tokens (.token issue / revoke)."""

from __future__ import annotations

import jwt
import pytest

from backend.engine import RateLimited
from backend.errors import AuthError, CommandError, PermissionDenied, SessionEnded


def secret_of(result):
    return result.rows[0][0]


def test_ips_limit_applies_at_authentication(engine, admin):
    key = secret_of(engine.execute(admin, ".apikey create office ips=10.20.0.0/16,2001:db8::/32"))
    assert engine.authenticate(key, source="ws", address="10.20.3.4")
    assert engine.authenticate(key, source="ws", address="2001:db8::7")
    assert engine.authenticate(key, source="ws", address="::ffff:10.20.9.9")       # IPv4-mapped IPv6
    for outside in ("10.21.0.1", "192.0.2.1", ""):                                 # "" is the local shell
        with pytest.raises(AuthError, match="^Invalid credentials$"):
            engine.authenticate(key, source="ws", address=outside)
    audit = engine.execute(admin, ".audit action=auth.api_key limit=1").rows[0]
    assert audit[6] == "failed" and "address not allowed" in audit[7]
    with pytest.raises(CommandError, match="Invalid address range 'nowhere'"):
        engine.execute(admin, ".apikey create bad ips=nowhere")


def test_the_event_loop_key_check_writes_nothing_and_leaves_every_refusal_to_authenticate(engine, admin, clock):
    key = secret_of(engine.execute(admin, ".apikey create office role=viewer ips=10.20.0.0/16"))
    token = secret_of(engine.execute(admin, ".token issue"))
    records = engine.execute(admin, ".audit verify").rows
    verifications = engine.hasher.verifications
    session = engine.check_api_key(key, source="ws", address="10.20.3.4")
    assert (session.username, session.key_label, session.login_role, session.knowledge_graph) == \
        ("admin", "office", "viewer", "default")
    for refused, address in ((key, "192.0.2.1"), (key[:-1] + ("b" if key.endswith("a") else "a"), "10.20.3.4"), ("il_nothing", "10.20.3.4"),
                             (token, "10.20.3.4")):
        assert engine.check_api_key(refused, source="ws", address=address) is None
    for _ in range(20):
        engine.lockout.record_failure("10.20.3.9")
    assert engine.check_api_key(key, source="ws", address="10.20.3.9") is None          # locked address
    assert engine.execute(admin, ".audit verify").rows == records                        # nothing written
    assert engine.hasher.verifications == verifications                                 # nor hashed
    engine.record_api_key_logins([session])
    audit = engine.execute(admin, ".audit action=auth.api_key limit=1").rows[0]
    assert (audit[3], audit[5], audit[6], audit[7]) == ("ws:10.20.3.4", "office", "ok", "method=api_key")
    engine.execute(admin, ".apikey revoke office")
    assert engine.check_api_key(key, source="ws", address="10.20.3.4") is None


def test_rate_limit_refuses_with_the_time_to_wait(engine, admin, clock):
    key = secret_of(engine.execute(admin, ".apikey create slow rate=3/m"))
    session = engine.authenticate(key, source="local")
    for _ in range(3):
        engine.execute(session, ".whoami")
    with pytest.raises(RateLimited) as exc:
        engine.execute(session, ".whoami")
    assert exc.value.message == "Rate limit exceeded: at most 3 requests per window; try again in 60s"
    clock.advance(30)
    with pytest.raises(RateLimited, match="try again in 30s"):
        engine.execute(session, ".kg list")
    clock.advance(30)
    assert engine.execute(session, ".whoami").rows[0][0] == "admin"
    assert engine.consume_rate(session) == (3, 1, 60)
    engine.execute(admin, ".whoami")          # other principals are not limited
    with pytest.raises(CommandError, match="Invalid rate"):
        engine.execute(admin, ".apikey create bad rate=0/s")


def test_token_acts_as_its_issuer_with_the_issuers_limits(engine, admin, clock):
    engine.execute(admin, ".user create tia tia-passphrase editor")
    engine.execute(admin, ".kg create red")
    engine.execute(admin, ".kg acl grant red tia editor")
    engine.execute(admin, ".kg acl grant default tia editor")
    key = secret_of(engine.execute(admin, ".apikey create tia-key role=viewer kg=red user=tia"))
    via_key = engine.authenticate(key, source="local")
    issued = engine.execute(via_key, ".token issue ttl=10m")
    assert issued.columns == ["token", "jti", "expires_at"]
    token, jti, _ = issued.rows[0]
    claims = jwt.decode(token, options={"verify_signature": False})
    assert {"sub", "role", "kgs", "iat", "exp", "jti"} <= claims.keys()
    assert claims["sub"] == "tia" and claims["role"] == "viewer" and claims["kgs"] == ["red"]
    assert claims["exp"] - claims["iat"] == 600
    via_token = engine.authenticate(token, source="local")
    assert engine.execute(via_token, ".whoami").rows == [["tia", "viewer", f"token:{jti}", ""]]
    assert engine.can(via_token, "red", "read") and not engine.can(via_token, "red", "write")
    assert not engine.can(via_token, "default", "read")
    with pytest.raises(PermissionDenied):
        engine.execute(via_token, ".user password tia tia-other-pass")
    engine.execute(admin, ".apikey revoke tia-key")          # the issuer goes: the token goes
    with pytest.raises(SessionEnded, match="API key revoked"):
        engine.execute(via_token, ".whoami")
    with pytest.raises(AuthError):
        engine.authenticate(token, source="local")


def test_token_expiry_revocation_and_refusal_reasons(engine, admin, clock):
    token, jti, _ = engine.execute(admin, ".token issue").rows[0]
    session = engine.authenticate(token, source="local")
    assert engine.execute(admin, ".token revoke " + jti).rows == [[f"Token '{jti}' revoked."]]
    with pytest.raises(SessionEnded, match="token revoked"):
        engine.execute(session, ".whoami")
    short, _, _ = engine.execute(admin, ".token issue ttl=1m").rows[0]
    clock.advance(61)
    forged = jwt.encode({"sub": "admin", "role": "admin", "iat": 1, "exp": 2 ** 40, "jti": "x"}, "a guessed secret of thirty-two bytes", algorithm="HS256")
    for bad in (token, short, forged, "eyJ.not.jwt"):
        with pytest.raises(AuthError, match="^Invalid credentials$"):
            engine.authenticate(bad, source="local")
    reasons = [r[7] for r in engine.execute(admin, ".audit action=auth.token limit=4").rows]
    assert reasons == ["INVALID_TOKEN", "INVALID_SIGNATURE", "EXPIRED_TOKEN", "REVOKED_TOKEN"]
    assert all(token not in r[7] for r in engine.execute(admin, ".audit limit=50").rows)
    with pytest.raises(CommandError, match="Invalid ttl"):
        engine.execute(admin, ".token issue ttl=2d")


def test_password_issued_token_ends_with_a_password_change(engine, admin):
    engine.execute(admin, ".user create uma uma-passphrase")
    engine.execute(admin, ".user create vic vic-passphrase")
    uma = engine.login("uma", "uma-passphrase", source="local")
    vic = engine.login("vic", "vic-passphrase", source="local")
    token, jti, _ = engine.execute(uma, ".token issue").rows[0]
    via_token = engine.authenticate(token, source="local")
    with pytest.raises(PermissionDenied, match="only admins can revoke other users' tokens"):
        engine.execute(vic, ".token revoke " + jti)
    engine.execute(admin, ".user password uma uma-new-passphrase")
    with pytest.raises(SessionEnded, match="password changed"):
        engine.execute(via_token, ".whoami")


def test_token_from_a_token_never_outlives_it(engine, admin, clock):
    token, _, _ = engine.execute(admin, ".token issue ttl=5m").rows[0]
    child_session = engine.authenticate(token, source="local")
    child = engine.execute(child_session, ".token issue ttl=1h").rows[0][0]
    assert jwt.decode(child, options={"verify_signature": False})["exp"] == \
        jwt.decode(token, options={"verify_signature": False})["exp"]
