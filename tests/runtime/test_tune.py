"""The default route: a cached tuning result opens its winner directly; without one the reference
opens at once, with no child process and no other engine imported; ``unirt tune``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import unirt
from unirt.cli.main import cli
from unirt.evidence import timing as fastest
from unirt.evidence import verify as verify_mod
from unirt.testing import models as M


@pytest.fixture
def conv(tmp_path: Path) -> Path:
    return M.save(M.conv_net(), tmp_path / "conv.onnx")


def _no_child(*a: Any, **k: Any) -> Any:
    raise AssertionError("no child process may start on this path")


def _tune(conv: Path, names: list[str]) -> fastest.Ranking:
    reg = unirt.plugin.registry.get_registry()
    versions = {n: reg.backend(n).available().version for n in names}
    return fastest.rank(unirt.read_model(conv), names, versions, "exact", {})


def test_the_first_load_opens_the_reference_with_no_child(conv: Path, fake_engines: None,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(verify_mod, "probe", _no_child)
    sess = unirt.load(conv)
    assert sess.backend == "onnxruntime"
    assert sess.verification is None  # the reference is judged by its engine, not verified


def test_the_first_load_imports_no_other_engine(conv: Path) -> None:
    code = ("import sys, unirt; s = unirt.load(sys.argv[1]); "
            "print(s.backend, sorted(m for m in ('openvino', 'cv2', 'ncnn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(conv)], capture_output=True,
                         text=True, timeout=120, check=True)
    assert out.stdout.split(None, 1) == ["onnxruntime", "[]\n"]


def test_a_tuning_result_opens_its_winner_without_measuring(
        conv: Path, fake_engines: None, monkeypatch: pytest.MonkeyPatch) -> None:
    ranking = _tune(conv, ["onnxruntime", "fake-fast", "fake-approx", "fake-faithful"])
    assert ranking.winner == "fake-fast", ranking.as_dict()
    assert "fake-approx" in ranking.rejected and "fake-approx" not in ranking.order
    monkeypatch.setattr(verify_mod, "probe", _no_child)
    monkeypatch.setattr(fastest, "_measure", _no_child)
    sess = unirt.load(conv)
    assert sess.backend == "fake-fast"
    assert sess.route[0].reason.startswith("tuned: fastest #1 of 3 that pass")
    assert sess.verification is not None and sess.verification.cached


def test_a_tuning_result_from_another_engine_version_is_not_used(
        conv: Path, fake_engines: None, monkeypatch: pytest.MonkeyPatch) -> None:
    _tune(conv, ["onnxruntime", "fake-fast"])
    from unirt.plugin.backend import Availability

    be = unirt.plugin.registry.get_registry().backend("fake-fast")
    monkeypatch.setattr(be, "_availability", Availability(True, "9.9-new", ("cpu",)))
    assert unirt.load(conv).backend == "onnxruntime"


def test_a_preference_beats_the_tuning_result(conv: Path, fake_engines: None) -> None:
    _tune(conv, ["onnxruntime", "fake-fast"])
    assert unirt.load(conv, prefer="fake-faithful").backend == "fake-faithful"
    assert unirt.load(conv, backend="onnxruntime").backend == "onnxruntime"


def test_unirt_tune_prints_the_ranking_and_the_next_load_uses_it(
        conv: Path, fake_engines: None, monkeypatch: pytest.MonkeyPatch) -> None:
    res = CliRunner().invoke(cli, ["tune", str(conv), "--backends",
                                   "onnxruntime,fake-fast,fake-segfault"])
    assert res.exit_code == 0, res.output
    assert "fake-fast" in res.output and "verified" in res.output
    assert "not used: crashed (signal SIGSEGV)" in res.output
    assert "opens fake-fast" in res.output
    monkeypatch.setattr(verify_mod, "probe", _no_child)
    assert unirt.load(conv).backend == "fake-fast"
    res = CliRunner().invoke(cli, ["tune", str(conv), "--backends", "onnxruntime", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["ranking"]["order"] == ["onnxruntime"]


@pytest.mark.parametrize("args, message", [
    (["--shape", "input=1x3"], "rank"),
    (["--shape", "nope=1x3x16x16"], "not an input"),
    (["--backends", "nosuch"], "unknown backend 'nosuch'"),
])
def test_unirt_tune_bad_arguments_are_one_line_errors(conv: Path, args: list[str],
                                                      message: str) -> None:
    res = CliRunner().invoke(cli, ["tune", str(conv), *args])
    assert res.exit_code == 1, res.output
    assert res.output.startswith("Error: ") and message in res.output


def test_tune_lock_then_load_with_the_lock_measures_nothing(
        conv: Path, tmp_path: Path, fake_engines: None, monkeypatch: pytest.MonkeyPatch) -> None:
    lock = tmp_path / "unirt.lock"
    res = CliRunner().invoke(cli, ["tune", str(conv), "--backends", "onnxruntime,fake-fast",
                                   "--lock", str(lock)])
    assert res.exit_code == 0, res.output
    assert json.loads(lock.read_text())["backend"] == "fake-fast"
    monkeypatch.setattr(verify_mod, "probe", _no_child)
    monkeypatch.setattr(fastest, "_measure", _no_child)
    sess = unirt.load(conv, lock=lock)
    assert sess.backend == "fake-fast" and sess.route[0].reason.startswith("from lock unirt.lock")
    with pytest.raises(unirt.UnirtError, match="give lock= alone"):
        unirt.load(conv, lock=lock, prefer="onnxruntime")
    with pytest.raises(unirt.UnirtError, match="lock_mode must be"):
        unirt.load(conv, lock=lock, lock_mode="maybe")


def test_a_lock_for_other_model_bytes_raises_or_warns(
        conv: Path, tmp_path: Path, fake_engines: None, caplog: pytest.LogCaptureFixture) -> None:
    from unirt.errors import LockError
    from unirt.runtime.lock import write_lock
    from unirt.tools.lock import measure_lock

    lock = tmp_path / "unirt.lock"
    write_lock(measure_lock(conv, "fake-fast"), lock)
    M.save(M.tiny(), conv)  # same file name, other bytes
    with pytest.raises(LockError, match="was made for model digest"):
        unirt.load(conv, lock=lock)
    sess = unirt.load(conv, lock=lock, lock_mode="warn")
    assert sess.backend == "onnxruntime"
    assert any("was made for model digest" in r.getMessage() for r in caplog.records)


def test_load_with_background_tuning_moves_to_the_fastest_right_engine(
        conv: Path, fake_engines: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNIRT_VERIFY_TIMEOUT", "20")
    sess = unirt.load(conv, tune="background", device="cpu",
                      exclude=["fake-hang", "fake-slow", "fake-poisoned"])
    assert sess.backend == "onnxruntime"  # at once, on the reference
    assert sess.tuner is not None and sess.tuner.wait(180), sess.tuner
    assert sess.tuner.swapped, sess.tuner.outcome
    assert sess.backend == "fake-fast"
    assert sess.route[-1].outcome == "swapped"
    assert "fake-fast-wrong" in sess.tuner.result.rejected
    sess.close()


def test_background_tuning_is_off_by_default_and_checked(conv: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    assert unirt.load(conv).tuner is None
    with pytest.raises(unirt.UnirtError, match="tune"):
        unirt.load(conv, tune="sometimes")
    monkeypatch.setenv("UNIRT_TUNE", "nope")
    with pytest.raises(unirt.UnirtError, match="UNIRT_TUNE"):
        unirt.load(conv)


def test_a_swap_needs_the_winner_faster_in_this_process_too(conv: Path,
                                                           fake_engines: None) -> None:
    from unirt.plugin.backend import OpenOptions
    from unirt.runtime.tuning import BackgroundTuner

    sess = unirt.load(conv, backend="fake-fast", verify="never")
    slow = unirt.plugin.registry.get_registry().backend("fake-slow").open(sess.model, OpenOptions())
    tuner = BackgroundTuner(sess, sess.model, ["fake-fast", "fake-slow"], {}, "exact", {}, None,
                            None, 0.05, unirt.plugin.registry.get_registry(), 10)
    why = tuner._confirm(sess, slow)
    assert why is not None and "not faster" in why
    slow.close()
    sess.close()


def test_a_lock_carries_its_precision(conv: Path, tmp_path: Path, fake_engines: None) -> None:
    from unirt.runtime.lock import write_lock
    from unirt.tools.lock import measure_lock

    lock = tmp_path / "fast.lock"
    write_lock(measure_lock(conv, "fake-fast", precision="fast"), lock)
    sess = unirt.load(conv, lock=lock)  # no precision= needed: the lock's applies
    assert sess.backend == "fake-fast" and sess.options is not None
    assert sess.options.precision == "fast"
