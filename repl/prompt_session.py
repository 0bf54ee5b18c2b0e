"""The prompt-toolkit session the interactive shell reads lines with: history, completion,
colours, the secret mask, the toolbar and the key bindings, put together in one place."""

from __future__ import annotations

from collections.abc import Callable

from prompt_toolkit import PromptSession
from prompt_toolkit.auto_suggest import AutoSuggestFromHistory
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.keys import Keys
from prompt_toolkit.lexers import PygmentsLexer
from prompt_toolkit.output import ColorDepth

from backend.config import Config
from backend.language.parser import secret_spans

from .completer import CommandCompleter, LiveNames
from .environment import Environment
from .highlight import STYLE, CommandLexer, SecretMask
from .history import PrivateHistory, history_path


def paste_bindings() -> KeyBindings:
    """A pasted block (bracketed paste) that ends with a newline runs at once, each line in
    order (as psql does); without a final newline it waits for Enter like a typed line."""
    bindings = KeyBindings()

    @bindings.add(Keys.BracketedPaste)
    def _paste(event: KeyPressEvent) -> None:
        data = event.data.replace("\r\n", "\n").replace("\r", "\n")
        buffer = event.current_buffer
        buffer.insert_text(data.rstrip("\n") if data.endswith("\n") else data)
        if data.endswith("\n"):
            buffer.validate_and_handle()

    return bindings


class SafeAutoSuggest(AutoSuggestFromHistory):
    """History suggestions, except one that would show a secret in grey after the cursor."""

    def get_suggestion(self, buffer, document):
        suggestion = super().get_suggestion(buffer, document)
        if suggestion and any(end > len(document.text) for _, end in secret_spans(document.text + suggestion.text)):
            return None
        return suggestion


def prompt_session(live: LiveNames, env: Environment, config: Config, *, local: bool,
                   toolbar: Callable[[], str], input=None, output=None) -> PromptSession[str]:
    """The shell's prompt: `local` completes for the in-process engine (no server-only commands)."""
    colour = "NO_COLOR" not in env.env
    return PromptSession(
        history=PrivateHistory(history_path(config, env.env)),
        completer=CommandCompleter(live, local=local),
        complete_while_typing=False,
        auto_suggest=SafeAutoSuggest(),
        enable_history_search=False,   # Up recalls; Ctrl-R searches
        lexer=PygmentsLexer(CommandLexer) if colour else None,
        input_processors=[SecretMask()],
        style=STYLE,
        include_default_pygments_style=False,
        color_depth=None if colour else ColorDepth.DEPTH_1_BIT,
        bottom_toolbar=toolbar,
        key_bindings=paste_bindings(),
        input=input, output=output)
