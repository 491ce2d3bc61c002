"""Bounded work and memory, and feeds with a defined answer.

* a size limit on generated inputs, refused before anything is allocated;
* verification's inputs built in its children from a recipe (the caller makes none);
* a NaN/inf input set: a backend that hides NaN/inf is named, not rejected;
* an engine's own query asked in a child with a timeout;
* a verification time-out retried once.

This module is also a unirt plugin (``register_backends`` below), registered through the API so
that verification children rebuild it: the misbehaving engines it defines live here, next to
the tests that need them.
"""

from __future__ import annotations

import importlib
import os
import pickle
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper

import unirt
from unirt.errors import InputError
from unirt.evidence import inputs as inputs_mod
from unirt.evidence.inputs import (
    FeedRecipe,
    make_inputs,
    plant_nonfinite,
    resolve_shape,
    size_limit,
)
from unirt.model.info import ModelInfo, read_model
from unirt.plugin.backend import Availability, Backend, BackendSession, OpenOptions
from unirt.tensor import TensorInfo
from unirt.testing import models as M

HANG_ONCE_ENV = "UNIRT_TEST_HANG_ONCE"
SLOW_QUERY_ENV = "UNIRT_TEST_SLOW_QUERY"


# -- engines for these tests (also built in children: this module is their plugin) ------------
class _Delegating(Backend):
    """ONNX Runtime under another name; subclasses change what comes out or how long it takes."""

    default_rank = 99

    def _available_impl(self) -> Availability:
        return Availability(True, "0.0-test", devices=("cpu",))

    def _open_impl(self, model: ModelInfo, options: OpenOptions) -> BackendSession:
        from unirt_onnxruntime import OnnxRuntimeBackend

        return _Session(OnnxRuntimeBackend().open(model, OpenOptions()), self)

    def _after(self, outputs: list[Any]) -> list[Any]:
        return outputs

    def _before(self) -> None:
        pass

    def _query_impl(self, model: ModelInfo, options: OpenOptions) -> set[str] | None:
        return set()


class _Session(BackendSession):
    def __init__(self, inner: BackendSession, owner: _Delegating) -> None:
        super().__init__()
        self.inner, self.owner = inner, owner

    def run(self, feeds: dict[str, Any], output_names: Any) -> Any:
        self.owner._before()
        return self.owner._after(self.inner.run(feeds, output_names))


class NanToZero(_Delegating):
    """Replaces NaN by 0 and inf by the float's largest value in every output, as OpenVINO and
    ncnn do in some kernels: right on finite inputs, "hides" NaN/inf."""

    name = "test-nan-to-zero"

    def _after(self, outputs: list[Any]) -> list[Any]:
        return [np.nan_to_num(o) if o.dtype.kind == "f" else o for o in outputs]


class Faithful(_Delegating):
    name = "test-faithful"


class HangsOnce(_Delegating):
    """Hangs on its first run, then runs right: a busy machine's time-out, not a broken engine.
    "First" across processes: a marker file (``UNIRT_TEST_HANG_ONCE``) records that it hung."""

    name = "test-hang-once"

    def _before(self) -> None:
        marker = os.environ.get(HANG_ONCE_ENV)
        if marker and not os.path.exists(marker):
            Path(marker).write_text("hung")
            time.sleep(3600)


class SlowQuery(_Delegating):
    """An engine whose own query never ends (OpenVINO's query_model on a deep If nest)."""

    name = "test-slow-query"

    def _query_impl(self, model: ModelInfo, options: OpenOptions) -> set[str] | None:
        if os.environ.get(SLOW_QUERY_ENV):
            time.sleep(3600)
        return set()


