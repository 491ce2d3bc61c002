"""Routing with fake backends: the exact route, messages, warnings and fallback hooks."""

from __future__ import annotations

import logging

import numpy as np
import pytest

import unirt
from tests.fakes import FakeGpu, FakePlugin, ImportFails, RaisesOnOpen, Unavailable, Working
from unirt.errors import (
    BackendError,
    BackendNotFoundError,
    BackendUnavailableError,
    NoBackendError,
    UnirtError,
)
from unirt.plugin.registry import Registry
from unirt.runtime import router
from unirt.testing import models as M


def load(*args, **kwargs) -> unirt.Session:
    """unirt.load without verification: these fakes live in this process's registry only, so a
    verification child could not find them (verification has its own tests)."""
    kwargs.setdefault("verify", "never")
    return unirt.load(*args, **kwargs)


@pytest.fixture
def registry() -> Registry:
    reg = Registry(builtins=(), entry_points=False)
    reg.register(FakePlugin(Working, Unavailable, RaisesOnOpen, ImportFails, FakeGpu), "fakes")
    return reg


@pytest.fixture
def model_path(tmp_path):
    return M.save(M.tiny(), tmp_path / "tiny.onnx")


def test_default_order_gpu_first_then_rank(registry: Registry) -> None:
    assert router.default_order(registry) == [
        "fake-gpu", "fake-unavailable", "fake-raises", "fake-import-fails", "fake-working"]
    assert router.default_order(registry, "cpu")[0] == "fake-unavailable"
    assert router.default_order(registry, "cuda") == ["fake-gpu"]


def test_route_records_every_candidate(registry: Registry, model_path) -> None:
    sess = load(model_path, registry=registry)
    assert sess.backend == "fake-working"
    assert [(s.backend, s.outcome) for s in sess.route] == [
        ("fake-gpu", "unavailable"), ("fake-unavailable", "unavailable"),
        ("fake-raises", "failed"), ("fake-import-fails", "unavailable"),
        ("fake-working", "chosen")]
    reasons = {s.backend: s.reason for s in sess.route}
    assert reasons["fake-unavailable"] == "libfake.so not found"
    assert "engine exploded" in reasons["fake-raises"]
    assert "noise" not in reasons["fake-raises"]  # first line only
    assert "ModuleNotFoundError" in reasons["fake-import-fails"]
    assert "fake-raises" in sess.explain() and "engine exploded" in sess.explain()
    x = np.array([[-1, 2, -3, 4]], np.float32)
    np.testing.assert_allclose(sess(x), np.maximum(x, 0) * 2)


def test_prefer_falls_back_with_a_warning(registry: Registry, model_path, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="unirt"):
        sess = load(model_path, prefer="fake-raises", device="cpu", registry=registry)
    assert sess.route[0].backend == "fake-raises" and sess.route[0].outcome == "failed"
    assert sess.backend == "fake-working"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "preferred backend fake-raises" in warnings[0] and "engine exploded" in warnings[0]


def test_prefer_success_is_marked_preferred(registry: Registry, model_path) -> None:
    sess = load(model_path, prefer=["fake-working"], registry=registry)
    assert sess.route[0].backend == "fake-working"
    assert sess.route[0].outcome == "chosen" and sess.route[0].reason.startswith("preferred")
    assert all(s.outcome == "not tried" for s in sess.route[1:])


def test_fallback_false_raises(registry: Registry, model_path) -> None:
    with pytest.raises(NoBackendError, match="preferred backend fake-raises .* fallback=False"):
        load(model_path, prefer="fake-raises", fallback=False, registry=registry)


def test_backend_never_falls_back(registry: Registry, model_path) -> None:
    with pytest.raises(BackendError, match="fake-raises could not open tiny.onnx: RuntimeError: "
                                           "engine exploded$"):
        load(model_path, backend="fake-raises", registry=registry)
    with pytest.raises(BackendUnavailableError,
                       match=r"fake-unavailable is not available: libfake.so not found "
                             r"\(install: pip install fake-engine\)"):
        load(model_path, backend="fake-unavailable", registry=registry)


