"""The operating point: verdicts, tuning and routes on the inputs the application sends.

A verdict on generated N(0,1) inputs is not a verdict on the user's data: ``load(inputs=)``
verifies on exactly the arrays given, keyed by their digest; ``unirt tune`` remembers where it
measured so that a plain ``load`` finds its result; a verdict on generated inputs says so, and
says when its outputs could not have shown a difference.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

import unirt
from unirt.cli.main import cli
from unirt.errors import BackendError, InputError
from unirt.evidence import timing as fastest
from unirt.evidence import verify as verify_mod
from unirt.evidence.agreement import OutputSpread
from unirt.evidence.input_files import load_input_sets, save_input_sets
from unirt.evidence.operating import (
    MAX_SETS,
    as_input_sets,
    inputs_digest,
    is_quantized,
    recall,
    remember,
)
from unirt.testing import models as M


@pytest.fixture(autouse=True)
def _short_rankings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rankings timed in fewer rounds: these tests are about where a ranking is measured and
    found, not about its figures."""
    monkeypatch.setattr(fastest, "ROUNDS", 2)
    monkeypatch.setattr(fastest, "RUNS_PER_ROUND", 2)


@pytest.fixture
def conv(tmp_path: Path) -> Path:
    """A small CNN with a dynamic batch axis (input ``input``: N x 3 x 16 x 16)."""
    return M.save(M.conv_net(batch="N"), tmp_path / "conv.onnx")


