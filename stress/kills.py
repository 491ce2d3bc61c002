"""Kills: SIGKILL during a first load, Ctrl-C (SIGINT) during ``unirt compare`` and during a first
verified load. Bounded (``--trials``), seeded, stops by itself; no network.

``kill9``   per backend (ncnn: pnnx conversion; openvino: compile into its cache), ``--trials``
            times: a child process loads the model on an empty cache and is killed with SIGKILL
            at a seeded random moment within the time a full first load takes (measured first).
            Then: processes left behind (found by a marker in their environment: the
            verification child, pnnx), ``.tmp-*``/``.trash-*`` directories in the cache, unirt
            temp files in the child's private TMPDIR, entries ``cache list --verify`` finds
            invalid; and a second load in a fresh process must succeed with the numbers of ONNX
            Runtime, never loading a half-written entry.
``sigint``  Ctrl-C (SIGINT to the process group, as a terminal sends it) during ``unirt compare``
            and during a first verified ``unirt.load`` (on ncnn, ``--at-pnnx`` more trials aimed
            at the moment pnnx converts): the process must exit by itself within
            ``--exit-timeout`` s, without an internal error, leaving no child process, temp file
            or half-written cache entry; a later load must succeed.

Processes this script starts and finds left behind are killed by it after counting.

Usage (from the repository root)::

    python -m stress.kills                          # 10 kills per backend, 5 Ctrl-Cs per case
    python -m stress.kills --trials 30 --seed 7 --json kills.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from stress import _common as C

RESULT = "STRESS-RESULT "
READY = "STRESS-READY"
MARK = "UNIRT_STRESS_MARK"


# -- the child -------------------------------------------------------------------------------------
def worker(a: argparse.Namespace) -> int:
    import hashlib

    import unirt

    model = unirt.read_model(a.model_path)
    del model
    print(READY, flush=True)
    t0 = time.perf_counter()
    stage = "load"
    try:
        sess = unirt.load(a.model_path, backend=a.backend)
        feeds = C.feeds_for(sess.inputs, a.seed)
        out = sess.run(feeds)
        seconds = time.perf_counter() - t0
        stage = "after load"  # Ctrl-C from here on lands in this script, not in unirt
        with unirt.load(a.model_path, backend="onnxruntime") as ref:
            expected = ref.run(feeds)
        conversions = sess.details.get("conversions") or []
        doc = {"interrupted": False, "seconds": round(seconds, 3),
               "max_abs_vs_onnxruntime": C.max_abs(out, expected),
               "digest": hashlib.sha256(b"".join(v.tobytes() for v in out.values())).hexdigest(),
               "verified_from_cache": getattr(sess.verification, "cached", None),
               "artifact_from_cache": all(c.get("cached") for c in conversions) if conversions
               else None}
        sess.close()
    except KeyboardInterrupt:
        print(RESULT + json.dumps({"interrupted": stage,
                                   "seconds": round(time.perf_counter() - t0, 3)}), flush=True)
        return 130
    print(RESULT + json.dumps(doc), flush=True)
    return 0


# -- process bookkeeping ---------------------------------------------------------------------------
def marked(mark: str) -> list[tuple[int, str]]:
    """Live processes (of this user) whose environment carries ``MARK=mark``."""
    needle = f"{MARK}={mark}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read()
            if needle not in env.split(b"\0"):
                continue
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        if stat.rsplit(")", 1)[1].split()[0] != "Z":
            found.append((int(entry), stat[stat.index("(") + 1:stat.rindex(")")]))
    return found


def reap(mark: str) -> None:
    """Kill what this script started and left behind (by its marker), one pid at a time."""
    for pid, _ in marked(mark):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def wait_gone(mark: str, grace: float) -> list[tuple[int, str]]:
    """Processes still alive ``grace`` seconds from now (returns as soon as none is)."""
    end = time.monotonic() + grace
    while True:
        left = marked(mark)
        if not left or time.monotonic() >= end:
            return left
        time.sleep(0.1)


class Trial:
    """One empty cache, one private TMPDIR and one marker for the processes of a trial."""

    def __init__(self, root: Path, name: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=root))
        self.cache = self.dir / "cache"
        self.tmp = self.dir / "tmp"
        self.tmp.mkdir()
        self.mark = uuid.uuid4().hex
        self.env = C.child_env(UNIRT_CACHE_DIR=str(self.cache), TMPDIR=str(self.tmp),
                               **{MARK: self.mark})

    def start(self, cmd: list[str]) -> subprocess.Popen[str]:
        return subprocess.Popen(cmd, env=self.env, cwd=C.REPO, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)

    def temp_files(self) -> list[str]:
        # By unirt's prefixes only: ONNX Runtime itself writes $TMPDIR/.ses (51 bytes, reused).
        return sorted(p.name for p in self.tmp.iterdir() if p.name.startswith(C.TEMP_PREFIXES))

    def state(self) -> dict[str, Any]:
        check = C.verify_cache(self.cache) if self.cache.exists() else {
            "entries": 0, "invalid": [], "leftovers": []}
        return {"entries": check["entries"], "invalid": check["invalid"],
                "cache_leftovers": check["leftovers"], "temp_files": self.temp_files()}


def _worker_cmd(a: argparse.Namespace, backend: str, model: Path) -> list[str]:
    return [sys.executable, "-m", "stress.kills", "--worker", "--backend", backend,
            "--model-path", str(model), "--seed", str(a.seed)]


def _wait_ready(proc: subprocess.Popen[str], timeout: float) -> bool:
    assert proc.stdout is not None
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        line = proc.stdout.readline()
        if not line:
            return False
        if line.strip() == READY:
            return True
    return False


def _result(out: str) -> dict[str, Any] | None:
    lines = [ln for ln in out.splitlines() if ln.startswith(RESULT)]
    return json.loads(lines[-1][len(RESULT):]) if lines else None


def load_fresh(a: argparse.Namespace, trial: Trial, backend: str, model: Path) -> dict[str, Any]:
    """The second load: a fresh process on what the first one left; must succeed and be right."""
    proc = trial.start(_worker_cmd(a, backend, model))
    try:
        out, err = proc.communicate(timeout=a.load_timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return {"ok": False, "why": "hang"}
    res = _result(out)
    if proc.returncode != 0 or res is None:
        return {"ok": False, "why": f"exit {proc.returncode}: {err.strip()[-400:]}"}
    good = res["max_abs_vs_onnxruntime"] <= a.atol
    return {"ok": good, "why": "" if good else f"wrong numbers: {res['max_abs_vs_onnxruntime']}",
            **res}


def calibrate(a: argparse.Namespace, root: Path, backend: str, model: Path) -> float:
    """Seconds a full first load takes on an empty cache (from READY to the result)."""
    trial = Trial(root, f"calibrate-{backend}")
    proc = trial.start(_worker_cmd(a, backend, model))
    if not _wait_ready(proc, a.load_timeout):
        raise RuntimeError(f"the {backend} worker did not start: {proc.communicate()[1][-500:]}")
    t0 = time.monotonic()
    _out, err = proc.communicate(timeout=a.load_timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"a plain first load on {backend} failed: {err[-500:]}")
    return time.monotonic() - t0


# -- kill -9 ---------------------------------------------------------------------------------------
def kill9(a: argparse.Namespace, root: Path, backend: str, model: Path, rng: random.Random
          ) -> dict[str, Any]:
    window = calibrate(a, root, backend, model)
    trials = []
    for i in range(a.trials):
        trial = Trial(root, f"kill9-{backend}-{i}")
        proc = trial.start(_worker_cmd(a, backend, model))
        if not _wait_ready(proc, a.load_timeout):
            trials.append({"harness": "worker did not start"})
            continue
        delay = rng.uniform(0.0, window)
        time.sleep(delay)
        kids = [c for _, c in C.descendants(proc.pid)]
        finished = proc.poll() is not None
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)  # the user's process dies; nothing else is told
        proc.communicate()
        at_kill = marked(trial.mark)
        left = wait_gone(trial.mark, a.grace)
        state = trial.state()
        reap(trial.mark)
        second = load_fresh(a, trial, backend, model)
        after = trial.state()
        reap(trial.mark)
        trials.append({
            "delay_s": round(delay, 3), "finished_before_kill": finished,
            "children_at_kill": kids,
            "orphans_at_kill": [c for _, c in at_kill],
            "orphans_after_grace": [c for _, c in left], **state,
            "second_load": second, "after_second": after,
        })
    return _kill_row(backend, window, trials, a)


def _kill_row(backend: str, window: float, trials: list[dict[str, Any]], a: argparse.Namespace
              ) -> dict[str, Any]:
    done = [t for t in trials if "harness" not in t]
    row = {
        "backend": backend, "trials": len(trials), "window_s": round(window, 2),
        "killed_with_child": sum(bool(t["children_at_kill"]) for t in done),
        "killed_in_pnnx": sum("pnnx" in t["children_at_kill"] for t in done),
        "orphans_after_grace": sum(len(t["orphans_after_grace"]) for t in done),
        "tmp_dirs_left": sum(len(t["cache_leftovers"]) for t in done),
        "temp_files_left": sum(len(t["temp_files"]) for t in done),
        "invalid_entries": sum(len(t["invalid"]) for t in done),
        "second_load_ok": sum(t["second_load"]["ok"] for t in done),
        "second_load_failed": sum(not t["second_load"]["ok"] for t in done),
        "invalid_after_second": sum(len(t["after_second"]["invalid"]) for t in done),
        "harness": len(trials) - len(done),
        "trial_details": trials,
    }
    row["passed"] = bool(row["second_load_failed"] == 0 and row["invalid_entries"] == 0
                         and row["invalid_after_second"] == 0 and not row["harness"]
                         and (a.allow_leftovers or (row["orphans_after_grace"] == 0)))
    return row


# -- Ctrl-C ----------------------------------------------------------------------------------------
def sigint(a: argparse.Namespace, root: Path, case: str, backend: str, model: Path,
           rng: random.Random) -> dict[str, Any]:
    """``case``: "compare" (unirt compare on every available backend) or "load" (a first
    verified load on ``backend``)."""
    if case == "compare":
        cmd = [sys.executable, "-m", "unirt.cli.main", "compare", str(model),
               "--backends", a.compare_backends]
        # Measure how long a whole compare takes, to aim inside it.
        trial = Trial(root, "calibrate-compare")
        t0 = time.monotonic()
        subprocess.run(cmd, env=trial.env, cwd=C.REPO, capture_output=True, check=False,
                       timeout=a.load_timeout)
        window = time.monotonic() - t0
    else:
        cmd = _worker_cmd(a, backend, model)
        window = calibrate(a, root, backend, model)
    trials = []
    aimed = a.at_pnnx if (case, backend) == ("load", "ncnn") else 0
    for i in range(a.sigints + aimed):
        trial = Trial(root, f"sigint-{case}-{backend}-{i}")
        proc = trial.start(cmd)
        if case == "load" and not _wait_ready(proc, a.load_timeout):
            trials.append({"harness": "worker did not start"})
            continue
        if i >= a.sigints:  # aimed: the moment pnnx is converting
            t0 = time.monotonic()
            while (time.monotonic() - t0 < 3 * window and proc.poll() is None
                   and not any(c == "pnnx" for _, c in marked(trial.mark))):
                time.sleep(0.01)
            delay = time.monotonic() - t0
        else:
            delay = rng.uniform(0.2 * window, 0.9 * window) if case == "compare" else \
                rng.uniform(0.0, window)
            time.sleep(delay)
        kids = [c for _, c in C.descendants(proc.pid)]
        finished = proc.poll() is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        t0 = time.monotonic()
        try:
            out, err = proc.communicate(timeout=a.exit_timeout)
            exit_s = time.monotonic() - t0
            hung = False
        except subprocess.TimeoutExpired:
            hung, exit_s = True, None
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
        left_now = marked(trial.mark)
        left = wait_gone(trial.mark, a.grace)
        state = trial.state()
        reap(trial.mark)
        second = load_fresh(a, trial, backend if case == "load" else "openvino", model)
        reap(trial.mark)
        trials.append({
            "delay_s": round(delay, 3), "finished_before_signal": finished,
            "children_at_signal": kids, "returncode": proc.returncode, "hung": hung,
            "exit_s": None if exit_s is None else round(exit_s, 3),
            "in_load": case == "compare" or (_result(out) or {}).get("interrupted") == "load",
            "internal_error": "Traceback" in err or "Internal error" in err,
            "stderr_tail": err.strip()[-300:], "orphans_at_exit": [c for _, c in left_now],
            "orphans_after_grace": [c for _, c in left], **state, "second_load": second,
        })
    done = [t for t in trials if "harness" not in t]
    row = {
        "case": f"{case} ({a.compare_backends if case == 'compare' else backend})",
        "trials": len(trials), "window_s": round(window, 2),
        "interrupted": sum(t["in_load"] and not t["finished_before_signal"] for t in done),
        "with_child": sum(bool(t["children_at_signal"]) for t in done),
        "hang": sum(t["hung"] for t in done),
        "internal_error": sum(t["internal_error"] for t in done),
        "max_exit_s": max((t["exit_s"] for t in done if t["exit_s"] is not None), default=None),
        "orphans_at_exit": sum(len(t["orphans_at_exit"]) for t in done),
        "orphans_after_grace": sum(len(t["orphans_after_grace"]) for t in done),
        "tmp_dirs_left": sum(len(t["cache_leftovers"]) for t in done),
        "temp_files_left": sum(len(t["temp_files"]) for t in done),
        "invalid_entries": sum(len(t["invalid"]) for t in done),
        "second_load_failed": sum(not t["second_load"]["ok"] for t in done),
        "harness": len(trials) - len(done),
        "trial_details": trials,
    }
    row["passed"] = bool(not row["hang"] and not row["internal_error"]
                         and not row["orphans_after_grace"] and not row["tmp_dirs_left"]
                         and not row["temp_files_left"] and not row["invalid_entries"]
                         and not row["second_load_failed"] and not row["harness"])
    return row


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m stress.kills", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backends", default="ncnn,openvino",
                   help="backends whose first load is killed (default: ncnn,openvino)")
    p.add_argument("--model", default="conv_net", choices=sorted(C.MODELS))
    p.add_argument("--trials", type=int, default=10, help="kill -9 trials per backend")
    p.add_argument("--sigints", type=int, default=5, help="Ctrl-C trials per case")
    p.add_argument("--at-pnnx", type=int, default=2,
                   help="extra Ctrl-C trials on the ncnn load, sent when pnnx is running")
    p.add_argument("--compare-backends", default="onnxruntime,openvino,opencv,ncnn")
    p.add_argument("--cases", default="kill9,sigint-compare,sigint-load")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--atol", type=float, default=1e-4)
    p.add_argument("--grace", type=float, default=3.0,
                   help="seconds left processes get to notice their parent is gone")
    p.add_argument("--exit-timeout", type=float, default=15.0,
                   help="after Ctrl-C, a process still running this long is a hang")
    p.add_argument("--load-timeout", type=float, default=180.0)
    p.add_argument("--allow-leftovers", action="store_true",
                   help="kill -9: do not fail on processes left behind (still reported)")
    p.add_argument("--json", metavar="FILE")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--backend", help=argparse.SUPPRESS)
    p.add_argument("--model-path", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    if a.worker:
        return worker(a)
    cases = {c.strip() for c in a.cases.split(",")}
    backends, skipped = C.available([b.strip() for b in a.backends.split(",") if b.strip()])
    for name, why in skipped.items():
        print(f"skipping {name}: {why}")
    rng = random.Random(a.seed)
    kill_rows: list[dict[str, Any]] = []
    int_rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="stress-kills-") as tmp:
        root = Path(tmp)
        model = C.save_model(a.model, root)
        if "kill9" in cases:
            for b in backends:
                kill_rows.append(kill9(a, root, b, model, rng))
                print(f"kill9 {b}: done in {time.perf_counter() - t0:.0f} s", flush=True)
        if "sigint-compare" in cases:
            int_rows.append(sigint(a, root, "compare", "", model, rng))
            print(f"sigint compare: done in {time.perf_counter() - t0:.0f} s", flush=True)
        if "sigint-load" in cases:
            for b in backends:
                int_rows.append(sigint(a, root, "load", b, model, rng))
                print(f"sigint load {b}: done in {time.perf_counter() - t0:.0f} s", flush=True)
    if kill_rows:
        print(C.table(kill_rows, ["backend", "trials", "window_s", "killed_with_child",
                                  "killed_in_pnnx", "orphans_after_grace", "tmp_dirs_left",
                                  "temp_files_left", "invalid_entries", "second_load_ok",
                                  "second_load_failed", "invalid_after_second", "passed"],
                      f"kill -9 during a first load ({a.model}, empty cache)"))
    if int_rows:
        print(C.table(int_rows, ["case", "trials", "window_s", "interrupted", "with_child",
                                 "hang", "internal_error", "max_exit_s", "orphans_at_exit",
                                 "orphans_after_grace", "tmp_dirs_left", "temp_files_left",
                                 "invalid_entries", "second_load_failed", "passed"],
                      "Ctrl-C (SIGINT to the process group)"))
    for row in (*kill_rows, *int_rows):
        name = row.get("backend") or row.get("case")
        for t in row["trial_details"]:
            bad = t.get("orphans_after_grace") or t.get("cache_leftovers") or t.get(
                "temp_files") or t.get("invalid") or not t.get("second_load", {}).get("ok", True)
            if bad or t.get("internal_error") or t.get("hung"):
                brief = {k: t.get(k) for k in ("delay_s", "children_at_kill",
                                                "children_at_signal", "orphans_after_grace",
                                                "cache_leftovers", "temp_files", "invalid",
                                                "returncode", "stderr_tail") if t.get(k)}
                if not t.get("second_load", {}).get("ok", True):
                    brief["second_load"] = t["second_load"].get("why")
                print(f"  {name}: {brief}")
    failed = [r.get("backend") or r.get("case") for r in (*kill_rows, *int_rows)
              if not r["passed"]]
    print(f"\n{time.perf_counter() - t0:.0f} s; "
          + (f"FAILED: {', '.join(failed)}" if failed else "all passed"))
    C.write_json(a.json, {"args": vars(a), "machine": C.machine(), "skipped": skipped,
                          "kill9": kill_rows, "sigint": int_rows, "failed": failed})
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
