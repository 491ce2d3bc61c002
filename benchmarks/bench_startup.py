"""Start-up: a fresh process running ``import unirt; unirt.load(m).run(feeds)`` against the same
with raw ONNX Runtime (``import onnxruntime; InferenceSession(m, CPU).run(None, feeds)``), on the
PP-OCRv4 text detector (672 nodes, 4.7 MB, every spatial dim dynamic) from the model corpus.

    python benchmarks/bench_startup.py [--repeats 7] [--model PATH] [--importtime 15]

Each repeat starts both scripts as new interpreters, in alternating order, so that machine noise
hits both alike. The unirt cache is warm (one unirt run first, in a cache directory of its own),
as on every start of a deployed application after its first. Both scripts import numpy and read
the same ``.npz`` of feeds. Two figures per script, medians: the script's own time (first line
to the run's answer, imports included) and the process's wall time (the interpreter's start and
exit too). Python's byte-code caches are written and used (``PYTHONDONTWRITEBYTECODE`` is
dropped for the children), as for any installed package; ``--no-bytecode`` keeps it instead.
``--importtime N`` prints the N slowest imports of one unirt run (``python -X importtime``).

Target (the start-up issue): unirt <= raw + 100 ms.

Figures (2 cores of an AMD EPYC, Python 3.11, ONNX Runtime 1.32, onnx 1.23; 7 repeats; medians;
script time / process wall time, byte-code cached):

    before: raw 233 / 322 ms, unirt 385 / 481 ms: +152 / +159 ms
    after:  raw 167 / 223 ms, unirt 218 / 278 ms: +50 / +54 ms (9 repeats, 2026-12-08)
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]

_RAW = """
import time; _t, _c = time.perf_counter(), time.thread_time()
import sys
import numpy as np
import onnxruntime as ort
feeds = dict(np.load(sys.argv[2]))
s = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
out = s.run(None, feeds)
print(time.perf_counter() - _t, time.thread_time() - _c, "onnxruntime-raw")
"""

_UNIRT = """
import time; _t, _c = time.perf_counter(), time.thread_time()
import sys
import numpy as np
import unirt
feeds = dict(np.load(sys.argv[2]))
s = unirt.load(sys.argv[1])
out = s.run(feeds)
print(time.perf_counter() - _t, time.thread_time() - _c, s.backend, unirt.__file__)
"""


def _env(root: Path, cache: Path, pycache: Path | None) -> dict[str, str]:
    """The children's environment: the unirt of checkout ``root`` (its repository and built-in
    plugins first on the path, whatever is installed), a cache of their own, and byte-code
    cached under ``pycache`` (None: not written, as ``PYTHONDONTWRITEBYTECODE`` says)."""
    env = dict(os.environ)
    env["UNIRT_CACHE_DIR"] = str(cache)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(root), str(root / "plugins"), *filter(None, [env.get("PYTHONPATH")])])
    if pycache is not None:  # written outside the checkouts, used by every child alike
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(pycache)
    else:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _child(code: str, model: Path, feeds: Path, env: dict[str, str],
           flags: tuple[str, ...] = ()) -> tuple[tuple[float, ...], str, str]:
    """((script seconds, script main-thread CPU seconds, process wall seconds, process CPU
    seconds), what ran it, stderr) of one fresh interpreter. CPU times are the figures least
    moved by other work on the machine (the main thread's leaves out ONNX Runtime's worker
    threads, which spin after a run); children run one at a time, so the rusage difference is
    this one's."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    # In the checkout's root: ``python -c`` puts the working directory first on sys.path.
    out = subprocess.run([sys.executable, *flags, "-c", code, str(model), str(feeds)],
                         capture_output=True, text=True, env=env,
                         cwd=env["PYTHONPATH"].split(os.pathsep)[0])
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if out.returncode != 0:
        raise SystemExit(f"child failed ({out.returncode}):\n{out.stderr}")
    fields = out.stdout.split()
    return (float(fields[0]), float(fields[1]), wall, cpu), " ".join(fields[2:]), out.stderr