@unirt.hookimpl
def register_backends(register: Any) -> None:
    for cls in (NanToZero, Faithful, HangsOnce, SlowQuery):
        register(cls)


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The default registry plus this module as a plugin (children import it by name)."""
    from unirt.plugin.registry import Registry

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2]))
    reg = Registry()
    reg.register(importlib.import_module("tests.evidence.test_feeds_hardening"))
    return reg


def _info(model: onnx.ModelProto, tmp_path: Path, name: str = "m.onnx") -> ModelInfo:
    return read_model(M.save(model, tmp_path / name))


def _relu(shape: list[Any]) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="relu")], "relu", [x], [y])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


# -- 1. the size limit ---------------------------------------------------------------------------
HUGE = (1, 3, 200000, 200000)  # 120e9 elements: 447 GiB of float32


def test_a_huge_requested_shape_is_refused_before_allocation() -> None:
    x = TensorInfo("input", ("N", 3, "H", "W"), np.dtype("float32"))
    with pytest.raises(InputError) as exc:
        make_inputs([x], {"input": HUGE})
    text = str(exc.value)
    assert "'input'" in text and "1x3x200000x200000" in text and "limit" in text
    with pytest.raises(InputError, match="1x3x200000x200000"):
        resolve_shape(x, HUGE)


def test_a_huge_declared_shape_is_refused() -> None:
    x = TensorInfo("x", HUGE, np.dtype("float32"))
    with pytest.raises(InputError, match="'x'.*over unirt's limit"):
        make_inputs([x])
    with pytest.raises(InputError):
        FeedRecipe.make([x])


def test_the_limit_counts_the_whole_set_and_names_the_largest(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNIRT_MAX_ELEMENTS", "100")
    a = TensorInfo("a", (8, 8), np.dtype("float32"))
    b = TensorInfo("b", (6, 6), np.dtype("float32"))
    assert make_inputs([a])["a"].shape == (8, 8)  # 64: within
    assert len(make_inputs([a, b])) == 2  # 64 + 36 = 100: within
    monkeypatch.setenv("UNIRT_MAX_ELEMENTS", "99")
    with pytest.raises(InputError, match="input 'a': shape 8x8.*together 100.*99 elements"):
        make_inputs([a, b])


def test_the_default_limit_follows_available_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("UNIRT_MAX_ELEMENTS", raising=False)
    monkeypatch.setattr(inputs_mod, "_mem_available", lambda: 8 << 30)
    limit = size_limit()
    assert (limit.amount, limit.unit) == (2 << 30, "bytes")
    assert "quarter of the available memory" in limit.describe()
    monkeypatch.setattr(inputs_mod, "_mem_available", lambda: None)
    assert size_limit().amount == inputs_mod.FALLBACK_LIMIT_BYTES
    x = TensorInfo("x", (1024, 1024, 1024), np.dtype("float32"))  # 4 GiB > 2 GiB
    with pytest.raises(InputError, match="4 GiB of float32"):
        resolve_shape(x)


@pytest.mark.parametrize("value", ["abc", "0", "-5"])
def test_a_bad_max_elements_is_a_user_error(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("UNIRT_MAX_ELEMENTS", value)
    with pytest.raises(unirt.UnirtError, match="UNIRT_MAX_ELEMENTS"):
        size_limit()


def test_session_feeds_need_no_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A feed the caller made is already in memory: Session.run does not refuse it."""
    monkeypatch.setenv("UNIRT_MAX_ELEMENTS", "2")
    sess = unirt.load(M.save(M.tiny(), tmp_path / "t.onnx"))
    assert sess.run({"x": np.ones((1, 4), np.float32)})["y"].shape == (1, 4)


def test_cli_run_refuses_a_huge_shape_in_one_line(tmp_path: Path) -> None:
    from unirt.cli.main import cli

    model = M.save(_relu(["N", 3, "H", "W"]), tmp_path / "dyn.onnx")
    result = CliRunner().invoke(cli, ["run", str(model), "--shape", "x=1x3x200000x200000"])
    assert result.exit_code == 1, result.output
    assert result.output.startswith("Error: input 'x': shape 1x3x200000x200000")
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output


