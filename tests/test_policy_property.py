"""Round trip, for random stores A and B (hypothesis): applying B's export to A with --prune
makes A export exactly as B does, and a second apply finds nothing to change."""

from __future__ import annotations

import tempfile
from pathlib import Path

import tomlkit
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend.policy import ApiKey, State, parse_policy, render_policy
from conftest import ADMIN_PASSWORD
from repl.__main__ import main
from repl.environment import fake_environment

ROLES = ("viewer", "editor", "admin")
LEVELS = ("viewer", "editor", "owner")
USERS = ("u0", "u1", "u.2")
KGS = ("default", "k0", "k1", "k-2")
KEY_OWNERS = {"key0": "admin", "key1": "u0", "key.2": "u.2", "key3": "admin"}    # a label keeps its owner
EXPIRIES = ("never", "2031-01-01T00:00:00Z", "2032-06-30T12:34:56Z")
IPS = ((), ("10.0.0.0/8",), ("192.168.1.0/24", "10.0.0.0/8"))
RATES = ("", "10/s", "100/m")
PASSWORD = "a-first-password"


@st.composite
def states(draw) -> State:
    users = {"admin": "admin"}
    users.update({u: draw(st.sampled_from(ROLES)) for u in USERS if draw(st.booleans())})
    kgs = draw(st.lists(st.sampled_from(KGS), min_size=1, max_size=len(KGS), unique=True))
    acl = {kg: {u: draw(st.sampled_from(LEVELS)) for u in sorted(users) if draw(st.booleans())} for kg in kgs}
    keys = {}
    for label, owner in KEY_OWNERS.items():
        if owner in users and draw(st.booleans()):
            role = draw(st.sampled_from(ROLES[:ROLES.index(users[owner]) + 1]))
            scope = draw(st.none() | st.lists(st.sampled_from(sorted(kgs)), min_size=1, unique=True))
            keys[label] = ApiKey(owner, role, None if scope is None else tuple(sorted(scope)),
                                 draw(st.sampled_from(EXPIRIES)), draw(st.sampled_from(IPS)),
                                 draw(st.sampled_from(RATES)))
    return State(users, acl, keys)


def shell(config: Path, data_dir: Path, *args: str) -> tuple[int, str, str]:
    env = fake_environment(env={"INPUTLAYER_CONFIG": str(config), "INPUTLAYER_ADMIN_PASSWORD": ADMIN_PASSWORD,
                                "PW": PASSWORD})
    status = main(["--data-dir", str(data_dir), *args], env)
    return status, env.stdout.getvalue(), env.stderr.getvalue()


def build(config: Path, data_dir: Path, state: State) -> None:
    """Make `state` with plain dot-commands (not with apply, which is under test)."""
    commands = [f".user create {u} {PASSWORD} {role}" for u, role in state.users.items() if u != "admin"]
    commands += [f".kg create {kg}" for kg in state.kgs if kg != "default"]
    if "default" not in state.kgs:
        commands += [f".kg use {min(state.kgs)}", ".kg drop default"]
    commands += [f".kg acl grant {kg} {u} {level}" for kg, acl in state.kgs.items() for u, level in acl.items()]
    for label, key in state.keys.items():
        command = f".apikey create {label} role={key.role} user={key.owner} expires={key.expires}"
        command += "".join(f" {name}={value}" for name, value in
                           (("kg", ",".join(key.kgs or ())), ("ips", ",".join(key.ips)), ("rate", key.rate)) if value)
        commands.append(command)
    status, _, err = shell(config, data_dir, *[arg for c in commands for arg in ("-c", c)])
    assert status == 0, err


def with_password_env(text: str) -> str:
    """The export, with the variable a user missing from the other store is created from."""
    doc = tomlkit.parse(text)
    for user in doc["users"].values():
        user["password_env"] = "PW"
    return tomlkit.dumps(doc)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(a=states(), b=states())
def test_apply_of_an_export_makes_the_stores_export_alike(config_file: Path, a: State, b: State):
    with tempfile.TemporaryDirectory() as tmp:
        store_a, store_b, policy = Path(tmp, "a"), Path(tmp, "b"), Path(tmp, "b.toml")
        build(config_file, store_a, a)
        build(config_file, store_b, b)
        status, exported, _ = shell(config_file, store_b, "export")
        assert status == 0 and parse_policy(exported, "b").state == b
        policy.write_text(with_password_env(exported))
        status, out, err = shell(config_file, store_a, "apply", str(policy), "--prune", "--yes")
        assert status == 0, out + err
        assert shell(config_file, store_a, "export")[1] == exported
        assert shell(config_file, store_a, "apply", str(policy), "--prune", "--yes")[1:] == ("No changes.\n", "")


NAMES = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}", fullmatch=True)
ANY_IPS = st.lists(st.ip_addresses(v=4).map(lambda a: f"{a}/32"), max_size=3, unique=True).map(tuple)


@st.composite
def any_states(draw) -> State:
    """Any names the registry allows (dots, dashes, digits first), for the pure round trip."""
    users = draw(st.dictionaries(NAMES, st.sampled_from(ROLES), max_size=6))
    kgs = draw(st.dictionaries(NAMES.filter(lambda n: not n.startswith("_")),
                               st.dictionaries(st.sampled_from(sorted(users) or ["x"]), st.sampled_from(LEVELS)),
                               max_size=5))
    keys = draw(st.dictionaries(NAMES, st.builds(
        ApiKey, NAMES, st.sampled_from(ROLES),
        st.none() | st.lists(NAMES, min_size=1, unique=True).map(lambda kg: tuple(sorted(kg))),
        st.sampled_from(EXPIRIES), ANY_IPS, st.sampled_from(RATES)), max_size=4))
    return State(users, kgs, keys)


@settings(max_examples=300, deadline=None)
@given(state=any_states())
def test_a_rendered_state_reads_back_the_same_and_renders_byte_for_byte(state: State):
    text = render_policy(state)
    assert parse_policy(text, "p").state == state
    assert render_policy(parse_policy(text, "p").state) == text