def test_unknown_backend_lists_registered(registry: Registry, model_path) -> None:
    for kwargs in ({"backend": "tensorrtt"}, {"prefer": "tensorrtt"}, {"exclude": ["tensorrtt"]},
                   {"options": {"tensorrtt": {}}}):
        with pytest.raises(BackendNotFoundError,
                           match="unknown backend 'tensorrtt'; registered backends: fake-working"):
            load(model_path, registry=registry, **kwargs)


def test_exclude(registry: Registry, model_path) -> None:
    with pytest.raises(NoBackendError) as info:
        load(model_path, exclude=["fake-working"], registry=registry)
    text = str(info.value)
    assert text.startswith("no backend can run tiny.onnx:")
    for name in ("fake-gpu", "fake-unavailable", "fake-raises", "fake-import-fails"):
        assert name in text
    assert text.splitlines()[-1].split()[1:3] == ["fake-working", "excluded"]


def test_bad_arguments(registry: Registry, model_path) -> None:
    with pytest.raises(UnirtError, match="either backend= .* or prefer="):
        load(model_path, backend="fake-working", prefer="fake-raises", registry=registry)
    with pytest.raises(UnirtError, match="device must be one of"):
        load(model_path, device="tpu", registry=registry)
    with pytest.raises(UnirtError, match="threads must be a positive integer"):
        load(model_path, threads=0, registry=registry)
    with pytest.raises(UnirtError, match="precision must be one of exact, fast"):
        load(model_path, backend="fake-working", precision="fp8", registry=registry)


def test_on_fallback_hook(registry: Registry, model_path) -> None:
    seen = []

    class Observer:
        @unirt.hookimpl
        def on_fallback(self, model, step, next_backend):
            seen.append((model.name, step.backend, step.outcome, next_backend))

    class Broken:
        @unirt.hookimpl
        def on_fallback(self, model, step, next_backend):
            raise RuntimeError("telemetry down")

    registry.register(Observer(), "observer")
    registry.register(Broken(), "broken")
    sess = load(model_path, device="cpu", registry=registry)  # a broken observer is harmless
    assert sess.backend == "fake-working"
    assert seen == [
        ("tiny.onnx", "fake-unavailable", "unavailable", "fake-raises"),
        ("tiny.onnx", "fake-raises", "failed", "fake-import-fails"),
        ("tiny.onnx", "fake-import-fails", "unavailable", "fake-working"),
    ]
    seen.clear()
    with pytest.raises(BackendError):
        load(model_path, backend="fake-raises", registry=registry)
    assert seen == []  # backend= never falls back, so no fallback event


def test_run_time_fallback_for_a_shape(registry: Registry, tmp_path, caplog) -> None:
    from tests.fakes import BatchOne

    registry.register(FakePlugin(BatchOne), "batch-one")
    path = M.save(M.dynamic_batch(), tmp_path / "dyn.onnx")
    events = []

    class Observer:
        @unirt.hookimpl
        def on_fallback(self, model, step, next_backend):
            events.append((step.backend, step.outcome, next_backend))

    registry.register(Observer(), "observer")
    sess = load(path, device="cpu", registry=registry)
    assert sess.backend == "fake-batch-one"
    ref = load(path, backend="onnxruntime")
    x1 = np.ones((1, 8), np.float32)
    np.testing.assert_allclose(sess(x1), ref(x1))
    events.clear()
    with caplog.at_level(logging.WARNING, logger="unirt"):
        for _ in range(3):
            x3 = np.arange(24, dtype=np.float32).reshape(3, 8)
            np.testing.assert_allclose(sess(x3), ref(x3), rtol=1e-6)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings  # warned once, not per call
    assert "fake-batch-one cannot run dyn.onnx at x=3x8" in warnings[0]
    tail = [(s.backend, s.outcome) for s in sess.route[-5:]]
    assert ("fake-batch-one", "shape fallback") in tail
    assert sess.route[-1].backend == "fake-working" and sess.route[-1].outcome == "chosen"
    assert "for shape x=3x8, in place of fake-batch-one" in sess.route[-1].reason
    assert events[0] == ("fake-batch-one", "shape fallback", "fake-unavailable")
    assert sess.backend == "fake-batch-one"  # batch 1 still runs on the chosen engine
    np.testing.assert_allclose(sess(x1), ref(x1))
    sess.close()


