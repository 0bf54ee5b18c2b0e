"""The official Python SDK (`pip install inputlayer-client-dev`, `from inputlayer import InputLayer`)
works end to end against this server for everything administrative.

Known client bug, not ours: SDK 0.1.0 starts a background receive loop after connect() that races
its own execute() for incoming messages on websockets 14+ (it then reports "Not connected"). The
tests cancel `il._conn._recv_task` right after connecting, as users of that version must.
"""

from __future__ import annotations

import asyncio

import pytest

inputlayer = pytest.importorskip("inputlayer")
from inputlayer import InputLayer  # noqa: E402
from inputlayer.exceptions import AuthenticationError  # noqa: E402

from serverkit import ADMIN_PASSWORD, running_server  # noqa: E402


@pytest.fixture
def server(tmp_path, cheap_config):
    with running_server(tmp_path / "data", cheap_config) as running:
        yield running


async def connected(il: InputLayer) -> InputLayer:
    await il.connect()
    task = il._conn._recv_task          # SDK 0.1.0 bug workaround (see the module docstring)
    if task is not None:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
    return il


async def refused(il: InputLayer) -> None:
    with pytest.raises(AuthenticationError, match="Invalid credentials"):
        await il.connect()
    await il._conn._ws.close()          # the SDK leaves the socket open after a refusal


def test_sdk_administration_end_to_end(server):
    async def scenario():
        il = await connected(InputLayer(server.url, username="admin", password=ADMIN_PASSWORD))
        try:
            assert il.role == "admin" and il.session_id
            await il.create_user("alice", "alice-pass-1", "editor")
            await il.create_user("bob", "bob-pass-12")
            users = {u.username: u.role for u in await il.list_users()}
            assert users == {"admin": "admin", "alice": "editor", "bob": "viewer"}
            await il.set_role("bob", "editor")
            assert {u.username: u.role for u in await il.list_users()}["bob"] == "editor"
            await il.set_password("alice", "alice-pass-2")

            key = await il.create_api_key("etl")
            assert key.startswith("il_")
            keys = await il.list_api_keys()
            assert [k.label for k in keys] == ["etl"] and keys[0].created_at

            await il._conn.execute(".kg create sales")
            await il._conn.execute(".kg use default")
            assert sorted(await il.list_knowledge_graphs()) == ["default", "sales"]
            sales = il.knowledge_graph("sales")
            await sales.grant_access("alice", "owner")
            await sales.grant_access("bob", "viewer")
            assert {(e.username, e.role) for e in await sales.list_acl()} == {("alice", "owner"), ("bob", "viewer")}
            await sales.revoke_access("bob")
            assert [(e.username, e.role) for e in await sales.list_acl()] == [("alice", "owner")]

            # The new key works, and its owner's changed password too.
            keyed = await connected(InputLayer(server.url, api_key=key))
            assert keyed.role == "admin"
            assert "sales" in await keyed.list_knowledge_graphs()
            await keyed.close()
            alice = await connected(InputLayer(server.url, username="alice", password="alice-pass-2"))
            assert await alice.list_knowledge_graphs() == ["sales"]
            await alice.close()

            await il.revoke_api_key("etl")
            assert (await il._conn.execute(".apikey list")).rows[0][-1] == "revoked"
            await refused(InputLayer(server.url, api_key=key))

            await il.drop_knowledge_graph("sales")
            assert await il.list_knowledge_graphs() == ["default"]
            await il.drop_user("bob")
            assert sorted(u.username for u in await il.list_users()) == ["admin", "alice"]
            await refused(InputLayer(server.url, username="bob", password="bob-pass-12"))
        finally:
            await il.close()

    asyncio.run(scenario())


def test_sdk_wrong_password_and_initial_kg(server):
    async def scenario():
        await refused(InputLayer(server.url, username="admin", password="wrong-pass"))
        il = await connected(InputLayer(server.url, username="admin", password=ADMIN_PASSWORD,
                                        initial_kg="default", last_seq=0))
        assert il._conn.current_kg == "default"
        await il.close()

    asyncio.run(scenario())
