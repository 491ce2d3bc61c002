"""Concurrency stress: one session shared by many threads, close() racing calls, and several
processes filling one empty artifact cache at once. Bounded in count and time; no network.

Three scenarios per backend, each run in its own child process so that a crash (a signal) or a
hang (the scenario's time limit) is counted instead of taking this script down:

``threads``  one session, ``--threads`` threads x ``--runs`` calls, every call on a distinct
             seeded input; every output is compared bit for bit with the single-thread output
             of the same session for the same input (and, for information, with ONNX Runtime).
             Inputs must come back unchanged, and outputs must stay intact after later calls
             (no engine buffer handed out twice).
``close``    ``--close-rounds`` rounds: threads call run() in a loop while close() is called
             (twice, racing) at a seeded random moment. A call that starts after close()
             returned must raise SessionClosedError; one that returns must be right.
``procs``    ``--procs`` processes open the model at the same moment on an empty shared cache
             (UNIRT_CACHE_DIR); all must succeed with the same numbers, and afterwards
             ``unirt cache list --verify --json`` must find every entry valid and no leftovers.

Usage (from the repository root)::

    python -m stress.concurrency                       # every available backend, defaults
    python -m stress.concurrency --backends openvino --threads 8 --runs 50 --json out.json
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from stress import _common as C

RESULT = "STRESS-RESULT "
COUNT_COLUMNS = ["tried", "ok", "clean_error", "other_exception", "crash", "hang", "wrong",
                 "lost"]


def _emit(doc: dict[str, Any]) -> None:
    sys.stdout.write(RESULT + json.dumps(doc, default=str) + "\n")
    sys.stdout.flush()


def _reference(path: str, feeds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    import unirt

    with unirt.load(path, backend="onnxruntime") as ref:
        return [ref.run(f) for f in feeds]


# -- workers (run in a child process) ------------------------------------------------------------
def worker_threads(a: argparse.Namespace) -> dict[str, Any]:
    import unirt

    sess = unirt.load(a.model_path, backend=a.backend)
    n = a.threads * a.runs
    feeds = [C.feeds_for(sess.inputs, a.seed * 1_000_003 + i) for i in range(n)]
    copies = [{k: v.copy() for k, v in f.items()} for f in feeds]
    t0 = time.perf_counter()
    expected = [sess.run(f) for f in feeds]  # the single-thread outputs, same session
    single_s = time.perf_counter() - t0
    ref = _reference(a.model_path, feeds)
    vs_ref = max(C.max_abs(e, r) for e, r in zip(expected, ref))

    counts = dict.fromkeys(COUNT_COLUMNS, 0)
    counts_lock = threading.Lock()
    got: list[Any] = [None] * n
    errors: list[str] = []
    worst = [0.0]
    mutated = [0]
    in_flight: dict[int, float] = {}
    barrier = threading.Barrier(a.threads)

    def body(t: int) -> None:
        order = list(range(t * a.runs, (t + 1) * a.runs))
        random.Random(a.seed + t).shuffle(order)
        barrier.wait()
        for i in order:
            in_flight[t] = time.monotonic()
            try:
                out = sess.run(feeds[i])
            except unirt.UnirtError as exc:
                kind, msg = "clean_error", f"{type(exc).__name__}: {exc}"
            except Exception as exc:
                kind, msg = "other_exception", f"{type(exc).__name__}: {exc}"
            else:
                got[i] = out
                kind, msg = ("ok", "") if C.identical(out, expected[i]) else ("wrong", "")
                if kind == "wrong":
                    d = C.max_abs(out, expected[i])
                    with counts_lock:
                        worst[0] = max(worst[0], d)
            finally:
                in_flight.pop(t, None)
            if not C.identical(feeds[i], copies[i]):
                with counts_lock:
                    mutated[0] += 1
            with counts_lock:
                counts["tried"] += 1
                counts[kind] += 1
                if msg and len(errors) < 5:
                    errors.append(msg.splitlines()[0][:300])

    threads = [threading.Thread(target=body, args=(t,), daemon=True, name=f"stress-{t}")
               for t in range(a.threads)]
    t0 = time.perf_counter()
    for th in threads:
        th.start()
    deadline = time.monotonic() + a.call_timeout * a.runs
    for th in threads:
        th.join(max(0.0, deadline - time.monotonic()))
        # A call in flight for longer than --call-timeout is a hang; stop waiting then.
        stuck = [s for s in list(in_flight.values()) if time.monotonic() - s > a.call_timeout]
        if stuck:
            break
    wall = time.perf_counter() - t0
    with counts_lock:
        hang = sum(th.is_alive() for th in threads)
        counts["hang"] = hang
        counts["tried"] += hang
        counts["lost"] = n - counts["tried"]
    overwritten = sum(1 for i, out in enumerate(got)
                      if out is not None and not C.identical(out, expected[i])) - counts["wrong"]
    doc = {
        **counts, "planned": n, "errors": errors,
        "max_abs_vs_single": worst[0], "max_abs_vs_onnxruntime": vs_ref,
        "inputs_mutated": mutated[0], "outputs_overwritten_later": max(0, overwritten),
        "single_thread_s": round(single_s, 3), "threaded_s": round(wall, 3),
        "precision": str(sess.precision), "backend": sess.backend,
    }
    if not hang:
        sess.close()
    return doc


def worker_close(a: argparse.Namespace) -> dict[str, Any]:
    import unirt

    pool = 32
    sess = unirt.load(a.model_path, backend=a.backend)
    feeds = [C.feeds_for(sess.inputs, a.seed * 7919 + i) for i in range(pool)]
    expected = [sess.run(f) for f in feeds]
    sess.close()
    rng = random.Random(a.seed)
    totals = {"rounds": 0, "tried": 0, "ok": 0, "closed_error": 0, "clean_error": 0,
              "other_exception": 0, "wrong": 0, "ran_after_close": 0, "close_raised": 0,
              "hang": 0, "lost": 0}
    errors: list[str] = []
    for rnd in range(a.close_rounds):
        sess = unirt.load(a.model_path, backend=a.backend)
        lock = threading.Lock()
        closed_at = [float("inf")]  # monotonic time close() returned
        stop = threading.Event()
        barrier = threading.Barrier(a.threads + 1)

        def body(t: int, sess: Any = sess, lock: Any = lock, closed_at: list[float] = closed_at,
                 stop: threading.Event = stop, barrier: threading.Barrier = barrier,
                 rnd: int = rnd) -> None:
            r = random.Random(a.seed * 31 + rnd * 997 + t)
            closed_seen = 0
            barrier.wait()
            for _ in range(a.max_calls):
                if stop.is_set():
                    break
                i = r.randrange(pool)
                start = time.monotonic()
                try:
                    out = sess.run(feeds[i])
                except unirt.SessionClosedError:
                    kind, msg = "closed_error", ""
                except unirt.UnirtError as exc:
                    kind, msg = "clean_error", f"{type(exc).__name__}: {exc}"
                except Exception as exc:
                    kind, msg = "other_exception", f"{type(exc).__name__}: {exc}"
                else:
                    if start > closed_at[0]:
                        kind, msg = "ran_after_close", ""
                    elif not C.identical(out, expected[i]):
                        kind, msg = "wrong", ""
                    else:
                        kind, msg = "ok", ""
                with lock:
                    totals["tried"] += 1
                    totals[kind] += 1
                    if msg and len(errors) < 5:
                        errors.append(msg.splitlines()[0][:300])
                if kind in ("closed_error", "clean_error", "other_exception"):
                    closed_seen += 1
                    if closed_seen >= 3:
                        break

        threads = [threading.Thread(target=body, args=(t,), daemon=True)
                   for t in range(a.threads)]
        for th in threads:
            th.start()
        barrier.wait()
        time.sleep(rng.uniform(0.0, a.close_after_ms / 1000.0))

        def closer(sess: Any = sess, lock: Any = lock) -> None:
            try:
                sess.close()
            except Exception as exc:
                with lock:
                    totals["close_raised"] += 1
                    errors.append(f"close raised {type(exc).__name__}: {exc}"[:300])

        racer = threading.Thread(target=closer, daemon=True)
        racer.start()
        closer()
        racer.join(a.call_timeout)
        closed_at[0] = time.monotonic()
        deadline = time.monotonic() + a.call_timeout
        for th in threads:
            th.join(max(0.0, deadline - time.monotonic()))
        stop.set()
        stuck = sum(th.is_alive() for th in (*threads, racer))
        totals["hang"] += stuck
        totals["rounds"] += 1
        if stuck:
            break
    doc = {**totals, "errors": errors}
    doc["crash"] = 0
    return doc


def worker_load(a: argparse.Namespace) -> dict[str, Any]:
    import unirt

    delay = a.start_at - time.time()
    if delay > 0:
        time.sleep(delay)
    t0 = time.perf_counter()
    try:
        sess = unirt.load(a.model_path, backend=a.backend)
        feeds = C.feeds_for(sess.inputs, a.seed)
        out = sess.run(feeds)
    except Exception as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:500]}
    seconds = time.perf_counter() - t0
    ref = _reference(a.model_path, [feeds])[0]
    digest = hashlib.sha256(b"".join(v.tobytes() for v in out.values())).hexdigest()[:16]
    conversions = sess.details.get("conversions") or []
    doc = {
        "ok": True, "seconds": round(seconds, 3), "digest": digest,
        "max_abs_vs_onnxruntime": C.max_abs(out, ref), "backend": sess.backend,
        "verified_from_cache": getattr(sess.verification, "cached", None),
        "converted": sum(1 for c in conversions if not c.get("cached")),
    }
    sess.close()
    return doc


WORKERS = {"threads": worker_threads, "close": worker_close, "load": worker_load}


# -- the orchestrator ----------------------------------------------------------------------------
def _spawn(kind: str, a: argparse.Namespace, backend: str, model_path: Path,
           env: dict[str, str], **extra: Any) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "stress.concurrency", "--worker", kind, "--backend", backend,
           "--model-path", str(model_path), "--threads", str(a.threads), "--runs", str(a.runs),
           "--close-rounds", str(a.close_rounds), "--seed", str(a.seed),
           "--call-timeout", str(a.call_timeout), "--close-after-ms", str(a.close_after_ms),
           "--max-calls", str(a.max_calls)]
    for k, v in extra.items():
        cmd += [f"--{k.replace('_', '-')}", str(v)]
    return subprocess.Popen(cmd, env=env, cwd=C.REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _collect(proc: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    """The worker's result, or what became of it: crash (signal), hang (killed at timeout)."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        return {"status": "hang", "stderr": err[-800:]}
    lines = [ln for ln in out.splitlines() if ln.startswith(RESULT)]
    if proc.returncode < 0:
        return {"status": "crash", "signal": signal.Signals(-proc.returncode).name,
                "stderr": err[-800:]}
    if proc.returncode != 0 or not lines:
        return {"status": "failed", "returncode": proc.returncode, "stderr": err[-800:]}
    return {"status": "ok", **json.loads(lines[-1][len(RESULT):])}


