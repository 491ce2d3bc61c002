"""unirt lint: each check on a model built with onnx.helper, the CLI, and capabilities' view.

The baked-size tests also run the model on ONNX Runtime, to show the warning is true: the
model runs at the traced size and fails at another, and the legitimate reshapes run at both.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

import unirt
from unirt.cli.main import cli
from unirt.model.info import ModelInfo, read_model
from unirt.plugin.backend import Availability, Backend, BackendSession, OpenOptions
from unirt.plugin.hookspecs import hookimpl
from unirt.plugin.registry import Registry
from unirt.tools.lint import (
    Code,
    Finding,
    LintReport,
    Severity,
    lint,
    parse_checker_error,
    parse_inference_errors,
)

F = TensorProto.FLOAT


def _vi(name: str, shape: Any, dtype: int = F) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, dtype, shape)


def _ints(values: list[int], name: str) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(values, np.int64), name)


def _model(nodes: Sequence[onnx.NodeProto], inputs: Sequence[Any], outputs: Sequence[Any],
           inits: Sequence[onnx.TensorProto] = (), opset: int = 17,
           value_info: Sequence[Any] = ()) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits), value_info=list(value_info))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _lint(model: onnx.ModelProto | str | Path | ModelInfo) -> LintReport:
    return lint(model, backends=())  # engines' version limits have tests of their own


def _problems(report: LintReport) -> tuple[Finding, ...]:
    """Errors and warnings (an output declared without a shape is an info of the checker's)."""
    return report.of(Severity.ERROR, Severity.WARNING)


def _codes(report: LintReport) -> list[str]:
    return [str(f.code) for f in report.findings]


def _ort_run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


# -- attributes against input ranks -------------------------------------------------------------
def _pool3d_on_4d() -> onnx.ModelProto:
    """What PyTorch's MaxPool3d on a 4-D tensor exports: a kernel of three dims, two spatial."""
    return _model([helper.make_node("MaxPool", ["x"], ["y"], name="p1", kernel_shape=[1, 2, 2],
                                    strides=[1, 2, 2])],
                  [_vi("x", [1, 3, 8, 8])], [_vi("y", [1, 3, 4, 4])])


def test_pool_kernel_of_wrong_rank_is_an_error_naming_node_and_op() -> None:
    report = _lint(_pool3d_on_4d())
    assert not report.ok
    kernel = report.errors[0]
    assert kernel.code == Code.POOL_KERNEL_RANK == "pool-kernel-rank"
    assert (kernel.node, kernel.op) == ("p1", "MaxPool")
    assert kernel.message == "MaxPool 'p1': kernel_shape has 3 dims, input has rank 4"
    d = kernel.detail
    assert (d["attribute"], d["length"], d["input"], d["input_rank"], d["expected"]) == \
        ("kernel_shape", 3, "x", 4, 2)
    assert (d["graph"], d["index"]) == ("", 0)
    # strides is wrong too; onnx's own words are kept with the specific finding, not repeated
    assert [f.detail["attribute"] for f in report.errors] == ["kernel_shape", "strides"]
    assert "strides has incorrect size" in report.errors[1].detail["shape_inference"]
    assert Code.SHAPE_INFERENCE not in _codes(report)


def test_conv_attributes_and_weight_rank_against_the_input() -> None:
    w = numpy_helper.from_array(np.ones((2, 3, 3, 3, 3), np.float32), "w")
    m = _model([helper.make_node("Conv", ["x", "w"], ["y"], name="c1", pads=[1, 1, 1, 1, 1, 1])],
               [_vi("x", [1, 3, 8, 8])], [_vi("y", None)], [w])
    report = _lint(m)
    msgs = [f.message for f in report.errors if f.code == Code.CONV_KERNEL_RANK]
    assert "Conv 'c1': pads has 6 values, input has rank 4" in msgs
    assert "Conv 'c1': weight 'w' has rank 5, input has rank 4" in msgs


def test_a_well_formed_pool_and_conv_have_no_findings() -> None:
    w = numpy_helper.from_array(np.ones((2, 3, 3, 3), np.float32), "w")
    m = _model([helper.make_node("Conv", ["x", "w"], ["c"], name="c1", pads=[1, 1, 1, 1]),
                helper.make_node("MaxPool", ["c"], ["y"], name="p1", kernel_shape=[2, 2],
                                 strides=[2, 2])],
               [_vi("x", ["N", 3, 8, 8])], [_vi("y", ["N", 2, 4, 4])], [w])
    assert _lint(m).findings == ()


# -- declared-dynamic dims baked to the traced size ---------------------------------------------
def _baked_reshape() -> onnx.ModelProto:
    """A dynamic_axes export whose Reshape kept the traced T=16 as a Constant."""
    shape = helper.make_node("Constant", [], ["shape"], name="shape_const",
                             value=_ints([1, 16, 4], "v"))
    return _model([helper.make_node("Relu", ["x"], ["r"], name="relu"), shape,
                   helper.make_node("Reshape", ["r", "shape"], ["y"], name="reshape_3")],
                  [_vi("x", [1, "T", 4])], [_vi("y", [1, 16, 4])])


def test_baked_reshape_is_a_warning_naming_input_dim_node_and_value() -> None:
    report = _lint(_baked_reshape())
    assert report.ok and len(report.warnings) == 1
    f = report.warnings[0]
    assert (f.code, f.node, f.op) == (Code.BAKED_DYNAMIC_DIM, "reshape_3", "Reshape")
    assert f.message.startswith("Reshape 'reshape_3': input 'x' dim 1 is declared dynamic ('T')")
    assert "bakes it to 16" in f.message
    d = f.detail
    assert (d["input"], d["dim"], d["dim_param"], d["value"]) == ("x", 1, "T", 16)
    assert (d["constant"], d["shape"], d["position"]) == ("shape", [1, 16, 4], 1)
    assert (d["tensor"], d["tensor_dim"], d["derived"], d["index"]) == ("r", 1, False, 2)
    # and it is true: the model runs at the traced size only
    m = _baked_reshape()
    assert _ort_run(m, {"x": np.ones((1, 16, 4), np.float32)})[0].shape == (1, 16, 4)
    with pytest.raises(Exception, match="(?i)reshape|shape"):
        _ort_run(m, {"x": np.ones((1, 8, 4), np.float32)})


def _reshape_with(shape_nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto],
                  shape: str = "s") -> onnx.ModelProto:
    return _model([*shape_nodes, helper.make_node("Reshape", ["x", shape], ["y"], name="rs")],
                  [_vi("x", [1, "T", 4])], [_vi("y", None)], inits)


