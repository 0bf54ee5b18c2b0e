"""Handlers are bound to the registry's commands by reference, one each."""

from __future__ import annotations

import pytest

from backend.engine.handlers import HANDLERS
from backend.engine.handlers.base import handles
from backend.registry import COMMANDS


def test_every_engine_command_has_exactly_one_handler():
    engine_commands = [c for c in COMMANDS if not c.shell_only]
    assert set(HANDLERS) == set(engine_commands)
    assert len(HANDLERS) == len(engine_commands)


@pytest.mark.parametrize("words", ["user frobnicate", "quit", "user create"])
def test_binding_an_unknown_shell_only_or_bound_command_fails_at_once(words):
    with pytest.raises(LookupError):
        handles(words)
