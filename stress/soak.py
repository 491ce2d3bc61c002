"""Soak: many runs and many load/close cycles per backend in one process, watching for growth.

Per backend, in a child process of its own (so one backend's engine threads and memory do not
blur another's figures, and a crash is counted, not fatal):

1. load once (this verifies and fills the cache), a few warm-up runs, then the **start** sample;
2. ``--runs`` calls on a rotating pool of seeded inputs, each output checked bit for bit against
   the first output for that input (samples at half and at the end);
3. ``--cycles`` times: ``unirt.load`` (cached verdict and artifacts), one checked run, ``close``
   (samples at half and at the end).

A sample is: RSS (VmRSS), open fds (/proc/self/fd), Python threads (threading.active_count) and
OS threads (/proc/self/status Threads), live descendant processes, and entries in the system
temp directory (a private ``TMPDIR`` per worker) named like unirt's temp files. Growth is end
minus start; the per-cycle RSS slope over the second half of the cycles tells a leak from
warm-up.

Usage (from the repository root)::

    python -m stress.soak                                 # defaults: a few minutes on 2 cores
    python -m stress.soak --runs 100000 --cycles 5000 --json soak.json
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from stress import _common as C

RESULT = "STRESS-RESULT "
METRICS = ("rss_kib", "fds", "py_threads", "os_threads", "children", "temp_files")


def _sample(label: str) -> dict[str, Any]:
    gc.collect()
    return {"at": label, "t": round(time.perf_counter(), 3), **C.sample()}


def worker(a: argparse.Namespace) -> dict[str, Any]:
    import unirt

    pool = 16
    errors: list[str] = []
    counts = {"runs": 0, "cycles": 0, "wrong": 0, "clean_error": 0, "other_exception": 0}

    def note(exc: BaseException) -> None:
        counts["clean_error" if isinstance(exc, unirt.UnirtError) else "other_exception"] += 1
        if len(errors) < 5:
            errors.append(f"{type(exc).__name__}: {exc}".splitlines()[0][:300])

    first_load = time.perf_counter()
    sess = unirt.load(a.model_path, backend=a.backend)
    first_load = time.perf_counter() - first_load
    feeds = [C.feeds_for(sess.inputs, a.seed * 7919 + i) for i in range(pool)]
    expected = [sess.run(f) for f in feeds]
    for f in feeds * 2:  # warm-up: arenas, thread pools, per-thread requests
        sess.run(f)
    samples = [_sample("start")]
    t0 = time.perf_counter()
    for i in range(a.runs):
        try:
            out = sess.run(feeds[i % pool])
        except Exception as exc:
            note(exc)
        else:
            counts["wrong"] += not C.identical(out, expected[i % pool])
        counts["runs"] += 1
        if i + 1 == a.runs // 2:
            samples.append(_sample("runs/2"))
    run_s = time.perf_counter() - t0
    samples.append(_sample("runs"))
    sess.close()
    t0 = time.perf_counter()
    for i in range(a.cycles):
        try:
            with unirt.load(a.model_path, backend=a.backend) as s:
                out = s.run(feeds[i % pool])
        except Exception as exc:
            note(exc)
        else:
            counts["wrong"] += not C.identical(out, expected[i % pool])
        counts["cycles"] += 1
        if i + 1 == a.cycles // 2:
            samples.append(_sample("cycles/2"))
    cycle_s = time.perf_counter() - t0
    samples.append(_sample("end"))
    return {**counts, "errors": errors, "samples": samples, "first_load_s": round(first_load, 3),
            "run_us": round(1e6 * run_s / max(1, a.runs), 1),
            "cycle_ms": round(1e3 * cycle_s / max(1, a.cycles), 2)}


def _summarise(backend: str, res: dict[str, Any], a: argparse.Namespace) -> dict[str, Any]:
    row: dict[str, Any] = {"backend": backend}
    if res.get("status") != "ok":
        row.update(status=res.get("status"), note=res.get("stderr", "")[-300:], passed=False)
        return row
    s = {x["at"]: x for x in res["samples"]}
    start, end = s["start"], s["end"]
    row.update({k: res[k] for k in ("runs", "cycles", "wrong", "clean_error", "other_exception",
                                    "first_load_s", "run_us", "cycle_ms", "errors")})
    row["status"] = "ok"
    row["rss_start_mib"] = round(start["rss_kib"] / 1024, 1)
    row["rss_end_mib"] = round(end["rss_kib"] / 1024, 1)
    row["rss_growth_mib"] = round((end["rss_kib"] - start["rss_kib"]) / 1024, 2)
    row["rss_runs_mib"] = round((s["runs"]["rss_kib"] - start["rss_kib"]) / 1024, 2)
    half = s.get("cycles/2")
    if half is not None and a.cycles >= 2:
        row["rss_kib_per_cycle_2nd_half"] = round(
            (end["rss_kib"] - half["rss_kib"]) / (a.cycles - a.cycles // 2), 2)
    for k in ("fds", "py_threads", "os_threads", "children", "temp_files"):
        row[k] = f"{start[k]}->{end[k]}"
        row[f"{k}_growth"] = end[k] - start[k]
    row["passed"] = bool(
        not row["wrong"] and not row["clean_error"] and not row["other_exception"]
        and row["fds_growth"] <= 0 and row["os_threads_growth"] <= 0
        and row["children_growth"] <= 0 and row["temp_files_growth"] <= 0
        and row["rss_growth_mib"] <= a.max_rss_growth_mib)
    return row


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m stress.soak", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backends", default=",".join(C.BACKENDS))
    p.add_argument("--model", default="conv_net", choices=sorted(C.MODELS))
    p.add_argument("--runs", type=int, default=10_000)
    p.add_argument("--cycles", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-rss-growth-mib", type=float, default=32.0,
                   help="RSS growth (end - start) above this fails the backend")
    p.add_argument("--timeout", type=float, default=600.0, help="per backend, seconds")
    p.add_argument("--json", metavar="FILE")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--backend", help=argparse.SUPPRESS)
    p.add_argument("--model-path", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    if a.worker:
        doc = worker(a)
        sys.stdout.write(RESULT + json.dumps(doc) + "\n")
        return 0
    backends, skipped = C.available([b.strip() for b in a.backends.split(",") if b.strip()])
    for name, why in skipped.items():
        print(f"skipping {name}: {why}")
    rows, raw = [], {}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="stress-soak-") as tmp:
        model = C.save_model(a.model, tmp)
        for b in backends:
            # A private temp directory: the temp-file count then sees this worker's files only.
            private = Path(tmp) / f"tmp-{b}"
            private.mkdir()
            env = C.child_env(UNIRT_CACHE_DIR=str(Path(tmp) / "cache"), TMPDIR=str(private))
            cmd = [sys.executable, "-m", "stress.soak", "--worker", "--backend", b,
                   "--model-path", str(model), "--runs", str(a.runs), "--cycles", str(a.cycles),
                   "--seed", str(a.seed)]
            proc = subprocess.Popen(cmd, env=env, cwd=C.REPO, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, start_new_session=True)
            try:
                out, err = proc.communicate(timeout=a.timeout)
                lines = [ln for ln in out.splitlines() if ln.startswith(RESULT)]
                if proc.returncode < 0:
                    res = {"status": f"crash ({signal.Signals(-proc.returncode).name})",
                           "stderr": err}
                elif proc.returncode or not lines:
                    res = {"status": f"failed (exit {proc.returncode})", "stderr": err}
                else:
                    res = {"status": "ok", **json.loads(lines[-1][len(RESULT):])}
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
                res = {"status": "hang", "stderr": ""}
            raw[b] = res
            rows.append(_summarise(b, res, a))
            print(f"{b}: {rows[-1].get('status')} in {time.perf_counter() - t0:.0f} s",
                  flush=True)
    print(C.table(rows, ["backend", "runs", "cycles", "wrong", "clean_error",
                         "other_exception", "run_us", "cycle_ms", "rss_start_mib",
                         "rss_end_mib", "rss_growth_mib", "rss_runs_mib",
                         "rss_kib_per_cycle_2nd_half", "fds", "py_threads", "os_threads",
                         "children", "temp_files", "passed"],
                  f"soak: {a.runs} runs + {a.cycles} load/close cycles, {a.model}"))
    for r in rows:
        for e in r.get("errors") or []:
            print(f"  {r['backend']}: {e}")
        if r.get("note"):
            print(f"  {r['backend']}: {r['note']}")
    failed = [r["backend"] for r in rows if not r["passed"]]
    print(f"\n{time.perf_counter() - t0:.0f} s; "
          + (f"FAILED: {', '.join(failed)}" if failed else "all passed"))
    C.write_json(a.json, {"args": vars(a), "machine": C.machine(), "skipped": skipped,
                          "rows": rows, "raw": raw, "failed": failed})
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
