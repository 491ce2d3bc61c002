"""What ``unirt serve`` costs over a direct ``Session.run``, what dynamic batching buys, and how
it compares with an existing server running the same model (the anchor).

One run, side by side, with Triton's own HTTP client (``tritonclient[http]``) for every server:

1. Per-request time on a tiny model (x[N,4] @ W), one client: p50/p99 of a direct
   ``Session.run``, of ``unirt serve`` in the binary tensor form and in the JSON form, with
   batching on, and of the anchor in the binary form, interleaved round by round so machine
   noise hits all alike.
2. Throughput (requests/s) and p50/p99 latency with 1, 8 and 32 concurrent clients (threads,
   one connection each, one row per request, binary form), batching off and on, on three
   models: the tiny one; a dense one (4 MatMul+Relu of 1024x1024, weight-bound at batch 1: the
   kind of model batching is for on a CPU); and ResNet-18 (``unirt.testing.models.resnet18``:
   the real topology and its 11.7 M parameters, seeded random weights, 3x224x224 by default).
   Each server serves each model under several names: ``max_batch 1`` (off) and
   ``--max-batch`` (on: for unirt, the batch size and engine calls at once it measured at load),
   and for unirt also ``--max-batch`` with ``measure = false`` ("forced": batching as asked,
   what the measurement is weighed against); the cells of one client count run in turn, the
   order reversed at every other count. What unirt decided per model is printed first.

The anchor is the same ONNX file behind NVIDIA's Triton Inference Server through PyTriton,
each model a raw ``onnxruntime.InferenceSession`` with its defaults (``_pytriton_anchor.py``):
batching off is Triton without a batcher, batching on Triton's dynamic batcher with the same
maximum rows and queue delay, and it runs as many model instances as ``unirt serve`` runs
engine threads (``--workers``). Triton speaks the same v2 protocol, so the client code is the
same. PyTriton lives in an environment of its own (its dependencies are not unirt's):

    python3 -m venv /tmp/pytriton-venv
    /tmp/pytriton-venv/bin/pip install nvidia-pytriton onnxruntime numpy
    python benchmarks/bench_serve.py --pytriton-python /tmp/pytriton-venv/bin/python

Without ``--pytriton-python`` (or where PyTriton cannot start) the anchor is skipped and the
reason printed. ``--quick`` (1 s cells, fewer overhead rounds) takes about 70 s with the
anchor, the defaults (3 s cells) about 2.5 minutes, on 2 cores.

    python benchmarks/bench_serve.py [--quick] [--seconds 3] [--rounds 5] [--size 224]
        [--models tiny,dense,resnet] [--max-batch 16] [--batch-timeout-ms 0] [--workers N]
        [--pytriton-python PATH] [--json]

Targets (issue #16): binary-form overhead p50 <= 1 ms on the tiny model; batching >= 1.5x the
throughput without it at 32 clients on the ResNet-class model. The clients share the machine
with the servers (2 cores here): the figures are the whole system's. Both servers stay up for
the whole run; the one not being timed sits idle.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.http as httpclient

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _serve_common import Target, dense_model, load, pct, request, start_unirt, tiny_model

import unirt
from unirt.testing import models

CLIENTS = (1, 8, 32)
ANCHOR = "PyTriton"
ANCHOR_SCRIPT = Path(__file__).resolve().parent / "_pytriton_anchor.py"


class AnchorSkipped(Exception):
    """The anchor cannot run here; the message says why, and the bench goes on without it."""


def start_pytriton(python: str | None, spec: dict[str, Any], tmp: Path
                   ) -> tuple[subprocess.Popen, str, str]:
    """The anchor server in a child process (its own session, so it and the Triton server it
    starts are stopped together); returns it and its HTTP and metrics host:port."""
    if not python:
        raise AnchorSkipped("no --pytriton-python given (install nvidia-pytriton, onnxruntime "
                            "and numpy in a venv and pass its python)")
    if not Path(python).exists():
        raise AnchorSkipped(f"--pytriton-python {python}: no such file")
    check = subprocess.run([python, "-c", "import pytriton, onnxruntime, numpy"],
                           capture_output=True, text=True)
    if check.returncode:
        last = (check.stderr.strip().splitlines() or ["?"])[-1]
        raise AnchorSkipped(f"{python} cannot import PyTriton's stack: {last}")
    log, err = tmp / "tritonserver.log", tmp / "pytriton.stderr"
    (tmp / "anchor.json").write_text(json.dumps({**spec, "log_file": str(log)}))
    proc = subprocess.Popen([python, str(ANCHOR_SCRIPT), str(tmp / "anchor.json")],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=err.open("w"), text=True, start_new_session=True)
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + 180
    while True:
        try:
            line = lines.get(timeout=max(deadline - time.monotonic(), 0.1))
        except queue.Empty:
            line = None
        if line is None:
            stop_pytriton(proc)
            raise AnchorSkipped("PyTriton did not start: " + _why(err, log))
        if line.startswith('{"http"'):
            urls = json.loads(line)
            return proc, urls["http"], urls["metrics"]


def _why(stderr: Path, log: Path) -> str:
    """The exception lines of the anchor's stderr (a Python backend's traceback ends in the
    one that matters), else the server log's error lines, each cut to 200 characters."""
    text = stderr.read_text() if stderr.exists() else ""
    why = [ln for ln in text.splitlines() if re.match(r"[\w.]+(Error|Exception): ", ln)]
    if not why and log.exists():
        why = [ln for ln in log.read_text().splitlines() if re.match(r"E\d{4} ", ln)]
    return " | ".join(ln[:200] for ln in why[-2:]) or "no ready line in 180 s"


