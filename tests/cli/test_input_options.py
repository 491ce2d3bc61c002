"""Input ranges, saved and replayed inputs, --input everywhere, per-output tolerances."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner, Result
from onnx import TensorProto, helper

import unirt
from unirt.cli.main import cli
from unirt.errors import UnirtError
from unirt.evidence import verify as V
from unirt.evidence.input_files import load_inputs, save_inputs
from unirt.evidence.inputs import FeedRecipe, make_inputs
from unirt.evidence.values import check_ranges, parse_range
from unirt.model.info import read_model
from unirt.tensor import TensorInfo


def _model(path: Path) -> Path:
    """x float [batch, 8] -> y = Relu(x); ids int64 [1, 4] -> z = ids + 1."""
    one = helper.make_tensor("one", TensorProto.INT64, [], [1])
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"], name="r"),
         helper.make_node("Add", ["ids", "one"], ["z"], name="a")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8]),
         helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8]),
         helper.make_tensor_value_info("z", TensorProto.INT64, [1, 4])], [one])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _cli(args: list[str]) -> Result:
    return CliRunner().invoke(cli, [*args, "--quiet"])


# -- ranges --------------------------------------------------------------------------------------
def test_generated_values_follow_the_range_both_ends_for_ints() -> None:
    ints = TensorInfo("ids", (1000,), np.dtype("int64"))
    floats = TensorInfo("x", (1000,), np.dtype("float32"))
    feeds = make_inputs([ints, floats], seed=3, ranges={"ids": (8000, 8001), "x": (-2.0, -1.0)})
    assert set(np.unique(feeds["ids"])) == {8000, 8001}
    assert feeds["x"].min() >= -2.0 and feeds["x"].max() < -1.0
    plain = make_inputs([ints], seed=3)["ids"]  # the default stays 0..3
    assert set(np.unique(plain)) == {0, 1, 2, 3}


def test_ranges_are_checked_with_messages_naming_the_fix() -> None:
    infos = [TensorInfo("ids", (4,), np.dtype("uint8")), TensorInfo("b", (4,), np.dtype(bool)),
             TensorInfo("x", (4,), np.dtype("float32"))]
    cases = [({"nope": (0, 1)}, "names 'nope', which is not an input; inputs: ids, b, x"),
             ({"x": (2, 1)}, "low and high must be finite numbers with low <= high"),
             ({"ids": (0.5, 3)}, "input 'ids' is uint8; give whole numbers"),
             ({"ids": (-1, 300)}, r"outside uint8 \(0..255\)"),
             ({"b": (0, 1)}, "input 'b' is bool; ranges apply to integer and float inputs"),
             ({"x": 3}, r"must be \(low, high\), not 3")]
    for ranges, message in cases:
        with pytest.raises(UnirtError, match=message):
            check_ranges(infos, ranges)
    assert check_ranges(infos, {"ids": (0.0, 255.0), "x": (0, 1)}) == \
        {"ids": (0, 255), "x": (0.0, 1.0)}
    assert parse_range("-1.5,2") == (-1.5, 2)
    with pytest.raises(UnirtError, match=r"bad --input-range for 'x' '1': write it as NAME=LO,HI"):
        parse_range("1", "x")
    with pytest.raises(UnirtError, match="'a' is not a number"):
        parse_range("a,2")


def test_ranges_travel_in_the_recipe_and_the_verification_key(tmp_path: Path) -> None:
    info = read_model(_model(tmp_path / "m.onnx"))
    recipe = FeedRecipe.make(info.inputs, seed=1, ranges={"ids": (7, 9)})
    assert recipe.ranges == (("ids", (7, 9)),)
    again = FeedRecipe.make(info.inputs, seed=1, ranges={"ids": (7, 9)})
    assert recipe == again and hash(recipe) == hash(again)
    built = recipe.with_nonfinite().build()
    assert built["ids"].min() >= 7 and built["ids"].max() <= 9
    np.testing.assert_array_equal(built["ids"], again.build()["ids"])
    _, _, recipes = V.feed_sets(info, None, {"ids": (7, 9)})
    assert all(r.ranges == (("ids", (7, 9)),) for r in recipes)
    sets = V.probe_shapes(info.inputs)
    plain = V.verdict_key(info, "openvino", "1", "exact", {}, sets, None)
    assert V.verdict_key(info, "openvino", "1", "exact", {}, sets, None, {}) == plain
    assert V.verdict_key(info, "openvino", "1", "exact", {}, sets, None, {"ids": (7, 9)}) != plain


def test_load_checks_input_ranges_up_front_and_verifies_with_them(tmp_path: Path) -> None:
    path = _model(tmp_path / "m.onnx")
    with pytest.raises(UnirtError, match="input_ranges names 'idz', which is not an input"):
        unirt.load(path, backend="openvino", input_ranges={"idz": (0, 1)})
    with unirt.load(path, backend="openvino", input_ranges={"ids": (100, 200)}) as sess:
        assert sess.backend == "openvino"
    info = read_model(path)
    ov = next(b for b in unirt.backends() if b.name == "openvino")
    assert V.lookup(info, "openvino", ov.version, ranges={"ids": (100, 200)}) is not None
    assert V.lookup(info, "openvino", ov.version) is None  # another key: not the default's


# -- saved inputs --------------------------------------------------------------------------------
def test_saved_inputs_load_back_exactly_and_bad_directories_are_named(tmp_path: Path) -> None:
    feeds = {"a/b": np.arange(6, dtype=np.float32).reshape(2, 3),
             "a:b": np.array([1, 2], dtype=np.int64)}
    saved = save_inputs(tmp_path / "in", feeds)
    assert len(set(saved.values())) == 2  # the two names map to one stem: numbered apart
    back = load_inputs(tmp_path / "in")
    assert set(back) == set(feeds)
    for name, array in feeds.items():
        np.testing.assert_array_equal(back[name], array)
        assert back[name].dtype == array.dtype
    with pytest.raises(UnirtError, match="no such directory"):
        load_inputs(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UnirtError, match=r"no inputs.json there \(write one with --save-inputs"):
        load_inputs(tmp_path / "empty")


def test_compare_saves_inputs_and_a_replay_runs_the_same_arrays(tmp_path: Path) -> None:
    path = _model(tmp_path / "m.onnx")
    saved = tmp_path / "saved"
    first = _cli(["compare", str(path), "--backends", "openvino", "--shape", "x=2x8",
                  "--input-range", "ids=5,9", "--save-inputs", str(saved), "--json"])
    assert first.exit_code == 0, first.output
    arrays = load_inputs(saved)
    assert arrays["x"].shape == (2, 8) and 5 <= arrays["ids"].min() <= arrays["ids"].max() <= 9
    replay = _cli(["compare", str(path), "--backends", "openvino", "--load-inputs", str(saved),
                   "--json"])
    assert replay.exit_code == 0, replay.output
    a, b = (json.loads(r.stdout) for r in (first, replay))
    assert a["inputs"] == b["inputs"]
    assert [o["max_abs"] for o in a["results"][0]["outputs"]] == \
        [o["max_abs"] for o in b["results"][0]["outputs"]]
    bad = _cli(["compare", str(path), "--load-inputs", str(tmp_path / "nowhere")])
    assert bad.exit_code == 1
    assert "Error: --load-inputs" in bad.output and "no such directory" in bad.output


def test_run_takes_ranges_and_saves_its_inputs(tmp_path: Path) -> None:
    path = _model(tmp_path / "m.onnx")
    result = _cli(["run", str(path), "--input-range", "x=3,4", "--input-range", "ids=8000,8000",
                   "--save-inputs", str(tmp_path / "s"), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)["outputs"]
    assert out["y"]["min"] >= 3 and out["y"]["max"] < 4 and out["z"]["min"] == 8001
    assert (load_inputs(tmp_path / "s")["ids"] == 8000).all()
    bad = _cli(["run", str(path), "--input-range", "ids=1,x"])
    assert bad.exit_code == 1
    assert "Error: bad --input-range for 'ids' '1,x': 'x' is not a number" in bad.output


# -- tolerances ----------------------------------------------------------------------------------
def test_compare_takes_per_output_tolerances(tmp_path: Path) -> None:
    path = _model(tmp_path / "m.onnx")
    result = _cli(["compare", str(path), "--backends", "openvino", "--atol", "y=0.5",
                   "--atol", "0.25", "--rtol", "z=0", "--json"])
    assert result.exit_code == 0, result.output
    outs = {o["name"]: o for o in json.loads(result.stdout)["results"][0]["outputs"]}
    assert outs["y"]["atol"] == 0.5 and outs["z"]["atol"] == 0.25 and outs["z"]["rtol"] == 0
    bad = _cli(["compare", str(path), "--atol", "w=1"])
    assert bad.exit_code == 1
    assert "Error: --atol names 'w', which is not an output of m.onnx; outputs: y, z" \
        in bad.output
    bad = _cli(["compare", str(path), "--rtol", "y=-1"])
    assert "Error: --rtol y=-1.0: a tolerance is a number >= 0" in bad.output


# -- --input where a model is run ----------------------------------------------------------------
def test_bench_capabilities_and_tune_take_inputs(tmp_path: Path) -> None:
    path = _model(tmp_path / "m.onnx")
    x = tmp_path / "x.npy"
    np.save(x, np.ones((3, 8), dtype=np.float32))
    result = _cli(["bench", str(path), "--backends", "onnxruntime", "--input", f"x={x}",
                   "--runs", "2", "--warmup", "0", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["results"][0]["shape"] == "x=3x8,ids=1x4"
    result = _cli(["capabilities", str(path), "--backends", "onnxruntime,openvino", "--probe",
                   "--input", f"x={x}", "--json"])
    assert result.exit_code == 0, result.output
    probes = json.loads(result.stdout)["probes"]
    assert probes["openvino"]["status"] == "pass"
    assert any("x=3x8" in s for s in probes["openvino"]["shapes"])
    bad = _cli(["capabilities", str(path), "--input", f"x={x}"])
    assert "Error: --input and --input-range are for --probe" in bad.output
    bad = _cli(["tune", str(path), "--input-range", "ids=3,1"])
    assert bad.exit_code == 1
    assert "low and high must be finite numbers with low <= high" in bad.output
    bad = _cli(["tune", str(path), "--input", f"w={x}"])
    assert "Error: --input names unknown input(s) w; inputs: x, ids" in bad.output