def scenario_threads(a: argparse.Namespace, backend: str, model: Path, env: dict[str, str]
                     ) -> dict[str, Any]:
    res = _collect(_spawn("threads", a, backend, model, env), a.scenario_timeout)
    planned = a.threads * a.runs
    row: dict[str, Any] = {"backend": backend, "threads": a.threads, "runs": a.runs}
    if res["status"] == "ok":
        row.update({k: res.get(k) for k in (
            *COUNT_COLUMNS, "max_abs_vs_single", "max_abs_vs_onnxruntime", "inputs_mutated",
            "outputs_overwritten_later", "single_thread_s", "threaded_s", "errors")})
    else:
        row.update(dict.fromkeys(COUNT_COLUMNS, 0))
        row.update(tried=planned, lost=planned, note=res.get("stderr", "")[-300:])
        row["crash" if res["status"] == "crash" else "hang" if res["status"] == "hang"
            else "other_exception"] = 1
    row["passed"] = bool(res["status"] == "ok" and row["ok"] == planned
                         and not row.get("inputs_mutated") and not row.get(
                             "outputs_overwritten_later"))
    return row


def scenario_close(a: argparse.Namespace, backend: str, model: Path, env: dict[str, str]
                   ) -> dict[str, Any]:
    res = _collect(_spawn("close", a, backend, model, env), a.scenario_timeout)
    row: dict[str, Any] = {"backend": backend, "rounds": a.close_rounds}
    if res["status"] == "ok":
        for k in ("rounds", "tried", "ok", "closed_error", "clean_error", "other_exception",
                  "wrong", "ran_after_close", "close_raised", "hang", "errors"):
            row[k] = res.get(k)
        row["crash"] = 0
    else:
        row.update(crash=int(res["status"] == "crash"), hang=int(res["status"] == "hang"),
                   note=res.get("stderr", "")[-300:])
    row["passed"] = bool(res["status"] == "ok" and not any(row.get(k) for k in (
        "clean_error", "other_exception", "wrong", "ran_after_close", "close_raised", "hang")))
    return row


