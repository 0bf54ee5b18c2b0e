"""The engine package: authentication, rights and authorization, and the command handlers."""

from .clock import Clock, system_clock
from .engine import Engine, RateLimited, UnrecordedDenial
from .limits import Lockout, LockoutCounter, RateCounter, RateLimiter
from .policy import ListedSession, Rights, Session, SessionDirectory

__all__ = ["Clock", "Engine", "ListedSession", "Lockout", "LockoutCounter", "RateCounter", "RateLimited",
           "RateLimiter", "Rights", "Session", "SessionDirectory", "UnrecordedDenial", "system_clock"]
