"""The op-support probe: re-stamping, output comparison, crash isolation, a small probe, and the
honesty check: on a sample of conformance cases covering every op, no case predicted SUPPORTED
for an installed backend may fail when run through unirt."""

from __future__ import annotations

import json
import os
import signal
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from onnx import TensorProto, helper

from unirt.capability.judge import check_backend
from unirt.capability.table import OpTable, available_tables, find_table
from unirt.capability.verdict import SUPPORTED
from unirt.model.info import read_model
from unirt.plugin.registry import Registry
from unirt.process.isolation import Worker, run_isolated
from unirt.tools.probe_ops import (
    collect_cases,
    compare_outputs,
    lowest_opset,
    probe_ops,
    restamp,
    run_case,
    write_table,
)


def _relu(opset: int, ir: int = 10) -> Any:
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = ir
    return m


def test_restamp_keeps_every_schema() -> None:
    m = _relu(28, 14)
    assert lowest_opset(m) == 14  # Relu's current schema dates from opset 14
    r = restamp(m)
    assert r is not None and r.opset_import[0].version == 14 and r.ir_version <= 7
    assert m.opset_import[0].version == 28  # the original is untouched
    ir_only = restamp(_relu(26, 14), opset=False)
    assert ir_only is not None and ir_only.opset_import[0].version == 26
    assert ir_only.ir_version == 13  # the IR released with opset 26
    assert restamp(_relu(14, 7)) is None


def test_compare_outputs() -> None:
    a = np.array([1.0, 2.0], np.float32)
    assert compare_outputs([a], [a + 1e-6], 1e-3, 1e-5) is None
    assert "max abs error" in compare_outputs([a], [a + 1], 1e-3, 1e-5)
    assert "dtype" in compare_outputs([a], [a.astype(np.float64)], 1e-3, 1e-5)
    assert "shape" in compare_outputs([a], [a[:1]], 1e-3, 1e-5)
    assert compare_outputs([[a, a]], [[a, a]], 0, 0) is None
    assert compare_outputs([np.array(["x"], object)], [np.array(["x"], object)], 0, 0) is None


def _segv(_state: Any) -> None:
    os.kill(os.getpid(), signal.SIGSEGV)


def _echo(state: Any, x: int) -> Any:
    return (state, x)


def _sleep(_state: Any, s: float) -> None:
    time.sleep(s)


def test_worker_survives_crashes_and_hangs() -> None:
    with Worker(str.upper, ("ready",)) as w:
        assert w.call(_echo, 1).value == ("READY", 1)
        crash = w.call(_segv)
        assert crash.status == "crashed" and crash.signal == "SIGSEGV"
        assert w.call(_echo, 2).value == ("READY", 2)
        assert w.call(_sleep, 5, timeout=0.5).status == "timeout"
        assert w.call(_echo, 3).ok and w.restarts == 2
    out = run_isolated(divmod, 7, 2)
    assert out.ok and out.value == (3, 1)
    bad = run_isolated(int, "x")
    assert bad.status == "error" and "ValueError" in bad.error


def test_run_case_in_process() -> None:
    m = _relu(17, 8)
    x = np.array([-1, 2], np.float32)
    data = [([x], [np.maximum(x, 0)])]
    assert run_case("onnxruntime", m.SerializeToString(), data, 1e-3, 1e-7) == ("pass", None)
    wrong = [([x], [x])]
    assert run_case("onnxruntime", m.SerializeToString(), wrong, 1e-3, 1e-7)[0] == "mismatch"


@pytest.fixture(scope="module")
def cases() -> list[Any]:
    return collect_cases()


def test_probe_ops_writes_a_table(tmp_path: Path, cases: list[Any]) -> None:
    table = probe_ops("onnxruntime", names=[c.name for c in cases
                                            if c.name in ("test_relu", "test_maxpool_3d_default",
                                                          "test_resize_downsample_scales_cubic")])
    assert table["summary"]["total"] == 3
    p = write_table(table, tmp_path / "t.json")
    data = json.loads(p.read_text())
    assert {c["n"] for c in data["cases"]} >= {"test_relu"}
    assert OpTable(data).ops["Relu"].status == "supported"


def _sample(cases: list[Any]) -> list[Any]:
    """One case per op (single-node cases preferred), so every op is exercised at least once."""
    by_op: dict[str, list[Any]] = defaultdict(list)
    for c in cases:
        ops = {n.op_type for n in c.model.graph.node if n.op_type != "Constant"} or {"Constant"}
        single = len(ops) == 1 and len(c.model.graph.node) == 1
        for op in ops:
            by_op[op].append((not single, c.name, c))
    chosen: dict[str, Any] = {}
    for op in sorted(by_op):
        _, name, c = min(by_op[op], key=lambda t: (t[0], t[1]))
        chosen[name] = c
    return list(chosen.values())


def _installed_with_tables() -> list[str]:
    reg = Registry()
    return [n for n, b in reg.backends.items()
            if b.available().available and available_tables(n)]


@pytest.mark.slow
@pytest.mark.parametrize("backend_name", _installed_with_tables())
def test_predicted_supported_cases_really_pass(backend_name: str, cases: list[Any]) -> None:
    from unirt.tools.probe_ops import _init_worker, _outcome_status, _run_case_in_worker

    backend = Registry().backend(backend_name)
    table, _ = find_table(backend_name, backend.available().version)
    sample = _sample(cases)
    wrong = []
    with Worker(_init_worker, (backend_name,)) as w:
        for c in sample:
            verdict = check_backend(backend, read_model(c.model), table)
            if verdict.prediction != SUPPORTED:
                continue
            status, error = _outcome_status(w.call(
                _run_case_in_worker, c.model.SerializeToString(), c.data_sets, c.rtol, c.atol,
                timeout=30))
            if status != "pass":
                wrong.append(f"{c.name}: predicted SUPPORTED, got {status}: {error}")
    assert not wrong, "\n".join(wrong)