_SHAPE_OP = [helper.make_node("Shape", ["x"], ["sh"], name="shape"),
             helper.make_node("Gather", ["sh", "i1"], ["t"], name="gather", axis=0),
             helper.make_node("Concat", ["one", "t", "four"], ["s3"], name="cat", axis=0)]
_SHAPE_OP_INITS = [_ints([1], "i1"), _ints([1], "one"), _ints([4], "four")]


@pytest.mark.parametrize("model", [
    _reshape_with([], [_ints([0, -1, 4], "s")]),
    _reshape_with([], [_ints([1, -1], "s")]),
    _reshape_with(_SHAPE_OP, _SHAPE_OP_INITS, "s3"),
], ids=["0,-1,4", "1,-1", "shape-op"])
def test_legitimate_reshapes_are_not_flagged(model: onnx.ModelProto) -> None:
    assert _problems(_lint(model)) == ()
    for t in (16, 8):  # they run at every size
        _ort_run(model, {"x": np.ones((1, t, 4), np.float32)})


def test_a_size_baked_after_a_strided_conv_is_traced_to_the_input_dim() -> None:
    w = numpy_helper.from_array(np.ones((4, 4, 3), np.float32), "w")
    m = _model([helper.make_node("Conv", ["x", "w"], ["c"], name="conv", strides=[2]),
                helper.make_node("Reshape", ["c", "s"], ["y"], name="flat")],
               [_vi("x", [1, 4, "T"])], [_vi("y", [1, 28])], [w, _ints([1, 28], "s")])
    (f,) = _lint(m).warnings
    assert (f.node, f.detail["input"], f.detail["dim"], f.detail["dim_param"]) == \
        ("flat", "x", 2, "T")
    assert f.detail["derived"] and f.detail["tensor"] == "c" and f.detail["value"] == 7
    assert f.detail["position"] is None  # 7 is not an entry of [1, 28]: only the product is


