"""Auth modes (managed / shared_key / disabled), `inputlayer-server rekey`, and HTTP rate limits."""

from __future__ import annotations

import secrets
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from conftest import ADMIN_PASSWORD, CHEAP_TOML, ROOT
from serverkit import Client, ServerProcess, server_env

SHARED = "shared-" + secrets.token_hex(16)


def mode_config(tmp_path, mode: str):
    path = tmp_path / f"{mode}.toml"
    path.write_text(CHEAP_TOML + f'auth_mode = "{mode}"\n')
    return path


def test_shared_key_mode(tmp_path):
    server = ServerProcess(["--data-dir", str(tmp_path / "d")],
                           server_env(mode_config(tmp_path, "shared_key"), INPUTLAYER_SHARED_KEY=SHARED,
                                      INPUTLAYER_ADMIN_PASSWORD=ADMIN_PASSWORD))
    try:
        with Client(server.url) as ok:
            reply = ok.authenticate(SHARED)
            assert reply["type"] == "authenticated" and reply["username"] == "shared-key" and reply["role"] == "admin"
            assert ok.execute(".whoami")["rows"] == [["shared-key", "admin", "shared_key", "default"]]
            assert ok.execute(".user create sue sue-passphrase")["type"] == "result"
        with Client(server.url) as wrong:
            assert wrong.authenticate(SHARED + "x") == {"type": "auth_error", "message": "Invalid credentials"}
            # Users' own passwords do not open a shared-key server.
            assert wrong.login("admin", ADMIN_PASSWORD) == {"type": "auth_error", "message": "Invalid credentials"}
    finally:
        code, _, err = server.stop()
    assert code == 0 and SHARED not in err


def test_shared_key_mode_needs_the_key(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "backend", "--port", "0", "--data-dir", str(tmp_path / "d")],
                          env=server_env(mode_config(tmp_path, "shared_key")), cwd=ROOT,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "INPUTLAYER_SHARED_KEY" in proc.stderr


def test_disabled_mode_is_anonymous_admin_on_loopback_only(tmp_path):
    config = mode_config(tmp_path, "disabled")
    refused = subprocess.run([sys.executable, "-m", "backend", "--host", "0.0.0.0", "--port", "0",
                              "--data-dir", str(tmp_path / "d")], env=server_env(config), cwd=ROOT,
                             capture_output=True, text=True, timeout=30)
    assert refused.returncode == 2 and "loopback" in refused.stderr
    server = ServerProcess(["--data-dir", str(tmp_path / "d")], server_env(config))
    try:
        with Client(server.url) as anyone:
            reply = anyone.login("whoever", "whatever")
            assert reply["type"] == "authenticated" and reply["username"] == "anonymous"
            assert anyone.execute(".whoami")["rows"][0][:3] == ["anonymous", "admin", "anonymous"]
    finally:
        assert server.stop()[0] == 0


def test_rekey_command(tmp_path, config_file):
    from conftest import cli_env

    data = tmp_path / "d"
    env = cli_env(config_file, INPUTLAYER_ADMIN_PASSWORD=ADMIN_PASSWORD)
    subprocess.run([sys.executable, "-m", "repl", "--data-dir", str(data), "-c", ".kg create orion"],
                   env=env, cwd=ROOT, check=True, capture_output=True)
    key = secrets.token_hex(32)

    def rekey(**extra):
        return subprocess.run([sys.executable, "-m", "backend", "rekey", "--data-dir", str(data)],
                              env={**env, **extra}, cwd=ROOT, capture_output=True, text=True, timeout=60)

    nothing = rekey()
    assert nothing.returncode == 2 and "nothing to do" in nothing.stderr
    on = rekey(INPUTLAYER_NEW_ENCRYPTION_KEY=key)
    assert on.returncode == 0 and "encrypted under the new key" in on.stdout
    assert b"orion" not in (data / "inputlayer.db").read_bytes()
    wrong = rekey(INPUTLAYER_ENCRYPTION_KEY=secrets.token_hex(32))
    assert wrong.returncode == 2 and "wrong encryption key" in wrong.stderr
    off = rekey(INPUTLAYER_ENCRYPTION_KEY=key)
    assert off.returncode == 0 and "decrypted" in off.stdout
    listing = subprocess.run([sys.executable, "-m", "repl", "--data-dir", str(data), "-c", ".kg list"],
                             env=env, cwd=ROOT, capture_output=True, text=True)
    assert "orion" in listing.stdout


def test_metrics_rate_limit_headers(tmp_path, config_file):
    from conftest import cli_env

    data = tmp_path / "d"
    env = cli_env(config_file, INPUTLAYER_ADMIN_PASSWORD=ADMIN_PASSWORD)
    made = subprocess.run([sys.executable, "-m", "repl", "--data-dir", str(data), "-c",
                           ".apikey create scraper rate=2/h"], env=env, cwd=ROOT, capture_output=True, text=True)
    key = made.stdout.split("\t")[0]
    server = ServerProcess(["--data-dir", str(data)], server_env(config_file))
    try:
        url = f"http://127.0.0.1:{server.port}/metrics"
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
        with urllib.request.urlopen(request, timeout=10) as first:
            assert first.status == 200
            assert first.headers["X-RateLimit-Limit"] == "2" and first.headers["X-RateLimit-Remaining"] == "1"
        urllib.request.urlopen(request, timeout=10).close()
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 429
        headers = refused.value.headers
        assert int(headers["Retry-After"]) > 3500 and headers["X-RateLimit-Remaining"] == "0"
        assert headers["X-RateLimit-Limit"] == "2" and int(headers["X-RateLimit-Reset"]) > 3500
    finally:
        server.stop()
