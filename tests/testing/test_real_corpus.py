"""Real ONNX models from PyPI packages (unirt.testing.corpus) through unirt, against ONNX Runtime.

For every corpus model, ``unirt.load`` with the default order and with each available backend
preferred must open the model and give raw ONNX Runtime's outputs (within tolerance on floats,
exactly on integers) on every feed set. A preferred backend may legitimately fall back: the
test asserts the numbers, and every message names the backend chosen and the whole route.

Verdicts are cached in one directory for this module, so a backend verified while routing the
default load is not verified again when preferred; nothing leaks from the developer's cache.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import unirt
from unirt.plugin.route import render_route
from unirt.testing.corpus import ENTRIES, make_feeds

#: Exact precision: atol plus rtol relative to the largest reference magnitude of an output.
ATOL = 1e-4
RTOL = 1e-3

#: Every registered backend name; unavailable ones skip at run time, with their reason.
BACKENDS = [b.name for b in unirt.backends()]


@pytest.fixture(scope="module")
def _module_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("corpus-unirt-cache")


@pytest.fixture(autouse=True)
def _shared_cache(_module_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # Runs after conftest's per-test cache and overrides it with the module's.
    monkeypatch.setenv("UNIRT_CACHE_DIR", str(_module_cache))
    yield


@functools.cache
def _reference(path: str, name: str) -> tuple[list[dict[str, np.ndarray]], list[list[Any]]]:
    """Feed sets and raw ONNX Runtime's outputs for them: computed once per model."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # ddddocr's declared output shape is wrong; ORT warns each run
    sess = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    feed_sets = make_feeds(ENTRIES[name], path)
    return feed_sets, [sess.run(None, feeds) for feeds in feed_sets]


def _compare(name: str, want: Any, got: Any) -> str | None:
    """Why ``got`` is not ``want`` (None when it is): exact on ints, tolerant on floats."""
    if isinstance(want, list):  # a sequence output (ZipMap's list of dicts)
        if not isinstance(got, (list, tuple)) or len(got) != len(want):
            return f"{name}: expected a sequence of {len(want)}, got {type(got).__name__}"
        for i, (w, g) in enumerate(zip(want, got)):
            why = _compare(f"{name}[{i}]", w, g)
            if why:
                return why
        return None
    if isinstance(want, dict):
        if not isinstance(got, dict) or set(got) != set(want):
            return f"{name}: expected a map with keys {sorted(want)}, got {got!r}"
        for key in want:
            why = _compare(f"{name}[{key!r}]", np.asarray(want[key]), np.asarray(got[key]))
            if why:
                return why
        return None
    want, got = np.asarray(want), np.asarray(got)
    if got.shape != want.shape:
        return f"{name}: shape {got.shape}, expected {want.shape}"
    if got.dtype != want.dtype:
        return f"{name}: dtype {got.dtype}, expected {want.dtype}"
    if want.dtype.kind in "iub":
        bad = int(np.count_nonzero(got != want))
        return f"{name}: {bad} of {want.size} integer values differ" if bad else None
    if want.size == 0:
        return None
    w64, g64 = want.astype(np.float64), got.astype(np.float64)
    if not np.array_equal(np.isnan(w64), np.isnan(g64)):
        return f"{name}: NaN in {int(np.isnan(g64).sum())} values, expected in " \
               f"{int(np.isnan(w64).sum())}"
    finite = ~np.isnan(w64)
    err = float(np.max(np.abs(g64 - w64)[finite])) if finite.any() else 0.0
    limit = ATOL + RTOL * float(np.max(np.abs(w64[finite]))) if finite.any() else ATOL
    return f"{name}: max abs error {err:.3g} > {limit:.3g}" if err > limit else None


def _cases() -> list[Any]:
    return [pytest.param(name, prefer, id=f"{name}-{prefer or 'default'}")
            for name in ENTRIES for prefer in (None, *BACKENDS)]


@pytest.mark.parametrize(("name", "prefer"), _cases())
def test_corpus_model_matches_onnxruntime(name: str, prefer: str | None, corpus_models: Any,
                                          record_property: Any) -> None:
    if prefer is not None:
        status = next(b for b in unirt.backends() if b.name == prefer)
        if not status.available:
            pytest.skip(f"{prefer} unavailable: {status.reason}")
    path = corpus_models.path(name)
    feed_sets, expected = _reference(str(path), name)
    where = f"{name} (prefer={prefer or 'default'})"
    try:
        sess = unirt.load(path, prefer=prefer) if prefer else unirt.load(path)
    except unirt.UnirtError as exc:
        pytest.fail(f"{where}: load raised {type(exc).__name__}: {exc}", pytrace=False)
    with sess:
        record_property("backend", sess.backend)
        problems = []
        for index, (feeds, want) in enumerate(zip(feed_sets, expected)):
            shapes = ", ".join(f"{k}={'x'.join(map(str, v.shape)) or 'scalar'}"
                               for k, v in feeds.items())
            try:
                got = sess.run(feeds)
            except unirt.UnirtError as exc:
                problems.append(f"feed set {index} ({shapes}): run raised "
                                f"{type(exc).__name__}: {exc}")
                continue
            names = [t.name for t in sess.outputs]
            if list(got) != names:
                problems.append(f"feed set {index}: outputs {list(got)}, expected {names}")
                continue
            problems += [f"feed set {index} ({shapes}): {why}"
                         for out, w in zip(names, want)
                         if (why := _compare(out, w, got[out]))]
        route = render_route(sess.route)
        record_property("route", route)
        if prefer == "onnxruntime" and sess.backend != "onnxruntime":
            # The reference itself ran this model above: preferring it can never need a fallback.
            problems.insert(0, "preferred onnxruntime, the reference that produced the expected "
                               "outputs, yet another backend was chosen")
        assert not problems, (f"{where} on backend {sess.backend}:\n  " + "\n  ".join(problems)
                              + f"\nroute:\n{route}")