def test_a_sliced_positional_table_is_named_at_the_slice() -> None:
    pe = numpy_helper.from_array(np.ones((1, 100, 4), np.float32), "pe")
    m = _model([helper.make_node("Slice", ["pe", "st", "en", "ax"], ["pes"], name="pe_slice"),
                helper.make_node("Add", ["x", "pes"], ["y"], name="add")],
               [_vi("x", [1, "T", 4])], [_vi("y", None)],
               [pe, _ints([0], "st"), _ints([16], "en"), _ints([1], "ax")])
    (f,) = _lint(m).warnings
    assert (f.node, f.op, f.detail["value"]) == ("pe_slice", "Slice", 16)
    assert (f.detail["constant"], f.detail["position"]) == ("en", 0)
    assert f.detail["meets"]["node"] == "add" and "meets it at Add 'add'" in f.message


def test_an_unnamed_dynamic_batch_baked_by_a_flatten() -> None:
    m = _model([helper.make_node("Reshape", ["x", "s"], ["y"], name="flatten")],
               [_vi("x", ["?", 8, 1, 1])], [_vi("y", [1, 8])], [_ints([1, 8], "s")])
    (f,) = _lint(m).warnings
    assert "input 'x' dim 0 is declared dynamic (unnamed)" in f.message
    assert (f.detail["dim"], f.detail["dim_param"], f.detail["value"]) == (0, None, 1)


def test_expand_to_a_constant_shape_pins_the_dim() -> None:
    m = _model([helper.make_node("Expand", ["x", "s"], ["y"], name="exp")],
               [_vi("x", [1, "T", 4])], [_vi("y", None)], [_ints([2, 16, 4], "s")])
    (f,) = _lint(m).warnings
    assert (f.node, f.detail["value"], f.detail["position"]) == ("exp", 16, 1)
    ok = _model([helper.make_node("Expand", ["x", "s"], ["y"], name="exp")],
                [_vi("x", [1, "T", 4])], [_vi("y", None)], [_ints([2, 1, 4], "s")])
    assert _problems(_lint(ok)) == ()


# -- unused initializers, the checker, shape inference ------------------------------------------
def test_unused_initializer_is_a_warning() -> None:
    w = numpy_helper.from_array(np.ones((3, 5), np.float32), "stale")
    m = _model([helper.make_node("Relu", ["x"], ["y"], name="relu")],
               [_vi("x", [2])], [_vi("y", [2])], [w])
    (f,) = _lint(m).findings
    assert (f.severity, f.code, f.node) == (Severity.WARNING, Code.UNUSED_INITIALIZER, None)
    assert f.detail == {"initializer": "stale", "graph": "", "dims": [3, 5],
                        "dtype": "float", "bytes": 60}


def test_checker_failures_name_every_bad_node() -> None:
    """The checker stops at its first complaint; lint then checks each node alone."""
    m = _model([helper.make_node("Relu", ["x"], ["r"], name="r1", alpha=1.0),
                helper.make_node("Add", ["r"], ["y"], name="a1")],
               [_vi("x", [2])], [_vi("y", [2])])
    report = _lint(m)
    checker = [f for f in report.errors if f.code == Code.CHECKER]
    assert [(f.node, f.op) for f in checker] == [("r1", "Relu"), ("a1", "Add")]
    assert checker[0].message == \
        "Relu 'r1': ONNX checker: Unrecognized attribute: alpha for operator Relu"
    assert all(f.node != "a1" for f in report.findings if f.code == Code.SHAPE_INFERENCE)


def test_an_undefined_input_is_refused_by_reading_the_model() -> None:
    """A node input nothing produces never reaches lint: reading the model refuses it, naming
    the node (the usual one-line error of every command)."""
    m = _model([helper.make_node("Relu", ["nope"], ["y"], name="r1")], [_vi("x", [2])],
               [_vi("y", [2])])
    with pytest.raises(unirt.errors.ModelError, match="r1"):
        _lint(m)