def test_verification_of_a_set_over_the_limit_only_opens_in_a_child(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Over the size limit: no inputs are made anywhere, and no set is run; the candidate is
    still opened in a child (an engine can crash reading the model), never first here."""
    from unirt.evidence import probe as probe_mod
    from unirt.evidence.verify import VerifyStatus, verify

    monkeypatch.setenv("UNIRT_MAX_ELEMENTS", "1000")
    monkeypatch.setattr(probe_mod, "run_feeds", None)  # running a set would fail loudly
    info = _info(_relu([1, 3, 64, 64]), tmp_path)
    v = verify(info, "openvino", "x")
    assert v.status == VerifyStatus.UNVERIFIED
    assert "no inputs can be generated" in v.result.reason and "1x3x64x64" in v.result.reason
    assert v.result.reason.endswith("opened in a child, nothing run")


# -- 2. probe inputs built in the child ----------------------------------------------------------
def test_a_recipe_builds_what_make_inputs_makes() -> None:
    info = read_model(M.int_inputs())
    recipe = FeedRecipe.make(info.inputs, {"ids": (1, 5)}, seed=3)
    want = make_inputs(info.inputs, {"ids": (1, 5)}, seed=3)
    got = pickle.loads(pickle.dumps(recipe)).build()
    assert list(got) == list(want)
    for k in want:
        assert got[k].dtype == want[k].dtype and np.array_equal(got[k], want[k])
    assert recipe.signature() == {"ids": ([1, 5], "int64"), "scale": ([], "float32")}
    assert hash(recipe) == hash(FeedRecipe.make(info.inputs, {"ids": (1, 5)}, seed=3))


def test_planted_nonfinite_values_are_seeded_and_only_in_floats() -> None:
    info = read_model(M.int_inputs())
    recipe = FeedRecipe.make(info.inputs, {"ids": (1, 5)}, seed=1).with_nonfinite()
    a, b = recipe.build(), recipe.build()
    assert np.array_equal(a["scale"], b["scale"], equal_nan=True)
    assert not np.isfinite(a["scale"]).all()  # a scalar gets one value: NaN
    assert np.array_equal(a["ids"], make_inputs(info.inputs, {"ids": (1, 5)}, seed=1)["ids"])
    feeds = plant_nonfinite({"x": np.zeros((4, 8), np.float32)}, seed=0)
    assert int(np.isnan(feeds["x"]).sum()) == 2
    assert int(np.isposinf(feeds["x"]).sum()) == 2 and int(np.isneginf(feeds["x"]).sum()) == 2


def test_verification_never_builds_inputs_in_the_caller(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, registry: Any) -> None:
    """The caller's make_inputs and recipe build are broken here; the children's are not."""
    from unirt.evidence.verify import VerifyStatus, verify

    def refuse(*a: Any, **k: Any) -> Any:
        raise AssertionError("inputs built in the caller's process")

    monkeypatch.setattr(inputs_mod, "make_inputs", refuse)
    monkeypatch.setattr(FeedRecipe, "build", refuse)
    info = _info(M.dynamic_batch(), tmp_path)
    v = verify(info, "test-faithful", "0.0-test", registry=registry, mode="always")
    assert v.status == VerifyStatus.VERIFIED, v.describe()
    assert v.result.shapes[:2] == ["x=1x8", "batch=2 (x=2x8)"]


def test_recipes_give_the_same_outputs_and_verdict_as_arrays(
        tmp_path: Path, registry: Any) -> None:
    from unirt.evidence.probe import probe, reference_outputs
    from unirt.evidence.verify import feed_sets

    info = _info(M.dynamic_batch(), tmp_path)
    labels, sets, recipes = feed_sets(info)
    labels, sets, recipes = labels[:2], sets[:2], recipes[:2]  # the shape sets, no NaN set
    arrays = [make_inputs(info.inputs, s, seed=i) for i, s in enumerate(sets)]
    _, by_recipe = reference_outputs(info.source(), recipes, labels=labels, registry=registry)
    _, by_array = reference_outputs(info.source(), arrays, labels=labels, registry=registry)
    assert [r.label for r in by_recipe] == [r.label for r in by_array]
    for r, a in zip(by_recipe, by_array):
        assert r.outputs is not None and a.outputs is not None
        assert all(np.array_equal(r.outputs[k], a.outputs[k]) for k in a.outputs)
    one = probe(info, "test-faithful", recipes, labels=labels, registry=registry,
                reference=by_recipe)
    two = probe(info, "test-faithful", arrays, labels=labels, registry=registry,
                reference=by_array)
    assert (one.status, one.shapes, one.max_abs) == (two.status, two.shapes, two.max_abs)


# -- 3. NaN/inf ------------------------------------------------------------------------------------
def test_a_backend_that_hides_nan_is_named_not_rejected(tmp_path: Path, registry: Any) -> None:
    from unirt.evidence.verify import VerifyStatus, verify

    info = _info(M.tiny(8), tmp_path)  # Relu then Mul: NaN stays NaN, inf stays inf
    v = verify(info, "test-nan-to-zero", "0.0-test", registry=registry, mode="always")
    assert v.status == VerifyStatus.VERIFIED and v.accepted
    r = v.result
    assert r.hides_nonfinite
    assert r.nonfinite.startswith("hides NaN/inf: output y finite where the reference has NaN")
    assert "hides NaN/inf" in r.summary() and "hides NaN/inf" in v.describe()
    assert r.shapes[-1] == "x=1x8 with NaN/inf"
    assert all(np.isfinite(o.max_abs) for o in r.outputs)  # the NaN set is no error figure
    from unirt.evidence.probe import ProbeResult

    again = ProbeResult.from_dict(r.as_dict())
    assert again.nonfinite == r.nonfinite  # a cached verdict keeps the note

    fine = verify(info, "test-faithful", "0.0-test", registry=registry, mode="always")
    assert fine.status == VerifyStatus.VERIFIED and fine.result.nonfinite == ""


def test_capabilities_probe_shows_the_nan_note(tmp_path: Path, registry: Any) -> None:
    model = M.save(M.tiny(8), tmp_path / "t.onnx")
    report = unirt.capabilities(model, backends=["onnxruntime", "test-nan-to-zero"],
                                probe=True, registry=registry, layerwise=False)
    v = report.verdicts["test-nan-to-zero"]
    assert v.status.value == "SUPPORTED"
    assert any(n.startswith("hides NaN/inf") for n in v.notes)
    assert report.probes["test-nan-to-zero"]["nonfinite"].startswith("hides NaN/inf")


def test_models_without_float_inputs_get_no_nan_set(tmp_path: Path) -> None:
    from unirt.evidence.verify import feed_sets

    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 4])
    out = helper.make_tensor_value_info("out", TensorProto.INT64, [1, 4])
    g = helper.make_graph([helper.make_node("Identity", ["ids"], ["out"])], "i", [ids], [out])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    labels, _, recipes = feed_sets(_info(m, tmp_path))
    assert labels == ["base"] and not any(r.nonfinite for r in recipes)
    labels, _, recipes = feed_sets(_info(M.dynamic_batch(), tmp_path, "d.onnx"))
    assert [r.nonfinite for r in recipes] == [False, False, True]


# -- 4. the engine's query, bounded ---------------------------------------------------------------
def nested_if(depth: int) -> onnx.ModelProto:
    """``y = x`` through ``depth`` nested Ifs (each then-branch holds the next If): linear in
    size, exponential for OpenVINO's query_model (depth 16: 1.3 s; depth 25: minutes)."""
    def leaf(level: int) -> onnx.GraphProto:
        out = f"out_{level}_e"
        return helper.make_graph([helper.make_node("Identity", ["x"], [out])], f"g{level}e", [],
                                 [helper.make_tensor_value_info(out, TensorProto.FLOAT, [2])])

    def branch(level: int) -> onnx.GraphProto:
        out = f"out_{level}_t"
        node = (helper.make_node("Identity", ["x"], [out]) if level >= depth else
                helper.make_node("If", ["cond"], [out], then_branch=branch(level + 1),
                                 else_branch=leaf(level + 1)))
        return helper.make_graph([node], f"g{level}t", [],
                                 [helper.make_tensor_value_info(out, TensorProto.FLOAT, [2])])

    g = helper.make_graph(
        [helper.make_node("If", ["cond"], ["y"], then_branch=branch(1), else_branch=leaf(1))],
        "nested_if",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2]),
         helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def test_openvino_query_on_a_deep_if_nest_times_out(tmp_path: Path) -> None:
    from unirt.plugin.registry import get_registry

    if not get_registry().backend("openvino").available().available:
        pytest.skip("OpenVINO is not installed")
    model = M.save(nested_if(25), tmp_path / "if25.onnx")
    start = time.perf_counter()
    report = unirt.capabilities(model, backends=["onnxruntime", "openvino"], query_timeout=2)
    elapsed = time.perf_counter() - start
    assert elapsed < 2 + 8, elapsed  # the query's 2 s, a child's start, the rest of the report
    v = report.verdicts["openvino"]
    assert "engine query timed out after 2 s" in v.notes
    assert v.status.value != "UNSUPPORTED"  # a time-out is a note, not a refusal
    assert report.verdicts["onnxruntime"].engine == "accepts every node"


