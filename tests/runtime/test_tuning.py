"""tune="background": the session starts on the reference and moves, between two calls, to the
fastest engine that is right; never to a wrong one, never under a call, never leaving children."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import unirt
from tests.support import live_children
from unirt.errors import ShapeLimitError, UnirtError
from unirt.evidence import timing as fastest
from unirt.evidence.timing import Ranking
from unirt.plugin.backend import BackendSession
from unirt.plugin.route import CHOSEN, SWAPPED, RouteStep
from unirt.process import isolation
from unirt.process.child import call_plain
from unirt.runtime import tuning
from unirt.runtime.session import Session
from unirt.testing import models as M

CANDIDATES = ["onnxruntime", "fake-slow", "fake-fast", "fake-fast-wrong"]


def _start(sess: Session, candidates: list[str] = CANDIDATES, **kw: Any) -> tuning.BackgroundTuner:
    return tuning.start_background(sess, sess.model, candidates, {n: "test" for n in candidates},
                                   "exact", {}, **kw)


# -- the tuner, end to end, on fakes of known speed ---------------------------------------------
def test_background_tuner_swaps_under_load_to_the_fastest_right_backend(
        tmp_path: Path, fake_engines: None, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("UNIRT_VERIFY_TIMEOUT", "30")
    path = M.save(M.conv_net(), tmp_path / "conv.onnx")
    ref = unirt.load(path, backend="onnxruntime")
    sess = unirt.load(path, backend="onnxruntime")
    errors: list[BaseException] = []
    seen: list[set[str]] = []
    stop = threading.Event()

    def hammer(seed: int) -> None:  # a user's threads, calling throughout the swap
        rng, backends, n = np.random.default_rng(seed), set(), 0
        try:
            while not stop.is_set() or n < 20:
                x = rng.standard_normal((1, 3, 16, 16)).astype(np.float32)
                backends.add(sess.backend)
                got = sess.run({"input": x})["probs"]
                np.testing.assert_allclose(got, ref.run({"input": x})["probs"], atol=1e-5)
                n += 1
        except BaseException as exc:
            errors.append(exc)
        seen.append(backends)

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    with caplog.at_level(logging.INFO, logger="unirt"):
        tuner = _start(sess)
        assert sess.tuner is tuner
        assert tuner.wait(180), "the tuner did not finish"
        time.sleep(0.2)  # calls on the new engine
    stop.set()
    for t in threads:
        t.join(30)
    assert not errors, errors[0]
    assert tuner.error is None, tuner.outcome
    assert tuner.swapped and sess.backend == "fake-fast", tuner.outcome
    assert set().union(*seen) == {"onnxruntime", "fake-fast"}
    ranking = tuner.result
    assert ranking is not None and "fake-fast-wrong" not in ranking.order
    assert ranking.rejected["fake-fast-wrong"].startswith("wrong numbers")
    step = sess.route[-1]
    assert step.backend == "fake-fast" and step.outcome == SWAPPED
    assert step.reason.startswith("tuned in the background: fake-fast ")
    assert " vs onnxruntime " in step.reason and "verified max abs" in step.reason
    assert sess.verification.status == "verified" and sess.precision.max_abs
    swaps = [r for r in caplog.records if "now runs on fake-fast" in r.getMessage()]
    assert len(swaps) == 1 and swaps[0].levelno == logging.INFO
    assert "swapped" in sess.explain() and "backend: fake-fast" in sess.explain()

    # A second session on the same model: the ranking and the verdict are cached, so the
    # swap comes with no child process at all.
    def no_child(*a: Any, **k: Any) -> None:
        raise AssertionError("a cached ranking must not start a child process")

    monkeypatch.setattr(isolation.Worker, "_start", no_child)
    again = unirt.load(path, backend="onnxruntime")
    second = _start(again)
    assert second.wait(30)
    assert second.error is None, second.outcome
    assert second.result is not None and second.result.cached
    assert second.swapped and again.backend == "fake-fast"
    assert "(cached ranking)" in again.route[-1].reason
    again.close()
    sess.close()


def test_close_during_tuning_kills_the_measurement_and_caches_nothing(
        tmp_path: Path, fake_engines: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNIRT_VERIFY_TIMEOUT", "60")
    path = M.save(M.conv_net(), tmp_path / "conv.onnx")
    before = live_children()
    sess = unirt.load(path, backend="onnxruntime")
    tuner = _start(sess, ["onnxruntime", "fake-hang", "fake-fast"])  # fake-hang: a child busy
    deadline = time.monotonic() + 60
    while not (live_children() - before) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert live_children() - before, "the tuner started no child"
    time.sleep(0.5)
    start = time.perf_counter()
    sess.close()
    took = time.perf_counter() - start
    assert took < 5, f"close() took {took:.1f} s"
    assert not tuner.running and not tuner.swapped and tuner.error is None
    assert tuner.outcome.startswith("stopped")
    assert live_children() - before == set()
    assert sess.closed
    with pytest.raises(unirt.SessionClosedError):
        sess.run({"input": np.zeros((1, 3, 16, 16), np.float32)})

    # A stopped measurement is no ranking: nothing was cached.
    def measured(*a: Any, **k: Any) -> Ranking:
        raise LookupError("measured again")

    monkeypatch.setattr(fastest, "_measure", measured)
    with pytest.raises(LookupError):
        fastest.rank(sess.model, ["onnxruntime", "fake-hang", "fake-fast"],
                     {n: "test" for n in ["onnxruntime", "fake-hang", "fake-fast"]}, "exact", {})


def test_no_swap_without_a_margin_and_errors_stay_in_the_tuner(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    path = M.save(M.conv_net(), tmp_path / "conv.onnx")
    sess = unirt.load(path, backend="onnxruntime")
    close_call = Ranking(["fake-fast", "onnxruntime"], {"fake-fast": 0.98e-3,
                                                        "onnxruntime": 1.0e-3})
    monkeypatch.setattr(fastest, "rank", lambda *a, **k: close_call)
    tuner = _start(sess)
    assert tuner.wait(10) and not tuner.swapped and sess.backend == "onnxruntime"
    assert "faster by less than 5%" in tuner.outcome

    def broken(*a: Any, **k: Any) -> Ranking:
        raise RuntimeError("the measurement broke")

    monkeypatch.setattr(fastest, "rank", broken)
    with caplog.at_level(logging.WARNING, logger="unirt"):
        tuner = _start(sess)
        assert tuner.wait(10)
    assert isinstance(tuner.error, RuntimeError) and not tuner.swapped
    assert any("background tuning of" in r.getMessage() for r in caplog.records)
    x = np.zeros((1, 3, 16, 16), np.float32)
    assert sess.run({"input": x})["probs"].shape == (1, 10)  # the session runs on
    sess.close()


def test_decide_and_mode() -> None:
    r = Ranking(["a", "b", "c"], {"a": 1.0, "b": 1.2, "c": 3.0})
    assert tuning.decide(r, "c") == ("a", 3.0)
    assert tuning.decide(r, "a") is None
    assert tuning.decide(r, "b", margin=0.25) is None
    assert tuning.decide(r, "b", margin=0.2) == ("a", pytest.approx(1.2))
    assert tuning.decide(r, "z") is None  # no figure to beat
    assert tuning.resolve_mode(None) == "off"
    assert tuning.resolve_mode("background") == "background"
    with pytest.raises(UnirtError, match="tune must be one of"):
        tuning.resolve_mode("eager")


def test_mode_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(tuning.TUNE_ENV, "background")
    assert tuning.resolve_mode(None) == "background"
    assert tuning.resolve_mode("off") == "off"
    monkeypatch.setenv(tuning.TUNE_ENV, "yes")
    with pytest.raises(UnirtError, match="UNIRT_TUNE must be one of"):
        tuning.resolve_mode(None)


# -- the swap itself, in process, hammered ------------------------------------------------------
class _Scaled(BackendSession):
    """y = x * factor; records calls after close, and refuses a batch of ``refuse``."""

    def __init__(self, factor: float, refuse: int | None = None, delay: float = 0.0) -> None:
        super().__init__()
        self.factor, self.refuse, self.delay = factor, refuse, delay
        self.closed = 0
        self.after_close = 0
        self.calls = 0

    def run(self, feeds: dict[str, Any], output_names: Any) -> Any:
        if self.closed:
            self.after_close += 1
        x = feeds["x"]
        if self.refuse is not None and x.shape[0] == self.refuse:
            raise ShapeLimitError(f"cannot take batch {self.refuse}")
        self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        return [x[:, :4] * self.factor]

    def close(self) -> None:
        self.closed += 1


def _session(impl: BackendSession, reroute: Any = None) -> Session:
    info = unirt.read_model(M.dynamic_batch())
    return Session(info, "a", impl, [RouteStep("a", CHOSEN)], reroute=reroute)


def test_swap_is_atomic_and_closes_each_engine_once_after_its_last_call() -> None:
    first = _Scaled(1.0)
    sess = _session(first)
    engines = [first]
    errors: list[BaseException] = []
    stop = threading.Event()

    def hammer() -> None:
        x = np.ones((1, 8), np.float32)
        try:
            while not stop.is_set():
                y = sess.run({"x": x})["y"]
                assert y.shape == (1, 4) and y[0, 0] == 1.0  # every engine computes the same
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    for i in range(100):
        new = _Scaled(1.0)
        engines.append(new)
        assert sess.swap(f"e{i}", new, RouteStep(f"e{i}", SWAPPED, "test"))
        time.sleep(0.0005)
    stop.set()
    for t in threads:
        t.join(10)
    assert not errors, errors[0]
    assert sess.backend == "e99" and len(sess.route) == 101
    assert all(e.closed == 1 for e in engines[:-1]) and engines[-1].closed == 0
    assert sum(e.after_close for e in engines) == 0
    assert sum(e.calls for e in engines) > 100
    sess.close()
    assert engines[-1].closed == 1
    assert not sess.swap("late", _Scaled(1.0), RouteStep("late", SWAPPED, "x"))


def test_a_call_in_flight_finishes_on_the_old_engine_which_closes_after_it() -> None:
    old = _Scaled(1.0, delay=0.3)
    sess = _session(old)
    out: dict[str, Any] = {}
    t = threading.Thread(target=lambda: out.update(sess.run({"x": np.ones((1, 8), np.float32)})))
    t.start()
    time.sleep(0.1)
    new = _Scaled(2.0)
    assert sess.swap("b", new, RouteStep("b", SWAPPED, "faster"))
    assert old.closed == 0  # a call is in flight on it
    assert sess.run({"x": np.ones((1, 8), np.float32)})["y"][0, 0] == 2.0
    t.join(5)
    assert out["y"][0, 0] == 1.0 and old.closed == 1 and old.after_close == 0
    sess.close()
    assert new.closed == 1


def test_shape_fallback_across_a_swap() -> None:
    rerouted: list[str] = []
    opened: list[_Scaled] = []

    def reroute(failed: str, shape: str, reason: str) -> tuple[str, BackendSession]:
        rerouted.append(failed)
        opened.append(_Scaled(1.0))
        return "other", opened[-1]

    sess = _session(_Scaled(1.0, refuse=2), reroute)
    x2 = np.ones((2, 8), np.float32)
    assert sess.run({"x": x2})["y"].shape == (2, 4) and rerouted == ["a"]
    also_refuses = _Scaled(1.0, refuse=2)
    assert sess.swap("b", also_refuses, RouteStep("b", SWAPPED, "faster"))
    sess.run({"x": x2})  # asked first, refuses: the shape's engine takes it, no new reroute
    assert rerouted == ["a"] and opened[0].calls == 2
    x3 = np.ones((3, 8), np.float32)
    refuses_three = _Scaled(1.0, refuse=3)
    assert sess.swap("c", refuses_three, RouteStep("c", SWAPPED, "faster"))
    sess.run({"x": x3})
    assert rerouted == ["a", "c"]  # routed from the engine that refused it
    sess.close()
    assert [e.closed for e in opened] == [1, 1] and refuses_three.closed == 1
    assert also_refuses.closed == 1


def test_details_and_verification_follow_the_engine() -> None:
    sess = _session(_Scaled(1.0))
    new = _Scaled(1.0)
    new.details = {"device": "elsewhere"}
    new.precision = "bf16"
    sess.swap("b", new, RouteStep("b", SWAPPED, "faster"))
    assert sess.details == {"device": "elsewhere"} and sess.precision == "bf16"
    assert sess.verification is None and sess.backend == "b"
    sess.close()
    assert sess.backend == "b" and sess.details == {} and repr(sess).endswith("closed>")


# -- the children's priority and cancellation ---------------------------------------------------
def test_worker_children_run_at_the_requested_niceness() -> None:
    base = os.nice(0)
    with isolation.Worker(nice=5) as w:
        assert w.call(call_plain, os.nice, 0).value == min(19, base + 5)
    with isolation.worker_defaults(nice=3), isolation.Worker() as w:
        assert w.call(call_plain, os.nice, 0).value == min(19, base + 3)
    with isolation.Worker() as w:
        assert w.call(call_plain, os.nice, 0).value == base


def test_a_cancelled_worker_kills_its_child_and_raises() -> None:
    before = live_children()
    cancel = threading.Event()
    w = isolation.Worker(cancel=cancel)
    threading.Timer(0.5, cancel.set).start()
    start = time.perf_counter()
    with pytest.raises(isolation.Cancelled):
        w.call(call_plain, time.sleep, 30, timeout=60)
    assert time.perf_counter() - start < 3
    assert live_children() - before == set()
    with pytest.raises(isolation.Cancelled):  # and stays cancelled
        w.call(call_plain, time.sleep, 0)
    w.close()
