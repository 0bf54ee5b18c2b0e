"""The audit chain's rules that hold whatever database keeps it: which records a query selects,
and what makes a chain intact. Each store only reads its records (oldest or newest first) and
its head; both stores share these, so `.audit` and `.audit verify` agree on either."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterable

from ..errors import StoreError
from .interface import AUDIT_FIELDS, GENESIS_HASH, audit_hash, head_mac


def matching_records(newest_first: Iterable[dict], *, limit: int, actor: str | None, action: str | None,
                     since: float | None, outcome: str | None = None, hide_action: str | None = None) -> list[dict]:
    """`actor` matches the actor or the target, `action` a name or a prefix, `outcome` exactly;
    records whose action `hide_action` names (or prefixes) are left out."""
    found = []
    for rec in newest_first:
        if since is not None and rec["time"] < since:
            break
        if actor is not None and actor not in (rec["actor"], rec["target"]):
            continue
        if action is not None and not _names(action, rec["action"]):
            continue
        if hide_action is not None and _names(hide_action, rec["action"]):
            continue
        if outcome is not None and rec["outcome"] != outcome:
            continue
        found.append(rec)
        if len(found) == limit:
            break
    return found


def _names(action: str, recorded: str) -> bool:
    """Whether `action` is the recorded action or its group (`user` names `user.create`)."""
    return recorded == action or recorded.startswith(action + ".")


def verify_chain(oldest_first: Iterable[dict], head: Callable[[], dict], mac: hmac.HMAC, *,
                 head_sealed: bool) -> tuple[int, str | None]:
    """(records checked, None) or (count, what is wrong) at the first record that fails. Reading
    a record may raise StoreError: a sealed record that fails to open was altered. The head must
    carry head_mac() unless `head_sealed` is False (a writer's own head, sealed at its commit)."""
    prev_hash, expected_seq, count = GENESIS_HASH, 1, 0
    try:
        for rec in oldest_first:
            if rec["row_seq"] != expected_seq or rec["seq"] != expected_seq:
                return count, f"Audit log broken at record {expected_seq}: record missing or out of order"
            if rec["prev_hash"] != prev_hash:
                return count, f"Audit log broken at record {expected_seq}: chain does not link to the record before"
            if audit_hash(mac, prev_hash, tuple(rec[f] for f in AUDIT_FIELDS)) != rec["hash"]:
                return count, f"Audit log broken at record {expected_seq}: contents do not match its hash"
            prev_hash, expected_seq, count = rec["hash"], expected_seq + 1, count + 1
    except StoreError:
        return count, f"Audit log broken at record {expected_seq}: the sealed record was altered"
    found = head()
    if (found["seq"], found["hash"]) != (count, prev_hash):
        return count, f"Audit log broken at record {count + 1}: the latest records were removed"
    if head_sealed and not hmac.compare_digest(found.get("mac", ""), head_mac(mac, count, prev_hash)):
        return count, f"Audit log broken at record {count}: the chain's head was rewritten"
    return count, None
