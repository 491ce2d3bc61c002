"""The rewrite pipeline: plugins, fit() and its verification, routing with rewrites, the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

import unirt
from unirt.errors import BackendError, PluginError, UnirtError
from unirt.hookspecs import hookimpl
from unirt.plugins import Registry
from unirt.rewrite import Change, Rewrite, RewriteContext
from unirt.rewrite.fit import FitStatus, fit
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

    from unirt.cli import cli

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
    from unirt.cli import cli

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

    from unirt.cli import cli

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
