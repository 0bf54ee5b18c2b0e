"""Errors that carry a message meant for the user, exactly as commands.md words it."""


class CommandError(Exception):
    """A command failed; the message is shown as is and nothing was changed."""

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else "error"


class PermissionDenied(CommandError):
    """Refused by authorization; every refusal is audited."""


class SessionEnded(CommandError):
    """The principal behind a session is gone (dropped, revoked, expired, killed)."""

    def __init__(self, reason: str):
        super().__init__(f"Session ended: {reason}")
        self.reason = reason


class StoreFailure(CommandError):
    """The store could not complete a command (locked, full, damaged): nothing was changed."""


class AuthError(Exception):
    """Authentication failed; the message is safe to show to the client."""

    @property
    def message(self) -> str:
        return str(self.args[0])


class LockedOut(AuthError):
    """Refused without a credential check: the address is locked out (security.md, Lockout)."""


class StoreError(Exception):
    """The store cannot be opened or written (exit status 2 at start-up)."""


class StoreUnavailable(StoreError):
    """The store cannot be reached now (a database restarting, the network): the same command
    may work later. Shown as `store unavailable: <reason>`."""


class ConfigError(Exception):
    """The configuration is invalid; the message names the key and the file."""


class TargetUnreachable(Exception):
    """The server cannot be reached, or the connection was lost (exit status 2)."""


class NotSent(TargetUnreachable):
    """The connection was found lost before a command left: it may be run after reconnecting.
    `discovered`: this very call found the loss (so no one has been told of it yet)."""

    def __init__(self, message: str, *, discovered: bool = False):
        super().__init__(message)
        self.discovered = discovered
