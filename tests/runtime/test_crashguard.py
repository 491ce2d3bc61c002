"""The crash guard (unirt.runtime.crashguard): a process may die on a model once, as with the raw
engine, never twice; ``crash_guard="child"`` not even once."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import unirt
from unirt.errors import UnirtError
from unirt.runtime import crashguard
from unirt.testing import models


def _guard_dir() -> Path:
    return Path(os.environ["UNIRT_CACHE_DIR"]) / crashguard.GUARD_DIR


def _files() -> list[str]:
    d = _guard_dir()
    return sorted(p.suffix for p in d.iterdir() if not p.name.startswith(".tmp-")) \
        if d.is_dir() else []


def _run_child(code: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=120)


def test_a_marker_is_held_until_the_first_answer(tmp_path: Path) -> None:
    path = models.save(models.tiny(), tmp_path / "m.onnx")
    s = unirt.load(path)
    assert s.backend == "onnxruntime"
    assert _files() == [".pending"]
    s.run({s.inputs[0].name: np.zeros([d or 1 for d in s.inputs[0].shape], np.float32)})
    assert _files() == [".ran"]
    s.close()
    with unirt.load(path) as again:  # known to answer here: no marker at all
        assert _files() == [".ran"]
        assert again.backend == "onnxruntime"


def test_closing_without_a_call_records_nothing(tmp_path: Path) -> None:
    path = models.save(models.tiny(), tmp_path / "m.onnx")
    unirt.load(path).close()
    assert _files() == []


def test_verify_never_leaves_no_marker(tmp_path: Path) -> None:
    path = models.save(models.tiny(), tmp_path / "m.onnx")
    with unirt.load(path, verify="never"):
        assert _files() == []


def test_a_dead_holder_is_seen_and_a_live_one_is_not(tmp_path: Path) -> None:
    k = "a" * 40
    held = _run_child(f"""
        import os
        from unirt.runtime import crashguard
        m = crashguard.arm({k!r}, "test")
        assert m is not None
        assert crashguard.marker_state({k!r}) == crashguard.MarkerState.HELD
        os._exit(0)  # no finalizer runs: as after a signal
    """)
    assert held.returncode == 0, held.stderr
    assert crashguard.marker_state(k) == crashguard.MarkerState.DIED
    assert not crashguard.ran_before(k)
    crashguard.record_ran(k)
    assert crashguard.ran_before(k)
    assert crashguard.marker_state(k) != crashguard.MarkerState.DIED
    k2 = "b" * 40
    mine = crashguard.arm(k2, "test")
    assert mine is not None
    # held by a live process (this one)
    assert crashguard.marker_state(k2) == crashguard.MarkerState.HELD
    assert crashguard.arm(k2, "again") is None  # one marker per model
    mine.release()
    assert crashguard.marker_state(k2) != crashguard.MarkerState.DIED
    assert _files() == [".ran"]


def test_after_a_death_the_reference_runs_in_a_child_first(tmp_path: Path,
                                                           caplog: pytest.LogCaptureFixture
                                                           ) -> None:
    """A process that died with the marker held: the next load runs the reference in a child
    (here it passes: the death was not the model's doing), then opens it in-process."""
    path = models.save(models.tiny(), tmp_path / "m.onnx")
    died = _run_child(f"""
        import os, unirt
        s = unirt.load({str(path)!r})
        os._exit(3)  # dies before the first answer
    """)
    assert died.returncode == 3, died.stderr
    assert _files() == [".pending"]
    with caplog.at_level("WARNING", logger="unirt"):
        s = unirt.load(path)
    assert "running it in a child first" in caplog.text
    assert s.backend == "onnxruntime"
    assert _files() == [".ran"]  # the child's pass is recorded; the stale marker is gone
    s.close()


def test_unwritable_cache_works_without_a_guard(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    monkeypatch.setenv("UNIRT_CACHE_DIR", str(blocker / "cache"))
    path = models.save(models.tiny(), tmp_path / "m.onnx")
    with unirt.load(path) as s:
        s.run({s.inputs[0].name: np.zeros([d or 1 for d in s.inputs[0].shape], np.float32)})


def test_crash_guard_argument_is_checked(tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    path = models.save(models.tiny(), tmp_path / "m.onnx")
    with pytest.raises(UnirtError, match="crash_guard must be one of auto, child, not 'yes'"):
        unirt.load(path, crash_guard="yes")
    monkeypatch.setenv("UNIRT_CRASH_GUARD", "sometimes")
    with pytest.raises(UnirtError, match="UNIRT_CRASH_GUARD must be one of"):
        unirt.load(path)


def test_child_mode_runs_the_reference_in_a_child_once(tmp_path: Path) -> None:
    path = models.save(models.tiny(), tmp_path / "m.onnx")
    with unirt.load(path, crash_guard="child") as s:
        assert s.backend == "onnxruntime"
        assert _files() == [".ran"]  # recorded by the child's pass, before any call here


def test_a_marker_held_elsewhere_makes_the_load_run_the_reference_in_a_child(
        tmp_path: Path) -> None:
    """Processes started together: one holds the marker, the others must not open a model none
    of them has seen answer; they run the reference in a child first (three processes
    started at once must not all die)."""
    from unirt.model.info import read_model

    path = models.save(models.tiny(), tmp_path / "m.onnx")
    info = read_model(path)
    be = unirt.plugin.registry.get_registry().backend("onnxruntime")
    k = crashguard.key(info, "onnxruntime", be.available().version, "exact", {})
    holder = crashguard.arm(k, "another process")  # a flock conflicts across open files
    assert holder is not None
    assert crashguard.marker_state(k) == crashguard.MarkerState.HELD
    with unirt.load(path) as s:
        assert s.backend == "onnxruntime"
        assert crashguard.ran_before(k)  # the child's pass was recorded
    holder.release()


def test_simultaneous_arming_gives_one_marker(tmp_path: Path) -> None:
    k = "c" * 40
    first = crashguard.arm(k, "one")
    second = crashguard.arm(k, "two")
    assert first is not None and second is None
    first.release()
    assert crashguard.marker_state(k) == crashguard.MarkerState.NONE
