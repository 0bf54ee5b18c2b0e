"""API keys, written once for both stores: a key's row is found by its label, its id or the
digest of its current or previous (rotating) secret; its graphs, when scoped, live in
api_key_kgs.
"""

from __future__ import annotations

from typing import Any

from .tables import Tables, known


class Keys(Tables):
    def _key_open(self, row: tuple[int, bytes | str]) -> dict:
        key_id, data = row
        return {"id": key_id, **self.codec.open("api_keys", str(key_id), data)}

    def _key_put(self, key: dict) -> None:
        value = {k: v for k, v in key.items() if k != "id"}
        digest, prev = key.get("digest"), key.get("prev_digest")
        self._change("api_keys",
                     "UPDATE api_keys SET digest_ref = ?, prev_digest_ref = ?, data = ? WHERE id = ?",
                     (digest and self.codec.ref("digest", digest), prev and self.codec.ref("digest", prev),
                      self.codec.seal("api_keys", str(key["id"]), value), key["id"]))

    def key_by_digest(self, digest: str) -> dict | None:
        """The key whose current or previous (rotating) secret has this digest."""
        ref = self.codec.ref("digest", digest)
        return self._memo(("digest", ref), self._load_key_by_digest_ref, ref, writer_too=False)

    def _load_key_by_digest_ref(self, ref: str) -> dict | None:
        row = self._query("SELECT id, data FROM api_keys WHERE digest_ref = ? OR prev_digest_ref = ?",
                          (ref, ref)).fetchone()
        return None if row is None else self._key_open(row)

    def key(self, label: str) -> dict | None:
        row = self._query("SELECT id, data FROM api_keys WHERE label_ref = ?",
                          (self.codec.ref("label", label),)).fetchone()
        return None if row is None else self._key_open(row)

    def key_by_id(self, key_id: int) -> dict | None:
        return self._memo(("key", key_id), self._load_key_by_id, key_id, writer_too=False)

    def _load_key_by_id(self, key_id: int) -> dict | None:
        row = self._query("SELECT id, data FROM api_keys WHERE id = ?", (key_id,)).fetchone()
        return None if row is None else self._key_open(row)

    def keys(self, owner: str | None = None) -> list[dict]:
        if owner is None:
            rows = self._query("SELECT id, data FROM api_keys")
        else:
            rows = self._query("SELECT id, data FROM api_keys WHERE owner_ref = ?", (self._user_ref(owner),))
        return sorted((self._key_open(r) for r in rows), key=lambda k: k["label"])

    def key_kgs(self, key_id: int) -> list[str]:
        return list(self._memo(("key_kgs", key_id), self._load_key_kgs, key_id, writer_too=False))

    def _load_key_kgs(self, key_id: int) -> list[str]:
        rows = self._query("SELECT k.ref, k.data FROM api_key_kgs s JOIN kgs k ON k.ref = s.kg_ref "
                           "WHERE s.key_id = ?", (key_id,))
        return sorted(self.codec.open("kgs", ref, data)["name"] for ref, data in rows)

    def add_key(self, label: str, owner: str, role: str, kgs: tuple[str, ...], digest: str,
                now: float, expires_at: float | None, *, ips: tuple[str, ...] = (),
                rate: tuple[int, int] | None = None) -> None:
        label_ref = self.codec.ref("label", label)
        # A revoked key's label may be reused: its row only remains for `.apikey list`.
        self._change("api_keys", "DELETE FROM api_keys WHERE label_ref = ?", (label_ref,))
        owner_id = known(self.user(owner), "user")["id"]
        key_id = self._insert_id("api_keys", "INSERT INTO api_keys (label_ref, owner_ref, data) VALUES (?, ?, ?)",
                                 (label_ref, self._user_ref(owner), self._plain("")))
        self._key_put({"id": key_id, "label": label, "owner": owner, "owner_id": owner_id, "role": role,
                       "scoped": bool(kgs),
                       "digest": digest, "prev_digest": None, "prev_valid_until": None, "created_at": now,
                       "expires_at": expires_at, "last_used_at": None, "revoked_at": None,
                       "ips": list(ips), "rate": list(rate) if rate else None})
        for kg in kgs:
            self._change("api_keys", "INSERT INTO api_key_kgs VALUES (?, ?)", (key_id, self._kg_ref(kg)))

    def update_key(self, key_id: int, **changes: Any) -> None:
        """Change a key's role, expires_at, ips or rate in place (its secret stays)."""
        self._key_put({**known(self.key_by_id(key_id), "API key"), **changes})

    def set_key_scope(self, key_id: int, kgs: tuple[str, ...] | None) -> None:
        """Limit a key to `kgs`, or (None) let it reach every KG."""
        self._change("api_keys", "DELETE FROM api_key_kgs WHERE key_id = ?", (key_id,))
        for kg in kgs or ():
            self._change("api_keys", "INSERT INTO api_key_kgs VALUES (?, ?)", (key_id, self._kg_ref(kg)))
        self.update_key(key_id, scoped=kgs is not None)

    def revoke_key(self, key_id: int, now: float) -> None:
        key = known(self.key_by_id(key_id), "API key")
        self._key_put({**key, "revoked_at": now, "digest": None, "prev_digest": None, "prev_valid_until": None})

    def rotate_key(self, key_id: int, new_digest: str, old_valid_until: float | None) -> None:
        key = known(self.key_by_id(key_id), "API key")
        previous = key["digest"] if old_valid_until is not None else None
        self._key_put({**key, "digest": new_digest, "prev_digest": previous, "prev_valid_until": old_valid_until})

    def touch_key(self, key_id: int, now: float) -> None:
        self._key_put({**known(self.key_by_id(key_id), "API key"), "last_used_at": now})
