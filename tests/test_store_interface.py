"""SQLiteStore and PostgresStore implement the Store interface: checked statically by mypy, and
here member by member with matching signatures, so a change to one side without the other fails
a test."""

import inspect
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from backend.store import SQLiteStore, Store
from backend.store.postgres.store import PostgresStore

ROOT = Path(__file__).resolve().parent.parent


def protocol_members() -> set[str]:
    return {name for name in vars(Store) if not name.startswith("_")}


@pytest.mark.parametrize("implementation", [SQLiteStore, PostgresStore])
def test_every_store_member_exists_on_each_store_with_its_signature(implementation):
    assert protocol_members() >= {"read", "write", "append_audit", "export_rows", "secret"}
    for name in protocol_members():
        wanted = inspect.getattr_static(Store, name)
        present = inspect.getattr_static(implementation, name, None)
        if isinstance(wanted, property):
            continue            # an attribute or a property: the static check below compares them
        assert present is not None, f"{implementation.__name__} lacks Store.{name}"
        assert parameters(present) == parameters(wanted), name


def parameters(method) -> list[tuple]:
    """Names, kinds, defaults and annotations; a return type may be narrower (mypy checks it)."""
    return [(p.name, p.kind, p.default, p.annotation) for p in inspect.signature(method).parameters.values()]


def test_secret_attributes_are_there_on_an_open_store(store_target):
    store = store_target.open()
    for name in protocol_members():
        if isinstance(inspect.getattr_static(Store, name), property):
            assert hasattr(store, name), f"{type(store).__name__} lacks Store.{name}"


def test_mypy_accepts_each_store_as_a_store(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(textwrap.dedent("""
        from backend.store import SQLiteStore, Store
        from backend.store.postgres.store import PostgresStore

        def use(store: Store) -> None: ...

        use(SQLiteStore("somewhere"))
        use(PostgresStore("postgresql://somewhere"))
    """))
    mypy = Path(sys.executable).parent / "mypy"
    run = subprocess.run([str(mypy), "--follow-imports=silent", "--no-incremental", str(probe)],
                         cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
