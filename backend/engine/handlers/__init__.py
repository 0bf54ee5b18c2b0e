"""The command handlers, grouped by domain; importing this package binds every one of them."""

from . import acl, apikeys, audit, kgs, misc, sessions, tokens, users  # noqa: F401  (registers handlers)
from .base import EXTRA_CHECKS, HANDLERS, Call, Env, Handler, audit_target, with_credential

__all__ = ["EXTRA_CHECKS", "HANDLERS", "Call", "Env", "Handler", "audit_target", "with_credential"]
