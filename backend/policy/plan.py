"""What it takes to bring a store's state to a policy: the changes, as plan lines and as the
dot-commands that make them, in an order every command can run in."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from backend.language.kinds import ROLES
from backend.language.lexer import quote_word

from .model import ALL_KGS, NEVER, ApiKey, State
from .parse import Policy
from .positions import line_of

ROLE_RANK = {role: len(ROLES) - i for i, role in enumerate(ROLES)}
SIGN_WORDS = {"+": "add", "~": "change", "-": "remove"}


@dataclass(frozen=True)
class Change:
    sign: str                       # "+" add, "~" change, "-" remove
    text: str                       # the plan line after the sign
    commands: tuple[str, ...]       # the dot-commands that make it; may hold a password: never shown

    @property
    def line(self) -> str:
        return f"{self.sign} {self.text}"


@dataclass
class Plan:
    changes: list[Change] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)      # in the store, not in the file, left alone

    def summary(self) -> str:
        if not self.changes:
            return "No changes."
        counts = {sign: sum(c.sign == sign for c in self.changes) for sign in SIGN_WORDS}
        return "Plan: " + ", ".join(f"{counts[s]} to {w}" for s, w in SIGN_WORDS.items()) + "."

    def report(self) -> str:
        """The text `plan` prints: one line a change, the summary, the note of what is kept."""
        lines = [c.line for c in self.changes] + [self.summary()]
        if self.kept:
            lines.append("Not in the file, kept: " + ", ".join(self.kept))
        return "\n".join(lines) + "\n"

    def program(self) -> list[tuple[str, Change]]:
        return [(command, change) for change in self.changes for command in change.commands]


class _Planner:
    def __init__(self, policy: Policy, current: State, prune: bool, caller: str,
                 env: Mapping[str, str], now_text: str):
        self.policy, self.want, self.have = policy, policy.state, current
        self.prune, self.caller, self.env, self.now_text = prune, caller, env, now_text
        self.errors: list[tuple[int, str]] = []
        self.plan = Plan()
        # Who is left when the apply is done: the file's users, and the store's that stay.
        kept_users = set(current.users) - set(self.want.users)
        if prune:
            kept_users &= {caller}
        self.final_users = {**{u: current.users[u] for u in kept_users}, **self.want.users}
        self.final_kgs = set(self.want.kgs) | (set() if prune else set(current.kgs))

    def error(self, path: tuple[str, ...], message: str) -> None:
        self.errors.append((line_of(self.policy.lines, path), message))

    def add(self, sign: str, text: str, *commands: str) -> None:
        self.plan.changes.append(Change(sign, text, commands))

    def known_user(self, path: tuple[str, ...], user: str) -> bool:
        """Whether `user` is there when the apply is done; else says why not (unless the file
        declares it wrongly, which is already reported)."""
        if user in self.final_users:
            return True
        if user in self.policy.declared.get("users", ()):
            return False
        if user in self.have.users:
            self.error(path, f"user '{user}' is not in the file, and --prune drops it")
        else:
            self.error(path, f"user '{user}' is neither in the file nor in the store")
        return False


def make_plan(policy: Policy, current: State, *, prune: bool, caller: str, current_kg: str | None,
              env: Mapping[str, str], now_text: str) -> Plan:
    """The plan that brings `current` to `policy`; PolicyError when the file cannot be applied
    to this store (each problem naming its line). `now_text` is the time as ISO 8601 UTC."""
    p = _Planner(policy, current, prune, caller, env, now_text)
    caller_role = _users(p)
    _kgs(p)
    _grants(p)
    _keys(p)
    if not policy.problems:       # a user the file got wrong would count as dropped
        _admins_left(p)
    if prune:
        _prune(p, current_kg)
    else:
        _note_kept(p)
    if caller_role is not None:
        p.plan.changes.append(caller_role)      # last: the caller may lose the rights the rest needs
    if p.errors or policy.problems:
        raise policy.failure(p.errors)
    return p.plan


def _users(p: _Planner) -> Change | None:
    """Users to create, then roles to change (the caller's own change returned, to run last)."""
    caller_change = None
    for name, role in sorted(p.want.users.items()):
        if name not in p.have.users:
            password = _password(p, name)
            if password is not None:
                p.add("+", f"user {name} ({role})", f".user create {name} {quote_word(password)} {role}")
    for name, role in sorted(p.want.users.items()):
        old = p.have.users.get(name)
        if old is not None and old != role:
            change = Change("~", f"user {name}: role {old} -> {role}", (f".user role {name} {role}",))
            if name == p.caller:
                caller_change = change
            else:
                p.plan.changes.append(change)
    return caller_change


def _password(p: _Planner, name: str) -> str | None:
    variable = p.policy.password_env.get(name)
    if variable is None:
        p.error(("users", name), f"user '{name}' does not exist yet: give it password_env to create it")
        return None
    password = p.env.get(variable)
    if not password:
        p.error(("users", name, "password_env"), f"{variable} is not set: it holds the password of new user '{name}'")
        return None
    if not password.isprintable():
        p.error(("users", name, "password_env"), f"{variable} holds a control character or line break")
        return None
    return password


def _kgs(p: _Planner) -> None:
    for name in sorted(set(p.want.kgs) - set(p.have.kgs)):
        p.add("+", f"kg {name}", f".kg create {name}")


def _grants(p: _Planner) -> None:
    """New entries, then changed ones."""
    changed = []
    for kg, acl in sorted(p.want.kgs.items()):
        have = p.have.kgs.get(kg, {})
        for user, level in acl.items():
            if not p.known_user(("kgs", kg, "acl", user), user):
                continue
            old = have.get(user)
            command = f".kg acl grant {kg} {user} {level}"
            if old is None:
                p.add("+", f"grant {kg} {user} {level}", command)
            elif old != level:
                changed.append(Change("~", f"grant {kg} {user}: {old} -> {level}", (command,)))
    p.plan.changes += changed


def _keys(p: _Planner) -> None:
    for label, key in sorted(p.want.keys.items()):
        path = ("api_keys", label)
        if not p.known_user(path + ("owner",), key.owner):
            continue
        for kg in key.kgs or ():
            if kg not in p.final_kgs and kg not in p.policy.declared.get("kgs", ()):
                p.error(path + ("kgs",), f"knowledge graph '{kg}' is "
                        + ("not in the file" if p.prune and kg in p.have.kgs else "neither in the file nor in the store"))
        old = p.have.keys.get(label)
        if old is not None and old.owner != key.owner:
            p.error(path + ("owner",), f"api_key '{label}' belongs to '{old.owner}': an owner is not changed "
                                       "in place; revoke the key, or give the new one another label")
            continue
        if (old is None or old.role != key.role) and ROLE_RANK[key.role] > ROLE_RANK[p.final_users[key.owner]]:
            p.error(path + ("role",), f"Role '{key.role}' exceeds the owner's role '{p.final_users[key.owner]}'")
        if old is None:
            if key.expires != NEVER and key.expires <= p.now_text:
                p.error(path + ("expires",), f"expires {key.expires} is in the past")
            p.add("+", f"api_key {label} ({describe_key(key)})", create_key_command(label, key))
        elif old != key:
            diffs, options = _key_changes(old, key)
            p.add("~", f"api_key {label}: " + ", ".join(diffs), f".apikey alter {label} " + " ".join(options))


def describe_key(key: ApiKey) -> str:
    text = f"owner {key.owner}, role {key.role}, kgs {key.shown_kgs}, expires {key.expires}"
    if key.ips:
        text += f", ips {','.join(key.ips)}"
    if key.rate:
        text += f", rate {key.rate}"
    return text


def create_key_command(label: str, key: ApiKey) -> str:
    command = f".apikey create {label} role={key.role} expires={key.expires} user={key.owner}"
    if key.kgs is not None:
        command += f" kg={','.join(key.kgs)}"
    if key.ips:
        command += f" ips={','.join(key.ips)}"
    if key.rate:
        command += f" rate={key.rate}"
    return command


def _key_changes(old: ApiKey, new: ApiKey) -> tuple[list[str], list[str]]:
    """What differs, for the plan line (`role editor -> viewer`) and for `.apikey alter`."""
    fields = (("role", "role", lambda k: k.role), ("kgs", "kg", lambda k: k.shown_kgs),
              ("expires", "expires", lambda k: k.expires),
              ("ips", "ips", lambda k: ",".join(k.ips) or ALL_KGS), ("rate", "rate", lambda k: k.rate or "none"))
    diffs, options = [], []
    for name, option, shown in fields:
        before, after = shown(old), shown(new)
        if before != after:
            diffs.append(f"{name} {before} -> {after}")
            options.append(f"{option}={after}")
    return diffs, options


def _admins_left(p: _Planner) -> None:
    if any(role == "admin" for role in p.final_users.values()):
        return
    demoted = sorted(n for n, r in p.want.users.items() if r != "admin" and p.have.users.get(n) == "admin")
    path = ("users", demoted[0], "role") if demoted else ("users",)
    p.error(path, "no admin would be left: keep at least one user with role \"admin\"")


def _prune(p: _Planner, current_kg: str | None) -> None:
    dropped_users = sorted(set(p.have.users) - set(p.final_users))
    for label in sorted(p.have.keys):
        if label not in p.want.keys:
            p.add("-", f"api_key {label} (revoked)", f".apikey revoke {label}")
    for kg, acl in sorted(p.have.kgs.items()):
        if kg not in p.want.kgs:
            continue
        for user in sorted(acl):
            if user not in p.want.kgs[kg] and user in p.final_users:
                p.add("-", f"grant {kg} {user}", f".kg acl revoke {kg} {user}")
    created = sorted(set(p.want.kgs) - set(p.have.kgs))
    current = created[-1] if created else current_kg       # `.kg create` switches to the new KG
    for kg in sorted(set(p.have.kgs) - set(p.want.kgs)):
        commands = [f".kg drop {kg}"]
        if kg == current:
            if not p.want.kgs:
                p.error(("kgs",), f"--prune would drop every knowledge graph, '{kg}' too, which this "
                                  "session uses: keep at least one")
                continue
            current = min(p.want.kgs)
            commands.insert(0, f".kg use {current}")
        p.add("-", f"kg {kg}", *commands)
    for name in dropped_users:
        p.add("-", f"user {name}", f".user drop {name}")
    if p.caller in p.have.users and p.caller not in p.want.users:
        p.plan.kept.append(f"user {p.caller} (the caller)")


def _note_kept(p: _Planner) -> None:
    kept = [f"user {u}" for u in sorted(set(p.have.users) - set(p.want.users))]
    kept += [f"kg {k}" for k in sorted(set(p.have.kgs) - set(p.want.kgs))]
    for kg, acl in sorted(p.have.kgs.items()):
        if kg in p.want.kgs:
            kept += [f"grant {kg} {u}" for u in sorted(acl) if u not in p.want.kgs[kg]]
    kept += [f"api_key {label}" for label in sorted(set(p.have.keys) - set(p.want.keys))]
    p.plan.kept = kept
