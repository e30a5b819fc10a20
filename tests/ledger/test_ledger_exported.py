"""Every public name is re-exported with a sorted ``__all__`` (httpx's exported-members test)."""

from __future__ import annotations

import importlib
import types

import pytest

import quackmesh.ledger

SUBMODULES = [
    "accounts",
    "base",
    "chain",
    "export",
    "hashchain",
    "merkle",
    "sql",
    "tables",
    "vouchers",
]


def isort_key(name: str) -> tuple[int, str]:
    # The order ruff's RUF022 enforces: CONSTANTS, then Classes, then functions.
    if name.isupper():
        return (0, name)
    return (1, name) if name[:1].isupper() else (2, name)


def test_package_all_is_sorted_and_complete() -> None:
    public = {
        name
        for name, value in vars(quackmesh.ledger).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and name != "annotations"  # from __future__ import annotations
    }
    assert quackmesh.ledger.__all__ == sorted(public, key=isort_key)


@pytest.mark.parametrize("name", SUBMODULES)
def test_submodule_all_is_sorted_and_importable(name: str) -> None:
    module = importlib.import_module(f"quackmesh.ledger.{name}")
    assert module.__all__ == sorted(module.__all__, key=isort_key)
    for member in module.__all__:
        assert hasattr(module, member)


def test_ledger_does_not_import_higher_layers() -> None:
    import subprocess
    import sys

    code = (
        "import sys, quackmesh.ledger\n"
        "bad = [m for m in sys.modules if m.startswith(('quackmesh.coordinator',"
        " 'quackmesh.node', 'quackmesh.sdk', 'quackmesh.cli'))]\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
