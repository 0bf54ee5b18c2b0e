"""The engine package: authentication, rights and authorization, and the command handlers."""

from .clock import Clock, system_clock
from .engine import Engine, RateLimited, UnrecordedDenial
from .limits import Lockout, RateLimiter
from .policy import Rights, Session, SessionDirectory

__all__ = ["Clock", "Engine", "Lockout", "RateLimited", "RateLimiter", "Rights", "Session", "SessionDirectory",
           "UnrecordedDenial", "system_clock"]
