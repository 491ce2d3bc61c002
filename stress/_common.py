"""What the stress scripts share: models, seeded inputs, process probes, tables and JSON.

Everything here reads /proc (Linux only) and never touches the network.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

BACKENDS = ("onnxruntime", "openvino", "opencv", "ncnn")
REPO = Path(__file__).resolve().parent.parent

#: Small models from unirt.testing.models, built in code (no files shipped, no network).
MODELS: dict[str, Callable[[], Any]] = {
    "conv_net": lambda: _models().conv_net(),
    "resnet_like": lambda: _models().resnet_like(size=32, width=16, blocks=2),
    "mobilenet_like": lambda: _models().mobilenet_like(size=32),
}

#: Name prefixes of the temporary files and directories unirt and its plugins create in the
#: system temp directory (grep for mkdtemp/mkstemp/TemporaryDirectory in unirt/ and plugins/).
TEMP_PREFIXES = ("unirt-", "tmp-unirt")


def _models() -> Any:
    from unirt.testing import models

    return models


def save_model(name: str, directory: str | os.PathLike[str]) -> Path:
    """Build the named model and write it to ``directory/<name>.onnx``."""
    return _models().save(MODELS[name](), Path(directory) / f"{name}.onnx")


def available(wanted: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """(the wanted backends that are available here, {unavailable one: why})."""
    import unirt

    status = {b.name: b for b in unirt.backends()}
    ok, skipped = [], {}
    for name in wanted:
        st = status.get(name)
        if st is None:
            skipped[name] = "not registered"
        elif not st.available:
            skipped[name] = st.reason or "unavailable"
        else:
            ok.append(name)
    return ok, skipped


def feeds_for(inputs: Sequence[Any], seed: int) -> dict[str, np.ndarray]:
    """Seeded random feeds for a model's inputs (dynamic dims at 1): distinct per seed."""
    rng = np.random.default_rng(seed)
    out = {}
    for t in inputs:
        shape = tuple(d if isinstance(d, int) else 1 for d in (t.shape or ()))
        dtype = np.dtype(t.dtype) if t.dtype is not None else np.dtype(np.float32)
        if dtype.kind == "f":
            out[t.name] = rng.standard_normal(shape).astype(dtype)
        else:
            out[t.name] = rng.integers(0, 10, shape).astype(dtype)
    return out


def max_abs(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> float:
    worst = 0.0
    for name, x in a.items():
        y = b[name]
        if x.shape != y.shape:
            return float("inf")
        if x.size:
            worst = max(worst, float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64)))))
    return worst


def identical(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> bool:
    """Bit-exact equality: same names, dtypes, shapes and bytes (NaNs compare by bits)."""
    if list(a) != list(b):
        return False
    for name, x in a.items():
        y = b[name]
        if x.dtype != y.dtype or x.shape != y.shape or x.tobytes() != y.tobytes():
            return False
    return True


# -- process probes ----------------------------------------------------------------------------
def _status_field(field: str, pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


def descendants(pid: int | None = None) -> list[tuple[int, str]]:
    """Every live descendant of ``pid`` (default: this process) as (pid, command name)."""
    root = os.getpid() if pid is None else pid
    parents: dict[int, list[tuple[int, str]]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] == "Z":
            continue
        parents.setdefault(int(fields[1]), []).append((int(entry), comm))
    out, todo = [], [root]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child[0])
    return out


def processes_named(names: Iterable[str]) -> list[tuple[int, str]]:
    """Live processes whose command name is one of ``names`` (pnnx, a stray worker...)."""
    wanted = set(names)
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm") as f:
                comm = f.read().strip()
            with open(f"/proc/{entry}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if comm in wanted and state != "Z":
            found.append((int(entry), comm))
    return found


def unirt_temp_files(prefixes: Sequence[str] = TEMP_PREFIXES) -> list[str]:
    """Entries in the system temp directory that unirt or a plugin made (by name prefix)."""
    tmp = tempfile.gettempdir()
    try:
        return sorted(n for n in os.listdir(tmp) if n.startswith(tuple(prefixes)))
    except OSError:
        return []


def sample() -> dict[str, int]:
    """This process now: RSS (KiB), open fds, Python and OS threads, live children, temp files."""
    return {
        "rss_kib": _status_field("VmRSS"),
        "fds": len(os.listdir("/proc/self/fd")),
        "py_threads": threading.active_count(),
        "os_threads": _status_field("Threads"),
        "children": len(descendants()),
        "temp_files": len(unirt_temp_files()),
    }


def cache_leftovers(root: str | os.PathLike[str]) -> list[str]:
    """Work-in-progress and trash directories left in a cache (``<backend>/.tmp-*``,
    ``.trash-*``)."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(str(p.relative_to(root)) for p in root.glob("*/.*")
                  if p.is_dir() and p.name.startswith((".tmp-", ".trash-")))


# -- children ------------------------------------------------------------------------------------
def child_env(**extra: str) -> dict[str, str]:
    """The environment for a child Python that imports this checkout's unirt and plugins."""
    env = dict(os.environ)
    path = [str(REPO), str(REPO / "plugins")]
    if env.get("PYTHONPATH"):
        path.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(path)
    env.update(extra)
    return env


def unirt_cli(args: Sequence[str], env: Mapping[str, str], timeout: float = 120.0
              ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "unirt.cli.main", *args], env=dict(env),
                          capture_output=True, text=True, timeout=timeout, check=False)


def verify_cache(root: str | os.PathLike[str]) -> dict[str, Any]:
    """``unirt cache list --verify --json`` on ``root``: entries, invalid ones, leftovers."""
    proc = unirt_cli(["cache", "list", "--verify", "--json"],
                     child_env(UNIRT_CACHE_DIR=str(root)))
    try:
        entries = json.loads(proc.stdout) if proc.returncode == 0 else None
    except ValueError:
        entries = None
    if entries is None:
        return {"ok": False, "error": (proc.stderr or proc.stdout).strip()[-500:],
                "entries": 0, "invalid": [], "leftovers": cache_leftovers(root)}
    invalid = [f"{e['backend']}/{e['key']}" for e in entries if not e.get("valid")]
    leftovers = cache_leftovers(root)
    return {"ok": not invalid and not leftovers, "entries": len(entries), "invalid": invalid,
            "leftovers": leftovers,
            "per_backend": {b: sum(e["backend"] == b for e in entries)
                            for b in sorted({e["backend"] for e in entries})}}


# -- output --------------------------------------------------------------------------------------
def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], title: str = "") -> str:
    """A plain-text table (also valid Markdown)."""
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3g}"
        return "" if v is None else str(v)

    body = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(b[i]) for b in body]) for i, c in enumerate(columns)]
    lines = [f"\n{title}"] if title else []
    lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths)) + " |")
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    lines += ["| " + " | ".join(v.ljust(w) for v, w in zip(b, widths)) + " |" for b in body]
    return "\n".join(lines)


def write_json(path: str | os.PathLike[str] | None, doc: Any) -> None:
    if path:
        Path(path).write_text(json.dumps(doc, indent=1, default=str) + "\n")


def machine() -> dict[str, Any]:
    import platform

    import unirt

    return {"cpus": os.cpu_count(), "python": platform.python_version(),
            "engines": {b.name: b.version for b in unirt.backends() if b.available}}
