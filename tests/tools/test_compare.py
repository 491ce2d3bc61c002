"""``unirt compare`` and ``unirt bench``: parity and speed across backends, crash-isolated."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from unirt.cli.main import cli
from unirt.errors import BackendNotFoundError, InputError
from unirt.evidence.agreement import diff, tolerance, within
from unirt.testing import models as M
from unirt.tools import compare as cmp
from unirt.tools.bench import bench


@pytest.fixture
def conv(tmp_path: Path) -> Path:
    return M.save(M.conv_net(), tmp_path / "conv.onnx")


# -- metrics ---------------------------------------------------------------------------------
def test_diff_figures() -> None:
    ref = np.array([[1.0, 2.0, 3.0, 0.5, 0.1, 0.2]], np.float32)
    got = ref + np.array([[0.0, 0.1, 0.0, 0.0, 0.0, 0.0]], np.float32)
    d = diff("p", got, ref)
    assert d.max_abs == pytest.approx(0.1, rel=1e-5)
    assert d.max_rel == pytest.approx(0.05, rel=1e-4)
    assert d.top1 == 1.0 and d.top5 == 1.0
    assert 0.99 < d.cosine <= 1.0
    assert diff("p", got[:, :3], ref).problem == "shape [1, 3] != reference [1, 6]"
    nan = got.copy()
    nan[0, 0] = np.nan
    assert "NaN where the reference has none" in diff("p", nan, ref).problem


def test_tolerances_by_mode() -> None:
    ref = np.array([100.0, -50.0], np.float32)
    assert tolerance("exact", ref) == (1e-4, 1e-3)
    atol, rtol = tolerance("fast", ref)
    assert atol == pytest.approx(2.0) and rtol == 5e-2  # relative to the output's magnitude
    assert tolerance("fast", ref, atol=0.5, rtol=0.0) == (0.5, 0.0)
    assert within(np.array([1, 2]), np.array([1, 2]), 0, 0)
    assert not within(np.array([1, 3]), np.array([1, 2]), 10, 10)  # integers must be equal


# -- compare ---------------------------------------------------------------------------------
def test_compare_reference_with_itself(conv: Path) -> None:
    report = cmp.compare(conv, ["onnxruntime"])
    (row,) = report.results
    assert row.status == "pass" and row.outputs[0].max_abs == 0.0 and row.precision == "fp32"
    assert report.passed and report.inputs == {"input": ([1, 3, 16, 16], "float32")}


def test_compare_reports_crash_hang_and_mismatch_and_still_completes(conv: Path,
                                                                     fake_engines: None) -> None:
    report = cmp.compare(conv, ["fake-segfault", "fake-hang", "fake-approx", "onnxruntime"],
                         timeout=8)
    rows = {r.backend: r for r in report.results}
    assert rows["fake-segfault"].status == "crashed"
    assert rows["fake-segfault"].reason == "crashed (signal SIGSEGV) running input=1x3x16x16"
    assert rows["fake-hang"].status == "timeout" and "timed out" in rows["fake-hang"].reason
    assert rows["fake-approx"].status == "fail"
    assert rows["fake-approx"].reason.startswith("wrong numbers: probs at input=1x3x16x16: max abs")
    assert rows["onnxruntime"].status == "pass"
    assert not report.passed


def test_layerwise_finds_the_first_diverging_node(conv: Path, fake_engines: None) -> None:
    lw = cmp.layerwise(conv, "fake-approx", fanout=2)
    assert lw.status == "diverges"
    assert (lw.first.node, lw.first.op) == ("relu2", "Relu")
    assert lw.first.output_errors["r2"] > 1e-3
    assert lw.first.input_errors == {"c2": 0.0}
    assert lw.rounds >= 2
    assert cmp.layerwise(conv, "onnxruntime").status == "no divergence"


def test_compare_bad_input(conv: Path) -> None:
    with pytest.raises(BackendNotFoundError, match="unknown backend 'nope'"):
        cmp.compare(conv, ["nope"])
    with pytest.raises(InputError, match="dimension 2 is fixed at 16, got 17"):
        cmp.compare(conv, ["onnxruntime"], shapes={"input": (1, 3, 17, 16)})


def test_compare_cli_exit_status_and_json(conv: Path, fake_engines: None) -> None:
    runner = CliRunner()
    ok = runner.invoke(cli, ["compare", str(conv), "--backends", "onnxruntime", "--json"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["passed"] is True
    bad = runner.invoke(cli, ["compare", str(conv), "--backends", "fake-approx", "--layerwise"])
    assert bad.exit_code == 2
    assert "FAIL" in bad.output and "first divergence at node 'relu2' (Relu" in bad.output
    err = runner.invoke(cli, ["compare", str(conv), "--backends", "nope"])
    assert err.exit_code == 1 and err.output.startswith("Error: unknown backend 'nope'")


# -- bench -----------------------------------------------------------------------------------
def test_bench_sweep_and_crash_row(tmp_path: Path, fake_engines: None) -> None:
    path = M.save(M.dynamic_batch(), tmp_path / "dyn.onnx")
    report = bench(path, ["onnxruntime", "fake-segfault"], [{"x": (1, 8)}, {"x": (4, 8)}],
                   runs=6, warmup=1, rounds=3)
    rows = [(r.backend, r.shape, r.status) for r in report.results]
    assert rows[:2] == [("onnxruntime", "x=1x8", "ok"), ("onnxruntime", "x=4x8", "ok")]
    ort = report.results[0]
    assert len(ort.latencies_s) == 6 and ort.median_ms > 0 and ort.p99_ms >= ort.median_ms
    assert ort.cold_load_s > 0 and ort.warm_load_s > 0 and ort.peak_rss_bytes > 10 * 2**20
    assert report.results[1].throughput == pytest.approx(4e3 / report.results[1].median_ms)
    crashed = [r for r in report.results if r.backend == "fake-segfault"]
    assert crashed and all(r.status == "crashed" and "SIGSEGV" in r.reason for r in crashed)
    assert report.machine["cores"] and "onnxruntime" in report.machine["engines"]


def test_bench_cli_files(tmp_path: Path) -> None:
    path = M.save(M.dynamic_batch(), tmp_path / "dyn.onnx")
    csv, js, png = tmp_path / "b.csv", tmp_path / "b.json", tmp_path / "b.png"
    result = CliRunner().invoke(cli, [
        "bench", str(path), "--backends", "onnxruntime", "-s", "x=1x8", "-s", "x=16x8",
        "--runs", "4", "--warmup", "1", "--csv", str(csv), "--json-out", str(js),
        "--plot", str(png)], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "x=16x8" in result.stdout and " p50 " in result.stdout
    assert csv.read_text().splitlines()[0].startswith("backend,shape,status")
    assert len(json.loads(js.read_text())["results"]) == 2
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_bench_bad_arguments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from unirt.errors import UnirtError

    path = M.save(M.tiny(), tmp_path / "tiny.onnx")
    with pytest.raises(UnirtError, match="runs and rounds must be >= 1 and warmup >= 0"):
        bench(path, ["onnxruntime"], runs=0)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if the [plot] extra were absent
    result = CliRunner().invoke(cli, ["bench", str(path), "--plot", str(tmp_path / "p.png")])
    assert result.exit_code == 1
    assert result.output.strip() == 'Error: --plot needs matplotlib: pip install "unirt[plot]"'


def test_compare_table_fits_80_columns(tmp_path: Path) -> None:
    """Every line within 80 columns, no number or name broken across lines, each backend's
    name once, the shared tolerance in the title."""
    path = M.save(M.multi_io(), tmp_path / "multi.onnx")
    result = CliRunner().invoke(cli, ["compare", str(path), "--backends", "onnxruntime,openvino"],
                                env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert all(len(ln) <= 80 for ln in lines), "\n".join(ln for ln in lines if len(ln) > 80)
    assert "Comparison (atol 0.0001, rtol 0.001)" in result.stdout
    header = next(ln for ln in lines if "backend" in ln)
    assert header.split() == ["backend", "verdict", "prec", "output", "max", "abs", "max", "rel",
                              "mean", "abs", "cosine", "top1/5"]
    rows = [ln.split() for ln in lines[lines.index(header) + 2:] if ln.strip()]
    assert [r[0] for r in rows if r[0] in ("onnxruntime", "openvino")] == ["onnxruntime",
                                                                          "openvino"]
    assert len(rows) == 6 and "…" not in result.stdout  # one line per output, nothing cut
    outputs = [r[3] if r[0] in ("onnxruntime", "openvino") else r[0] for r in rows]
    assert outputs == ["sum", "pooled", "argmax"] * 2
