"""The generated documentation is current, and the README stays inside the repository."""

from __future__ import annotations

import re

from conftest import ROOT

from backend.config import PROFILE_SCHEMA, SCHEMA
from backend.language.registry import COMMANDS
from tools import gen_docs
from tools.reference import CONFIG_MEANINGS


def test_generated_docs_are_current():
    stale = [str(p.relative_to(ROOT)) for p in gen_docs.stale()]
    assert not stale, f"{stale} stale: run python -m tools.gen_docs"


def test_commands_md_has_every_command_with_usage_and_who():
    text = (ROOT / "docs" / "commands.md").read_text()
    for cmd in COMMANDS:
        assert f"### `{cmd.name}`" in text and cmd.usage in text
    assert "| `grace=<d>` |" in text and "| 24h |" in text


def test_every_config_key_has_a_meaning():
    assert set(SCHEMA) | {f"profiles.{k}" for k in PROFILE_SCHEMA} <= set(CONFIG_MEANINGS)
    text = (ROOT / "docs" / "configuration.md").read_text()
    assert all(f"| `{key}` |" in text for key in SCHEMA)


def test_man_page_comes_from_the_parser():
    page = (ROOT / "docs" / "inputlayer.1").read_text()
    assert page.startswith(".TH INPUTLAYER") and r"\-\-print\-completion" in page and r"\-\-echo" in page


def test_readme_points_only_inside_the_repository():
    readme = (ROOT / "README.md").read_text()
    assert "../" not in readme and "shared/spec" not in readme
    for target in re.findall(r"\]\(([^)#]+)\)", readme):
        if not target.startswith(("http://", "https://")):
            assert (ROOT / target).exists(), target


def test_run_artefacts_of_the_first_command_are_ignored():
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    assert "/d/" in ignored
