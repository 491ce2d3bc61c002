"""``unirt bench``: throughput mode, --duration, the statistics, conversion shown apart from the
load, and the plot's axis and caption. Values and structure are asserted, never timings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from unirt.cli.main import cli
from unirt.errors import UnirtError
from unirt.testing import models as M
from unirt.tools import bench as b
from unirt.tools.bench import BenchMode, BenchReport, BenchResult, bench
from unirt.tools.bench_plot import parse_label, plot, plot_data


def test_statistics_from_latencies() -> None:
    r = BenchResult("e", "x=2x8", latencies_s=[i / 1e3 for i in range(1, 101)], batch=2,
                    wall_s=0.5, mode=BenchMode.THROUGHPUT, requests=4)
    assert r.min_ms == pytest.approx(1.0) and r.mean_ms == pytest.approx(50.5)
    assert r.median_ms == pytest.approx(50.5) and r.p10_ms == pytest.approx(10.9)
    assert r.p90_ms == pytest.approx(90.1) and r.p99_ms == pytest.approx(99.01)
    assert r.requests_per_s == pytest.approx(200.0)  # 100 requests in 0.5 s of wall time
    assert r.throughput == pytest.approx(400.0)  # two samples each
    d = r.as_dict()
    assert d["mode"] == "throughput" and d["requests"] == 4 and d["runs"] == 100
    assert {"min_ms", "mean_ms", "p10_ms", "median_ms", "p90_ms", "p99_ms", "convert_s",
            "first_run_s", "requests_per_s"} <= set(d)
    latency = BenchResult("e", "x=1", latencies_s=[0.002, 0.004], wall_s=0.006)
    assert latency.throughput == pytest.approx(1e3 / 3)  # at the median, one sample each


def test_child_timed_counts_and_duration() -> None:
    class _Sess:
        def __init__(self) -> None:
            self.calls = 0

        def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            self.calls += 1
            return feeds

    state = {"sess": _Sess()}
    x = {"x": np.zeros(2, np.float32)}
    out = b._child_timed(state, x, 25, None, 4)
    assert len(out["times"]) == 25 and state["sess"].calls == 25 and out["wall_s"] > 0
    out = b._child_timed(state, x, 1, 0.05, 3)  # a duration: as many as fit, at least one
    assert len(out["times"]) >= 1 and out["wall_s"] >= 0.05

    class _Broken:
        def run(self, feeds: dict[str, np.ndarray]) -> None:
            raise ValueError("engine said no")

    with pytest.raises(ValueError, match="engine said no"):
        b._child_timed({"sess": _Broken()}, x, 5, None, 2)


def test_throughput_mode_and_duration(tmp_path: Path) -> None:
    path = M.save(M.dynamic_batch(), tmp_path / "dyn.onnx")
    report = bench(path, ["onnxruntime", "openvino"], [{"x": (2, 8)}], warmup=1, rounds=2,
                   duration=0.2, mode="throughput", requests=3)
    ort, ov = report.results
    for r in (ort, ov):
        assert r.status == "ok", r.reason
        assert r.mode == BenchMode.THROUGHPUT and r.requests == 3 and len(r.latencies_s) >= 2
        assert r.wall_s >= 0.2 and r.requests_per_s == pytest.approx(
            len(r.latencies_s) / r.wall_s)
        assert r.throughput == pytest.approx(2 * r.requests_per_s)
    assert ov.streams is not None and ov.streams >= 1  # THROUGHPUT hint: CPU streams
    assert ov.convert_s is not None and ov.convert_s > 0  # OpenVINO's compile
    assert ort.convert_s is None  # ONNX Runtime does not say
    assert report.machine["mode"] == "throughput"
    with pytest.raises(UnirtError, match="unknown bench mode 'fastest'"):
        bench(path, ["onnxruntime"], mode="fastest")
    with pytest.raises(UnirtError, match="duration must be a positive number of seconds"):
        bench(path, ["onnxruntime"], duration=0)
    with pytest.raises(UnirtError, match="requests in flight must be >= 1"):
        bench(path, ["onnxruntime"], requests=0, mode="throughput")


def test_ncnn_conversion_at_first_run_is_its_own_figure(tmp_path: Path) -> None:
    """ncnn converts a model with dynamic dims at the first run at each shape: that time was
    lost in the warm child's untimed warmup; now it is convert_s, apart from the cold load."""
    pytest.importorskip("ncnn")
    path = M.save(M.conv_net(batch="N"), tmp_path / "conv.onnx")
    report = bench(path, ["ncnn"], [{"input": (1, 3, 16, 16)}], runs=2, warmup=1, rounds=1)
    (r,) = report.results
    assert r.status == "ok", r.reason
    assert r.convert_s is not None and r.convert_s > 0
    # The load did not convert (nothing converts before a shape is known), the first run did.
    assert r.first_run_s is not None and r.first_run_s >= r.convert_s
    assert r.cold_load_s is not None and r.cold_load_s < r.first_run_s


