"""Access as code: a policy file parsed, validated, compared with a store's state, rendered.

Pure: no I/O here. The shell reads the state and applies the plan through its Backend, with the
same dot-commands on every target (repl/policy.py).
"""

from .model import ApiKey, State
from .parse import Policy, PolicyError, parse_policy, read_policy
from .plan import Change, Plan, make_plan
from .render import render_policy

__all__ = ["ApiKey", "Change", "Plan", "Policy", "PolicyError", "State", "make_plan", "parse_policy",
           "read_policy", "render_policy"]