def _slowest_imports(stderr: str, count: int) -> list[str]:
    """The ``count`` slowest imports of a ``-X importtime`` log that no other import made (what
    the script's imports and unirt's own deferred ones cost), by cumulative time."""
    rows = []
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line[len("import time:"):].split("|")
        if name.startswith("  "):  # imported by another module: counted in its figure
            continue
        rows.append((int(cumulative), name.strip()))
    return [f"{us / 1e3:7.1f} ms  {name}" for us, name in sorted(rows, reverse=True)[:count]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--model", type=Path, default=None,
                    help="an .onnx file (default: the corpus's ppocr_v4_det)")
    ap.add_argument("--shape", default="1,3,64,96",
                    help="the input's shape when --model is given (one float32 input)")
    ap.add_argument("--baseline", type=Path, default=None, metavar="CHECKOUT",
                    help="also measure the unirt of another checkout (before a change), "
                         "interleaved with the others")
    ap.add_argument("--no-bytecode", action="store_true",
                    help="write no byte-code: every module compiled on every start")
    ap.add_argument("--importtime", type=int, default=0, metavar="N",
                    help="print the N slowest imports of one unirt run")
    args = ap.parse_args()

    import numpy as np

    sys.path[:0] = [str(_ROOT), str(_ROOT / "plugins")]
    from unirt.process.machine import cpu_name

    tmp = Path(tempfile.mkdtemp(prefix="unirt-bench-startup-"))
    if args.model is None:
        from unirt.testing.corpus import ENTRIES, fetch, make_feeds

        model = fetch("ppocr_v4_det")
        feeds = make_feeds(ENTRIES["ppocr_v4_det"], model)[0]
    else:
        import onnx

        model = args.model
        graph = onnx.load(str(model), load_external_data=False).graph
        inits = {t.name for t in graph.initializer}
        name = next(v.name for v in graph.input if v.name not in inits)
        shape = tuple(int(d) for d in args.shape.split(","))
        feeds = {name: np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)}
    feed_file = tmp / "feeds.npz"
    np.savez(feed_file, **feeds)
    pycache = None if args.no_bytecode else tmp / "pycache"

    scripts = {"raw": (_RAW, _env(_ROOT, tmp / "cache", pycache)),
               "unirt": (_UNIRT, _env(_ROOT, tmp / "cache", pycache))}
    if args.baseline is not None:
        scripts["baseline"] = (_UNIRT, _env(args.baseline.resolve(), tmp / "cache-baseline",
                                            pycache))
    # Warm: the unirt cache (the reference's crash-guard verdict), byte-code, the page cache.
    for _ in range(2):
        for code, env in scripts.values():
            _child(code, model, feed_file, env)

    times: dict[str, list[tuple[float, ...]]] = {label: [] for label in scripts}
    ran: dict[str, str] = {}
    labels = list(scripts)
    for i in range(args.repeats):
        for label in labels[i % len(labels):] + labels[:i % len(labels)]:  # rotated
            code, env = scripts[label]
            figures, ran[label], _ = _child(code, model, feed_file, env)
            times[label].append(figures)

    def med(label: str, k: int) -> float:
        return statistics.median(t[k] for t in times[label]) * 1e3

    import onnxruntime

    print(f"model: {model.name} ({model.stat().st_size / 1e6:.1f} MB), feeds "
          + ", ".join(f"{k}={'x'.join(map(str, v.shape))}" for k, v in feeds.items()))
    print(f"machine: {cpu_name()} x{os.cpu_count()}; Python {platform.python_version()}; "
          f"onnxruntime {onnxruntime.__version__}; byte-code "
          f"{'not cached' if args.no_bytecode else 'cached'}")
    for label in labels[1:]:
        backend, _, module = ran[label].partition(" ")
        print(f"{label}: {Path(module).parent} ran the model on {backend}")
    print(f"{args.repeats} fresh processes each, interleaved, medians (target: unirt <= raw + "
          "100 ms):")
    for k, what in ((0, "script (imports+load+run)"), (1, "script, main thread's CPU"),
                    (2, "process wall time"), (3, "process CPU time")):
        raw = med("raw", k)
        row = f"  {what:26s} raw {raw:5.0f} ms"
        for label in labels[1:]:
            mine = med(label, k)
            row += f" | {label} {mine:5.0f} ms ({mine - raw:+4.0f})"
        print(row)
    if args.importtime:
        code, env = scripts["unirt"]
        *_, stderr = _child(code, model, feed_file, env, ("-X", "importtime"))
        print("slowest top-level imports of one unirt run (cumulative):")
        for row in _slowest_imports(stderr, args.importtime):
            print("  " + row)


if __name__ == "__main__":
    main()
