"""A node's view of a PostgreSQL store (store/postgres/view.py): reads answered from its cache
only while its listener keeps proving that it hears every commit, never for more than a second
after the last proof, and never mixing two generations in one read."""

from __future__ import annotations

import pytest
from conftest import ADMIN_PASSWORD, CHEAP_ARGON2, StoreTarget
from fakes import FakeClock

from backend.config import Config, with_values
from backend.errors import CommandError
from backend.engine import Engine
from backend.store.postgres.view import TRUST_SECS, NodeView


def warm(view: NodeView, generation: int) -> None:
    """The node listens and has read a snapshot of `generation`."""
    view.reset()
    view.cache_for(generation, view.epoch)


def test_the_cache_is_trusted_only_for_a_second_after_the_last_proof():
    clock = FakeClock()
    view = NodeView(clock)
    warm(view, 7)
    assert view.trusted() is None                       # listening, but nothing proved yet
    view.vouch(clock())
    assert view.trusted() is view.cache
    clock.advance(TRUST_SECS - 0.01)
    assert view.trusted() is view.cache
    clock.advance(0.02)
    assert view.trusted() is None                       # a stalled listener proves nothing more
    view.vouch(clock())
    assert view.trusted() is view.cache


def test_losing_the_listener_drops_the_cache_and_the_trust():
    clock = FakeClock()
    view = NodeView(clock)
    warm(view, 7)
    view.vouch(clock())
    view.cache.rows["row"] = "value"
    view.reset()
    assert view.trusted() is None
    assert view.cache.rows == {} and view.cache.generation is None


def test_a_snapshot_begun_before_the_listener_started_never_fills_the_shared_cache():
    view = NodeView(FakeClock())
    before = view.epoch
    view.reset()                                        # the listener (re)started meanwhile
    private = view.cache_for(9, before)
    assert private is not view.cache and view.cache.generation is None


def test_hearing_a_newer_generation_replaces_the_cache_and_an_older_one_changes_nothing():
    clock = FakeClock()
    view = NodeView(clock)
    warm(view, 7)
    cache = view.cache
    cache.rows["row"] = "value"
    view.heard(6)                                       # its own commit's notice, heard late
    assert view.cache is cache
    view.heard(8)
    assert view.cache is not cache and view.cache.generation == 8 and view.cache.rows == {}
    older = view.cache_for(7, view.epoch)               # a snapshot that began before the commit
    assert older is not view.cache and view.cache.generation == 8
    view.heard(None)                                    # a notice that does not say: nothing is known
    assert view.cache.generation is None


# --- on a real PostgreSQL ------------------------------------------------------------------------

@pytest.fixture
def node_and_other(pg_server, tmp_path):
    """Two engines on one store: `node` as a server node would use it (its view vouched for by
    the test instead of a listener), `other` another process whose commits the node never hears."""
    target = StoreTarget("postgresql", tmp_path, pg_server)
    config = with_values(Config(), CHEAP_ARGON2)
    node = Engine(target.open(), config)
    node.bootstrap(ADMIN_PASSWORD)
    other = Engine(target.open(), config)
    admin = other.login("admin", ADMIN_PASSWORD, source="local")
    for line in (".user create bob bob-passphrase viewer", ".kg create graph", ".kg acl grant graph bob viewer"):
        other.execute(admin, line)
    yield node, other, admin
    target.close()


def trusting(engine: Engine) -> NodeView:
    view: NodeView = engine.store.view          # type: ignore[attr-defined]
    view.reset()
    engine.store.consistent(lambda: engine.store.user("bob"))     # a snapshot: the generation is known
    view.vouch(view.clock())
    assert view.trusted() is not None
    return view


def test_a_trusted_cache_answers_without_the_store_and_with_what_it_heard(node_and_other):
    node, other, admin = node_and_other
    trusting(node)
    assert node.store.consistent(lambda: node.store.user("bob"))["role"] == "viewer"
    other.execute(admin, ".user role bob editor")
    # Not heard yet: the cached row answers (what the store granted less than a second ago)...
    assert node.store.consistent(lambda: node.store.user("bob"))["role"] == "viewer"
    # ...and a plain read() always takes a snapshot.
    with node.store.read():
        assert node.store.user("bob")["role"] == "editor"