def _report(shapes: list[str], declared: dict[str, list[object]]) -> BenchReport:
    results = []
    for backend in ("a", "b"):
        for i, shape in enumerate(shapes):
            results.append(BenchResult(backend, shape, latencies_s=[
                (i + 1) * k / 1e3 for k in range(1, 11)]))
    machine = {"cpu": "Test CPU", "cores": 8, "threads": 2, "mode": "latency",
               "engines": {"a": "1.0", "b": "2.0"}}
    return BenchReport("m.onnx", machine, results, declared)


def test_plot_axis_is_the_swept_dim_by_name(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    report = _report(["x=4x8", "x=1x8", "x=16x8"], {"x": ["batch", 8]})
    data = plot_data(report)
    assert data.x_label == "x[0] (batch)" and not data.categorical
    a = data.series[0]
    assert a.backend == "a" and a.x == [1.0, 4.0, 16.0]  # sorted by the swept size
    assert a.p50_ms == pytest.approx([11.0, 5.5, 16.5])  # medians of shape 1, 0, 2
    assert all(lo <= mid <= hi for lo, mid, hi in zip(a.p10_ms, a.p50_ms, a.p90_ms))
    assert data.caption == "Test CPU, 8 cores, threads: 2; latency; a 1.0, b 2.0"
    png = tmp_path / "p.png"
    plot(report, png)
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_plot_dims_moving_together_and_apart() -> None:
    square = plot_data(_report(["img=1x3x32x32", "img=1x3x64x64"], {"img": [1, 3, "H", "W"]}))
    assert square.x_label == "img[2] (H) = img[3] (W)" and square.series[0].x == [32.0, 64.0]
    apart = plot_data(_report(["img=1x3x32x64", "img=1x3x64x256"],
                              {"img": [1, 3, "H", "W"]}))
    assert apart.x_label == "img[2] (H) x img[3] (W)" and apart.series[0].x == [2048.0, 16384.0]
    single = plot_data(_report(["img=1x3x32x32"], {}))
    assert single.categorical and single.x_label == "input shape"
    assert parse_label("x=1x8,y=scalar") == {"x": (1, 8), "y": ()}


def test_bench_cli_throughput_and_arguments(tmp_path: Path) -> None:
    path = M.save(M.dynamic_batch(), tmp_path / "dyn.onnx")
    runner = CliRunner()
    result = runner.invoke(cli, ["bench", str(path), "--backends", "onnxruntime", "-s", "x=1x8",
                                 "--runs", "6", "--warmup", "1", "--mode", "throughput",
                                 "--requests", "2", "--json"])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)["results"]
    assert row["mode"] == "throughput" and row["requests"] == 2 and row["runs"] >= 6
    assert row["requests_per_s"] > 0 and row["min_ms"] <= row["median_ms"] <= row["p99_ms"]
    text = runner.invoke(cli, ["bench", str(path), "--backends", "onnxruntime", "--runs", "2",
                               "--warmup", "0", "--mode", "throughput", "--requests", "2"],
                         env={"COLUMNS": "250"})  # wide enough that no header folds
    assert text.exit_code == 0, text.output
    for column in ("convert", "cold load", "requests/s", "min", "mean", "p50", "p90", "p99"):
        assert column in text.stdout
    for args, message in (
            (["--runs", "5", "--duration", "1"], "Error: give --runs or --duration, not both"),
            (["--duration", "-1"], "Error: --duration must be a positive number of seconds"),
            (["--requests", "2"], "Error: --requests is for --mode throughput")):
        bad = runner.invoke(cli, ["bench", str(path), *args])
        assert bad.exit_code == 1 and bad.output.startswith(message), bad.output


def test_unset_dynamic_dims_are_guessed_as_run_does_and_said(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """bench does not measure a dynamic image width at 1 silently: it guesses 32 and warns, as
    run does."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["img"], ["y"])], "g",
        [helper.make_tensor_value_info("img", TensorProto.FLOAT, [1, 1, 64, "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 64, "W"])])
    path = tmp_path / "w.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    with caplog.at_level("WARNING", logger="unirt"):
        report = bench(path, backends=["onnxruntime"], runs=2, warmup=0)
    assert {r.shape for r in report.results} == {"img=1x1x64x32"}
    assert "input 'img': dim 3 ('W') not given, using 32" in caplog.text