def stop_pytriton(proc: subprocess.Popen) -> None:
    """Close its stdin (it then stops Triton); kill its session if that takes too long."""
    try:
        if proc.stdin:
            proc.stdin.close()
        proc.wait(30)
    except (subprocess.TimeoutExpired, OSError):
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def stop_unirt(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(60)


def rows_per_call(metrics_url: str, server: str) -> dict[str, tuple[float, float]]:
    """Rows served and engine calls so far, per model, from the server's Prometheus page."""
    text = urllib.request.urlopen(f"http://{metrics_url}/metrics").read().decode()
    pattern = (r'unirt_batch_size_(sum|count)\{.*model="([^"]+)"\} (\S+)' if server == "unirt"
               else r'nv_inference_(count|exec_count)\{model="([^"]+)".*\} (\S+)')
    out: dict[str, list[float]] = {}
    for line in text.splitlines():
        m = re.match(pattern, line)
        if m:
            calls = m.group(1) == ("count" if server == "unirt" else "exec_count")
            out.setdefault(m.group(2), [0.0, 0.0])[calls] = float(m.group(3))
    return {k: (v[0], v[1]) for k, v in out.items()}


def overhead(sess: unirt.Session, urls: dict[str, str], tiny: Target, rounds: int,
             calls: int) -> dict[str, dict[str, float]]:
    clients = {server: httpclient.InferenceServerClient(url) for server, url in urls.items()}
    feeds = {tiny.input: tiny.x}
    off = tiny.named("tiny_nobatch")
    kinds: dict[str, Callable[[], Any]] = {
        "direct Session.run": lambda: sess.run(feeds),
        "unirt serve, binary form": lambda: request(clients["unirt"], off, True),
        "unirt serve, JSON form": lambda: request(clients["unirt"], off, False),
        "unirt serve, binary, batching on": lambda: request(clients["unirt"], tiny, True),
    }
    if ANCHOR in clients:
        kinds[f"{ANCHOR}, binary form"] = lambda: request(clients[ANCHOR], off, True)
    times: dict[str, list[float]] = {k: [] for k in kinds}
    for fn in kinds.values():
        for _ in range(50):
            fn()
    for r in range(rounds):
        for k in (list(kinds) if r % 2 == 0 else list(reversed(kinds))):
            fn = kinds[k]
            for _ in range(calls):
                start = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - start)
    base = statistics.median(times["direct Session.run"])
    return {k: {"p50_ms": pct(v, 50), "p99_ms": pct(v, 99),
                "overhead_p50_ms": (statistics.median(v) - base) * 1e3}
            for k, v in times.items()}


#: The variants of a model each server serves: batching off (max_batch 1), on (--max-batch, the
#: batch size and calls at once measured at load), and on as given, unmeasured (unirt only: what
#: batching did before the measurement, and what the measurement buys).
VARIANTS = {"unirt": ("off", "on", "forced"), ANCHOR: ("off", "on")}
SUFFIX = {"off": "_nobatch", "on": "", "forced": "_forced"}


