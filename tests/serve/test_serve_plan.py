"""The serving plan: the batch size and engine calls at once that ``unirt serve`` measures at
load (unirt.serve.plan), and how a served model uses it (unirt.serve.served.decide_batching)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

import unirt
from unirt.serve import plan as P
from unirt.serve.config import ModelSpec, ServeConfig
from unirt.serve.served import decide_batching
from unirt.testing import models as M


def test_batch_sizes_are_powers_of_two_and_the_maximum() -> None:
    assert P.batch_sizes(1) == [1]
    assert P.batch_sizes(8) == [1, 2, 4, 8]
    assert P.batch_sizes(12) == [1, 2, 4, 8, 12]


@pytest.mark.parametrize(("rates", "chosen"), [
    # ResNet-18 on ONNX Runtime here: flat to rising, the largest size is as good as any
    ({1: 121.0, 2: 123.0, 4: 127.0, 8: 129.0, 16: 132.0}, 16),
    ({1: 100.0, 2: 190.0, 4: 380.0, 8: 700.0}, 8),      # cost per call: the largest
    ({1: 100.0, 2: 99.0, 4: 96.0, 8: 80.0}, 4),          # the largest within TOLERANCE
    ({1: 100.0, 2: 60.0, 4: 50.0}, 1),                   # a conv net slower batched: off
    ({1: 100.0}, 1),
    ({}, 1),
])
def test_choose_batch(rates: dict[int, float], chosen: int) -> None:
    assert P.choose_batch(rates) == chosen


@pytest.mark.parametrize(("one", "more", "slots"), [
    (122.0, {2: 93.0}, 1),    # two calls on one session that uses every core: both slower
    (100.0, {2: 104.0}, 1),   # noise, not a gain
    (60.0, {2: 114.0}, 2),    # a session on one thread: two calls overlap
])
def test_choose_slots(one: float, more: dict[int, float], slots: int) -> None:
    assert P.choose_slots(one, more) == slots


def _sleeper(fixed_s: float, per_row_s: float):
    """An engine whose call costs ``fixed_s`` plus ``per_row_s`` a row, sleeping (the GIL free,
    as an engine's native code leaves it)."""
    def run(feeds: dict[str, np.ndarray]) -> None:
        time.sleep(fixed_s + per_row_s * next(iter(feeds.values())).shape[0])
    return run


def _serial(per_row_s: float):
    """An engine whose cost is all per row and whose calls take turns (one that already uses
    every core): neither batching nor a second call at once can gain."""
    import threading

    lock = threading.Lock()

    def run(feeds: dict[str, np.ndarray]) -> None:
        with lock:
            time.sleep(per_row_s * next(iter(feeds.values())).shape[0])
    return run


ROW = {"x": np.zeros((1, 4), np.float32)}


def test_measure_batches_an_engine_whose_cost_is_per_call() -> None:
    plan = P.measure(_sleeper(0.004, 0.0001), ROW, max_batch=8, workers=2)
    assert sorted(plan.rates) == [(1, 1), (2, 1), (4, 1), (8, 1), (8, 2)]
    assert plan.max_batch == 8, plan
    assert plan.rates[8, 1] > 3 * plan.rates[1, 1]
    assert plan.slots == 2, plan  # sleeping calls overlap


def test_measure_on_an_engine_whose_cost_is_per_row() -> None:
    plan = P.measure(_serial(0.004), ROW, max_batch=4, workers=2)
    assert plan.slots == 1, plan  # calls take turns
    # per row the same at every size: the largest is as good (the cap costs nothing unloaded)
    assert plan.max_batch == 4, plan
    assert plan.describe_batching().startswith("measured rows/s 1: ")


def test_measure_does_not_batch_an_engine_slower_batched() -> None:
    def run(feeds: dict[str, np.ndarray]) -> None:
        rows = next(iter(feeds.values())).shape[0]
        time.sleep(0.002 * rows * (1 if rows == 1 else 2))  # twice the time a row batched

    plan = P.measure(run, ROW, max_batch=4, workers=1)
    assert (plan.max_batch, plan.slots) == (1, 1), plan


def test_measure_stops_at_the_first_batch_size_that_fails() -> None:
    def run(feeds: dict[str, np.ndarray]) -> None:
        if next(iter(feeds.values())).shape[0] > 2:
            raise unirt.BackendError("out of memory at this batch")
        time.sleep(0.002)

    plan = P.measure(run, ROW, max_batch=8, workers=1)
    assert sorted(plan.rates) == [(1, 1), (2, 1)] and (plan.max_batch, plan.slots) == (2, 1)


def test_measure_raises_when_one_row_does_not_run() -> None:
    def run(feeds: dict[str, np.ndarray]) -> None:
        raise unirt.BackendError("broken")

    with pytest.raises(unirt.BackendError, match="broken"):
        P.measure(run, ROW, max_batch=4, workers=2)


def test_a_plan_round_trips_through_its_dict() -> None:
    plan = P.Plan(4, 1, {(1, 1): 10.0, (4, 1): 30.0, (1, 2): 12.0, (4, 2): 29.0})
    again = P.Plan.from_dict(plan.as_dict(), cached=True)
    assert (again.max_batch, again.slots, dict(again.rates)) == (4, 1, dict(plan.rates))
    assert again.batch_rates == {1: 10.0, 4: 30.0} and again.cached


# -- decide_batching on real sessions -----------------------------------------------------------
def _dense(tmp_path: Path) -> Path:
    """A MatMul chain whose call overhead dominates at batch 1: batching pays on any CPU."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32) / 8
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
        "dense", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 64])],
        [numpy_helper.from_array(w, "W")])
    path = tmp_path / "dense.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _decide(path: Path, **server: object):
    spec = ModelSpec(path=str(path), name=path.stem, backend="onnxruntime")
    config = ServeConfig(models=(spec,), workers=2, **server)  # type: ignore[arg-type]
    with unirt.load(path, backend="onnxruntime") as sess:
        return decide_batching(sess, spec, config)


def test_a_model_that_gains_from_batching_batches_at_the_measured_size(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(P, "others_share", lambda *a: 0.0)  # a quiet machine: cached
    path = _dense(tmp_path)
    first = _decide(path, max_batch=16)
    assert first.enabled and first.plan is not None and not first.plan.cached
    assert 2 <= first.max_batch <= 16 and first.max_batch in first.plan.batch_rates
    assert first.reason.startswith("batch axis 0; measured rows/s 1: ")
    again = _decide(path, max_batch=16)  # the next start reads the cache
    assert again.plan is not None and again.plan.cached
    assert (again.max_batch, again.slots) == (first.max_batch, first.slots)
    # another max_batch is another question
    other = _decide(path, max_batch=4)
    assert other.plan is not None and not other.plan.cached and other.max_batch <= 4


def test_without_measuring_the_server_takes_what_it_was_given(tmp_path: Path) -> None:
    b = _decide(_dense(tmp_path), max_batch=16, measure=False)
    assert (b.enabled, b.max_batch, b.slots, b.plan) == (True, 16, 2, None)
    assert b.as_dict()["measured"] is None


def test_a_model_without_a_batch_axis_is_measured_for_calls_at_once(tmp_path: Path) -> None:
    path = M.save(M.add(), tmp_path / "add.onnx")  # fixed shapes
    b = _decide(path, max_batch=8)
    assert not b.enabled and "fixed first dimension" in b.reason
    assert b.plan is not None and sorted(b.plan.rates) == [(1, 1), (1, 2)] and b.slots in (1, 2)


def test_a_model_that_fails_on_generated_inputs_is_served_unmeasured(tmp_path: Path,
                                                                     caplog) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    # x[N,K] -> Reshape [-1, 4]: fails on the generated [1, 1] (N*K not a multiple of 4)
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "s"], ["y"])], "fragile",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "K"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])],
        [numpy_helper.from_array(np.array([-1, 4], dtype=np.int64), "s")])
    path = tmp_path / "fragile.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    with caplog.at_level("INFO", logger="unirt"):
        b = _decide(path, max_batch=8)
    assert not b.enabled and b.plan is None and b.slots == 2
    assert "not measured" in caplog.text


def test_a_slow_model_is_timed_within_the_budget() -> None:
    # one row: 0.05 s a call, linear; a budget of 1.2 s leaves out the large batches, and times
    # calls at once at batch 1, rather than spending many seconds at load
    start = time.perf_counter()
    plan = P.measure(_serial(0.05), ROW, max_batch=16, workers=2, budget_s=1.2)
    assert time.perf_counter() - start < 3.5
    assert not any(b >= 4 for b, _ in plan.rates), plan
    assert (1, 2) in plan.rates and plan.slots == 1


def test_a_plan_measured_on_a_busy_machine_is_served_but_not_cached(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    monkeypatch.setattr(P, "others_share", lambda *a: 0.8)
    path = _dense(tmp_path)
    with caplog.at_level("WARNING", logger="unirt"):
        first = _decide(path, max_batch=4)
    assert first.plan is not None and first.plan.busy and first.enabled
    assert "not cached" in caplog.text and "80%" in caplog.text
    assert first.as_dict()["measured"]["others_cpu_share"] == 0.8
    monkeypatch.setattr(P, "others_share", lambda *a: 0.0)
    again = _decide(path, max_batch=4)
    assert again.plan is not None and not again.plan.cached  # measured again


def test_the_share_of_other_processes_is_read_from_the_machine() -> None:
    import subprocess
    import sys

    if P._machine_busy_s() is None:
        pytest.skip("no /proc/stat on this system")
    before, own, start = P._machine_busy_s(), time.process_time(), time.perf_counter()
    time.sleep(0.3)  # this process idle
    quiet = P.others_share(before, own, start)
    assert quiet is not None and 0.0 <= quiet <= 1.0
    spin = "import time\nt = time.time() + 1.0\nwhile time.time() < t: pass"
    before, own, start = P._machine_busy_s(), time.process_time(), time.perf_counter()
    subprocess.run([sys.executable, "-c", spin], check=True)
    busy = P.others_share(before, own, start)
    assert busy is not None and busy > 0.3 / (os.cpu_count() or 1), busy
    assert P.others_share(None, own, start) is None