def test_an_annotation_inference_disagrees_with_is_a_warning_not_an_error() -> None:
    """ONNX Runtime merges a stale value_info leniently and runs (a real-corpus model has one)."""
    m = _model([helper.make_node("Relu", ["x"], ["r"], name="relu"),
                helper.make_node("Neg", ["r"], ["y"], name="neg")],
               [_vi("x", [2, 3])], [_vi("y", [2, 3])], value_info=[_vi("r", [2])])
    report = _lint(m)
    assert report.ok and report.warnings
    assert {f.code for f in report.warnings} == {Code.SHAPE_INFERENCE}
    assert _ort_run(m, {"x": np.ones((2, 3), np.float32)})[0].shape == (2, 3)


def test_an_output_declared_without_shape_is_only_an_info() -> None:
    m = _model([helper.make_node("Relu", ["x"], ["y"], name="relu")], [_vi("x", [2])],
               [_vi("y", None)])
    (f,) = _lint(m).findings
    assert (f.severity, f.code) == (Severity.INFO, Code.CHECKER)
    assert "engines accept this" in f.message


def test_onnx_error_texts_are_parsed_into_node_and_op() -> None:
    nested = ("[ShapeInferenceError] Inference error(s): (op_type:Loop, node name: Loop.0): "
              "[ShapeInferenceError] Inference error(s): (op_type:If, node name: If.0): "
              "[ShapeInferenceError] Inference error(s): (op_type:Cast, node name: Cast.64): "
              "[ShapeInferenceError] Inferred shape and existing shape differ in rank: (1) vs "
              "(0)\n\n\n(op_type:Slice, node name: Slice.30): [TypeInferenceError] Input 0 "
              "expected to have type but instead is null\n")
    assert parse_inference_errors(nested) == [
        ("Cast.64", "Cast", "Inferred shape and existing shape differ in rank: (1) vs (0)"),
        ("Slice.30", "Slice", "Input 0 expected to have type but instead is null")]
    assert parse_inference_errors("(op_type:Relu, node name: ): bad") == [(None, "Relu", "bad")]
    assert parse_inference_errors("[ShapeInferenceError] something global") == \
        [(None, None, "something global")]
    assert parse_checker_error("Unrecognized attribute: alpha for operator Relu\n\n==> Context: "
                               "Bad node spec for node. Name: r1 OpType: Relu") == \
        ("r1", "Relu", "Unrecognized attribute: alpha for operator Relu")
    assert parse_checker_error("Field 'shape' of 'type' is required but missing.") == \
        (None, None, "Field 'shape' of 'type' is required but missing.")


def test_a_pool_inside_a_subgraph_is_found_with_its_graph_path() -> None:
    then = helper.make_graph([helper.make_node("MaxPool", ["x4"], ["a"], name="inner",
                                               kernel_shape=[2, 2, 2])], "then", [],
                             [_vi("a", None)])
    other = helper.make_graph([helper.make_node("Identity", ["x4"], ["b"], name="id")],
                              "else", [], [_vi("b", None)])
    m = _model([helper.make_node("If", ["c"], ["y"], name="if1", then_branch=then,
                                 else_branch=other)],
               [_vi("c", [], TensorProto.BOOL), _vi("x4", [1, 1, 4, 4])], [_vi("y", None)])
    (f,) = _lint(m).errors
    assert (f.node, f.code, f.detail["index"]) == ("inner", Code.POOL_KERNEL_RANK, 0)
    assert "then_branch" in f.detail["graph"]


# -- opset and IR against the installed engines' tables -----------------------------------------
class _Engine(Backend):
    def _available_impl(self) -> Availability:
        return Availability(True, "1.0")

    def _open_impl(self, model: ModelInfo, options: OpenOptions) -> BackendSession:
        raise AssertionError("lint never opens a model")


class _Old(_Engine):
    name = "lintfake-old"


class _New(_Engine):
    name = "lintfake-new"


class _Plugin:
    def __init__(self, *classes: type[Backend]) -> None:
        self.classes = classes

    @hookimpl
    def register_backends(self, register: Any) -> None:
        for cls in self.classes:
            register(cls())


