"""Concurrency, fast enough for CI: many threads on one session with distinct inputs, close()
racing calls, two processes filling one empty cache. The bounded, measured versions with larger
counts are in stress/ (python -m stress.concurrency)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import unirt
from tests.fakes import FakePlugin
from unirt.model.info import ModelInfo
from unirt.plugin.backend import Availability, Backend, BackendSession, OpenOptions
from unirt.plugin.registry import Registry
from unirt.store.cache import ArtifactCache
from unirt.testing import models as M

THREADS, RUNS = 8, 25


# -- a fake engine that computes tiny() (y = relu(x) * 2) in numpy -------------------------------
class _NumpySession(BackendSession):
    """Gives the GIL away in the middle of every call, so calls from many threads interleave
    there: a Session that mixed up feeds or results between calls would show it."""

    def __init__(self) -> None:
        super().__init__()
        self.closed = False

    def run(self, feeds: dict[str, np.ndarray], output_names: Sequence[str]) -> Sequence[Any]:
        if self.closed:  # a Session must never call a closed engine
            raise AssertionError("run() on a closed engine session")
        x = feeds["x"]
        r = np.maximum(x, 0)
        time.sleep(0)
        return [r * np.float32(2)]

    def close(self) -> None:
        self.closed = True


class NumpyEngine(Backend):
    name = "fake-numpy"
    device_class = "cpu"
    default_rank = 90

    def _available_impl(self) -> Availability:
        return Availability(True, "0.0-test", devices=("cpu",))

    def _open_impl(self, model: ModelInfo, options: OpenOptions) -> BackendSession:
        return _NumpySession()


@pytest.fixture
def fake_registry() -> Registry:
    reg = Registry(builtins=(), entry_points=False)
    reg.register(FakePlugin(NumpyEngine), "fake-numpy")
    return reg


def _available(name: str) -> None:
    status = {b.name: b for b in unirt.backends()}.get(name)
    if status is None or not status.available:
        pytest.skip(f"{name} is not available: {status.reason if status else 'not registered'}")


def _feeds(sess: unirt.Session, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {t.name: rng.standard_normal(tuple(t.shape)).astype(np.float32)
            for t in sess.inputs}


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return list(a) == list(b) and all(
        a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and a[k].tobytes() == b[k].tobytes()
        for k in a)


def _hammer(sess: unirt.Session) -> None:
    """THREADS x RUNS calls, each on its own seeded input, all compared bit for bit with what
    the same session gives for that input from one thread; inputs must come back unchanged."""
    n = THREADS * RUNS
    feeds = [_feeds(sess, 1000 + i) for i in range(n)]
    copies = [{k: v.copy() for k, v in f.items()} for f in feeds]
    expected = [sess.run(f) for f in feeds]
    got: list[Any] = [None] * n
    barrier = threading.Barrier(THREADS)

    def body(t: int) -> None:
        barrier.wait()
        for i in range(t, n, THREADS):
            try:
                got[i] = sess.run(feeds[i])
            except BaseException as exc:
                got[i] = exc

    threads = [threading.Thread(target=body, args=(t,), daemon=True) for t in range(THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not any(th.is_alive() for th in threads), "a call hung"
    errors = [g for g in got if isinstance(g, BaseException)]
    assert not errors, errors[:3]
    wrong = [i for i in range(n) if not _same(got[i], expected[i])]
    assert not wrong, f"{len(wrong)} of {n} outputs differ from the single-thread ones"
    assert all(_same(f, c) for f, c in zip(feeds, copies)), "an engine wrote into its inputs"
    # Every result is still what it was: no engine buffer was handed to two calls.
    assert all(_same(got[i], expected[i]) for i in range(n))


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_threads_share_a_session(tmp_path: Path, backend: str) -> None:
    _available(backend)
    path = M.save(M.conv_net(), tmp_path / "conv_net.onnx")
    with unirt.load(path, backend=backend) as sess:
        _hammer(sess)


def test_threads_share_a_fake_session(tmp_path: Path, fake_registry: Registry) -> None:
    path = M.save(M.tiny(size=64), tmp_path / "tiny.onnx")
    with unirt.load(path, backend="fake-numpy", verify="never", registry=fake_registry) as sess:
        _hammer(sess)
        x = _feeds(sess, 5)["x"]
        np.testing.assert_array_equal(sess.run({"x": x})["y"], np.maximum(x, 0) * 2)


def _race_close(sess: unirt.Session, delay: float) -> dict[str, int]:
    """Threads call run() in a loop; close() comes (twice, racing) after ``delay`` s. Every call
    either returns the right output or raises SessionClosedError; none starts after close()
    returned and succeeds."""
    feeds = [_feeds(sess, i) for i in range(8)]
    expected = [sess.run(f) for f in feeds]
    closed_at = [float("inf")]
    counts = {"ok": 0, "closed": 0}
    problems: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(THREADS + 1)

    def body(t: int) -> None:
        barrier.wait()
        for i in range(5000):
            start = time.monotonic()
            try:
                out = sess.run(feeds[(t + i) % len(feeds)])
            except unirt.SessionClosedError:
                with lock:
                    counts["closed"] += 1
                return
            except BaseException as exc:
                with lock:
                    problems.append(f"{type(exc).__name__}: {exc}")
                return
            with lock:
                if start > closed_at[0]:
                    problems.append("a call that started after close() returned ran")
                elif not _same(out, expected[(t + i) % len(feeds)]):
                    problems.append("wrong output")
                counts["ok"] += 1

    threads = [threading.Thread(target=body, args=(t,), daemon=True) for t in range(THREADS)]
    for th in threads:
        th.start()
    barrier.wait()
    time.sleep(delay)
    racer = threading.Thread(target=sess.close, daemon=True)
    racer.start()
    sess.close()
    racer.join(30)
    closed_at[0] = time.monotonic()
    for th in threads:
        th.join(30)
    assert not racer.is_alive() and not any(th.is_alive() for th in threads), "hung"
    assert not problems, problems[:3]
    assert counts["closed"] == THREADS  # every thread ended on SessionClosedError
    with pytest.raises(unirt.SessionClosedError):
        sess.run(feeds[0])
    sess.close()  # idempotent
    return counts


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_close_races_runs(tmp_path: Path, backend: str) -> None:
    _available(backend)
    path = M.save(M.conv_net(), tmp_path / "conv_net.onnx")
    for delay in (0.0, 0.002, 0.02):
        _race_close(unirt.load(path, backend=backend), delay)


def test_close_races_runs_on_a_fake(tmp_path: Path, fake_registry: Registry) -> None:
    path = M.save(M.tiny(size=64), tmp_path / "tiny.onnx")
    for delay in (0.0, 0.001, 0.01):
        sess = unirt.load(path, backend="fake-numpy", verify="never", registry=fake_registry)
        impl = sess._impl
        _race_close(sess, delay)
        assert impl.closed  # the engine is freed once the last call in flight returned


_LOAD = """
import hashlib, json, sys, time
import numpy as np
import unirt
start_at, path = float(sys.argv[1]), sys.argv[2]
time.sleep(max(0.0, start_at - time.time()))
sess = unirt.load(path, backend="openvino")
x = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)
y = sess.run({"input": x})["probs"]
print(json.dumps({"digest": hashlib.sha256(y.tobytes()).hexdigest(),
                  "y": y.tolist()}))
"""


@pytest.mark.slow
def test_two_processes_fill_one_empty_cache(tmp_path: Path) -> None:
    _available("openvino")
    path = M.save(M.conv_net(), tmp_path / "conv_net.onnx")
    cache = tmp_path / "shared-cache"
    env = {**os.environ, "UNIRT_CACHE_DIR": str(cache),
           "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    start_at = time.time() + 2.0  # both import first, then load at the same moment
    procs = [subprocess.Popen([sys.executable, "-c", _LOAD, str(start_at), str(path)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=180) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
    docs = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    assert docs[0]["digest"] == docs[1]["digest"]
    x = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)
    np.testing.assert_allclose(np.array(docs[0]["y"], np.float32),
                               M.reference(M.conv_net(), {"input": x})["probs"], atol=1e-5)
    entries = list(ArtifactCache(cache).entries(verify=True))
    assert {e.backend for e in entries} >= {"openvino", "verify"}
    assert all(e.valid for e in entries), [e.key for e in entries if not e.valid]
    leftovers = [p for p in cache.glob("*/.*") if p.is_dir()]
    assert not leftovers, leftovers
