"""SQLiteStore implements the Store interface: checked statically by mypy, and here member by
member with matching signatures, so a change to one side without the other fails a test."""

import inspect
import subprocess
import sys
import textwrap
from pathlib import Path

from backend.store import SQLiteStore, Store

ROOT = Path(__file__).resolve().parent.parent


def protocol_members() -> set[str]:
    return {name for name in vars(Store) if not name.startswith("_")}


def test_every_store_member_exists_on_sqlite_store_with_its_signature():
    assert protocol_members() >= {"read", "write", "append_audit", "export_rows", "secret"}
    for name in protocol_members():
        wanted = inspect.getattr_static(Store, name)
        present = inspect.getattr_static(SQLiteStore, name, None)
        if isinstance(wanted, property):
            continue            # an attribute or a property: the static check below compares them
        assert present is not None, f"SQLiteStore lacks Store.{name}"
        assert parameters(present) == parameters(wanted), name


def parameters(method) -> list[tuple]:
    """Names, kinds, defaults and annotations; a return type may be narrower (mypy checks it)."""
    return [(p.name, p.kind, p.default, p.annotation) for p in inspect.signature(method).parameters.values()]


def test_secret_attributes_are_there_on_an_open_store(tmp_path):
    store = SQLiteStore(tmp_path / "d")
    try:
        for name in protocol_members():
            if isinstance(inspect.getattr_static(Store, name), property):
                assert hasattr(store, name), f"SQLiteStore lacks Store.{name}"
    finally:
        store.close()


def test_mypy_accepts_sqlite_store_as_a_store(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(textwrap.dedent("""
        from backend.store import SQLiteStore, Store

        def use(store: Store) -> None: ...

        use(SQLiteStore("somewhere"))
    """))
    mypy = Path(sys.executable).parent / "mypy"
    run = subprocess.run([str(mypy), "--follow-imports=silent", "--no-incremental", str(probe)],
                         cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
