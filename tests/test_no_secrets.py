"""No password or API key ever reaches a file: a full session, then a byte search of everything."""

from __future__ import annotations

from pathlib import Path

from conftest import ADMIN_PASSWORD

PASSWORDS = ["Alice-S3cret-pass", "b0b with spaces!", "carol#pass//word", "Carol-N3w-pass-123"]


def all_files(*roots: Path) -> list[Path]:
    return [p for root in roots for p in root.rglob("*") if p.is_file()]


def test_full_session_leaves_no_secret_on_disk(shell, tmp_path):
    setup = shell(f""".user create alice {PASSWORDS[0]} editor
.user create bob "{PASSWORDS[1]}" viewer
.user create carol {PASSWORDS[2]}
.kg create vault
.kg acl grant vault alice owner
.apikey create alice-key user=alice kg=vault
.apikey create ops-key role=admin
.user password carol {PASSWORDS[3]}
""")
    assert setup.returncode == 0, setup.stderr
    keys = [line.split("\t")[0] for line in setup.stdout.splitlines() if line.startswith("il_")]
    assert len(keys) == 2
    # Use every credential once, so authentication paths touch the store too.
    assert shell(".whoami\n", INPUTLAYER_API_KEY=keys[0]).returncode == 0
    rotated = shell(".apikey rotate ops-key grace=1h\n", INPUTLAYER_API_KEY=keys[1])
    keys.append(rotated.stdout.split("\t")[0])
    assert shell(".whoami\n", "--user", "carol", INPUTLAYER_PASSWORD=PASSWORDS[3]).returncode == 0
    assert shell(".whoami\n", "--user", "carol", INPUTLAYER_PASSWORD=PASSWORDS[2]).returncode == 2
    assert shell(".user drop nobody\n.audit limit=100\n", "--on-error", "continue").returncode == 1
    files = all_files(shell.data_dir)
    assert files                # the WAL is folded into the database when the last process closes
    secrets = [*PASSWORDS, ADMIN_PASSWORD, *keys]
    for path in files:
        data = path.read_bytes()
        for secret in secrets:
            assert secret.encode() not in data, f"{secret!r} found in {path}"
            assert secret.encode("utf-16-le") not in data, f"{secret!r} found in {path}"
