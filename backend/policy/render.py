"""A state as a policy file: sorted and formatted the same way every time, so two exports of one
state are byte-identical and a diff in git shows only what changed."""

from __future__ import annotations

import tomlkit

from .model import ALL_KGS, State

HEADER = ("Who may do what on the knowledge graphs, as `inputlayer export` wrote it.",
          "Secrets never appear in this file: a user to be created takes password_env = \"VARIABLE\".")


def render_policy(state: State) -> str:
    doc = tomlkit.document()
    for line in HEADER:
        doc.add(tomlkit.comment(line))
    _section(doc, "users", {name: {"role": role} for name, role in state.users.items()})
    _section(doc, "kgs", {name: ({"acl": _inline(acl)} if acl else {}) for name, acl in state.kgs.items()})
    _section(doc, "api_keys", {label: _key(key) for label, key in state.keys.items()})
    return tomlkit.dumps(doc)


def _section(doc: tomlkit.TOMLDocument, name: str, entries: dict[str, dict]) -> None:
    if not entries:
        return
    section = tomlkit.table(is_super_table=True)
    for entry_name in sorted(entries):
        table = tomlkit.table()
        for key, value in entries[entry_name].items():
            table.add(key, value)
        section.add(entry_name, table)
    doc.add(name, section)


def _inline(mapping: dict[str, str]) -> tomlkit.items.InlineTable:
    table = tomlkit.inline_table()
    for key in sorted(mapping):
        table.append(key, mapping[key])
    return table


def _key(key) -> dict:
    fields = {"owner": key.owner, "role": key.role,
              "kgs": [ALL_KGS] if key.kgs is None else sorted(key.kgs), "expires": key.expires}
    if key.ips:
        fields["ips"] = list(key.ips)
    if key.rate:
        fields["rate"] = key.rate
    return fields