def throughput(urls: dict[str, str], metrics: dict[str, str], target: Target, seconds: float,
               warm: float) -> list[dict[str, Any]]:
    """Every server, in each of its variants, at each client count; rows per engine call of
    every cell from each server's own counters."""
    cells = [(server, v) for server in urls for v in VARIANTS[server]]
    for server, v in cells:
        load(urls[server], _variant(target, v), 8, warm)
    rows = []
    for k, clients in enumerate(CLIENTS):
        row: dict[str, Any] = {"model": target.model, "clients": clients}
        for server, v in (cells if k % 2 == 0 else list(reversed(cells))):
            name = _variant(target, v).model
            before = rows_per_call(metrics[server], server).get(name, (0.0, 0.0))
            cell = load(urls[server], _variant(target, v), clients, seconds)
            after = rows_per_call(metrics[server], server).get(name, (0.0, 0.0))
            cell["rows_per_call"] = (after[0] - before[0]) / max(after[1] - before[1], 1.0)
            row.setdefault(server, {})[v] = cell
        for s in urls:
            off = row[s]["off"]["requests_per_s"]
            row[s]["on_over_off"] = row[s]["on"]["requests_per_s"] / off
            if "forced" in row[s]:
                row[s]["forced_over_off"] = row[s]["forced"]["requests_per_s"] / off
        if ANCHOR in urls:
            row[f"unirt_over_{ANCHOR}"] = {
                v: row["unirt"][v]["requests_per_s"] / row[ANCHOR][v]["requests_per_s"]
                for v in ("off", "on")}
        rows.append(row)
    return rows


def _variant(target: Target, variant: str) -> Target:
    return target if variant == "on" else target.named(target.model + SUFFIX[variant])


def plans(url: str, names: list[str]) -> dict[str, dict[str, Any]]:
    """What ``unirt serve`` decided for each model at load (``parameters.batching``)."""
    out = {}
    for name in names:
        with urllib.request.urlopen(f"http://{url}/v2/models/{name}", timeout=30) as r:
            b = json.load(r)["parameters"]["batching"]
        out[name] = {"enabled": b["enabled"], "max_batch": b["max_batch"], "slots": b["slots"],
                     "reason": b["reason"]}
    return out


def _parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="1 s cells, 2 overhead rounds of 100 calls (about 70 s)")
    ap.add_argument("--seconds", type=float, help="per throughput cell (default 3, quick 1)")
    ap.add_argument("--rounds", type=int, help="overhead rounds (default 5, quick 2)")
    ap.add_argument("--calls", type=int, help="overhead calls per round and kind (200, 100)")
    ap.add_argument("--size", type=int, default=224, help="ResNet-18 input size")
    ap.add_argument("--models", default="tiny,dense,resnet",
                    help="comma-separated, of tiny, dense, resnet")
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--batch-timeout-ms", type=float, default=0.0)
    ap.add_argument("--workers", type=int, default=max(2, os.cpu_count() or 2),
                    help="unirt serve's engine threads, and the anchor's model instances")
    ap.add_argument("--pytriton-python", metavar="PATH",
                    help="python of an environment with nvidia-pytriton and onnxruntime")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    quick = args.quick
    args.seconds = args.seconds or (1.0 if quick else 3.0)
    args.rounds = args.rounds or (2 if quick else 5)
    args.calls = args.calls or (100 if quick else 200)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = set(args.models) - {"tiny", "dense", "resnet"}
    if unknown:
        ap.error(f"--models: unknown {', '.join(sorted(unknown))}")
    return args