def _table(path: Path, backend: str, refused_opset: int | None,
           op_refused: dict[str, int] | None = None) -> None:
    ir = onnx.IR_VERSION
    cases = [{"n": "test_add", "o": 17, "ir": ir, "s": "pass", "f": [0]}]
    for op, opset in (op_refused or {}).items():
        cases += [{"n": f"test_{op}_old", "o": opset - 1, "ir": ir, "s": "pass", "f": [1]},
                  {"n": f"test_{op}_new", "o": opset, "ir": ir, "s": "load_fail", "r": "opset",
                   "f": [1]}]
    data = {"format": 1, "backend": backend, "version": "1.0", "onnx": "1.0",
            "limits": {"refused_opset": refused_opset, "refused_ir": None},
            "features": [["Add", {}], [next(iter(op_refused or {"Relu": 0})), {}]],
            "summary": {"pass": 1, "total": 1}, "cases": cases}
    (path / f"{backend}-1.0.json").write_text(json.dumps(data))


@pytest.fixture
def engines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Registry:
    _table(tmp_path, "lintfake-old", refused_opset=16)
    _table(tmp_path, "lintfake-new", refused_opset=None)
    monkeypatch.setenv("UNIRT_OPTABLES", str(tmp_path))
    reg = Registry(builtins=(), entry_points=False)
    reg.register(_Plugin(_Old, _New), "lintfake")
    return reg


def _relu(opset: int) -> onnx.ModelProto:
    return _model([helper.make_node("Relu", ["x"], ["y"], name="relu")], [_vi("x", [2])],
                  [_vi("y", [2])], opset=opset)


def test_an_opset_one_engine_refuses_is_a_warning_naming_it(engines: Registry) -> None:
    (f,) = lint(_relu(16), registry=engines).findings
    assert (f.severity, f.code) == (Severity.WARNING, Code.OPSET_UNSUPPORTED)
    assert "lintfake-old 1.0 refuses opset 16 and above" in f.message
    assert f.detail["loads"] == ["lintfake-new"]
    assert f.detail["refused_by"]["lintfake-old"]["max"] == 15
    assert lint(_relu(15), registry=engines).findings == ()


def test_an_opset_no_installed_engine_loads_is_an_error(engines: Registry) -> None:
    (f,) = lint(_relu(16), registry=engines, backends=["lintfake-old"]).findings
    assert f.severity == Severity.ERROR and "no installed engine loads it" in f.message


