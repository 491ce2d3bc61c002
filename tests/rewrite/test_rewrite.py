"""The rewrite pipeline: plugins, fit() and its verification, routing with rewrites, the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

import unirt
from unirt.errors import BackendError, PluginError, UnirtError
from unirt.plugin.hookspecs import hookimpl
from unirt.plugin.registry import Registry
from unirt.rewrite import Change, Rewrite, RewriteContext
from unirt.runtime.fit import Basis, FitStatus, fit
from unirt.testing import rewrite_models as rm
from unirt.testing.models import save

ENGINES = ["onnxruntime", "openvino", "opencv", "ncnn"]


def _available(name: str) -> bool:
    reg = Registry(entry_points=False)
    return name in reg.backends and reg.backend(name).available().available


@pytest.fixture(scope="module")
def pool_rank_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save(rm.pool_rank(), tmp_path_factory.mktemp("m") / "pool_rank.onnx")


def _x() -> np.ndarray:
    return np.random.default_rng(3).standard_normal((2, 4, 6, 6)).astype(np.float32)


# -- a deliberately wrong third-party rewrite ------------------------------------------------------
class DoubleRelu(Rewrite):
    """Claims to repair Relu; doubles its output instead (wrong on purpose)."""

    name = "double_relu"
    summary = "wrong on purpose"
    ops = frozenset({"Relu"})

    def apply(self, model: onnx.ModelProto, context: RewriteContext) -> list[Change]:
        from onnx import helper, numpy_helper

        for i, node in enumerate(model.graph.node):
            if node.op_type == "Relu":
                out = node.output[0]
                node.output[0] = out + "_half"
                model.graph.initializer.append(
                    numpy_helper.from_array(np.array(2.0, np.float32), "two_"))
                model.graph.node.insert(i + 1, helper.make_node("Mul", [out + "_half", "two_"],
                                                                [out], name="double"))
                return [Change(node.name, "Relu", "doubled")]
        return []


class WrongPlugin:
    """A third-party plugin registering the wrong rewrite through the hook."""

    @hookimpl
    def register_rewrites(self, register) -> None:
        register(DoubleRelu)


class Refuses(Rewrite):
    name = "refuses"
    summary = "raises"

    def apply(self, model: onnx.ModelProto, context: RewriteContext) -> list[Change]:
        raise RuntimeError("bug in the rewrite")


def _registry_with(plugin: object) -> Registry:
    reg = Registry(("unirt_onnxruntime", "unirt.rewrite.builtin"), entry_points=False)
    reg.register(plugin, name="wrong")
    return reg


def test_builtins_are_registered_through_the_hook() -> None:
    reg = Registry(entry_points=False)
    from unirt.rewrite.builtin import builtin_rewrites

    assert {"pool_rank", "unit_kernel_axis", "reduce_scalar", "clip_forms", "decompose",
            "global_pool", "focus_slice", "resize_constant", "fold", "opset_convert",
            "pin_dims", "unbake_reshape"} == set(reg.rewrites)
    assert reg.records["unirt.rewrite.builtin"].rewrites == [r.name for r in builtin_rewrites()]


def test_duplicate_rewrite_name_is_a_plugin_error() -> None:
    class Again:
        @hookimpl
        def register_rewrites(self, register) -> None:
            from unirt.rewrite.builtin.pool_rank import PoolRank

            register(PoolRank)

    reg = Registry(("unirt.rewrite.builtin",), entry_points=False)
    reg.register(Again(), name="again")
    with pytest.raises(PluginError, match="pool_rank.*already registered"):
        _ = reg.rewrites


def test_a_rewrite_that_changes_the_numbers_is_discarded(tmp_path: Path) -> None:
    reg = _registry_with(WrongPlugin())
    path = save(rm.unary("Relu"), tmp_path / "relu.onnx")
    fitted = fit(unirt.read_model(path), "onnxruntime", names=["double_relu"], registry=reg)
    assert fitted.status == FitStatus.DISCARDED and not fitted.usable
    assert fitted.describe().startswith("double_relu discarded: max abs")
    assert "> 0.0001" in fitted.describe() or ">" in fitted.describe()


def test_route_says_the_wrong_rewrite_was_discarded(tmp_path: Path) -> None:
    reg = _registry_with(WrongPlugin())
    path = save(rm.unary("Relu"), tmp_path / "relu.onnx")
    with pytest.MonkeyPatch.context() as mp:  # make the reference fail to open, to trigger it
        be = reg.backend("onnxruntime")
        real = type(be)._open_impl

        def refuse(self, model, options):
            if model.path == path:
                raise BackendError("refuses the original")
            return real(self, model, options)

        mp.setattr(type(be), "_open_impl", refuse)
        with pytest.raises(UnirtError, match="double_relu discarded: max abs"):
            unirt.load(path, backend="onnxruntime", registry=reg, rewrite=["double_relu"])


def test_a_rewrite_that_raises_is_reported_not_applied(tmp_path: Path) -> None:
    class Plugin:
        @hookimpl
        def register_rewrites(self, register) -> None:
            register(Refuses)

    reg = _registry_with(Plugin())
    path = save(rm.unary("Relu"), tmp_path / "relu.onnx")
    fitted = fit(unirt.read_model(path), "onnxruntime", names=["refuses"], registry=reg)
    assert fitted.status == FitStatus.NOT_APPLICABLE
    assert "RuntimeError: bug in the rewrite" in fitted.failures["refuses"]


@pytest.mark.parametrize("engine", ENGINES)
def test_pool_rank_model_loads_on_every_engine(engine: str, pool_rank_file: Path) -> None:
    if not _available(engine):
        pytest.skip(f"{engine} not installed")
    sess = unirt.load(pool_rank_file, backend=engine)
    x = _x()
    np.testing.assert_allclose(sess.run({"x": x})["y"], rm.pool_rank_expected(x), atol=1e-6)
    chosen = sess.route[-1]
    assert chosen.outcome == "chosen" and chosen.reason.startswith("after rewrite: pool_rank")


def test_rewrite_false_turns_it_off(pool_rank_file: Path) -> None:
    with pytest.raises(BackendError, match="could not open"):
        unirt.load(pool_rank_file, backend="onnxruntime", rewrite=False)


@pytest.mark.parametrize(("value", "match"), [
    ("yes", "rewrite must be True, False or a list of rewrite names"),
    (["pool_rank", "nope"],
     "unknown rewrite 'nope'; registered rewrites: pin_dims, unbake_reshape, pool_rank"),
    ([1], "rewrite must be"),
])
def test_bad_rewrite_argument_is_a_clear_error(value, match: str, pool_rank_file: Path) -> None:
    with pytest.raises(UnirtError, match=match):
        unirt.load(pool_rank_file, rewrite=value)


def test_rewrite_names_limit_it(pool_rank_file: Path) -> None:
    with pytest.raises(BackendError, match="could not open"):
        unirt.load(pool_rank_file, backend="onnxruntime", rewrite=["decompose"])


def test_fit_is_cached(pool_rank_file: Path) -> None:
    info = unirt.read_model(pool_rank_file)
    first = fit(info, "onnxruntime")
    again = fit(info, "onnxruntime")
    assert first.info is not None and again.info is not None
    assert first.info.path == again.info.path  # the content-addressed rewritten model


def test_cli_writes_a_file_raw_onnxruntime_runs(pool_rank_file: Path, tmp_path: Path) -> None:
    import onnxruntime as ort

    from unirt.cli.main import cli

    out = tmp_path / "fixed.onnx"
    res = CliRunner().invoke(cli, ["rewrite", str(pool_rank_file), "--for", "onnxruntime",
                                   "-o", str(out)])
    # The reference cannot check itself on a model only the rewrite makes runnable.
    assert res.exit_code == 1 and "not written" in res.output and not out.exists()
    res = CliRunner().invoke(cli, ["rewrite", str(pool_rank_file), "--for", "openvino"
                                   if _available("openvino") else "onnxruntime", "-o", str(out)])
    if not _available("openvino"):
        pytest.skip("openvino not installed")
    assert res.exit_code == 0, res.output
    assert "MaxPool 'p1': kernel [2, 2, 2] on a rank-4 input" in res.output
    assert "max abs 0" in res.output
    s = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = _x()
    np.testing.assert_allclose(s.run(None, {"x": x})[0], rm.pool_rank_expected(x), atol=1e-6)


def test_cli_bad_arguments(pool_rank_file: Path) -> None:
    from unirt.cli.main import cli

    res = CliRunner().invoke(cli, ["rewrite", str(pool_rank_file), "--for", "onnxruntime",
                                   "-o", "x.onnx", "--only", "nope"])
    assert res.exit_code == 1 and "unknown rewrite 'nope'" in res.output
    res = CliRunner().invoke(cli, ["rewrite", str(pool_rank_file)])
    assert res.exit_code == 1 and "--for BACKEND" in res.output
    res = CliRunner().invoke(cli, ["rewrite", "--list"])
    assert res.exit_code == 0 and "pool_rank:" in res.output


def test_capabilities_marks_fixable_by_rewrite(pool_rank_file: Path) -> None:
    """The pool-rank model: lint's finding is shown, not a refusal of the model; each backend
    refused on the MaxPool (by its rule, or ONNX Runtime's message naming "Node (p1) Op
    (MaxPool)") is fixable by pool_rank, and by nothing that does not apply."""
    import json

    from unirt.cli.main import cli

    report = unirt.capabilities(pool_rank_file, backends=["onnxruntime"])
    assert any(f.code == "pool-kernel-rank" and f.node == "p1" for f in report.lint.errors)
    assert report.verdicts["onnxruntime"].fixable_by == ["pool_rank"]
    res = CliRunner().invoke(cli, ["capabilities", str(pool_rank_file), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)["verdicts"]
    assert doc["onnxruntime"]["status"] == "UNSUPPORTED"
    assert doc["onnxruntime"]["fixable_by"] == ["pool_rank"]
    if _available("openvino"):
        assert doc["openvino"]["fixable_by"] == ["pool_rank"]
    assert all(v["fixable_by"] == [] for v in doc.values() if v["status"] != "UNSUPPORTED")
    res = CliRunner().invoke(cli, ["capabilities", str(pool_rank_file), "--backends",
                                   "onnxruntime"])
    assert res.exit_code == 0 and "fixable by rewrite:" in res.output
    assert "pool_rank" in res.output


def test_capabilities_fixable_by_nothing_on_a_model_that_runs() -> None:
    from unirt.testing import models as M

    report = unirt.capabilities(M.add(), backends=["onnxruntime"])
    assert report.verdicts["onnxruntime"].fixable_by == []
    assert report.as_dict()["verdicts"]["onnxruntime"]["fixable_by"] == []


# -- a model only the rewrite makes runnable, with its output shape undeclared or symbolic --------
# onnx's reference evaluator reads the pool-rank node as a 2-D pool ([2, 4, 3, 3]). Checked only
# against declared static dims, an undeclared output let that reading stand as the truth, and
# the right rewrite was "discarded: output: shape [2, 2, 3, 3] != reference [2, 4, 3, 3]".
LOOSE = [pytest.param(rm.UNDECLARED, id="undeclared"),
         pytest.param(("c", "d", "h", "w"), id="symbolic"),
         pytest.param((2, "d", 3, 3), id="partly-symbolic")]


@pytest.mark.parametrize("output", LOOSE[:2])
@pytest.mark.parametrize("engine", ENGINES[1:])
def test_pool_rank_with_a_loose_output_shape_runs_right(engine: str, output, tmp_path: Path
                                                         ) -> None:
    if not _available(engine):
        pytest.skip(f"{engine} not installed")
    path = save(rm.pool_rank(output=output), tmp_path / "m.onnx")
    with unirt.load(path, backend=engine) as sess:
        x = _x()
        np.testing.assert_allclose(sess.run({"x": x})["y"], rm.pool_rank_expected(x),
                                   atol=1e-6)
        reason = sess.route[-1].reason
    # What was proved, and only that: the engine matches the reference on the rewritten model.
    assert reason.startswith("after rewrite: pool_rank")
    assert "ran right, max abs 0 against onnxruntime on the rewritten model" in reason
    assert "the rewrite itself is unproven: the original runs nowhere" in reason
    assert "onnx.reference reads it otherwise: output 'y' has shape [2, 4, 3, 3] there, " \
           "[2, 2, 3, 3] on onnxruntime" in reason
    assert "verified" not in reason and "discarded" not in reason


def test_the_reference_fitted_to_a_model_it_refuses_proves_nothing(tmp_path: Path) -> None:
    path = save(rm.pool_rank(output=rm.UNDECLARED), tmp_path / "m.onnx")
    fitted = fit(unirt.read_model(path), "onnxruntime")
    assert fitted.status == FitStatus.UNVERIFIED and fitted.usable
    assert fitted.basis == Basis.NONE
    text = fitted.describe()
    assert text.startswith("pool_rank") and " unverified: onnxruntime ran the rewritten model " \
        "with nothing independent to compare it with: neither its numbers nor the rewrite " \
        "are proven; the original runs nowhere (onnxruntime refuses it;" in text


def test_cli_writes_the_loose_pool_rank_model_for_openvino(tmp_path: Path) -> None:
    import onnxruntime as ort

    from unirt.cli.main import cli

    if not _available("openvino"):
        pytest.skip("openvino not installed")
    path = save(rm.pool_rank(output=rm.UNDECLARED), tmp_path / "m.onnx")
    out = tmp_path / "fixed.onnx"
    res = CliRunner().invoke(cli, ["rewrite", "-q", str(path), "--for", "openvino", "-o",
                                   str(out)])
    assert res.exit_code == 0, res.output
    assert "ran right, max abs 0 against onnxruntime on the rewritten model" in res.stdout
    assert f"wrote {out}" in res.stdout
    s = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = _x()
    np.testing.assert_allclose(s.run(None, {"x": x})[0], rm.pool_rank_expected(x), atol=1e-6)


@pytest.mark.parametrize(("output", "evaluated", "rewritten", "wrong"), [
    ((2, 2, 3, 3), (2, 2, 3, 3), None, None),
    ((2, 2, 3, 3), (2, 4, 3, 3), None, "has shape [2, 4, 3, 3] there, the model declares "
                                       "[2, 2, 3, 3]"),
    (rm.UNDECLARED, (2, 4, 3, 3), (2, 2, 3, 3), "has shape [2, 4, 3, 3] there, [2, 2, 3, 3] on "
                                                "onnxruntime with the rewritten model"),
    (rm.UNDECLARED, (2, 2, 3, 3), (2, 2, 3, 3), None),
    (rm.UNDECLARED, (2, 2, 3, 3), None, "onnxruntime cannot run the rewritten model"),
    (("c", "d", "h", "w"), (2, 4, 3, 3), (2, 2, 3, 3), "[2, 2, 3, 3] on onnxruntime"),
    ((2, "d", 3, 3), (2, 4, 3, 3), (2, 2, 3, 3), "[2, 2, 3, 3] on onnxruntime"),
    ((2, "d", 3, 3), (2, 2, 3, 3), (2, 2, 3, 3), None),
    ((2, "d", 3, 3, 1), (2, 2, 3, 3), (2, 2, 3, 3), "has rank 4 there, the model declares 5"),
])
def test_the_evaluators_reading_counts_only_where_nothing_contradicts_it(
        output, evaluated, rewritten, wrong, tmp_path: Path) -> None:
    from unirt.runtime.fit import _misread

    info = unirt.read_model(save(rm.pool_rank(output=output), tmp_path / "m.onnx"))
    got = _misread(info, {"y": np.zeros(evaluated, np.float32)},
                   None if rewritten is None else {"y": np.zeros(rewritten, np.float32)},
                   "onnxruntime")
    if wrong is None:
        assert got is None
    else:
        assert got is not None and wrong in got, got


class ReluAsMax(Rewrite):
    """A right rewrite: Relu as Max(x, 0)."""

    name = "relu_as_max"
    summary = "right on purpose"
    ops = frozenset({"Relu"})

    def apply(self, model: onnx.ModelProto, context: RewriteContext) -> list[Change]:
        from onnx import numpy_helper

        for node in model.graph.node:
            if node.op_type == "Relu":
                node.op_type = "Max"
                node.input.append("zero_")
                model.graph.initializer.append(
                    numpy_helper.from_array(np.array(0.0, np.float32), "zero_"))
                return [Change(node.name, "Relu", "as Max(x, 0)")]
        return []


class RightPlugin:
    @hookimpl
    def register_rewrites(self, register) -> None:
        register(ReluAsMax)


@pytest.mark.parametrize(("plugin", "rewrite", "status"), [
    (RightPlugin, "relu_as_max", FitStatus.VERIFIED),
    (WrongPlugin, "double_relu", FitStatus.DISCARDED)])
def test_the_evaluator_judges_a_rewrite_when_the_reference_refuses_the_original(
        plugin, rewrite: str, status, tmp_path: Path) -> None:
    """Where the evaluator's reading agrees with the reference on the rewritten model (an
    undeclared output), it stands for the original: a right rewrite is verified against it, a
    wrong one discarded."""
    reg = _registry_with(plugin())
    model = rm.unary("Relu")
    del model.graph.output[0].type.tensor_type.shape.dim[:]
    model.graph.output[0].type.tensor_type.ClearField("shape")
    path = save(model, tmp_path / "relu.onnx")
    from unirt.evidence import probe
    from unirt.process.isolation import ERROR, Outcome

    real = probe.reference_outputs

    def refuse(source, feed_sets, **kw):  # the reference refuses the original, runs the rest
        if source == str(path):
            opened = Outcome(ERROR, error="refuses the original", error_type="BackendError")
            return opened, [probe.RunSet(f"set {i}", opened) for i in range(len(feed_sets))]
        return real(source, feed_sets, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(probe, "reference_outputs", refuse)
        fitted = fit(unirt.read_model(path), "onnxruntime", names=[rewrite], registry=reg)
    assert fitted.status == status and fitted.basis == Basis.ORIGINAL, fitted.describe()
    assert fitted.compared_with == "onnx.reference on the original (onnxruntime refuses it)"
    if status == FitStatus.VERIFIED:
        assert "verified, max abs 0 against onnx.reference on the original" in fitted.describe()


def test_list_says_opt_in_once() -> None:
    from unirt.cli.main import cli

    res = CliRunner().invoke(cli, ["rewrite", "--list"])
    (line,) = [x for x in res.stdout.splitlines() if x.startswith("unbake_reshape")]
    assert line.count("opt-in") == 1 and line.startswith("unbake_reshape (opt-in): ")


def test_a_graph_wide_change_reads_alone() -> None:
    from unirt.plugin.rewrite import GRAPH

    assert str(Change(GRAPH, "initializers", "2 initializers -> 1")) == \
        "2 initializers -> 1 (graph)"
    assert str(Change("p1", "MaxPool", "wrapped")) == "MaxPool 'p1': wrapped"
