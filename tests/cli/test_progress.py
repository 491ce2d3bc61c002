"""Progress of long steps: events and log lines from the library, lines on the CLI's stderr."""

from __future__ import annotations

import logging
from pathlib import Path

import click
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper

import unirt
from unirt import progress
from unirt.cli.main import cli
from unirt.errors import UnirtError


def _relu(path: Path) -> Path:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"], name="r")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_step_reports_start_and_end_with_duration_and_logs(
        caplog: pytest.LogCaptureFixture) -> None:
    seen: list[progress.Progress] = []
    with caplog.at_level(logging.INFO, logger="unirt"), progress.subscribe(seen.append), \
            progress.step(progress.Step.VERIFY, "openvino", "m.onnx") as running:
        running.detail = "pass"
    assert [(e.step, e.status, e.backend, e.model) for e in seen] == [
        ("verify", "started", "openvino", "m.onnx"), ("verify", "done", "openvino", "m.onnx")]
    assert seen[0].seconds is None and seen[1].seconds is not None and seen[1].seconds >= 0
    assert seen[1].describe().startswith("verify openvino on m.onnx: done in ")
    assert seen[1].describe().endswith(" s (pass)")
    assert "unirt: verify openvino on m.onnx ..." in caplog.text
    assert "unirt: verify openvino on m.onnx: done in" in caplog.text


def test_a_step_that_raises_is_failed_and_a_broken_subscriber_breaks_nothing() -> None:
    seen: list[progress.Progress] = []

    def broken(_event: progress.Progress) -> None:
        raise RuntimeError("display gone")

    with progress.subscribe(broken), progress.subscribe(seen.append), \
            pytest.raises(ValueError), progress.step(progress.Step.CONVERT, "ncnn"):
        raise ValueError("pnnx failed")
    assert [e.status for e in seen] == ["started", "failed"]
    with progress.step(progress.Step.RANK):  # closed subscriptions hear nothing more
        pass
    assert len(seen) == 2


def test_subscribe_takes_a_callable() -> None:
    with pytest.raises(UnirtError, match="takes a callable, not 3"):
        progress.subscribe(3)  # type: ignore[arg-type]


def test_a_verified_load_reports_its_verification(tmp_path: Path) -> None:
    model = _relu(tmp_path / "relu.onnx")
    seen: list[progress.Progress] = []
    with progress.subscribe(seen.append), unirt.load(model, backend="openvino") as sess:
        assert sess.backend == "openvino"
    verify = [e for e in seen if e.step == progress.Step.VERIFY]
    assert [(e.status, e.backend, e.model) for e in verify] == [
        ("started", "openvino", "relu.onnx"), ("done", "openvino", "relu.onnx")]
    assert verify[1].detail == "pass"
    seen.clear()
    with progress.subscribe(seen.append):  # a cached verdict is no long step
        unirt.load(model, backend="openvino").close()
    assert not [e for e in seen if e.step == progress.Step.VERIFY]


def test_cli_prints_a_line_per_step_on_stderr_and_quiet_silences_it(tmp_path: Path) -> None:
    model = _relu(tmp_path / "relu.onnx")
    runner = CliRunner()
    result = runner.invoke(cli, ["run", str(model), "--backend", "openvino", "--json"])
    assert result.exit_code == 0, result.output
    assert "unirt: verify openvino on relu.onnx: done in " in result.stderr
    assert "unirt:" not in result.stdout  # --json on stdout stays clean
    result = runner.invoke(cli, ["compare", str(model), "--backends", "openvino", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "unirt:" not in result.stderr


def test_every_command_takes_quiet() -> None:
    def walk(command: click.Command, path: str) -> list[str]:
        if isinstance(command, click.Group):
            return [p for name, sub in command.commands.items() for p in walk(sub, f"{path} "
                                                                              f"{name}")]
        return [] if any(p.name == "quiet" for p in command.params) else [path]

    assert walk(cli, "unirt") == []
