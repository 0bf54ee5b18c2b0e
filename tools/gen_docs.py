"""Write the generated documentation: docs/commands.md from the command registry,
docs/configuration.md's key table from backend/config.py, docs/inputlayer.1 from the shell's
argparse parser.

    python -m tools.gen_docs            # rewrite the files
    python -m tools.gen_docs --check    # exit 1, naming them, when a file is stale

A test runs the check, so a command, option or key added without regenerating fails CI.
"""

from __future__ import annotations

import sys
from pathlib import Path

from backend.config import PROFILE_SCHEMA, SCHEMA, Config
from backend.language.helptext import TOPICS
from backend.language.registry import COMMANDS, Command, audit_actions

from .reference import CONFIG_MEANINGS, ERRORS, RESULTS

ROOT = Path(__file__).resolve().parent.parent
CONFIGURATION_MARK = "<!-- generated: the key table below is written by tools/gen_docs.py -->"


def commands_md() -> str:
    out = ["# Dot-command reference", "",
           "Generated from the command registry (`backend/language/registry.py`) by",
           "`python -m tools.gen_docs`; do not edit by hand. The same text, shorter, is `.help` in the shell.",
           "", "Words are separated by blanks; quote a value that holds blanks (`\"correct horse\"`).",
           "Options follow the arguments as `key=value`. Durations: `30s`, `15m`, `24h`, `90d`, `never`.",
           "Lines starting with `#` or `//` are comments.", ""]
    seen: set[Command] = set()
    for title, groups in [*TOPICS, ("Other", ())]:
        members = [c for c in COMMANDS if (c.words[0] in groups if groups else c not in seen)]
        if not members:
            continue
        seen.update(members)
        out += [f"## {title}", ""]
        for cmd in members:
            out += _command_section(cmd)
    return "\n".join(out).rstrip() + "\n"


def _command_section(cmd: Command) -> list[str]:
    out = [f"### `{cmd.name}`", "", cmd.summary + ".", "", "```", cmd.usage, "```", "",
           f"**Who may run it:** {cmd.who}." + (" Only on a server (`--url`)." if cmd.server_only else "")
           + (" In the shell only." if cmd.shell_only else "")]
    if cmd.aliases:
        out.append("**Also:** " + ", ".join(f"`.{' '.join(a)}`" for a in cmd.aliases) + ".")
    arguments = [(f"`<{p.name}>`" + (" (optional)" if p.optional else ""), p.kind.describe, p.default)
                 for p in cmd.params] + [(f"`{o.name}={o.placeholder}`", o.kind.describe, o.default)
                                         for o in cmd.options]
    if arguments:
        out += ["", "| argument | values | default |", "|---|---|---|"]
        out += [f"| {name} | {_cell(values)} | {_cell(default)} |" for name, values, default in arguments]
    if any(o.kind.name == "action" for o in cmd.options):
        out += ["", "Audit actions: " + ", ".join(f"`{a}`" for a in audit_actions()) + "."]
    result = RESULTS.get(cmd.words)
    if result:
        out += ["", f"**Result:** {result}"]
    errors = [e for prefix, texts in ERRORS.items() if cmd.words[:len(prefix)] == prefix for e in texts]
    if errors:
        out += ["", "**Errors:** " + " · ".join(f"`{e}`" for e in errors)]
    if cmd.examples:
        out += ["", "```", *cmd.examples, "```"]
    return out + [""]


def _cell(text: str) -> str:
    return text.replace("|", "\\|") if text else "—"


def configuration_table() -> str:
    rows = ["| key | default | meaning |", "|---|---|---|"]
    for key in SCHEMA:
        value = Config()
        for part in key.split("."):
            value = getattr(value, part)
        rows.append(f"| `{key}` | {_default(value)} | {_cell(CONFIG_MEANINGS.get(key, ''))} |")
    for key in PROFILE_SCHEMA:
        rows.append(f"| `profiles.<name>.{key}` | — | {_cell(CONFIG_MEANINGS.get('profiles.' + key, ''))} |")
    return "\n".join(rows) + "\n"


def _default(value: object) -> str:
    if value in ("", ()):
        return "—"
    if isinstance(value, tuple):
        return "`[" + ", ".join(f'"{v}"' for v in value) + "]`"
    return f'`"{value}"`' if isinstance(value, str) else f"`{value}`"


def configuration_md(current: str) -> str:
    """The hand-written page up to the mark, then the generated table."""
    head = current.split(CONFIGURATION_MARK)[0] if CONFIGURATION_MARK in current else current
    return head.rstrip() + "\n\n" + CONFIGURATION_MARK + "\n\n" + configuration_table()


def man_page() -> str:
    from argparse_manpage.manpage import Manpage

    from backend import __version__
    from repl.__main__ import build_parser

    page = Manpage(build_parser(80))
    page.date = ""                  # none, so the file changes only when the parser does
    page.source = f"inputlayer {__version__}"
    page.manual = "InputLayer administration"
    page.description = "administration shell for InputLayer knowledge-graph servers"
    return str(page)


def generated() -> dict[Path, str]:
    configuration = ROOT / "docs" / "configuration.md"
    current = configuration.read_text() if configuration.exists() else ""
    return {ROOT / "docs" / "commands.md": commands_md(),
            configuration: configuration_md(current),
            ROOT / "docs" / "inputlayer.1": man_page()}


def stale() -> list[Path]:
    return [path for path, text in generated().items() if not path.exists() or path.read_text() != text]


def main(argv: list[str]) -> int:
    if "--check" in argv:
        old = stale()
        for path in old:
            print(f"{path.relative_to(ROOT)} is stale: run python -m tools.gen_docs", file=sys.stderr)
        return 1 if old else 0
    for path, text in generated().items():
        path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