def scenario_procs(a: argparse.Namespace, backend: str, model: Path, work: Path
                   ) -> dict[str, Any]:
    cache = Path(tempfile.mkdtemp(prefix=f"cache-{backend}-", dir=work))
    env = C.child_env(UNIRT_CACHE_DIR=str(cache))
    start_at = time.time() + a.start_delay
    procs = [_spawn("load", a, backend, model, env, start_at=start_at)
             for _ in range(a.procs)]
    results = [_collect(p, a.scenario_timeout) for p in procs]
    ok = [r for r in results if r["status"] == "ok" and r.get("ok")]
    digests = {r["digest"] for r in ok}
    check = C.verify_cache(cache)
    row = {
        "backend": backend, "procs": a.procs, "succeeded": len(ok),
        "failed": sum(r["status"] in ("ok", "failed") and not r.get("ok") for r in results),
        "crash": sum(r["status"] == "crash" for r in results),
        "hang": sum(r["status"] == "hang" for r in results),
        "same_output": len(digests) <= 1,
        "max_abs_vs_onnxruntime": max((r["max_abs_vs_onnxruntime"] for r in ok), default=None),
        "converted_by": sum(r.get("converted", 0) for r in ok),
        "verified_from_cache": sum(bool(r.get("verified_from_cache")) for r in ok),
        "entries": check["entries"], "invalid": len(check["invalid"]),
        "leftovers": len(check["leftovers"]), "cache_ok": check["ok"],
        "slowest_s": max((r["seconds"] for r in ok), default=None),
        "errors": [r.get("error") or r.get("stderr", "")[-300:] for r in results
                   if r not in ok][:3],
    }
    row["passed"] = bool(len(ok) == a.procs and row["same_output"] and check["ok"]
                         and (row["max_abs_vs_onnxruntime"] or 0.0) <= a.atol)
    return row


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m stress.concurrency", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backends", default=",".join(C.BACKENDS),
                   help="comma-separated; unavailable ones are skipped (default: all four)")
    p.add_argument("--model", default="conv_net", choices=sorted(C.MODELS))
    p.add_argument("--scenarios", default="threads,close,procs")
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--runs", type=int, default=200, help="calls per thread")
    p.add_argument("--close-rounds", type=int, default=10)
    p.add_argument("--close-after-ms", type=float, default=20.0,
                   help="close() comes at a seeded random moment within this window")
    p.add_argument("--max-calls", type=int, default=2000,
                   help="cap on calls per thread per close round")
    p.add_argument("--procs", type=int, default=4)
    p.add_argument("--start-delay", type=float, default=3.0,
                   help="seconds the procs get to import before they all load at once")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--atol", type=float, default=1e-4,
                   help="largest error against ONNX Runtime a procs run may show")
    p.add_argument("--call-timeout", type=float, default=60.0,
                   help="a single call longer than this is a hang")
    p.add_argument("--scenario-timeout", type=float, default=600.0)
    p.add_argument("--json", metavar="FILE", help="write every figure to FILE")
    p.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    p.add_argument("--backend", help=argparse.SUPPRESS)
    p.add_argument("--model-path", help=argparse.SUPPRESS)
    p.add_argument("--start-at", type=float, default=0.0, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    if a.worker:
        _emit(WORKERS[a.worker](a))
        return 0
    wanted = [b.strip() for b in a.backends.split(",") if b.strip()]
    scenarios = {s.strip() for s in a.scenarios.split(",")}
    backends, skipped = C.available(wanted)
    for name, why in skipped.items():
        print(f"skipping {name}: {why}")
    report: dict[str, Any] = {"args": vars(a), "machine": C.machine(), "skipped": skipped,
                              "threads": [], "close": [], "procs": []}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="stress-concurrency-") as tmp:
        work = Path(tmp)
        model = C.save_model(a.model, work)
        shared = C.child_env(UNIRT_CACHE_DIR=str(work / "cache"))
        for b in backends:
            if "threads" in scenarios:
                report["threads"].append(scenario_threads(a, b, model, shared))
            if "close" in scenarios:
                report["close"].append(scenario_close(a, b, model, shared))
            if "procs" in scenarios:
                report["procs"].append(scenario_procs(a, b, model, work))
    report["seconds"] = round(time.perf_counter() - t0, 1)
    if report["threads"]:
        print(C.table(report["threads"], ["backend", *COUNT_COLUMNS, "max_abs_vs_single",
                                          "max_abs_vs_onnxruntime", "inputs_mutated",
                                          "outputs_overwritten_later", "threaded_s", "passed"],
                      f"threads: {a.threads} x {a.runs} calls, distinct inputs, {a.model}"))
    if report["close"]:
        print(C.table(report["close"], ["backend", "rounds", "tried", "ok", "closed_error",
                                        "clean_error", "other_exception", "crash", "hang",
                                        "wrong", "ran_after_close", "close_raised", "passed"],
                      f"close() racing {a.threads} threads"))
    if report["procs"]:
        print(C.table(report["procs"], ["backend", "procs", "succeeded", "failed", "crash",
                                        "hang", "same_output", "max_abs_vs_onnxruntime",
                                        "converted_by", "entries", "invalid", "leftovers",
                                        "cache_ok", "slowest_s", "passed"],
                      f"{a.procs} processes, one empty cache"))
    for section in ("threads", "close", "procs"):
        for row in report[section]:
            for err in row.get("errors") or []:
                print(f"  {section}/{row['backend']}: {err}")
    failed = [f"{s}/{r['backend']}" for s in ("threads", "close", "procs")
              for r in report[s] if not r["passed"]]
    report["failed"] = failed
    print(f"\n{report['seconds']} s; " + (f"FAILED: {', '.join(failed)}" if failed
                                          else "all passed"))
    C.write_json(a.json, report)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
