"""Verdicts: the matching rule on synthetic tables, Backend.check on the shipped ONNX Runtime
table, table lookup by engine version, backend rules, the report, the CLI and bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

import unirt
from unirt.capability.judge import judge_node
from unirt.capability.table import OpTable, available_tables, find_table
from unirt.capability.verdict import SUPPORTED, UNAVAILABLE, UNKNOWN, UNSUPPORTED, Evidence, Reason
from unirt.cli.capabilities import capabilities_command
from unirt.errors import ModelError, UnirtError
from unirt.model.info import read_model
from unirt.plugin.backend import Availability, Backend
from unirt.plugin.registry import Registry
from unirt.testing import models as M


def _table(cases: list[tuple[str, str, dict[str, str]]], op: str = "Pool", **limits: Any
           ) -> OpTable:
    feats = [[op, f] for _, _, f in cases]
    return OpTable({"format": 1, "backend": "fake", "version": "1.0", "limits": limits,
                    "summary": {}, "features": feats,
                    "cases": [{"n": n, "s": s, "e": None if s == "pass" else "boom", "f": [i]}
                              for i, (n, s, _) in enumerate(cases)]})


def test_all_pass_all_fail_and_bad_value() -> None:
    t = _table([("a", "pass", {"@k": "len2", "i0.r": "4"}),
                ("b", "pass", {"@k": "len1", "i0.r": "3"}),
                ("c", "load_fail", {"@k": "len3", "i0.r": "5"})])
    ev = t.ops["Pool"]
    assert ev.status == "conditional"
    j = judge_node(ev, {"@k": "len3", "i0.r": "5"})
    assert j.status == UNSUPPORTED and j.kind in ("attribute", "rank")
    assert "fails in 1 conformance case(s) and passes in none" in j.message
    assert judge_node(ev, {"@k": "len2", "i0.r": "4"}).status == SUPPORTED
    assert judge_node(_table([("a", "pass", {})]).ops["Pool"], {}).status == SUPPORTED
    j = judge_node(_table([("a", "mismatch", {"x": "1"})]).ops["Pool"], {"x": "2"})
    assert j.status == UNSUPPORTED and j.kind == "all_fail"


def test_near_matches_and_ranks_do_not_predict_a_failure() -> None:
    # Every value occurs in a passing case; only the combination (linear + 1) fails: no value
    # explains the failure, so nothing about a node resembling it is held against the node.
    t = _table([("p1", "pass", {"@mode": "linear", "@ac": "0", "i0.r": "4"}),
                ("p2", "pass", {"@mode": "cubic", "@ac": "1", "i0.r": "4"}),
                ("f1", "mismatch", {"@mode": "linear", "@ac": "1", "i0.r": "4"})])
    ev = t.ops["Pool"]
    assert not ev.bad_values
    assert judge_node(ev, {"@mode": "linear", "@ac": "1", "i0.r": "5"}).status == SUPPORTED
    # ...but a node identical to the failing case is predicted to fail like it.
    same = judge_node(ev, {"@mode": "linear", "@ac": "1", "i0.r": "4"})
    assert same.status == UNSUPPORTED and "same attributes" in same.message
    assert judge_node(ev, {"@mode": "linear", "@ac": "1", "i0.r": "?"}).status == SUPPORTED
    # A rank only the failing case has is incidental (LSTM's rank-4 output in the one failing
    # case, which fails because of layout=1): the attribute explains it, the rank does not.
    t = _table([("lstm", "pass", {"@layout": "0", "o0.r": "-"}),
                ("lstm_batchwise", "mismatch", {"@layout": "1", "o0.r": "4"})])
    ev = t.ops["Pool"]
    assert set(ev.bad_values) == {("@layout", "1")}
    assert judge_node(ev, {"@layout": "0", "o0.r": "4"}).status == SUPPORTED
    j = judge_node(ev, {"@layout": "1", "o0.r": "4"})
    assert j.status == UNSUPPORTED and j.kind == "attribute" and "layout='1'" in j.message


def test_harness_failures_are_evidence_of_nothing() -> None:
    # A converter that crashed on a toy graph ("harness") is charged to no op.
    t = _table([("constant", "harness", {}), ("relu", "pass", {})])
    assert t.ops["Pool"].failing == [] and t.ops["Pool"].status == "supported"


def test_a_prediction_never_refuses_a_backend() -> None:
    # A table in which every case of the op fails predicts UNSUPPORTED; the verdict stays
    # UNKNOWN (to be measured), and the prediction is shown as such.
    t = _table([("a", "mismatch", {})], op="Relu")
    v = unirt.capability.check_backend(_RuleBackend(), read_model(M.tiny()), table=t)
    assert v.prediction == UNSUPPORTED and v.status == UNKNOWN and v.decided_by is None
    assert v.predicted and not v.decisive
    assert "predicted unsupported" in v.summary()


def test_multi_node_failures_are_charged_only_to_ops_that_never_pass() -> None:
    t = OpTable({"format": 1, "backend": "fake", "version": "1", "summary": {}, "limits": {},
                 "features": [["Add", {"i0.t": "float32"}], ["Weird", {}]],
                 "cases": [{"n": "add", "s": "pass", "f": [0]},
                           {"n": "expanded", "s": "run_fail", "e": "x", "f": [0, 1], "m": 1}]})
    assert t.ops["Add"].status == "supported"
    assert t.ops["Weird"].status == "unsupported"


def _conv_with(**attrs: Any) -> Any:
    node = helper.make_node("MaxPool", ["x"], ["y"], name="pool", **attrs)
    rank = 2 + len(attrs["kernel_shape"])
    g = helper.make_graph([node], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                         [1, 1] + [8] * (rank - 2))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _ort() -> Backend:
    return Registry().backend("onnxruntime")


def test_onnxruntime_check_on_shipped_table() -> None:
    be = _ort()
    v = be.check(read_model(M.conv_net()))
    # Static: the table predicts; only the engine (for the reference) or a run decides.
    assert v.prediction == SUPPORTED and v.status == UNKNOWN, v
    assert v.table and v.table.startswith("onnxruntime-")
    assert v.ops["Conv"] in ("supported", "conditional")


def test_custom_domain_unknown_op_and_too_new_opset() -> None:
    be = _ort()
    g = helper.make_graph([helper.make_node("Frob", ["x"], ["y"], domain="com.acme", name="f"),
                           helper.make_node("NotAnOp", ["y"], ["z"], name="n")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                          [helper.make_tensor_value_info("z", TensorProto.FLOAT, [2])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17),
                                            helper.make_opsetid("com.acme", 1)])
    v = be.check(read_model(m))
    kinds = {r.kind for r in v.reasons}
    assert v.status == UNSUPPORTED and {"domain", "op_unknown"} <= kinds
    assert v.decided_by == Evidence.RULE
    assert {r.node for r in v.reasons} >= {"f", "n"}
    refused = find_table("onnxruntime", be.available().version)[0].limits.get("refused_opset")
    if refused:
        m = M.tiny()
        m.opset_import[0].version = refused
        v = be.check(read_model(m))
        assert any(r.kind == "opset" for r in v.reasons) and v.prediction == UNSUPPORTED
        assert v.status == UNKNOWN  # a prediction: measured, not refused


def test_nearest_older_table_is_used_and_said(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                              ) -> None:
    src = next(iter(available_tables("onnxruntime").values()))
    shutil.copy(src, tmp_path / "fakeengine-1.2.0.json")
    shutil.copy(src, tmp_path / "fakeengine-1.5.0.json")
    monkeypatch.setenv("UNIRT_OPTABLES", str(tmp_path))
    t, note = find_table("fakeengine", "1.4.9")
    assert t is not None and t.path.name == "fakeengine-1.2.0.json" and "older" in note
    t, note = find_table("fakeengine", "1.5.0")
    assert t.path.name == "fakeengine-1.5.0.json" and note is None
    t, note = find_table("fakeengine", "0.1")
    assert t.path.name == "fakeengine-1.2.0.json" and "newer" in note
    assert find_table("nosuchengine", "1.0") == (None, None)


class _RuleBackend(Backend):
    name = "rulebackend"

    def _available_impl(self) -> Availability:
        return Availability(True, "0.1")

    def _open_impl(self, model: Any, options: Any) -> Any:
        raise UnirtError("never opened")

    def _rules_impl(self, model: Any) -> list[Reason]:
        return [Reason(f"input {t.name!r} is not float32", "dtype")
                for t in model.inputs if str(t.dtype) != "float32"]


class _Gone(_RuleBackend):
    name = "gone"

    def _available_impl(self) -> Availability:
        return Availability(False, reason="not installed")


def test_rules_and_missing_table_and_unavailable() -> None:
    v = _RuleBackend().check(read_model(M.int_inputs()))
    assert v.status == UNSUPPORTED
    assert any("ids" in r.message for r in v.reasons)
    assert any(r.kind == "no_table" and r.verdict == UNKNOWN for r in v.reasons)
    v = _RuleBackend().check(read_model(M.tiny()))
    assert v.status == UNKNOWN  # no table: never silently supported
    assert _Gone().check(read_model(M.tiny())).status == UNAVAILABLE


def test_capabilities_report_and_json(tmp_path: Path) -> None:
    p = M.save(M.conv_net("N"), tmp_path / "m.onnx")
    r = unirt.capabilities(p, backends=["onnxruntime"])
    # The reference is judged by its engine: it creates the session.
    assert r.verdicts["onnxruntime"].status == SUPPORTED
    assert r.verdicts["onnxruntime"].decided_by == Evidence.ENGINE
    assert r.model["inputs"][0]["dynamic"] == ["N"]
    assert r.op_matrix["Conv"]["onnxruntime"] in ("supported", "conditional")
    res = CliRunner().invoke(capabilities_command, [str(p), "--backends", "onnxruntime",
                                                    "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["verdicts"]["onnxruntime"]["status"] == SUPPORTED
    res = CliRunner().invoke(capabilities_command, [str(p), "--backends", "onnxruntime"])
    assert res.exit_code == 0 and "Verdicts" in res.output


def test_probe_measures_and_finds_fake_dynamic_axes(tmp_path: Path, no_hints: None) -> None:
    # Declares T dynamic, but a Reshape to a constant shape only works at T=32.
    g = helper.make_graph([helper.make_node("Reshape", ["x", "s"], ["y"], name="r")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "T"])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [32])],
                          [numpy_helper.from_array(np.array([32], np.int64), "s")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    r = unirt.capabilities(m, backends=["onnxruntime"], probe=True, timeout=60)
    p = r.probes["onnxruntime"]
    assert p["status"] == "dynamic_fail" and "T=64" in p["detail"]
    r = unirt.capabilities(M.tiny(), backends=["onnxruntime"], probe=True, timeout=60)
    p = r.probes["onnxruntime"]
    assert p["status"] == "pass" and p["max_abs"] == 0.0 and p["median_ms"] is not None


@pytest.mark.parametrize("content", [b"", b"not a model at all" * 10])
def test_bad_input_is_a_clear_error(tmp_path: Path, content: bytes) -> None:
    p = tmp_path / "bad.onnx"
    p.write_bytes(content)
    with pytest.raises(ModelError, match="bad.onnx"):
        unirt.capabilities(p)
    res = CliRunner().invoke(capabilities_command, [str(tmp_path / "missing.onnx")])
    assert res.exit_code != 0


def test_invalid_graph_is_refused() -> None:
    g = helper.make_graph([helper.make_node("Relu", ["nope"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(ModelError, match="invalid ONNX graph"):
        unirt.capabilities(m)


def test_maxpool_features_distinguish_rank() -> None:
    from unirt.capability.features import node_features

    info = read_model(_conv_with(kernel_shape=[2, 2, 2]))
    f = node_features(info, info.nodes[0])
    assert f["@kernel_shape"] == "len3" and f["i0.r"] == "5" and f["@ceil_mode"] == "0"


def test_a_crash_in_the_probe_child_is_a_verdict() -> None:
    from unirt.evidence.probe import ProbeResult
    from unirt.tools.capability_report import probe_summary

    crashed = probe_summary(ProbeResult("x", "crashed", "crashed (signal SIGSEGV) running base"))
    assert crashed["status"] == "crash" and "SIGSEGV" in crashed["detail"]
    hung = probe_summary(ProbeResult("x", "timeout", "timed out after 120 s"))
    assert hung["status"] == "timeout"
    refused = probe_summary(ProbeResult("x", "error", "nope", opened=False))
    assert refused["status"] == "load_fail" and refused["detail"] == "nope"
    dyn = probe_summary(ProbeResult("x", "pass", shapes=["x=1x32", "T=64 (x=1x64)"],
                                    limited={"T=64 (x=1x64)": "error: bad reshape"}))
    assert dyn["status"] == "dynamic_fail" and "T=64" in dyn["detail"]


def test_probe_of_a_reference_that_opens_but_fails_at_the_sizes_probed(
        tmp_path: Path, no_hints: None) -> None:
    """A silero-vad-like model that ONNX Runtime opens and fails at the guessed 32 samples does
    not "refuse the model" in capabilities --probe: it is a note naming --shape."""
    import unirt
    from unirt.testing import models

    path = models.save(models.baked_split(), tmp_path / "baked.onnx")
    report = unirt.capabilities(path, backends=["onnxruntime"], probe=True)
    v = report.verdicts["onnxruntime"]
    assert v.status != "UNSUPPORTED", v.summary()
    assert v.measured["status"] == "run_fail"
    assert any("failed running it at the sizes probed" in n and "--shape" in n for n in v.notes)
