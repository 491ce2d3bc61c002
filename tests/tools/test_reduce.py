"""``unirt reduce``: a failing model shrunk to a few nodes that still fail the same way."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from unirt.cli.main import cli
from unirt.errors import UnirtError
from unirt.testing import models as M
from unirt.tools.reduce import FailureKind, reduce


def twenty_nodes() -> onnx.ModelProto:
    """Twenty nodes on two branches, one Softmax (node 11) in the middle of the main one."""
    f = TensorProto.FLOAT
    ops = ["Relu", "Sigmoid", "Neg", "Abs", "Tanh", "Relu", "Neg", "Abs", "Sigmoid", "Relu",
           "Tanh"]
    nodes, prev = [], "x"
    for i, op in enumerate(ops):
        nodes.append(helper.make_node(op, [prev], [f"m{i}"], name=f"main{i}"))
        prev = f"m{i}"
    nodes.append(helper.make_node("Softmax", [prev], ["sm"], axis=-1, name="softmax"))
    nodes += [helper.make_node("Mul", ["sm", "w"], ["a0"], name="after0"),
              helper.make_node("Add", ["a0", "w"], ["a1"], name="after1"),
              helper.make_node("Relu", ["a1"], ["a2"], name="after2")]
    side = "x"
    for i, op in enumerate(["Abs", "Neg", "Sigmoid", "Relu"]):
        nodes.append(helper.make_node(op, [side], [f"s{i}"], name=f"side{i}"))
        side = f"s{i}"
    nodes.append(helper.make_node("Add", ["a2", side], ["y"], name="join"))
    w = numpy_helper.from_array(np.linspace(0.5, 1.5, 16, dtype=np.float32), "w")
    g = helper.make_graph(nodes, "twenty", [helper.make_tensor_value_info("x", f, [1, 16])],
                          [helper.make_tensor_value_info("y", f, [1, 16])], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    assert len(m.graph.node) == 20
    return m


def test_wrong_numbers_reduce_to_the_softmax(tmp_path: Path, fake_engines: None) -> None:
    path = M.save(twenty_nodes(), tmp_path / "twenty.onnx")
    out = tmp_path / "repro" / "softmax.onnx"
    result = reduce(path, "fake-softmax", out)
    assert (result.nodes_before, result.nodes_after) == (20, 1)
    assert result.ops == ["Softmax"] and result.failure.kind == FailureKind.WRONG
    assert result.original.kind == FailureKind.WRONG and result.reference_runs
    assert result.path == out and list(result.inputs) == ["m10"]
    assert result.inputs["m10"] == tmp_path / "repro" / "softmax.m10.npy"
    assert "wrong alone" in result.diagnosis  # an engine bug to file, layerwise confirms it
    # The files on their own: wrong on the fake engine, right on ONNX Runtime.
    import unirt

    repro = onnx.load(str(out))
    assert [n.op_type for n in repro.graph.node] == ["Softmax"]
    feeds = {"m10": np.load(result.inputs["m10"])}
    expected = M.reference(repro, feeds)["sm"]
    with unirt.load(str(out), backend="onnxruntime", verify="never") as ort:
        assert np.allclose(ort.run(feeds)["sm"], expected)
    bad = CliRunner().invoke(cli, ["compare", str(out), "--backends", "fake-softmax",
                                   "--input", f"m10={result.inputs['m10']}"])
    assert bad.exit_code == 2 and "FAIL" in bad.output
    assert result.replay() == (f"unirt compare {out} --backends fake-softmax "
                               f"--input m10={result.inputs['m10']}")


def test_crash_reduces_too(tmp_path: Path, fake_engines: None) -> None:
    path = M.save(twenty_nodes(), tmp_path / "twenty.onnx")
    result = reduce(path, "fake-segfault", tmp_path / "crash.onnx", timeout=30)
    assert result.original.kind == FailureKind.CRASHED
    assert result.original.detail == "crashed (signal SIGSEGV)"
    assert result.failure.kind == FailureKind.CRASHED and result.nodes_after == 1
    assert (tmp_path / "crash.onnx").exists()


def test_a_model_that_does_not_fail_is_a_clear_error(tmp_path: Path) -> None:
    path = M.save(twenty_nodes(), tmp_path / "twenty.onnx")
    with pytest.raises(UnirtError, match="onnxruntime runs twenty.onnx within tolerance of the "
                                         "reference on these inputs: nothing to reduce"):
        reduce(path, "onnxruntime", tmp_path / "r.onnx")
    assert not (tmp_path / "r.onnx").exists()
    with pytest.raises(UnirtError, match="--match '\\(' is not a regular expression"):
        reduce(path, "onnxruntime", match="(")


def test_reduce_cli(tmp_path: Path, fake_engines: None) -> None:
    path = M.save(twenty_nodes(), tmp_path / "twenty.onnx")
    out = tmp_path / "r.onnx"
    res = CliRunner().invoke(cli, ["reduce", str(path), "--backend", "fake-softmax", "-o",
                                   str(out), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)  # progress lines go to stderr
    assert data["nodes_before"] == 20 and data["nodes_after"] == 1
    assert data["failure"]["kind"] == "wrong numbers"
    text = CliRunner().invoke(cli, ["reduce", str(path), "--backend", "fake-softmax", "-o",
                                    str(out)])
    assert text.exit_code == 0, text.output
    assert "reduced 20 -> 1 nodes (Softmax)" in text.stdout
    assert f"replay: unirt compare {out} --backends fake-softmax --input m10=" in text.stdout
    ok = CliRunner().invoke(cli, ["reduce", str(path), "--backend", "onnxruntime"])
    assert ok.exit_code == 1
    assert "\nError: onnxruntime runs twenty.onnx within tolerance" in "\n" + ok.output
    nope = CliRunner().invoke(cli, ["reduce", str(path), "--backend", "nope"])
    assert nope.exit_code == 1 and nope.output.startswith("Error: unknown backend 'nope'")


def test_reduce_reports_progress(tmp_path: Path, fake_engines: None) -> None:
    """A reduction tells its progress: seconds and dozens of engine runs must not pass silently."""
    from unirt import progress

    seen: list[progress.Progress] = []
    path = M.save(twenty_nodes(), tmp_path / "twenty.onnx")
    with progress.subscribe(seen.append):
        reduce(path, "fake-softmax", tmp_path / "r.onnx")
    steps = [e for e in seen if e.step == progress.Step.REDUCE]
    assert steps and {e.status for e in steps} == {"started", "done"}
