"""Drive `python -m repl` on a pseudo-terminal and read its screen as plain text."""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import pexpect

from conftest import ADMIN_PASSWORD, ROOT, cli_env

# CSI sequences (colours, cursor moves), other two-byte escapes, and carriage returns.
ESCAPES = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b[=>78]|\r")
KEYS = {"<Tab>": "\t", "<Enter>": "\r", "<C-c>": "\x03", "<C-d>": "\x04", "<C-r>": "\x12",
        "<Up>": "\x1b[A", "<Esc>": "\x1b"}
KEY_RE = re.compile("(" + "|".join(map(re.escape, KEYS)) + ")")


def plain(raw: str) -> str:
    return ESCAPES.sub("", raw)


def pty_env(tmp: Path, config_file: Path, **extra: str) -> dict[str, str]:
    """A shell environment confined to `tmp`: state, home, cheap argon2, no CPR round trip
    (nobody answers it on a bare pty) and `cat` as pager."""
    values = {"INPUTLAYER_ADMIN_PASSWORD": ADMIN_PASSWORD, "XDG_STATE_HOME": str(tmp / "state"),
              "HOME": str(tmp / "home"), "PROMPT_TOOLKIT_NO_CPR": "1", "TERM": "xterm", "PAGER": "cat"}
    values.update(extra)
    return cli_env(config_file, **{k: v for k, v in values.items() if v is not None})


class Terminal:
    def __init__(self, args: list[str], env: dict[str, str], *, rows: int = 40, columns: int = 160):
        self.child = pexpect.spawn(sys.executable, ["-m", "repl", *args], env=env, cwd=str(ROOT),
                                   dimensions=(rows, columns), encoding="utf-8", timeout=10)
        self.raw = ""
        self.pos = 0   # how far expect() has consumed the plain screen text

    @property
    def screen(self) -> str:
        return plain(self.raw)

    def type(self, keys: str) -> None:
        """Send keys written with <Tab>, <Enter>, <C-c>, <C-d>, <C-r>, <Up>, <Esc>."""
        self.child.send("".join(KEYS.get(part, part) for part in KEY_RE.split(keys)))

    def expect(self, text: str, timeout: float = 10) -> None:
        """Wait until `text` appears on the screen after what earlier expects consumed."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.screen.find(text, self.pos)
            if found >= 0:
                self.pos = found + len(text)
                return
            left = deadline - time.monotonic()
            try:
                if left <= 0:
                    raise pexpect.TIMEOUT("")
                self.raw += self.child.read_nonblocking(65536, timeout=left)
            except (pexpect.TIMEOUT, pexpect.EOF) as exc:
                raise AssertionError(f"{text!r} not on screen ({type(exc).__name__}); "
                                     f"screen after the last match:\n{self.screen[self.pos:][-3000:]}") from None

    def finish(self, timeout: float = 10) -> int:
        """Read to the end; the exit status."""
        try:
            while True:
                self.raw += self.child.read_nonblocking(65536, timeout=timeout)
        except pexpect.EOF:
            pass
        self.child.close()
        return self.child.exitstatus