def _far(batch: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs far from N(0,1): what a camera sends (mean ~128)."""
    rng = np.random.default_rng(seed)
    return {"input": rng.uniform(0, 255, (batch, 3, 16, 16)).astype(np.float32)}


def _no_child(*a: Any, **k: Any) -> Any:
    raise AssertionError("no child process may start on this path")


# -- the input sets themselves -----------------------------------------------------------------
def test_input_sets_from_a_dict_a_list_and_a_folder_have_one_digest(conv: Path,
                                                                    tmp_path: Path) -> None:
    info = unirt.read_model(conv)
    one = as_input_sets(info, _far())
    assert len(one.sets) == 1 and one.given == 1
    assert one.first_shapes == {"input": (1, 3, 16, 16)}
    listed = as_input_sets(info, [_far(), _far(2, seed=1)])
    save_input_sets(tmp_path / "in", [_far(), _far(2, seed=1)])
    folder = as_input_sets(info, str(tmp_path / "in"))
    assert folder.digest == listed.digest != one.digest
    assert folder.shapes == [{"input": (1, 3, 16, 16)}, {"input": (2, 3, 16, 16)}]
    assert "2 sets" in folder.short() and str(tmp_path / "in") in folder.describe()


def test_one_changed_value_changes_the_digest(conv: Path) -> None:
    a = _far()
    b = {"input": a["input"].copy()}
    b["input"][0, 0, 0, 0] += 1
    assert inputs_digest([a]) != inputs_digest([b])
    assert inputs_digest([a]) == inputs_digest([{"input": a["input"].copy()}])


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 4), min_size=1, max_size=5), st.integers(0, 2**31 - 1))
def test_saved_input_sets_read_back_to_the_same_digest(batches: list[int], seed: int) -> None:
    import tempfile

    sets = [_far(b, seed + i) for i, b in enumerate(batches)]
    with tempfile.TemporaryDirectory() as d:
        save_input_sets(d, sets)
        back = load_input_sets(d)
    assert inputs_digest(back) == inputs_digest(sets)
    assert all(np.array_equal(x["input"], y["input"]) for x, y in zip(back, sets))


def test_many_sets_are_thinned_evenly_keeping_the_first_and_the_last(conv: Path) -> None:
    sets = [_far(seed=i) for i in range(MAX_SETS * 3)]
    kept = as_input_sets(unirt.read_model(conv), sets)
    assert len(kept.sets) == MAX_SETS and kept.given == MAX_SETS * 3
    assert np.array_equal(kept.sets[0]["input"], sets[0]["input"])
    assert np.array_equal(kept.sets[-1]["input"], sets[-1]["input"])
    assert f"{MAX_SETS} sets of {MAX_SETS * 3}" in kept.short()


@pytest.mark.parametrize("value, message", [
    ({"nope": np.zeros((1, 3, 16, 16), np.float32)}, "'nope' is not an input of conv.onnx"),
    ({}, "missing input 'input'"),
    ({"input": np.zeros((1, 3, 16, 16), np.float64)},
     "input 'input' is float64, the model takes float32; convert with .astype(np.float32)"),
    ({"input": np.zeros((1, 3, 8, 16), np.float32)},
     "input 'input' dimension 2 is 8, the model fixes it at 16"),
    ({"input": np.zeros((3, 16, 16), np.float32)}, "input 'input' has shape 3x16x16"),
    ([], "inputs=: no input sets given"),
    ([{"input": np.zeros((1, 3, 16, 16), np.float32)}, 7],
     "input set 2 of inputs=: an input set is a dict of input name -> array, got int"),
    (42, "inputs= takes a dict of input name -> array, a list of them, or a folder"),
])
def test_bad_inputs_are_input_errors_naming_the_set_and_the_input(conv: Path, value: Any,
                                                                  message: str) -> None:
    with pytest.raises(InputError) as err:
        unirt.load(conv, inputs=value)
    assert message in str(err.value)


def test_a_folder_that_is_not_a_saved_input_set_is_an_input_error(conv: Path,
                                                                  tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no inputs.json there"):
        unirt.load(conv, inputs=str(tmp_path))
    (tmp_path / "inputs.json").write_text(json.dumps({"sets": [{"input": "../x.npy"}]}))
    with pytest.raises(InputError, match="bad file name '../x.npy'"):
        unirt.load(conv, inputs=tmp_path)


def test_remembered_input_sets_come_back_only_for_their_digest(conv: Path) -> None:
    sets = as_input_sets(unirt.read_model(conv), [_far(), _far(seed=3)])
    assert remember(sets)
    back = recall(sets.digest)
    assert back is not None and back.digest == sets.digest and len(back.sets) == 2
    assert recall("0" * 64) is None
    assert recall("../../etc") is None


# -- verification on the user's inputs ---------------------------------------------------------
def test_an_engine_wrong_only_on_real_data_is_rejected_with_inputs(conv: Path,
                                                                    fake_engines: None) -> None:
    generated = unirt.load(conv, prefer="fake-offscale")
    assert generated.backend == "fake-offscale"
    assert "on generated inputs (input=1x3x16x16, input=2x3x16x16)" in generated.route[0].reason
    sess = unirt.load(conv, prefer="fake-offscale", inputs=[_far(), _far(2, seed=1)])
    assert sess.backend == "onnxruntime", sess.explain()
    step = sess.route[0]
    assert step.backend == "fake-offscale" and step.outcome == "rejected"
    assert "wrong numbers" in step.reason and "input set 1 of 2" in step.reason
    # The verdict on the user's data is its own: generated inputs still find theirs.
    assert unirt.load(conv, prefer="fake-offscale").backend == "fake-offscale"


def test_a_verdict_on_the_user_inputs_is_cached_under_their_digest(
        conv: Path, fake_engines: None, monkeypatch: pytest.MonkeyPatch) -> None:
    feeds = _far()
    first = unirt.load(conv, prefer="fake-faithful", inputs=feeds)
    assert first.backend == "fake-faithful"
    assert "on your inputs (1 set," in first.route[0].reason
    assert "measured on your inputs" in first.precision.describe()
    monkeypatch.setattr(verify_mod, "probe", _no_child)
    again = unirt.load(conv, prefer="fake-faithful", inputs={"input": feeds["input"].copy()})
    assert again.verification is not None and again.verification.cached
    other = _far(seed=9)
    with pytest.raises(AssertionError, match="no child process"):
        unirt.load(conv, prefer="fake-faithful", inputs=other)


def test_backend_only_refused_at_guessed_shapes_names_the_fix(conv: Path,
                                                              fake_engines: None) -> None:
    with pytest.raises(BackendError) as err:
        unirt.load(conv, backend="fake-offscale", inputs=_far())
    text = str(err.value)
    assert "fake-offscale was rejected for conv.onnx" in text and "input set" not in text
    assert "your input" in text


def test_a_rejection_at_generated_shapes_says_how_to_judge_at_the_real_ones(
        tmp_path: Path, fake_engines: None) -> None:
    path = M.save(M.conv_net(batch="N"), tmp_path / "c.onnx")
    with pytest.raises(BackendError) as err:
        unirt.load(path, backend="fake-softmax")
    assert "judged on generated inputs at input=1x3x16x16: give input_shapes= or inputs=" \
        in str(err.value)


# -- weak evidence -----------------------------------------------------------------------------
def test_output_spread_names_what_a_comparison_could_not_see() -> None:
    s = OutputSpread()
    s.add("prob", np.full((1, 8), 0.998, np.float32))
    s.add("prob", np.full((1, 8), 0.001, np.float32))
    assert "prob saturated (100% of values within 0.05 of 0 or 1)" in s.degenerate()
    s = OutputSpread()
    s.add("y", np.zeros((2, 4), np.float32))
    assert "y is 0 everywhere" in s.degenerate()
    s = OutputSpread()
    s.add("logits", np.array([[0.1, 3.0, 0.2], [0.5, 2.0, 0.1]], np.float32))
    assert "logits gives every input the same top class (1)" in s.degenerate()
    s = OutputSpread()  # a softmax's many near-zero values are not saturation
    s.add("p", np.array([[0.97, 0.01, 0.01, 0.01], [0.01, 0.97, 0.01, 0.01]], np.float32))
    assert s.degenerate() == ""
    s = OutputSpread()
    s.add("x", np.random.default_rng(0).standard_normal((4, 10)).astype(np.float32))
    assert s.degenerate() == ""


def test_a_quantized_model_verified_on_generated_inputs_says_so(tmp_path: Path,
                                                                 fake_engines: None,
                                                                 caplog: Any) -> None:
    model = M.qdq_saturating()
    path = M.save(model, tmp_path / "qdq.onnx")
    assert is_quantized(unirt.read_model(path))
    with caplog.at_level("WARNING", logger="unirt"):
        sess = unirt.load(path, prefer="fake-faithful")
    v = sess.verification
    assert v is not None and "a quantized model" in v.weak and "prob saturated" in v.weak
    assert "verified on generated inputs only: a quantized model" in sess.route[0].reason
    assert "verified on generated inputs only" in caplog.text
    assert "(a quantized model" in sess.precision.describe()
    on_data = unirt.load(path, prefer="fake-faithful",
                         inputs=M.qdq_saturating_inputs(2, seed=1))
    assert on_data.verification is not None and on_data.verification.weak == ""


def test_openvino_wrong_on_real_audio_features_is_rejected_with_inputs(tmp_path: Path) -> None:
    if not unirt.plugin.registry.get_registry().backend("openvino").available().available:
        pytest.skip("OpenVINO is not installed")
    path = M.save(M.qdq_saturating(), tmp_path / "qdq.onnx")
    blind = unirt.load(path, prefer="openvino")
    assert blind.backend == "openvino"  # N(0,1) saturates the sigmoid: it cannot tell
    assert blind.verification is not None and "prob saturated" in blind.verification.weak
    sess = unirt.load(path, prefer="openvino", inputs=M.qdq_saturating_inputs(4, seed=1))
    assert sess.backend == "onnxruntime", sess.explain()
    assert sess.route[0].outcome == "rejected" and "wrong numbers" in sess.route[0].reason


def test_without_inputs_live_verification_moves_openvino_to_the_reference(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    if not unirt.plugin.registry.get_registry().backend("openvino").available().available:
        pytest.skip("OpenVINO is not installed")
    monkeypatch.setenv("UNIRT_LIVE_DIR", str(tmp_path / "live"))
    monkeypatch.delenv("UNIRT_VERIFY_LIVE")  # the default: on for a routed engine
    path = M.save(M.qdq_saturating(), tmp_path / "qdq.onnx")
    sess = unirt.load(path, prefer="openvino")
    try:
        assert sess.backend == "openvino" and sess.live is not None
        for feeds in M.qdq_saturating_inputs(8, seed=1):
            sess.run(feeds)
        deadline = time.monotonic() + 120
        while sess.backend != "onnxruntime" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sess.backend == "onnxruntime", sess.explain()
        assert sess.route[-1].outcome == "swapped"
        assert "live check: openvino disagreed with the reference" in sess.route[-1].reason
    finally:
        sess.close()


# -- the remembered operating point ------------------------------------------------------------
def test_tune_on_inputs_then_a_plain_load_opens_the_winner(
        conv: Path, tmp_path: Path, fake_engines: None,
        monkeypatch: pytest.MonkeyPatch) -> None:
    save_input_sets(tmp_path / "frames", [_far(4), _far(4, seed=1)])
    res = CliRunner().invoke(cli, ["tune", str(conv), "--backends",
                                   "onnxruntime,fake-fast,fake-offscale",
                                   "--load-inputs", str(tmp_path / "frames")])
    assert res.exit_code == 0, res.output
    assert "input=4x3x16x16" in res.output and "fake-offscale" in res.output
    assert "wrong numbers" in res.output
    monkeypatch.setattr(verify_mod, "probe", _no_child)
    monkeypatch.setattr(fastest, "_measure", _no_child)
    sess = unirt.load(conv)
    assert sess.backend == "fake-fast", sess.explain()
    assert sess.route[0].reason.startswith("tuned: fastest #1")
    assert "at input=4x3x16x16 on your inputs" in sess.route[0].reason
    assert sess.verification is not None and sess.verification.cached
    report = unirt.capabilities(conv, backends=["fake-offscale", "fake-fast"], query=False)
    assert report.verdicts["fake-offscale"].status == "UNSUPPORTED"
    assert report.verdicts["fake-fast"].status == "SUPPORTED"


def test_tune_at_a_shape_is_found_by_a_plain_load(conv: Path, fake_engines: None,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    res = CliRunner().invoke(cli, ["tune", str(conv), "--backends", "onnxruntime,fake-fast",
                                   "--shape", "input=3x3x16x16"])
    assert res.exit_code == 0, res.output
    monkeypatch.setattr(verify_mod, "probe", _no_child)
    monkeypatch.setattr(fastest, "_measure", _no_child)
    sess = unirt.load(conv)
    assert sess.backend == "fake-fast" and "at input=3x3x16x16" in sess.route[0].reason


def test_a_ranking_taken_on_a_busy_machine_is_used_once_and_not_kept(
        conv: Path, fake_engines: None, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    from unirt.process import busy

    monkeypatch.setattr(busy, "others_now", lambda seconds=0.25: 0.6)
    reg = unirt.plugin.registry.get_registry()
    names = ["onnxruntime", "fake-fast"]
    versions = {n: reg.backend(n).available().version for n in names}
    info = unirt.read_model(conv)
    with caplog.at_level("WARNING", logger="unirt"):
        ranking = fastest.rank(info, names, versions, "exact", {})
    assert ranking.busy == 0.6 and ranking.transient and ranking.winner is not None
    assert "ranked while other processes used 60% of the CPU" in caplog.text
    assert fastest.lookup(info) is None  # not kept: the next load ranks again


def test_prefer_fastest_ranks_at_the_user_inputs(conv: Path, fake_engines: None) -> None:
    sess = unirt.load(conv, prefer="fastest", inputs=_far(2),
                      exclude=["fake-segfault", "fake-segfault-open", "fake-hang", "fake-slow",
                               "fake-poisoned", "fake-picky", "fake-jitter"])
    assert sess.backend != "fake-offscale"
    ranking = fastest.lookup(unirt.read_model(conv), inputs=as_input_sets(
        unirt.read_model(conv), _far(2)))
    assert ranking is not None and ranking.shapes == {"input": [2, 3, 16, 16]}
    assert "fake-offscale" in ranking.rejected
    assert "at input=2x3x16x16 on your inputs" in ranking.describe(ranking.order[0])


def test_capabilities_probe_on_saved_inputs_agrees_with_load(
        conv: Path, tmp_path: Path, fake_engines: None,
        monkeypatch: pytest.MonkeyPatch) -> None:
    save_input_sets(tmp_path / "frames", [_far()])
    res = CliRunner().invoke(cli, ["capabilities", str(conv), "--probe", "--no-query",
                                   "--backends", "onnxruntime,fake-offscale",
                                   "--load-inputs", str(tmp_path / "frames"), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    offscale = doc["verdicts"]["fake-offscale"]
    assert offscale["status"] == "UNSUPPORTED"
    assert offscale["measured"]["evidence"].startswith("your inputs (1 set,")
    monkeypatch.setattr(verify_mod, "probe", _no_child)
    sess = unirt.load(conv, prefer="fake-offscale", inputs=str(tmp_path / "frames"))
    assert sess.backend == "onnxruntime" and "cached verdict" in sess.route[0].reason


def test_a_lock_records_the_inputs_it_was_measured_on(conv: Path, tmp_path: Path,
                                                      fake_engines: None) -> None:
    save_input_sets(tmp_path / "frames", [_far(2)])
    out = tmp_path / "unirt.lock"
    res = CliRunner().invoke(cli, ["lock", str(conv), "--backend", "fake-faithful",
                                   "--load-inputs", str(tmp_path / "frames"), "--out",
                                   str(out)])
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    digest = as_input_sets(unirt.read_model(conv), str(tmp_path / "frames")).digest
    assert doc["inputs"] == digest and doc["shapes"] == {"input": [2, 3, 16, 16]}
    assert unirt.load(conv, lock=out).backend == "fake-faithful"


def test_serve_config_reads_a_model_inputs_folder(tmp_path: Path) -> None:
    from unirt.errors import UnirtError
    from unirt.serve.config import build_config

    cfg = tmp_path / "serve.toml"
    cfg.write_text('[[models]]\npath = "m.onnx"\ninputs = "frames"\n')
    config = build_config(config_file=str(cfg))
    assert config.models[0].inputs == str(tmp_path / "frames")
    cfg.write_text('[[models]]\npath = "m.onnx"\ninputs = 3\n')
    with pytest.raises(UnirtError, match=r"models\[0\].inputs: a folder of input sets"):
        build_config(config_file=str(cfg))
    assert build_config(["a.onnx"], inputs="d").models[0].inputs == "d"


def test_compare_runs_every_set_of_a_saved_folder(conv: Path, tmp_path: Path,
                                                  fake_engines: None) -> None:
    save_input_sets(tmp_path / "frames", [{"input": np.zeros((1, 3, 16, 16), np.float32)},
                                          _far(2)])
    res = CliRunner().invoke(cli, ["compare", str(conv), "--backends", "fake-offscale",
                                   "--load-inputs", str(tmp_path / "frames"), "--json"])
    assert res.exit_code == 2, res.output  # wrong on the second set only
    result = json.loads(res.stdout)["results"][0]
    assert result["shapes"] == ["input set 1 of 2 (input=1x3x16x16)",
                                "input set 2 of 2 (input=2x3x16x16)"]
    assert "input set 2 of 2" in result["reason"] and "input set 1 of 2:" not in result["reason"]