def test_an_op_refused_at_the_models_opset(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    _table(tmp_path, "lintfake-new", refused_opset=None, op_refused={"Relu": 14})
    monkeypatch.setenv("UNIRT_OPTABLES", str(tmp_path))
    reg = Registry(builtins=(), entry_points=False)
    reg.register(_Plugin(_New), "lintfake")
    (f,) = lint(_relu(14), registry=reg).findings
    assert (f.code, f.node, f.op) == (Code.OPSET_UNSUPPORTED, "relu", "Relu")
    assert f.detail["refused_by"]["lintfake-new"]["max"] == 13


def test_an_opset_newer_than_onnx_knows() -> None:
    report = _lint(_relu(onnx.defs.onnx_opset_version() + 1))
    assert [f.code for f in report.warnings] == [Code.OPSET_UNSUPPORTED]


# -- real models --------------------------------------------------------------------------------
_LIGHT = sorted((Path(onnx.__file__).parent / "backend/test/data/light").glob("*.onnx"))


@pytest.mark.parametrize("path", _LIGHT, ids=[p.stem for p in _LIGHT])
def test_the_onnx_wheels_real_models_lint_without_errors(path: Path) -> None:
    report = lint(path)
    assert report.ok, report
    assert not [f for f in report.findings if f.code not in (Code.UNUSED_INITIALIZER,)]


def test_light_resnet50_carries_an_unused_initializer() -> None:
    report = _lint(_LIGHT[[p.stem for p in _LIGHT].index("light_resnet50")])
    assert _codes(report) == ["unused-initializer"]


def test_lint_takes_a_read_model_and_is_not_imported_by_unirt() -> None:
    import subprocess

    assert _lint(read_model(_pool3d_on_4d())).errors
    code = "import sys, unirt; print('unirt.tools.lint' in sys.modules, 'onnx' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.split() == ["False", "False"]


# -- the command line ---------------------------------------------------------------------------
def _save(model: onnx.ModelProto, tmp_path: Path, name: str) -> str:
    path = tmp_path / name
    onnx.save(model, path)
    return str(path)


def test_cli_exit_status_and_lines(tmp_path: Path) -> None:
    runner = CliRunner()
    bad = runner.invoke(cli, ["lint", _save(_pool3d_on_4d(), tmp_path, "pool.onnx")])
    assert bad.exit_code == 1, bad.output
    lines = bad.output.splitlines()
    assert lines[0] == "pool.onnx: 2 errors, 0 warnings, 0 infos"
    assert lines[1].split()[:2] == ["error", "pool-kernel-rank"]
    assert lines[1].endswith("MaxPool 'p1': kernel_shape has 3 dims, input has rank 4")
    warn = runner.invoke(cli, ["lint", _save(_baked_reshape(), tmp_path, "baked.onnx")])
    assert warn.exit_code == 0, warn.output
    assert "warning" in warn.output and "reshape_3" in warn.output


def test_cli_json_shape(tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["lint", "--json", _save(_baked_reshape(), tmp_path, "b.onnx")])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert set(data) == {"model", "ok", "counts", "findings"}
    assert data["ok"] is True and data["counts"]["warning"] == 1
    (f,) = [f for f in data["findings"] if f["code"] == "baked-dynamic-dim"]
    assert set(f) == {"severity", "code", "node", "op", "message", "detail"}
    assert (f["severity"], f["node"], f["detail"]["value"]) == ("warning", "reshape_3", 16)


@pytest.mark.parametrize("content", [None, b"not onnx"])
def test_cli_unreadable_model_is_one_line_exit_1(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "m.onnx"
    if content is not None:
        path.write_bytes(content)
    res = CliRunner().invoke(cli, ["lint", str(path)])
    assert res.exit_code == 1
    assert res.output.startswith("Error: ") and len(res.output.strip().splitlines()) == 1


# -- capabilities -------------------------------------------------------------------------------
def test_capabilities_shows_lint_errors_instead_of_refusing(tmp_path: Path) -> None:
    report = unirt.capabilities(_pool3d_on_4d(), backends=["onnxruntime"], query=False)
    assert report.lint is not None and not report.lint.ok
    assert [f.code for f in report.lint_findings] == [Code.POOL_KERNEL_RANK] * 2
    data = report.as_dict()["lint"]
    assert data["ok"] is False and data["findings"][0]["node"] == "p1"
    res = CliRunner().invoke(cli, ["capabilities", "--backends", "onnxruntime", "--no-query",
                                   _save(_baked_reshape(), tmp_path, "baked.onnx")])
    assert res.exit_code == 0, res.output
    first = res.output.splitlines()[:2]
    assert first[0].startswith("lint: 0 errors, 1 warning")
    assert "baked-dynamic-dim" in first[1] and "reshape_3" in first[1]
    res = CliRunner().invoke(cli, ["capabilities", "--json", "--backends", "onnxruntime",
                                   "--no-query", _save(_relu(17), tmp_path, "relu.onnx")])
    assert json.loads(res.stdout)["lint"] == {
        "ok": True, "counts": {"error": 0, "warning": 0, "info": 0}, "findings": []}


def test_finding_is_frozen_and_prints_on_one_line() -> None:
    f = Finding(Severity.ERROR, Code.CHECKER, "n", "Relu", "Relu 'n': bad")
    with pytest.raises(AttributeError):
        f.node = "m"  # type: ignore[misc]
    assert str(f) == "error: Relu 'n': bad [checker]"


def test_capabilities_lint_header_counts_what_unirt_lint_counts(tmp_path: Path) -> None:
    """The header is the whole report's summary (infos counted, though not listed): "0 infos"
    there while `unirt lint` gives 1 for the same model would contradict it."""
    from unirt.testing import rewrite_models as rm

    path = _save(rm.pool_rank(output=rm.UNDECLARED), tmp_path, "loose.onnx")
    alone = CliRunner().invoke(cli, ["lint", path])
    summary = alone.stdout.splitlines()[0].split(": ", 1)[1]
    assert summary == "2 errors, 0 warnings, 1 info"  # the checker: output 'y' has no shape
    res = CliRunner().invoke(cli, ["capabilities", "-q", "--backends", "onnxruntime",
                                   "--no-query", path])
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines()[0] == f"lint: {summary} (infos not shown; unirt lint {path} " \
                                         "for all findings)"
    assert not [line for line in res.stdout.splitlines() if line.startswith("info")]
