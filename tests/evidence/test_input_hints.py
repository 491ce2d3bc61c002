"""What a graph says its generated inputs must be: value sets, index ranges, sizes; and the
--input-values option that says the same from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner, Result
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from unirt.cli.main import cli
from unirt.errors import UnirtError
from unirt.evidence import hints as input_hints
from unirt.evidence import verify as V
from unirt.evidence.hints import InputHints, graph_hints
from unirt.evidence.inputs import FeedRecipe, make_inputs, shape_sets
from unirt.evidence.values import Values, check_ranges, check_values, parse_values, spec_json
from unirt.model.info import read_model
from unirt.tensor import TensorInfo

OPSET = [helper.make_opsetid("", 17)]


def _save(path: Path, graph: onnx.GraphProto) -> Path:
    model = helper.make_model(graph, opset_imports=OPSET)
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _sr_model(path: Path) -> Path:
    """y = x * 2 when sr == 16000, x * 3 otherwise (an If on Equal(sr, 16000))."""
    two = helper.make_graph([helper.make_node("Mul", ["x", "c2"], ["yt"])], "then", [],
                            [helper.make_tensor_value_info("yt", TensorProto.FLOAT, None)],
                            [helper.make_tensor("c2", TensorProto.FLOAT, [], [2.0])])
    three = helper.make_graph([helper.make_node("Mul", ["x", "c3"], ["ye"])], "else", [],
                              [helper.make_tensor_value_info("ye", TensorProto.FLOAT, None)],
                              [helper.make_tensor("c3", TensorProto.FLOAT, [], [3.0])])
    nodes = [helper.make_node("Cast", ["sr"], ["sr32"], to=TensorProto.INT32),
             helper.make_node("Equal", ["sr32", "k"], ["is16"]),
             helper.make_node("If", ["is16"], ["y"], then_branch=two, else_branch=three)]
    graph = helper.make_graph(
        nodes, "sr",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4]),
         helper.make_tensor_value_info("sr", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor("k", TensorProto.INT32, [], [16000])])
    return _save(path, graph)


def _embedding_model(path: Path, rows: int = 50) -> Path:
    table = np.random.default_rng(0).standard_normal((rows, 8)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["e"], axis=0),
         helper.make_node("Cast", ["attention_mask"], ["m"], to=TensorProto.FLOAT),
         helper.make_node("Unsqueeze", ["m", "axes"], ["m3"]),
         helper.make_node("Mul", ["e", "m3"], ["y"])], "emb",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", 8])],
        [onnx.numpy_helper.from_array(table, "table"),
         helper.make_tensor("axes", TensorProto.INT64, [1], [2])])
    return _save(path, graph)


def _pool_model(path: Path) -> Path:
    """A stride-4 conv then an AveragePool of kernel 12 on H: at 32, H is 8 < 12."""
    w = np.ones((4, 3, 3, 3), np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], strides=[4, 4], pads=[1, 1, 1, 1]),
         helper.make_node("AveragePool", ["c"], ["y"], kernel_shape=[12, 1], strides=[12, 1])],
        "pool", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [onnx.numpy_helper.from_array(w, "w")])
    return _save(path, graph)


def _strided_conv1d_model(path: Path) -> Path:
    """Four Conv1d of kernel 4, stride 2 (a wav2vec2-style feature encoder): T >= 46."""
    nodes, inits, last = [], [], "x"
    for i in range(4):
        inits.append(onnx.numpy_helper.from_array(np.ones((1, 1, 4), np.float32), f"w{i}"))
        nodes.append(helper.make_node("Conv", [last, f"w{i}"], [f"c{i}"], strides=[2]))
        last = f"c{i}"
    graph = helper.make_graph(
        nodes, "enc", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, "T"])],
        [helper.make_tensor_value_info(last, TensorProto.FLOAT, None)], inits)
    return _save(path, graph)


def _ort(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


# -- built models --------------------------------------------------------------------------------
def test_an_input_compared_in_an_if_condition_gets_the_compared_value(tmp_path: Path) -> None:
    info = read_model(_sr_model(tmp_path / "sr.onnx"))
    hints = graph_hints(info)
    assert hints.values == {"sr": Values((16000,))}
    assert hints.notes == ["sr: one of 16000 (compared with it in 1 If condition)"]
    assert hints.describe() == hints.notes[0]
    _, _, recipes = V.feed_sets(info)
    feeds = recipes[0].build()
    assert feeds["sr"].dtype == np.int64 and int(feeds["sr"]) == 16000
    np.testing.assert_allclose(_ort(info.path, feeds)[0], feeds["x"] * 2)  # the then-branch


def test_the_callers_range_wins_over_a_hint(tmp_path: Path) -> None:
    info = read_model(_sr_model(tmp_path / "sr.onnx"))
    _, _, recipes = V.feed_sets(info, ranges={"sr": (8000, 8000)})
    assert int(recipes[0].build()["sr"]) == 8000


def test_token_ids_stay_inside_the_table_and_a_mask_is_ones(tmp_path: Path) -> None:
    info = read_model(_embedding_model(tmp_path / "emb.onnx", rows=50))
    hints = graph_hints(info)
    assert hints.values["ids"] == (0, 49)
    assert hints.values["attention_mask"] == Values((1,))
    assert any("50-row table" in n for n in hints.notes)
    _, _, recipes = V.feed_sets(info)
    for recipe in recipes:
        feeds = recipe.build()
        assert feeds["ids"].min() >= 0 and feeds["ids"].max() <= 49
        assert (feeds["attention_mask"] == 1).all()


def test_a_pool_kernel_larger_than_its_data_moves_the_size(tmp_path: Path) -> None:
    info = read_model(_pool_model(tmp_path / "pool.onnx"))
    hints = graph_hints(info)
    assert hints.dims == {"H": 48} and hints.other_dims == {"H": 64}
    assert hints.notes == ["x: dim 2 at 48 (then 64; at 32 an AveragePool kernel 12x1 is larger "
                           "than its input 8x8)"]
    sets = dict(shape_sets(info.inputs, sizes=hints.sizes()))
    assert sets["base"]["x"] == (1, 3, 48, 32) and sets["H=64"]["x"] == (1, 3, 64, 32)
    _, _, recipes = V.feed_sets(info)
    for recipe in recipes:
        _ort(info.path, recipe.build())  # every generated size runs


def test_strided_convs_that_reduce_a_short_input_to_nothing(tmp_path: Path) -> None:
    info = read_model(_strided_conv1d_model(tmp_path / "enc.onnx"))
    hints = graph_hints(info)
    assert hints.dims == {"T": 48} and hints.other_dims == {"T": 64}
    assert hints.describe() == ("x: dim 2 at 48 (then 64; at 32 a Conv kernel 4 is larger than "
                                "its input 2)")
    _, _, recipes = V.feed_sets(info)
    for recipe in recipes:
        _ort(info.path, recipe.build())


def test_user_shapes_win_over_hinted_sizes(tmp_path: Path) -> None:
    info = read_model(_pool_model(tmp_path / "pool.onnx"))
    sets = V.feed_sets(info, {"x": (1, 3, 96, 96)})[1]
    assert all(s["x"] == (1, 3, 96, 96) for s in sets)


def test_no_hints_for_a_model_that_says_nothing_and_keys_stay_as_they_were(tmp_path: Path
                                                                           ) -> None:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "r",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])])
    info = read_model(_save(tmp_path / "r.onnx", graph))
    hints = graph_hints(info)
    assert not hints and hints.key() == {} and hints.describe() == ""


def test_an_unreadable_graph_gives_empty_hints_and_never_raises(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
    info = read_model(_sr_model(tmp_path / "sr.onnx"))

    def broken(_info: object) -> InputHints:
        raise RuntimeError("boom")

    monkeypatch.setattr(input_hints, "_analyse", broken)
    monkeypatch.setattr(input_hints, "_memo", {})
    assert graph_hints(info) == InputHints()


def test_hints_are_cached_and_read_back_equal(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    info = read_model(_pool_model(tmp_path / "pool.onnx"))
    monkeypatch.setattr(input_hints, "_memo", {})
    first = graph_hints(info)
    monkeypatch.setattr(input_hints, "_memo", {})
    calls: list[object] = []
    monkeypatch.setattr(input_hints, "_analyse", lambda i: calls.append(i) or InputHints())
    assert graph_hints(info) == first and calls == []  # from the artifact cache
    assert graph_hints(info) is graph_hints(info)  # and then from the memo


def test_the_verdict_key_holds_the_hints(tmp_path: Path) -> None:
    info = read_model(_sr_model(tmp_path / "sr.onnx"))
    sets = V.probe_shapes(info.inputs)
    with_hints = V.verdict_key(info, "b", "1", "exact", {}, sets, None)
    as_values = V.verdict_key(info, "b", "1", "exact", {}, sets, None,
                              {"sr": Values((16000, 8000))})
    as_range = V.verdict_key(info, "b", "1", "exact", {}, sets, None, {"sr": (16000, 8000)})
    assert len({with_hints, as_values, as_range}) == 3


# -- value sets ----------------------------------------------------------------------------------
def test_a_value_set_is_not_a_range_in_a_key() -> None:
    assert spec_json(Values((0, 255))) == {"values": [0, 255]}
    assert spec_json((0, 255)) == [0, 255]


def test_a_scalar_takes_the_first_value_at_seed_0_and_the_next_at_seed_1() -> None:
    sr = TensorInfo("sr", (), np.dtype("int64"))
    specs = {"sr": Values((16000, 8000))}
    assert int(make_inputs([sr], seed=0, ranges=specs)["sr"]) == 16000
    assert int(make_inputs([sr], seed=1, ranges=specs)["sr"]) == 8000


def test_a_recipe_with_a_value_set_builds_the_same_arrays_twice() -> None:
    ids = TensorInfo("ids", (64,), np.dtype("int32"))
    recipe = FeedRecipe.make([ids], seed=3, ranges={"ids": Values((7, 9, 11))})
    a, b = recipe.build()["ids"], recipe.build()["ids"]
    assert (a == b).all() and set(a.tolist()) <= {7, 9, 11}


_numbers = st.lists(st.integers(-(2 ** 31), 2 ** 31 - 1), min_size=1, max_size=6, unique=True)


@settings(max_examples=40, deadline=None)
@given(_numbers, st.integers(0, 5), st.integers(0, 20))
def test_value_sets_round_trip_and_generation_only_yields_members(
        values: list[int], seed: int, size: int) -> None:
    text = ",".join(map(str, values))
    parsed = parse_values(text)
    assert parsed == Values(tuple(values))
    info = TensorInfo("v", (size,), np.dtype("int64"))
    assert check_values(info, parsed) == parsed
    out = make_inputs([info], seed=seed, ranges={"v": parsed})["v"]
    assert set(out.tolist()) <= set(values)


@pytest.mark.parametrize(("text", "message"), [
    ("", "bad --input-values for 'sr' '': write it as NAME=V1,V2,... (e.g. sr=16000,8000)"),
    ("16000,", "bad --input-values for 'sr' '16000,': write it as NAME=V1,V2,..."),
    ("16000,x", "bad --input-values for 'sr' '16000,x': 'x' is not a number"),
])
def test_bad_value_set_text_is_an_error_naming_it(text: str, message: str) -> None:
    with pytest.raises(UnirtError) as err:
        parse_values(text, "sr")
    assert str(err.value).startswith(message)


def test_a_value_set_is_checked_against_the_input() -> None:
    ints = TensorInfo("sr", (), np.dtype("int16"))
    with pytest.raises(UnirtError, match=r"input_values\['sr'\] = \[1.5\]: input 'sr' is int16; "
                                         r"give whole numbers"):
        check_values(ints, Values((1.5,)))
    with pytest.raises(UnirtError, match=r"40000 is outside int16 \(-32768\.\.32767\)"):
        check_values(ints, Values((16000, 40000)))
    with pytest.raises(UnirtError, match=r"must be one or more numbers"):
        check_values(ints, ())
    with pytest.raises(UnirtError, match=r"names 'nope', which is not an input"):
        check_ranges([ints], {"nope": Values((1,))}, "--input-values")


# -- the command line ----------------------------------------------------------------------------
def _cli(args: list[str]) -> Result:
    return CliRunner().invoke(cli, [*args, "--quiet"])


def test_run_takes_input_values(tmp_path: Path) -> None:
    path = _sr_model(tmp_path / "sr.onnx")
    result = _cli(["run", str(path), "--input-values", "sr=8000,16000", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)["outputs"]["y"]
    assert out["shape"] == [1, 4]


def test_input_values_errors_name_the_input(tmp_path: Path) -> None:
    path = _sr_model(tmp_path / "sr.onnx")
    both = _cli(["run", str(path), "--input-range", "sr=1,2", "--input-values", "sr=16000"])
    assert both.exit_code == 1
    assert "Error: input 'sr' is given both --input-range and --input-values; give one" \
        in both.output
    unknown = _cli(["run", str(path), "--input-values", "rate=16000"])
    assert unknown.exit_code == 1
    assert "Error: --input-values names 'rate', which is not an input; inputs: x, sr" \
        in unknown.output
    bad = _cli(["compare", str(path), "--input-values", "sr=16k"])
    assert bad.exit_code == 1
    assert "Error: bad --input-values for 'sr' '16k': '16k' is not a number" in bad.output
    no_eq = _cli(["bench", str(path), "--input-values", "16000"])
    assert no_eq.exit_code == 1
    assert "Error: bad --input-values '16000': write it as NAME=VALUE" in no_eq.output


# -- real models ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["silero_vad", "silero_vad_ifless"])
def test_silero_gets_a_sample_rate_the_reference_runs(name: str, corpus_models) -> None:
    info = read_model(corpus_models.path(name))
    hints = graph_hints(info)
    assert hints.values["sr"] == Values((16000,))
    _, _, recipes = V.feed_sets(info)
    feeds = recipes[0].build()
    assert int(feeds["sr"]) in (16000, 8000)
    _ort(info.path, feeds)  # the base set runs on ONNX Runtime


def test_ppocr_rec_gets_a_height_onnxruntime_and_openvino_run(corpus_models) -> None:
    info = read_model(corpus_models.path("ppocr_v4_rec"))
    hints = graph_hints(info)
    assert hints.dims.get("x[2]", 32) > 32, hints.describe()
    _, _, recipes = V.feed_sets(info)
    feeds = recipes[0].build()
    _ort(info.path, feeds)
    ov = pytest.importorskip("openvino")
    compiled = ov.Core().compile_model(str(info.path), "CPU")
    compiled(feeds)