def main() -> None:
    args = _parse()
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        tiny_path = tiny_model(d / "tiny.onnx")
        paths = {"tiny": tiny_path}
        targets = {"tiny": Target("tiny", "x", "y", rng.standard_normal((1, 4)).astype(np.float32))}
        if "dense" in args.models:
            paths["dense"] = dense_model(d / "dense.onnx")
            targets["dense"] = Target("dense", "x", "y",
                                      rng.standard_normal((1, 1024)).astype(np.float32))
        if "resnet" in args.models:
            paths["resnet"] = models.save(models.resnet18(batch="N", size=args.size),
                                          d / "resnet18.onnx")
            targets["resnet"] = Target("resnet", "input", "logits", rng.standard_normal(
                (1, 3, args.size, args.size)).astype(np.float32))
        served = [{"name": f"{name}_nobatch", "path": str(path), "max_batch": 1}
                  for name, path in paths.items()]
        served += [{"name": name, "path": str(path), "max_batch": args.max_batch}
                   for name, path in paths.items()]
        forced = [{"name": f"{name}_forced", "path": str(path), "max_batch": args.max_batch,
                   "measure": False} for name, path in paths.items()]
        cfg = d / "serve.toml"
        cfg.write_text(f"[server]\nbatch_timeout_ms = {args.batch_timeout_ms}\n" + "".join(
            f'[[models]]\npath = "{m["path"]}"\nname = "{m["name"]}"\n'
            f'max_batch = {m["max_batch"]}\n' + ("measure = false\n" if "measure" in m else "")
            for m in served + forced))
        report: dict[str, Any] = {
            "machine": f"{os.cpu_count()} cores", "max_batch": args.max_batch,
            "batch_timeout_ms": args.batch_timeout_ms, "workers": args.workers,
            "resnet18_input": args.size, "seconds_per_cell": args.seconds}
        procs: list[Callable[[], None]] = []
        try:
            t0 = time.perf_counter()
            proc, url = start_unirt(cfg, d / "cache", "--workers", str(args.workers))
            procs.append(lambda: stop_unirt(proc))
            report["ready_s"] = {"unirt": time.perf_counter() - t0}
            urls = {"unirt": url}
            metrics = {"unirt": url}
            report["plans"] = plans(url, [m["name"] for m in served + forced])
            try:
                t0 = time.perf_counter()
                anchor, a_url, a_metrics = start_pytriton(args.pytriton_python, {
                    "instances": args.workers, "batch_timeout_ms": args.batch_timeout_ms,
                    "models": served}, d)
                procs.append(lambda: stop_pytriton(anchor))
                report["ready_s"][ANCHOR] = time.perf_counter() - t0
                urls[ANCHOR], metrics[ANCHOR] = a_url, a_metrics
            except AnchorSkipped as e:
                report["anchor_skipped"] = str(e)
                print(f"anchor skipped: {e}", file=sys.stderr)
            sess = unirt.load(tiny_path, backend="onnxruntime")
            report["overhead"] = overhead(sess, urls, targets["tiny"], args.rounds, args.calls)
            report["throughput"] = [
                row for name in args.models
                for row in throughput(urls, metrics, targets[name], args.seconds,
                                      min(1.0, args.seconds))]
        finally:
            for stop in reversed(procs):
                stop()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print(report, args)


def _print(report: dict[str, Any], args: argparse.Namespace) -> None:
    print(f"machine: {report['machine']}; batching on = max_batch {args.max_batch}, "
          f"timeout {args.batch_timeout_ms} ms; {args.workers} engine threads / instances; "
          f"ResNet-18 at {args.size}; {args.seconds:g} s per cell; ready in "
          + ", ".join(f"{k} {v:.1f} s" for k, v in report["ready_s"].items()))
    if "anchor_skipped" in report:
        print(f"anchor skipped: {report['anchor_skipped']}")
    print("\nper-request time, tiny model, one client (ms)")
    print(f"{'':34} {'p50':>8} {'p99':>8} {'+p50 vs direct':>15}")
    for k, v in report["overhead"].items():
        print(f"{k:34} {v['p50_ms']:8.3f} {v['p99_ms']:8.3f} {v['overhead_p50_ms']:15.3f}")
    anchor = "anchor_skipped" not in report
    print("\nwhat unirt serve decided at load (parameters.batching):")
    for name, p in report["plans"].items():
        print(f"  {name:16} {'on' if p['enabled'] else 'off':3} max_batch {p['max_batch']:<3} "
              f"slots {p['slots']}  {p['reason']}")
    print("\nthroughput, binary form, 1 row per request: req/s (p50 ms); rows = rows per engine "
          "call; forced = --max-batch without measuring")
    head = (f"{'model':7} {'clients':>7} {'unirt off':>15} {'unirt on':>15} {'on/off':>6} "
            f"{'rows':>5} {'forced':>15} {'/off':>5} {'rows':>5}")
    if anchor:
        head += (f" {ANCHOR + ' off':>15} {ANCHOR + ' on':>15} {'on/off':>6} {'rows':>5}"
                 f" {'unirt/' + ANCHOR + ' off':>18} {'on':>5}")
    print(head)

    def cell(c: dict[str, float]) -> str:
        return f"{c['requests_per_s']:6.0f} ({c['p50_ms']:6.1f})"

    for r in report["throughput"]:
        u = r["unirt"]
        line = (f"{r['model']:7} {r['clients']:7d} {cell(u['off']):>15} {cell(u['on']):>15} "
                f"{u['on_over_off']:6.2f} {u['on']['rows_per_call']:5.1f} "
                f"{cell(u['forced']):>15} {u['forced_over_off']:5.2f} "
                f"{u['forced']['rows_per_call']:5.1f}")
        if anchor:
            a, ratio = r[ANCHOR], r[f"unirt_over_{ANCHOR}"]
            line += (f" {cell(a['off']):>15} {cell(a['on']):>15} {a['on_over_off']:6.2f} "
                     f"{a['on']['rows_per_call']:5.1f} {ratio['off']:18.2f} {ratio['on']:5.2f}")
        print(line)


if __name__ == "__main__":
    main()
