"""Shared fixtures: a fresh plugin registry and a private cache directory for every test."""

from __future__ import annotations

import pytest

from unirt import plugins


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory):
    """Each test gets a fresh Registry (a fresh PluginManager, as pytest does) and its own cache."""
    monkeypatch.setenv("UNIRT_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.delenv("UNIRT_DISABLE_PLUGINS", raising=False)
    previous = plugins.set_registry(None)
    yield
    plugins.set_registry(previous)