def test_a_query_that_never_ends_is_a_note(tmp_path: Path, registry: Any,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SLOW_QUERY_ENV, "1")
    model = M.save(M.tiny(), tmp_path / "t.onnx")
    start = time.perf_counter()
    report = unirt.capabilities(model, backends=["test-slow-query", "test-faithful"],
                                registry=registry, query_timeout=1.5)
    assert time.perf_counter() - start < 1.5 + 6
    assert "engine query timed out after 1.5 s" in report.verdicts["test-slow-query"].notes
    # the child was replaced after the time-out: the next engine was still asked
    assert report.verdicts["test-faithful"].engine == "accepts every node"


def test_queries_run_in_a_child(tmp_path: Path, registry: Any,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(SlowQuery, "_query_impl", lambda *a: pytest.fail("asked in-process"))
    report = unirt.capabilities(M.save(M.tiny(), tmp_path / "t.onnx"),
                                backends=["test-slow-query"], registry=registry)
    assert report.verdicts["test-slow-query"].engine == "accepts every node"


# -- 5. a time-out retried once ---------------------------------------------------------------
def test_a_timeout_is_retried_once(tmp_path: Path, registry: Any,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from unirt.evidence.verify import VerifyStatus, verify

    marker = tmp_path / "hung"
    monkeypatch.setenv(HANG_ONCE_ENV, str(marker))
    info = _info(M.tiny(), tmp_path)
    v = verify(info, "test-hang-once", "0.0-test", registry=registry, timeout=3,
               mode="always")
    assert marker.exists()  # it did hang the first time
    assert v.status == VerifyStatus.VERIFIED, v.describe()


def test_a_timeout_twice_rejects_and_says_so(tmp_path: Path, registry: Any,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from unirt.evidence.probe import TIMEOUT
    from unirt.evidence.verify import VerifyStatus, verify

    marker = tmp_path / "hung"
    monkeypatch.setenv(HANG_ONCE_ENV, str(marker))
    info = _info(M.tiny(), tmp_path)
    # remove the marker whenever it appears: every run hangs
    calls: list[float] = []
    from unirt.evidence import probe as probe_mod

    real = probe_mod.run_sets

    def run_sets(*a: Any, **k: Any) -> Any:
        calls.append(time.perf_counter())
        marker.unlink(missing_ok=True)
        return real(*a, **k)

    monkeypatch.setattr(probe_mod, "run_sets", run_sets)
    v = verify(info, "test-hang-once", "0.0-test", registry=registry, timeout=2,
               mode="always")
    assert v.status == VerifyStatus.REJECTED and v.result.status == TIMEOUT
    assert v.result.reason.endswith("(and on 1 retry)"), v.result.reason
    assert len(calls) == 3 and not v.about_engine  # the reference once, the backend twice