def test_a_read_that_finds_the_cache_behind_part_way_runs_again_on_a_snapshot(node_and_other):
    node, other, admin = node_and_other
    trusting(node)
    store = node.store
    assert store.consistent(lambda: store.user("bob"))["role"] == "viewer"     # cached
    other.execute(admin, ".user role bob editor")                             # unheard
    other.execute(admin, ".kg acl grant graph bob editor")
    runs = []

    def role_and_grant():
        runs.append(1)
        return store.user("bob")["role"], store.acl_entry("graph", "bob")["role"]  # a hit, then a miss

    # Never the cached role with the fresh grant: the whole read runs again on one snapshot.
    assert store.consistent(role_and_grant) == ("editor", "editor")
    assert len(runs) == 2


def test_a_read_whose_first_row_is_missing_reads_the_snapshot_once(node_and_other):
    node, other, admin = node_and_other
    trusting(node)
    other.execute(admin, ".kg acl grant graph bob editor")
    runs = []

    def grant():
        runs.append(1)
        return node.store.acl_entry("graph", "bob")["role"]

    assert node.store.consistent(grant) == "editor"
    assert len(runs) == 1                       # nothing was served from the cache before the miss


def test_a_nodes_own_change_is_seen_by_its_next_read(node_and_other):
    node, _, _ = node_and_other
    trusting(node)
    admin = node.login("admin", ADMIN_PASSWORD, source="local")
    assert node.store.consistent(lambda: node.store.user("bob"))["role"] == "viewer"
    node.execute(admin, ".user role bob editor")
    assert node.store.consistent(lambda: node.store.user("bob"))["role"] == "editor"


def test_a_nested_read_that_finds_the_cache_behind_has_the_outermost_run_again(node_and_other):
    node, other, admin = node_and_other
    trusting(node)
    store = node.store
    assert store.consistent(lambda: store.user("bob"))["role"] == "viewer"
    other.execute(admin, ".user role bob editor")
    other.execute(admin, ".kg acl grant graph bob editor")
    runs = []

    def outer():
        runs.append(1)
        role = store.user("bob")["role"]                                       # a hit
        return role, store.consistent(lambda: store.acl_entry("graph", "bob")["role"])   # a miss

    assert store.consistent(outer) == ("editor", "editor")
    assert len(runs) == 2


def test_why_a_node_is_deaf_never_shows_the_store_password():
    # /health shows the reason to anyone who asks: the driver's text may quote the URL.
    import psycopg

    from backend.store.postgres.listen import ChangeFeed

    url = "postgresql://il:s3cret-db-pass@db.example:5432/inputlayer"
    feed = ChangeFeed(url, "node-a", NodeView(FakeClock()))
    reason = feed._reason(psycopg.OperationalError(f"connection to {url} failed: timeout"))
    assert "s3cret-db-pass" not in reason and reason.startswith("connection to")


def test_a_command_run_again_counts_once_against_its_keys_rate(node_and_other, monkeypatch):
    node, other, admin = node_and_other
    key = other.execute(admin, ".apikey create limited rate=2/m").rows[0][0]
    other.execute(admin, ".user create carol carol-passphrase viewer")
    session = node.authenticate(key, source="local")
    trusting(node)
    store = node.store
    assert node.execute(session, ".kg acl check graph bob").rows            # 1 of 2, and cached
    other.execute(admin, ".kg acl grant graph carol viewer")                 # unheard by the node
    reads = []
    plain = store.read
    monkeypatch.setattr(store, "read", lambda cached=False: reads.append(cached) or plain(cached))
    # The key's row is cached, carol's grant is not: the command runs again on a snapshot...
    assert node.execute(session, ".kg acl check graph carol").rows           # 2 of 2
    assert reads == [True, False]
    # ...and was counted once: the third request is the one refused.
    with pytest.raises(CommandError, match="Rate limit exceeded"):
        node.execute(session, ".kg acl check graph bob")
