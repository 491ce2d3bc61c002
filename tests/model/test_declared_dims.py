"""Dims declared the way exporters write them: Paddle's ``dim_value: -1``, ``dim_param`` strings
``"?"``, ``"-1"``, ``"None"``, ``""``. Engines run such models at any size, so unirt must read them
as dynamic everywhere (shapes shown, feed checks, generated inputs, probe shapes, ``--shape``),
and a bad shape from the user must be an InputError naming the input, never a numpy error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper

import unirt
from unirt.cli.main import cli
from unirt.errors import InputError
from unirt.evidence.inputs import make_inputs, resolve_shape, shape_sets
from unirt.model.info import read_model
from unirt.tensor import TensorInfo, is_placeholder_param, is_static, normalize_dim
from unirt.testing import models as M

F32 = np.dtype("float32")


@pytest.fixture
def paddle(tmp_path: Path) -> Path:
    return M.save(M.paddle_style(), tmp_path / "paddle.onnx")


# -- what counts as a placeholder ---------------------------------------------------------------
@pytest.mark.parametrize("param", ["", " ", "-1", "?", "None", "none", "null", "NULL", "nil",
                                   "NaN", "*", "_", "0", "42", "-", "??"])
def test_placeholder_params(param: str) -> None:
    assert is_placeholder_param(param)
    assert normalize_dim(param) is None


@pytest.mark.parametrize("param", ["batch", "N", "height", "unk__12", "seq_len", "s0",
                                   "2*batch", "batch_size", "Nonesuch"])
def test_real_symbolic_names_are_kept(param: str) -> None:
    assert not is_placeholder_param(param)
    assert normalize_dim(param) == param


@pytest.mark.parametrize("dim, want", [(-1, None), (-7, None), (0, 0), (3, 3), (None, None),
                                       (True, None)])
def test_normalize_int_dims(dim: object, want: object) -> None:
    assert normalize_dim(dim) == want  # type: ignore[arg-type]
    assert is_static(dim) == (want is not None)  # type: ignore[arg-type]


# -- reading the model ---------------------------------------------------------------------------
def test_paddle_model_reads_as_dynamic() -> None:
    info = read_model(M.paddle_style())
    x, y = info.inputs[0], info.outputs[0]
    assert x.shape == (None, 3, None, None) and y.shape == (None, 5)
    assert x.describe() == "x: float32[?,3,?,?]" and info.has_dynamic_inputs
    # Shape inference runs on such a model and its facts use the same representation.
    assert info.shape_inference_error is None
    assert info.value_types["x"].dims == (None, 3, None, None)
    assert info.value_types["flat"].dims == (None, 8)
    gemm = next(n for n in info.nodes if n.op_type == "Gemm")
    ins, outs = info.node_types(gemm)
    assert ins[0] is not None and ins[0].rank == 2
    assert outs[0] is not None and outs[0].dims == (None, 5)
    assert {"w1", "b1", "w2", "b2", "flat_shape"} <= info.constants


@pytest.mark.parametrize("first, second", [("None", "-1"), ("?", ""), ("null", "none")])
def test_placeholder_params_read_as_unnamed(first: str, second: str) -> None:
    info = read_model(M.placeholder_dims(first, second))
    assert info.inputs[0].shape == (None, None, 4)
    assert info.outputs[0].shape == (None, None, 2)
    assert info.inputs[0].describe() == "x: float32[?,?,4]"


def test_real_names_next_to_placeholders_are_kept() -> None:
    info = read_model(M.placeholder_dims("batch", "unk__12"))
    assert info.inputs[0].shape == ("batch", "unk__12", 4)


# -- running -------------------------------------------------------------------------------------
def test_paddle_model_runs_at_two_sizes(paddle: Path) -> None:
    model = M.paddle_style()
    with unirt.load(paddle, backend="onnxruntime") as sess:
        assert sess.inputs[0].shape == (None, 3, None, None)
        for shape in ((1, 3, 32, 32), (2, 3, 64, 48)):
            x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
            y = sess.run({"x": x})["y"]
            assert y.shape == (shape[0], 5)
            np.testing.assert_allclose(y, M.reference(model, {"x": x})["y"], atol=1e-5)
        with pytest.raises(InputError, match="input 'x': dimension 1 must be 3"):
            sess.run({"x": np.zeros((1, 4, 8, 8), np.float32)})


@pytest.mark.parametrize("first, second", [("None", "-1"), ("?", "?")])
def test_placeholder_model_runs_at_two_sizes(tmp_path: Path, first: str, second: str) -> None:
    path = M.save(M.placeholder_dims(first, second), tmp_path / "m.onnx")
    with unirt.load(path, backend="onnxruntime") as sess:
        assert sess.run({"x": np.ones((2, 3, 4), np.float32)})["y"].shape == (2, 3, 2)
        assert sess.run({"x": np.ones((5, 7, 4), np.float32)})["y"].shape == (5, 7, 2)


def test_paddle_model_routes_and_verifies(paddle: Path) -> None:
    """Default routing verifies a candidate on generated inputs: the path where the report's
    ``negative dimensions are not allowed`` came from."""
    with unirt.load(paddle) as sess:
        assert sess.run({"x": np.ones((2, 3, 40, 40), np.float32)})["y"].shape == (2, 5)


# -- generating inputs ---------------------------------------------------------------------------
def test_make_inputs_gives_placeholder_dims_a_size() -> None:
    inputs = read_model(M.paddle_style()).inputs
    assert make_inputs(inputs)["x"].shape == (1, 3, 1, 1)
    assert make_inputs(inputs, {"x": (2, 3, 8, 16)})["x"].shape == (2, 3, 8, 16)
    # A -1 or "?" left in a hand-built TensorInfo is dynamic too.
    hand = [TensorInfo("a", (-1, 3, "?"), F32), TensorInfo("b", ("None", 2), F32)]
    feeds = make_inputs(hand)
    assert feeds["a"].shape == (1, 3, 1) and feeds["b"].shape == (1, 2)


def test_shape_sets_vary_each_placeholder_dim() -> None:
    sets = dict(shape_sets(read_model(M.paddle_style()).inputs))
    assert sets == {"base": {"x": (1, 3, 32, 32)}, "x[0]=2": {"x": (2, 3, 32, 32)},
                    "x[2]=64": {"x": (1, 3, 64, 32)}, "x[3]=64": {"x": (1, 3, 32, 64)}}
    # Two "?" dims are not one symbol: each is varied on its own.
    hand = dict(shape_sets([TensorInfo("x", (-1, "?", "?", 3), F32)]))
    assert set(hand) == {"base", "x[0]=2", "x[1]=64", "x[2]=64"}
    assert hand["base"] == {"x": (1, 32, 32, 3)}


def test_shape_sets_with_a_declared_shape() -> None:
    inputs = read_model(M.paddle_style()).inputs
    assert shape_sets(inputs, {"x": (4, 3, 20, 20)}) == [("base", {"x": (4, 3, 20, 20)})]
    with pytest.raises(InputError, match="input 'x': the shape must have rank 4"):
        shape_sets(inputs, {"x": (3, 20, 20)})


def test_resolve_shape_with_a_user_shape() -> None:
    x = read_model(M.paddle_style()).inputs[0]
    assert resolve_shape(x) == (1, 3, 1, 1)
    assert resolve_shape(x, (4, 3, 50, 60)) == (4, 3, 50, 60)
    assert resolve_shape(x, [np.int64(2), 3, 8, 8]) == (2, 3, 8, 8)


@pytest.mark.parametrize("given, message", [
    ((1, 3, 64), r"input 'x': the shape must have rank 4 \(float32\[\?,3,\?,\?\]\), got 1x3x64"),
    ((), "input 'x': the shape must have rank 4 .*got a scalar"),
    ((1, 4, 8, 8), "input 'x': dimension 1 is fixed at 3, got 4"),
    ((-1, 3, 8, 8), "input 'x': bad shape -1x3x8x8 .*must be >= 0"),
    ((1, 3, 8.5, 8), "input 'x': a shape is a sequence of ints"),
    ("1x3x8x8", "input 'x': a shape is a sequence of ints"),
])
def test_bad_user_shapes_name_the_input(given: object, message: str) -> None:
    x = read_model(M.paddle_style()).inputs[0]
    with pytest.raises(InputError, match=message):
        resolve_shape(x, given)  # type: ignore[arg-type]
    with pytest.raises(InputError, match=message):
        make_inputs([x], {"x": given})  # type: ignore[dict-item]


# -- dim_value 0: fixed, as the engines treat it -------------------------------------------------
def _zero_batch() -> onnx.ModelProto:
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "zero",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [0, 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [0, 3])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", M.OPSET)])
    m.ir_version = M.IR_VERSION
    return m


def test_zero_dim_value_is_fixed_as_in_onnxruntime(tmp_path: Path) -> None:
    """ONNX Runtime (and OpenVINO) refuse any size but 0 for an input declared ``dim_value: 0``,
    so unirt keeps it fixed: its own check says so, with the input's name, before the engine."""
    import onnxruntime as ort

    model = _zero_batch()
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    with pytest.raises(Exception, match="invalid dimensions"):
        ref.run(None, {"x": np.ones((1, 3), np.float32)})  # the engine's own rule

    info = read_model(model)
    assert info.inputs[0].shape == (0, 3) and not info.inputs[0].is_dynamic
    assert make_inputs(info.inputs)["x"].shape == (0, 3)
    with unirt.load(M.save(model, tmp_path / "zero.onnx"), backend="onnxruntime") as sess:
        assert sess.run({"x": np.ones((0, 3), np.float32)})["y"].shape == (0, 3)
        with pytest.raises(InputError, match="input 'x': dimension 0 must be 0"):
            sess.run({"x": np.ones((1, 3), np.float32)})


# -- the command line ----------------------------------------------------------------------------
def test_cli_run_paddle_model(paddle: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["run", str(paddle), "--backend", "onnxruntime"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["run", str(paddle), "--backend", "onnxruntime",
                                 "--shape", "x=1x3x64x64", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["inputs"]["x"]["shape"] == [1, 3, 64, 64]
    assert data["outputs"]["y"]["shape"] == [1, 5]


def test_cli_run_wrong_rank_is_a_user_error(paddle: Path) -> None:
    result = CliRunner().invoke(cli, ["run", str(paddle), "--backend", "onnxruntime",
                                      "--shape", "x=1x3x64"])
    assert result.exit_code == 1, result.output
    assert "Error: input 'x': the shape must have rank 4" in result.output
