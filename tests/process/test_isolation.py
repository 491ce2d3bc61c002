"""unirt.process.isolation: children are fresh interpreters on unirt.process.child, so a user's
script without a ``__main__`` guard runs once; crashes, timeouts, errors and harness failures each
become the right Outcome; nothing a child prints or leaves behind reaches the parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path
from typing import Any

import pytest

import unirt
from unirt.process import isolation
from unirt.process.isolation import CRASHED, ERROR, HARNESS, OK, TIMEOUT, Worker, run_isolated

ROOT = Path(unirt.__file__).resolve().parent.parent

# ---- functions the children run (module level: they are pickled by reference) -------------


def _pid(_state: Any) -> int:
    return os.getpid()


def _segv(_state: Any) -> None:
    os.kill(os.getpid(), signal.SIGSEGV)


def _shout_then_segv(_state: Any) -> None:
    print("\x1b[31mengine: about to fail on node conv_7\x1b[0m", file=sys.stderr)
    os.write(2, b"[E] fatal: tensor shape mismatch\n")
    os.kill(os.getpid(), signal.SIGSEGV)


def _hang_with_grandchild(_state: Any, pid_file: str) -> None:
    grandchild = subprocess.Popen(["sleep", "60"])
    Path(pid_file).write_text(f"{os.getpid()} {grandchild.pid}")
    time.sleep(60)


def _raise(_state: Any) -> None:
    raise ValueError("no such tensor\nsecond line")


def _print_everywhere(_state: Any) -> str:
    print("CHILD-STDOUT-MARKER")
    print("CHILD-STDERR-MARKER", file=sys.stderr)
    os.write(1, b"CHILD-FD1-MARKER\n")
    return "done"


def _failing_init() -> None:
    raise RuntimeError("engine library not found")


def _state(state: Any) -> Any:
    return state


def _run_script(tmp_path: Path, how: str) -> subprocess.CompletedProcess[str]:
    """Run a guard-less user script that calls run_isolated at top level, as a file, with -c or
    from stdin; it appends one line to top.log each time its top level runs."""
    (tmp_path / "unirt_iso_helper.py").write_text("def double(x):\n    return 2 * x\n")
    script = textwrap.dedent("""\
        import os
        import unirt
        import unirt.process.isolation
        import unirt_iso_helper
        with open("top.log", "a") as f:
            f.write("top level ran\\n")
        out = unirt.process.isolation.run_isolated(unirt_iso_helper.double, 21, timeout=60)
        print("RESULT", out.status, out.value, out.error)
        """)
    path = tmp_path / "user_script.py"
    path.write_text(script)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if how == "file":
        cmd, stdin = [sys.executable, str(path)], None
    elif how == "-c":
        cmd, stdin = [sys.executable, "-c", script], None
    else:
        cmd, stdin = [sys.executable, "-"], script
    return subprocess.run(cmd, input=stdin, cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)


def _gone(pid: int, wait: float = 5.0) -> bool:
    """Whether ``pid`` has exited (a zombie nobody reaps counts: init in a container may not)."""
    end = time.monotonic() + wait
    while True:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            return True
        except OSError:  # pragma: no cover - no procfs
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
        else:
            if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                return True
        if time.monotonic() > end:
            return False
        time.sleep(0.05)


# ---- the user's __main__ is never re-run ---------------------------------------------------


@pytest.mark.parametrize("how", ["file", "-c", "stdin"])
def test_script_without_main_guard_runs_its_top_level_once(tmp_path: Path, how: str) -> None:
    proc = _run_script(tmp_path, how)
    assert proc.returncode == 0, proc.stderr
    assert "RESULT ok 42 None" in proc.stdout, proc.stdout + proc.stderr
    assert (tmp_path / "top.log").read_text().splitlines() == ["top level ran"]


def test_child_sees_the_parents_sys_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "unirt_iso_only_on_sys_path.py").write_text("def answer():\n    return 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import unirt_iso_only_on_sys_path as mod

    out = run_isolated(mod.answer)
    assert out.ok and out.value == 42


def test_a_function_of_the_users_main_is_a_harness_failure(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def user_fn(_state: Any) -> None:  # pickles as __main__.<name>, like a script's function
        return None

    user_fn.__module__ = "__main__"
    user_fn.__qualname__ = user_fn.__name__ = "unirt_test_user_fn"
    monkeypatch.setattr(sys.modules["__main__"], "unirt_test_user_fn", user_fn, raising=False)
    with Worker() as w:
        out = w.call(user_fn)
        assert out.status == HARNESS
        assert "defined in the script being run (__main__)" in (out.error or "")
        assert w.call(_pid).ok and w.restarts == 0  # the child stays usable


# ---- outcomes ------------------------------------------------------------------------------


def test_crash_names_the_signal_and_the_worker_restarts() -> None:
    with Worker() as w:
        first = w.call(_pid)
        crash = w.call(_segv)
        assert crash.status == CRASHED and crash.signal == "SIGSEGV" and crash.exitcode == -11
        assert crash.describe() == "crashed (signal SIGSEGV)"
        again = w.call(_pid)
        assert again.ok and again.value != first.value and w.restarts == 1
        assert _gone(first.value)


def test_crash_carries_the_tail_of_what_the_child_printed() -> None:
    out = run_isolated(_call_state_fn, _shout_then_segv)
    assert out.status == CRASHED and out.signal == "SIGSEGV"
    assert out.output_tail is not None
    assert "engine: about to fail on node conv_7" in out.output_tail
    assert "[E] fatal: tensor shape mismatch" in out.output_tail
    assert "\x1b" not in out.output_tail


def _call_state_fn(fn: Any) -> Any:
    return fn(None)


def test_timeout_kills_the_child_and_its_grandchildren(tmp_path: Path) -> None:
    pid_file = tmp_path / "pids"
    with Worker() as w:
        out = w.call(_hang_with_grandchild, str(pid_file), timeout=2)
        assert out.status == TIMEOUT and "timed out after 2 s" in (out.error or "")
        child, grandchild = map(int, pid_file.read_text().split())
        assert _gone(child) and _gone(grandchild)
        assert w.call(_pid).ok and w.restarts == 1


def test_error_gives_type_and_first_line() -> None:
    out = run_isolated(_call_state_fn, _raise)
    assert out.status == ERROR and out.error_type == "ValueError"
    assert out.error == "ValueError: no such tensor"
    assert "Traceback" in (out.traceback or "")
    bad = run_isolated(int, "x")
    assert bad.status == ERROR and bad.error_type == "ValueError"


def test_an_init_that_raises_is_an_error_on_every_call() -> None:
    with Worker(_failing_init) as w:
        for _ in range(2):
            out = w.call(_state)
            assert out.status == ERROR and out.error == "RuntimeError: engine library not found"
        assert w.restarts == 0
    with Worker(str.upper, ("ready",)) as w:
        assert w.call(_state).value == "READY"


def test_result_unpicklable_in_the_child_is_an_error() -> None:
    out = run_isolated(_call_state_fn, _make_lock)
    assert out.status == ERROR and "cannot be sent back" in (out.error or "")


def _make_lock(_state: Any) -> Any:
    import threading

    return threading.Lock()


def test_parents_stdout_is_not_polluted(capfd: pytest.CaptureFixture[str]) -> None:
    out = run_isolated(_call_state_fn, _print_everywhere)
    assert out.ok and out.value == "done"
    captured = capfd.readouterr()
    assert "MARKER" not in captured.out and "MARKER" not in captured.err


def test_quiet_false_lets_the_child_print(capfd: pytest.CaptureFixture[str]) -> None:
    assert run_isolated(_call_state_fn, _print_everywhere, quiet=False).ok
    assert "CHILD-FD1-MARKER" in capfd.readouterr().out


# ---- harness failures ----------------------------------------------------------------------


def test_missing_interpreter_is_a_harness_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(isolation, "python_executable", lambda: "/nonexistent/bin/python3")
    out = run_isolated(os.getpid)
    assert out.status == HARNESS and out.error_type == "FileNotFoundError"
    assert "cannot start a child process with /nonexistent/bin/python3" in (out.error or "")
    assert out.describe().startswith("isolation failed: ")


def test_interpreter_that_exits_at_once_is_a_harness_failure(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(isolation, "python_executable", lambda: "/bin/false")
    out = run_isolated(os.getpid)
    assert out.status == HARNESS and out.exitcode == 1
    assert "exited with code 1 before it was ready" in (out.error or "")


def _fake_python(tmp_path: Path, body: str) -> str:
    path = tmp_path / "python3-fake"
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return str(path)


def test_a_child_that_dies_before_the_handshake_says_why(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _fake_python(tmp_path, "echo '\033[1mFatal Python error: init_fs_encoding\033[0m' >&2; "
                                  "exit 3")
    monkeypatch.setattr(isolation, "python_executable", lambda: fake)
    out = run_isolated(os.getpid)
    assert out.status == HARNESS and out.exitcode == 3
    assert out.output_tail == "Fatal Python error: init_fs_encoding"


def test_a_child_that_never_says_ready_is_a_harness_failure(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pid_file = tmp_path / "pid"
    fake = _fake_python(tmp_path, f"echo $$ > {pid_file}; exec sleep 60")
    monkeypatch.setattr(isolation, "python_executable", lambda: fake)
    monkeypatch.setattr(isolation, "HANDSHAKE_TIMEOUT", 1.0)
    start = time.monotonic()
    out = run_isolated(os.getpid, timeout=60)
    assert out.status == HARNESS and "did not report ready within 1 s" in (out.error or "")
    assert time.monotonic() - start < 10
    assert _gone(int(pid_file.read_text()))


def test_no_python_at_all_is_a_clear_harness_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "executable", "/opt/someapp/bin/someapp")
    monkeypatch.setattr(sys, "_base_executable", "", raising=False)
    with pytest.raises(isolation.IsolationError, match="no Python interpreter"):
        isolation.python_executable()
    out = run_isolated(os.getpid)
    assert out.status == HARNESS and out.error_type == "IsolationError"
    assert isinstance(isolation.IsolationError("x"), unirt.UnirtError)


def test_embedded_interpreter_falls_back_to_the_base_python(
        monkeypatch: pytest.MonkeyPatch) -> None:
    base = sys.executable
    monkeypatch.setattr(sys, "executable", "")
    monkeypatch.setattr(sys, "_base_executable", base, raising=False)
    assert isolation.python_executable() == base
    assert run_isolated(os.getpid).ok


def test_init_that_cannot_be_loaded_in_the_child_is_a_harness_failure(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A module the parent has but the child cannot import (not on any path).
    ghost = types.ModuleType("unirt_iso_ghost")
    exec("def init():\n    return 1\n", ghost.__dict__)
    monkeypatch.setitem(sys.modules, "unirt_iso_ghost", ghost)
    with Worker(ghost.init) as w:
        out = w.call(_state)
        assert out.status == HARNESS
        assert "cannot load the worker's init function" in (out.error or "")
        assert "unirt_iso_ghost" in (out.error or "")


# ---- nothing outlives the parent -----------------------------------------------------------


def test_an_unclosed_worker_does_not_hold_up_exit(tmp_path: Path) -> None:
    script = textwrap.dedent("""\
        import os, sys
        from unirt.process.isolation import Worker
        from tests.process.test_isolation import _pid
        w = Worker()
        print(w.call(_pid).value, flush=True)
        """)
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - start < 30
    assert _gone(int(proc.stdout.split()[0]))


def test_child_exits_when_the_parent_dies_mid_call(tmp_path: Path) -> None:
    pid_file = tmp_path / "pids"
    script = textwrap.dedent(f"""\
        from unirt.process.isolation import Worker
        from tests.process.test_isolation import _hang_with_grandchild
        Worker().call(_hang_with_grandchild, {str(pid_file)!r}, timeout=120)
        """)
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        end = time.monotonic() + 30
        while not pid_file.exists() or len(pid_file.read_text().split()) < 2:
            assert time.monotonic() < end, "the child never started"
            time.sleep(0.05)
        child, grandchild = map(int, pid_file.read_text().split())
        parent.kill()  # no finalizers run: the child must notice by itself
        parent.wait(10)
        assert _gone(child, wait=10) and _gone(grandchild, wait=10)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


def test_statuses_are_distinct() -> None:
    assert len({OK, ERROR, CRASHED, TIMEOUT, HARNESS}) == 5


def _env(_state: Any, name: str) -> str | None:
    return os.environ.get(name)


def test_worker_env_is_the_childs_alone_and_survives_a_restart() -> None:
    """What an engine reads once per process (a Vulkan driver) is given to the child only, and
    a child started again after a crash gets it too."""
    assert "UNIRT_TEST_ONLY_IN_CHILD" not in os.environ
    with Worker(env={"UNIRT_TEST_ONLY_IN_CHILD": "lavapipe"}) as w:
        assert w.call(_env, "UNIRT_TEST_ONLY_IN_CHILD").value == "lavapipe"
        assert w.call(_segv).status == CRASHED
        assert w.call(_env, "UNIRT_TEST_ONLY_IN_CHILD").value == "lavapipe"
        assert w.restarts == 1
    assert "UNIRT_TEST_ONLY_IN_CHILD" not in os.environ
