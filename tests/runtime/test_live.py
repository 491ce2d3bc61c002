"""Live verification (unirt.runtime.live): an engine that passed verification on generated inputs
and is wrong on the inputs the application sends is caught on those calls and replaced by the
reference, off the caller's path."""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import unirt
from tests.support import install_plugin, live_children
from unirt.errors import UnirtError
from unirt.plugin.registry import get_registry
from unirt.runtime.live import LIVE_DIR_ENV, LIVE_ENV, LiveCheck, LiveMode, known_disagreement
from unirt.testing import models as M

ROOT = Path(__file__).resolve().parents[2]
ENGINE = "fake-saturating"
#: Inputs the fake computes wrong (above its threshold), as real traffic is.
LOUD = np.full((1, 4), 10.0, np.float32)
QUIET = np.full((1, 4), 0.5, np.float32)


@pytest.fixture
def saturating_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Install tests.fake_live as a third-party plugin (entry point) for parent and children."""
    install_plugin("fake_live", tmp_path, monkeypatch)
    monkeypatch.setenv(LIVE_DIR_ENV, str(tmp_path / "live"))
    monkeypatch.delenv(LIVE_ENV, raising=False)


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return M.save(M.tiny(), tmp_path / "tiny.onnx")


def _until(cond: Callable[[], bool], timeout: float = 120.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def test_a_wrong_engine_on_live_inputs_moves_to_the_reference(
        model: Path, saturating_engine: None, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="unirt")
    sess = unirt.load(model, prefer=ENGINE)
    try:
        # Verification on generated N(0,1) inputs let it through, and auto checks it live.
        assert sess.backend == ENGINE and sess.verification.status == "verified"
        live = sess.live
        assert isinstance(live, LiveCheck) and (live.first, live.every) == (8, 100)
        first = sess.run({"x": LOUD})["y"]
        np.testing.assert_allclose(first, 2 * LOUD * 0.71, rtol=1e-6)  # wrong, and returned
        for _ in range(7):
            sess.run({"x": LOUD})
        assert _until(lambda: sess.backend == "onnxruntime"), live.describe()
        step = sess.route[-1]
        assert (step.backend, step.outcome) == ("onnxruntime", "swapped")
        assert f"live check: {ENGINE} disagreed with the reference on call " in step.reason
        assert "output y max abs 5.8" in step.reason
        np.testing.assert_allclose(sess.run({"x": LOUD})["y"], 2 * LOUD)  # right now
        assert _until(lambda: not live.running, 30)  # the warning and the verdict are written
        assert live.disagreed == 1 and live.checked >= 1 and live.swapped
        assert sess._live is None  # nothing left to compare against: the hot path is clear
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1, warnings
        text = warnings[0]
        assert live.saved is not None and str(live.saved) in text
        assert f"tiny.onnx on {ENGINE} disagrees with the reference (onnxruntime)" in text
        assert "call 1: output y max abs 5.8" in text and "atol 0.0001, rtol 0.001" in text
        assert "the session now runs on onnxruntime" in text
        assert f"unirt compare {model} --load-inputs {live.saved} --backends {ENGINE}" in text
        saved = live.saved
    finally:
        sess.close()

    # The saved folder replays the difference.
    from click.testing import CliRunner

    from unirt.cli.main import cli

    out = CliRunner().invoke(cli, ["compare", str(model), "--load-inputs", str(saved),
                                   "--backends", ENGINE])
    assert out.exit_code == 2, out.output
    assert ENGINE in out.output and "FAIL" in out.output

    # The verdict is cached for those very inputs: a verification on them does not pass.
    info = unirt.read_model(model)
    version = get_registry().backend(ENGINE).available().version
    verdict = known_disagreement(info, ENGINE, version, "exact", {}, {"x": LOUD})
    assert verdict is not None and verdict.cached and not verdict.accepted
    assert verdict.status == "rejected" and verdict.about_engine
    assert verdict.result.reason.startswith("wrong numbers on live inputs: call 1: output y")
    assert known_disagreement(info, ENGINE, version, "exact", {}, {"x": QUIET}) is None
    # ... and the load given the saved inputs reads it: rejected without measuring again.
    again = unirt.load(model, prefer=ENGINE, inputs=str(saved))
    assert again.backend == "onnxruntime", again.explain()
    assert again.route[0].outcome == "rejected"
    assert again.route[0].reason.startswith("cached verdict: wrong numbers on live inputs")


def test_verify_never_with_live_on_is_caught_within_the_first_calls(
        model: Path, saturating_engine: None) -> None:
    sess = unirt.load(model, backend=ENGINE, verify="never", verify_live=(3, 0))
    try:
        assert sess.verification is None and sess.live is not None
        assert (sess.live.first, sess.live.every) == (3, 0)
        for _ in range(3):
            sess.run({"x": QUIET})  # agrees
        for _ in range(5):
            sess.run({"x": LOUD})  # after the first 3, every=0: never checked
        assert _until(lambda: sess.live is not None and sess.live.checked
                      + sess.live.dropped + sess.live.unchecked == 3)
        assert sess.backend == ENGINE and sess.live.disagreed == 0
        # Calls on the reference are right; the wrong ones were after the sampled window.
    finally:
        sess.close()
    sess = unirt.load(model, backend=ENGINE, verify="never", verify_live=True)
    try:
        for _ in range(8):
            sess.run({"x": LOUD})
        assert _until(lambda: sess.backend == "onnxruntime")
        assert sess.route[-1].outcome == "swapped"
    finally:
        sess.close()


def test_live_checking_is_off_by_argument_env_and_on_the_reference(
        model: Path, saturating_engine: None, monkeypatch: pytest.MonkeyPatch) -> None:
    opened = [unirt.load(model, prefer=ENGINE, verify_live=False),
              unirt.load(model, prefer=ENGINE, verify_live="off"),
              unirt.load(model, backend=ENGINE),  # named, not routed: auto leaves it
              unirt.load(model, prefer=ENGINE, verify="never")]
    monkeypatch.setenv(LIVE_ENV, "off")
    opened.append(unirt.load(model, prefer=ENGINE))
    try:
        assert [s.backend for s in opened] == [ENGINE] * 5
        assert [s.live for s in opened] == [None] * 5
        # The argument wins over the environment.
        on = unirt.load(model, prefer=ENGINE, verify_live="on")
        opened.append(on)
        assert on.live is not None
        monkeypatch.setenv(LIVE_ENV, "2,50")
        paired = unirt.load(model, backend=ENGINE, verify="never")
        opened.append(paired)
        assert paired.live is not None and (paired.live.first, paired.live.every) == (2, 50)
        # The reference gets no live check, even when asked: nothing to compare with.
        for ref in (unirt.load(model), unirt.load(model, verify_live=True)):
            opened.append(ref)
            assert ref.backend == "onnxruntime" and ref.live is None and ref._live is None
    finally:
        for s in opened:
            s.close()


@pytest.mark.parametrize(("value", "message"), [
    ("sometimes", r"verify_live must be 'auto', 'on', 'off', True, False, None or a "
                  r"\(first, every\) pair of integers >= 0 .*not 'sometimes'"),
    ((8,), r"verify_live must be .* not \(8,\)"),
    ((8, 1.5), r"verify_live must be .* not \(8, 1.5\)"),
    ((True, 5), r"verify_live must be .* not \(True, 5\)"),
    ((-1, 5), r"verify_live: the calls checked first and the sampling interval must be >= 0, "
              r"not \(-1, 5\)"),
    ((0, 0), r"verify_live: \(0, 0\) checks no call; turn live verification off with 'off'"),
    (1, "verify_live must be .* not 1"),
])
def test_a_bad_verify_live_is_refused_before_any_work(
        model: Path, value: object, message: str) -> None:
    with pytest.raises(UnirtError, match=message):
        unirt.load(model, verify_live=value)  # type: ignore[arg-type]


@pytest.mark.parametrize(("value", "message"), [
    ("sometimes", "UNIRT_VERIFY_LIVE must be off, on, auto or FIRST,EVERY .*not 'sometimes'"),
    ("8;100", "UNIRT_VERIFY_LIVE must be off, on, auto or FIRST,EVERY .*not '8;100'"),
    ("0,0", r"UNIRT_VERIFY_LIVE: \(0, 0\) checks no call"),
])
def test_a_bad_environment_setting_is_refused(
        model: Path, monkeypatch: pytest.MonkeyPatch, value: str, message: str) -> None:
    monkeypatch.setenv(LIVE_ENV, value)
    with pytest.raises(UnirtError, match=message):
        unirt.load(model)
    monkeypatch.setenv(LIVE_ENV, "auto")
    with unirt.load(model) as sess:
        assert sess.live is None


def test_a_full_queue_drops_samples_instead_of_blocking(model: Path) -> None:
    with unirt.load(model) as sess:
        # Not started: nothing takes from the queue, as a reference stuck on a slow call.
        # The queue holds every one of the first calls (depth is raised to ``first``): with
        # every call sampled, what comes after them is dropped.
        check = LiveCheck(sess, get_registry(), "a-reference", "exact", None, {},
                          first=5, every=1, depth=2)
        x = QUIET.copy()
        out = {"y": np.zeros((1, 4), np.float32)}
        start = time.perf_counter()
        for _ in range(55):
            check.observe({"x": x}, out)
        assert time.perf_counter() - start < 5  # returned: nothing waited on the full queue
        assert check.dropped == 50 and check._queue.qsize() == 5
        x[:] = 99.0  # the caller reuses its buffer: the sample kept its own copy
        kept = check._queue.get_nowait()
        assert kept.call == 1 and float(kept.feeds["x"].max()) == 0.5
        assert kept.backend == "onnxruntime"
        assert check.describe().startswith("live check (first 5, then 1 in 1): 0 checked")


def test_close_stops_the_thread_and_its_child(model: Path, saturating_engine: None) -> None:
    before = live_children()
    sess = unirt.load(model, backend=ENGINE, verify="never", verify_live=(1, 0))
    sess.run({"x": QUIET})
    live = sess.live
    assert live is not None
    assert _until(lambda: live.agreed == 1), live.describe()
    assert live_children() - before  # the reference's child, kept for the next sample
    sess.close()
    assert not live.running and sess._live is None
    assert _until(lambda: not (live_children() - before), 10)


def test_a_dropped_session_stops_its_check(model: Path, saturating_engine: None) -> None:
    before = live_children()
    sess = unirt.load(model, backend=ENGINE, verify="never", verify_live=(1, 0))
    sess.run({"x": QUIET})
    live = sess.live
    assert live is not None and _until(lambda: live.agreed == 1)
    del sess
    gc.collect()
    assert live.wait(30) and not live.running
    assert _until(lambda: not (live_children() - before), 10)


def test_a_reference_that_cannot_answer_never_swaps(
        model: Path, saturating_engine: None, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="unirt")
    monkeypatch.setenv("UNIRT_VERIFY_TIMEOUT", "0.001")  # every reference call times out
    sess = unirt.load(model, backend=ENGINE, verify="never", verify_live=(2, 0))
    try:
        live = sess.live
        assert live is not None
        sess.run({"x": LOUD})
        assert _until(lambda: live.unchecked + live.dropped >= 1)
        sess.run({"x": LOUD})
        assert _until(lambda: live.unchecked + live.dropped == 2)
        assert live.unchecked >= 1 and live.checked == 0 and live.disagreed == 0
        assert sess.backend == ENGINE and sess.route[-1].outcome != "swapped"
        notes = [r.getMessage() for r in caplog.records if "live check" in r.getMessage()]
        assert notes and all(r.levelno < logging.WARNING for r in caplog.records
                             if "live check" in r.getMessage())
        assert any(f"live check of tiny.onnx on {ENGINE}, call 1: not checked (the reference "
                   "could not open the model: timed out after" in n for n in notes), \
            notes
    finally:
        sess.close()


def test_inputs_that_cannot_be_saved_still_swap_and_say_why(
        model: Path, saturating_engine: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    monkeypatch.setenv(LIVE_DIR_ENV, str(blocked))
    sess = unirt.load(model, backend=ENGINE, verify="never", verify_live=(1, 0))
    try:
        sess.run({"x": LOUD})
        assert _until(lambda: sess.backend == "onnxruntime")
        assert sess.live is not None and _until(lambda: not sess.live.running, 30)
        assert sess.live.saved is None
        text = next(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
        assert "the session now runs on onnxruntime; the inputs could not be saved: " in text
    finally:
        sess.close()


def test_the_setting_words(monkeypatch: pytest.MonkeyPatch) -> None:
    from unirt.runtime.live import LiveSetting, resolve_setting

    monkeypatch.delenv(LIVE_ENV, raising=False)  # the default, not the test suite's

    assert resolve_setting(None) == LiveSetting(LiveMode.AUTO, 8, 100)
    assert resolve_setting(True).mode == LiveMode.ON
    assert resolve_setting([4, 10]) == LiveSetting(LiveMode.ON, 4, 10)
    auto = LiveSetting()
    assert auto.wanted(reference=False, routed=True, verify="auto")
    assert not auto.wanted(reference=False, routed=False, verify="auto")
    assert not auto.wanted(reference=False, routed=True, verify="never")
    assert not LiveSetting(LiveMode.ON).wanted(reference=True, routed=True, verify="auto")


def test_the_serve_config_takes_verify_live(tmp_path: Path) -> None:
    from unirt.serve.config import build_config

    config = tmp_path / "serve.toml"
    config.write_text('[server]\nverify_live = "off"\n\n'
                      '[[models]]\npath = "a.onnx"\nverify_live = [4, 20]\n\n'
                      '[[models]]\npath = "b.onnx"\n')
    cfg = build_config(config_file=str(config))
    a, b = cfg.models
    assert cfg.live(a) == (4, 20) and cfg.live(b) == "off"
    assert build_config(["c.onnx"]).live(build_config(["c.onnx"]).models[0]) is None
    config.write_text('[[models]]\npath = "a.onnx"\nverify_live = "often"\n')
    with pytest.raises(UnirtError, match=r"models\[0\]\.verify_live: verify_live must be "
                                         r"'auto', .*not 'often'"):
        build_config(config_file=str(config))
    config.write_text('[server]\nverify_live = [1, -1]\n[[models]]\npath = "a.onnx"\n')
    with pytest.raises(UnirtError, match=r"\[server\] verify_live: verify_live: the calls "
                                         r"checked first .* not \(1, -1\)"):
        build_config(config_file=str(config))


def test_no_reference_registered_means_no_check_and_no_error(
        model: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from unirt.plugin.registry import Registry

    caplog.set_level(logging.INFO, logger="unirt")
    monkeypatch.syspath_prepend(str(ROOT))
    import tests.fake_live as fake

    reg = Registry(builtins=(), entry_points=False)
    reg.register(fake, name="fake_live")
    with unirt.load(model, backend=ENGINE, verify="never", verify_live=True,
                    registry=reg) as sess:
        assert sess.backend == ENGINE and sess.live is None
        np.testing.assert_allclose(sess.run({"x": QUIET})["y"], 2 * QUIET)
    assert "no live check of tiny.onnx: no reference backend is registered" in caplog.text
