"""Every hook is documented in the README and implemented by some test (the datasette rule)."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from unirt import hookspecs

ROOT = Path(__file__).resolve().parent.parent


def _hook_names() -> list[str]:
    return [name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
            if hasattr(fn, "unirt_spec")]


def test_there_are_hooks() -> None:
    assert {"register_backends", "register_commands", "on_fallback",
            "register_rewrites"} <= set(_hook_names())


@pytest.mark.parametrize("name", _hook_names())
def test_hook_is_documented(name: str) -> None:
    readme = (ROOT / "README.md").read_text()
    assert f"### `{name}(" in readme, f"README has no section for hook {name}"
    assert inspect.getdoc(getattr(hookspecs, name)), f"hookspec {name} has no docstring"


@pytest.mark.parametrize("name", _hook_names())
def test_hook_is_tested(name: str) -> None:
    sources = [p.read_text() for p in (ROOT / "tests").glob("*.py") if p.name != "test_hooks.py"]
    sources += [p.read_text() for p in (ROOT / "plugins").glob("*/*.py")]
    assert any(f"def {name}(" in s for s in sources), f"no test implements hook {name}"