def test_run_time_shape_limit_with_backend_is_an_error(registry: Registry, tmp_path) -> None:
    from tests.fakes import BatchOne
    from unirt.errors import ShapeLimitError

    registry.register(FakePlugin(BatchOne), "batch-one")
    path = M.save(M.dynamic_batch(), tmp_path / "dyn.onnx")
    sess = load(path, backend="fake-batch-one", registry=registry)
    with pytest.raises(ShapeLimitError, match="batch 1 only, x has batch 2"):
        sess(np.ones((2, 8), np.float32))


def test_wrong_input_is_never_fallen_back_from(registry: Registry, tmp_path) -> None:
    from tests.fakes import BatchOne

    registry.register(FakePlugin(BatchOne), "batch-one")
    path = M.save(M.dynamic_batch(), tmp_path / "dyn.onnx")
    sess = load(path, device="cpu", registry=registry)
    with pytest.raises(unirt.InputError, match="dimension 1 must be 8"):
        sess(np.ones((2, 9), np.float32))
    assert all(s.outcome != "shape fallback" for s in sess.route)


def test_order_candidates_hook_reorders_and_vetoes(registry: Registry, model_path) -> None:
    class SitePolicy:
        @unirt.hookimpl
        def order_candidates(self, model, candidates):
            candidates.remove("fake-raises")
            candidates.insert(0, candidates.pop(candidates.index("fake-working")))

    registry.register(SitePolicy(), "policy")
    sess = load(model_path, registry=registry)
    assert sess.backend == "fake-working" and sess.route[0].backend == "fake-working"
    vetoed = next(s for s in sess.route if s.backend == "fake-raises")
    assert vetoed.outcome == "excluded" and "vetoed by a plugin" in vetoed.reason
    # backend= is the user's explicit choice: policy hooks are not consulted
    with pytest.raises(BackendError):
        load(model_path, backend="fake-raises", registry=registry)


def test_order_candidates_hook_errors_are_plugin_errors(registry: Registry, model_path) -> None:
    class Bad:
        @unirt.hookimpl
        def order_candidates(self, model, candidates):
            candidates.append("made-up")

    registry.register(Bad(), "bad")
    with pytest.raises(unirt.PluginError, match="plugin bad added unknown candidates"):
        load(model_path, registry=registry)


def test_backend_order_env(registry: Registry, model_path, monkeypatch) -> None:
    monkeypatch.setenv("UNIRT_BACKEND_ORDER", "fake-working,fake-raises")
    assert router.default_order(registry)[:2] == ["fake-working", "fake-raises"]
    assert load(model_path, registry=registry).route[0].outcome == "chosen"
    monkeypatch.setenv("UNIRT_BACKEND_ORDER", "nope")
    with pytest.raises(UnirtError, match="UNIRT_BACKEND_ORDER names unknown backend 'nope'"):
        load(model_path, registry=registry)


def test_capability_verdict_unsupported_is_skipped_with_reasons(registry: Registry,
                                                                 model_path) -> None:
    from tests.fakes import RejectsMul

    registry.register(FakePlugin(RejectsMul), "rejects-mul")
    sess = load(model_path, device="cpu", registry=registry)
    step = next(s for s in sess.route if s.backend == "fake-rejects-mul")
    assert step.outcome == "unsupported"
    assert "node 'mul' (Mul): this engine has no Mul kernel" in step.reason
    assert sess.backend == "fake-working"
    with pytest.raises(BackendError, match=r"fake-rejects-mul cannot run tiny.onnx: node 'mul' "
                                           r"\(Mul\): this engine has no Mul kernel"):
        load(model_path, backend="fake-rejects-mul", registry=registry)
    # a model without Mul is not refused
    add = M.save(M.add(), model_path.parent / "add.onnx")
    assert load(add, backend="fake-rejects-mul", registry=registry).backend == "fake-rejects-mul"
