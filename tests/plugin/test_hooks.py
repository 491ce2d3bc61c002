"""Every hook is documented in the plugin guide (docs/plugins.md) and implemented by some test
(the datasette rule)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from unirt.plugin import hookspecs

ROOT = Path(__file__).resolve().parents[2]


def _hook_names() -> list[str]:
    return [name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
            if hasattr(fn, "unirt_spec")]


def test_there_are_hooks() -> None:
    assert {"register_backends", "register_commands", "on_fallback",
            "register_rewrites"} <= set(_hook_names())


@pytest.mark.parametrize("name", _hook_names())
def test_hook_is_documented(name: str) -> None:
    guide = (ROOT / "docs" / "plugins.md").read_text()
    assert f"### `{name}(" in guide, f"docs/plugins.md has no section for hook {name}"
    assert inspect.getdoc(getattr(hookspecs, name)), f"hookspec {name} has no docstring"


@pytest.mark.parametrize("name", _hook_names())
def test_hook_is_tested(name: str) -> None:
    """datasette's test_plugin_hooks_have_tests rule: a hook is tested when a test file under
    tests/ names it in a test function and implements it. The plugins' own implementations are
    production code, not tests: counting them let an untested hook pass."""
    tests = ROOT / "tests"
    files = [p.read_text() for p in tests.rglob("test_*.py") if p.name != "test_hooks.py"]
    named = re.compile(rf"def test_\w*{name}\w*\(")
    assert any(named.search(s) and f"def {name}(" in s for s in files), (
        f"no test file under tests/ has a test named for hook {name} that implements it")
