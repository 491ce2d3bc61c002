"""The command line: tables and --json, one-line user errors, internal errors kept apart."""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner

import unirt
from unirt.cli import main as cli_module
from unirt.cli.main import cli
from unirt.testing import models as M


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def multi(tmp_path: Path) -> Path:
    return M.save(M.multi_io(), tmp_path / "multi.onnx")


def test_backends_table_and_json(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["backends"])
    assert result.exit_code == 0, result.output
    assert "onnxruntime" in result.output and "available" in result.output
    data = json.loads(runner.invoke(cli, ["backends", "--json"]).stdout)
    ort = next(b for b in data["backends"] if b["name"] == "onnxruntime")
    assert ort["available"] is True and ort["version"]
    cuda = next(b for b in data["backends"] if b["name"] == "onnxruntime-cuda")
    if not cuda["available"]:
        assert cuda["reason"] and cuda["install_hint"]


def test_plugins_json(runner: CliRunner) -> None:
    data = json.loads(runner.invoke(cli, ["plugins", "--json"]).stdout)
    ort = next(p for p in data if p["name"] == "unirt_onnxruntime")
    assert ort["source"] == "builtin" and "onnxruntime" in ort["backends"]


def test_info(runner: CliRunner, multi: Path) -> None:
    result = runner.invoke(cli, ["info", str(multi)])
    assert result.exit_code == 0, result.output
    assert "argmax" in result.output and "ReduceMean" in result.output
    data = json.loads(runner.invoke(cli, ["info", str(multi), "--json"]).stdout)
    assert data["inputs"][0] == {"name": "a", "dtype": "float32", "shape": [1, 3, 4, 4]}
    assert data["op_counts"]["Add"] == 1


def test_run_generated_inputs_json(runner: CliRunner, multi: Path) -> None:
    result = runner.invoke(cli, ["run", str(multi), "--json", "--backend", "onnxruntime"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["backend"] == "onnxruntime"
    assert data["route"] == [{"backend": "onnxruntime", "outcome": "chosen",
                              "reason": "requested with backend="}]
    assert list(data["outputs"]) == ["sum", "pooled", "argmax"]
    assert data["outputs"]["argmax"]["dtype"] == "int64"
    assert data["inputs"]["a"]["source"] == "random (seed 0)"


def test_run_with_npy_inputs_and_output_dir(runner: CliRunner, multi: Path,
                                            tmp_path: Path) -> None:
    a = np.ones((1, 3, 4, 4), np.float32)
    b = np.array([[1, 2, 3]], np.float32)
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    out_dir = tmp_path / "outs"
    result = runner.invoke(cli, ["run", str(multi), "--input", f"a={tmp_path / 'a.npy'}",
                                 "-i", f"b={tmp_path / 'b.npy'}", "--output-dir", str(out_dir)])
    assert result.exit_code == 0, result.output
    np.testing.assert_allclose(np.load(out_dir / "sum.npy"), a + b[:, :, None, None])
    assert np.load(out_dir / "argmax.npy").tolist() == [0]
    assert not list(out_dir.glob("*.tmp"))
    assert "pooled" in result.output


def test_run_dynamic_shape(runner: CliRunner, tmp_path: Path) -> None:
    p = M.save(M.dynamic_batch(), tmp_path / "dyn.onnx")
    data = json.loads(runner.invoke(cli, ["run", str(p), "--shape", "x=5x8", "--json"]).stdout)
    assert data["outputs"]["y"]["shape"] == [5, 4]
    result = runner.invoke(cli, ["run", str(p), "--explain"])
    assert result.exit_code == 0 and "route:" in result.output and "chosen" in result.output


@pytest.mark.parametrize("args, message", [
    (["run", "missing.onnx"], "Error: model file not found: missing.onnx"),
    (["run", "{model}", "--backend", "nope"], "Error: unknown backend 'nope'; registered"),
    (["run", "{model}", "--shape", "x=2xz"], "Error: bad shape '2xz'"),
    (["run", "{model}", "--shape", "x=2x9"], "dimension 1 is fixed at 8, got 9"),
    (["run", "{model}", "--shape", "q=2x8"], "Error: --shape names unknown input(s) q"),
    (["run", "{model}", "--input", "x=nothere.npy"], "Error: input 'x': file not found"),
    (["run", "{model}", "--input", "q=a.npy"], "Error: --input names unknown input(s) q"),
    (["info", "{notonnx}"], "not a valid ONNX model"),
])
def test_user_errors_are_one_line(runner: CliRunner, tmp_path: Path, args: list[str],
                                  message: str) -> None:
    model = M.save(M.dynamic_batch(), tmp_path / "dyn.onnx")
    notonnx = tmp_path / "bad.onnx"
    notonnx.write_bytes(b"\x00\x01garbage" * 50)
    args = [a.format(model=model, notonnx=notonnx) for a in args]
    result = runner.invoke(cli, args)
    assert result.exit_code == 1, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_wrong_dtype_npy_is_a_user_error(runner: CliRunner, tmp_path: Path) -> None:
    model = M.save(M.dynamic_batch(), tmp_path / "dyn.onnx")
    np.save(tmp_path / "x.npy", np.zeros((2, 8), np.float64))
    result = runner.invoke(cli, ["run", str(model), "-i", str(tmp_path / "x.npy")])
    assert result.exit_code == 1
    assert "input 'x': expected dtype float32, got float64" in result.output


def test_internal_errors_are_kept_distinct(runner: CliRunner, monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    def broken(*a, **k):
        raise ZeroDivisionError("bug")

    monkeypatch.setattr(unirt.model.info, "read_model", broken)
    result = runner.invoke(cli, ["info", str(tmp_path / "x.onnx")])
    assert result.exit_code == cli_module.EXIT_INTERNAL_ERROR
    assert "Internal error" in result.output and "ZeroDivisionError" in result.output


def test_register_commands_hook_adds_a_command(runner: CliRunner) -> None:
    class Plugin:
        @unirt.hookimpl
        def register_commands(self, cli: click.Group) -> None:
            @cli.command(name="hello-plugin")
            def hello() -> None:
                click.echo("hello from a plugin")

    group = click.Group(commands=dict(cli.commands))
    reg = unirt.plugin.registry.get_registry()
    reg.register(Plugin(), "hello")
    reg.call_hook_safely("register_commands", cli=group)
    result = runner.invoke(group, ["hello-plugin"])
    assert result.output.strip() == "hello from a plugin"


def test_console_script_main_runs(tmp_path: Path) -> None:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "unirt.cli", "backends", "--json"],
                         capture_output=True, text=True, check=True)
    assert "onnxruntime" in [b["name"] for b in json.loads(out.stdout)["backends"]]


@pytest.mark.parametrize("command", ["run", "info", "compare", "bench", "capabilities", "tune",
                                     "lint"])
def test_a_directory_is_a_one_line_error(runner: CliRunner, tmp_path: Path, command: str) -> None:
    result = runner.invoke(cli, [command, str(tmp_path)])
    assert result.exit_code == 1, result.output
    assert f"Error: {tmp_path}: is not a file (a directory)" in result.output
    assert "Usage:" not in result.output


def test_saved_outputs_are_readable_like_any_file(runner: CliRunner, tmp_path: Path) -> None:
    import os

    path = M.save(M.tiny(), tmp_path / "m.onnx")
    result = runner.invoke(cli, ["run", str(path), "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    mask = os.umask(0o022)
    os.umask(mask)
    for saved in (tmp_path / "out").glob("*.npy"):
        assert saved.stat().st_mode & 0o777 == 0o666 & ~mask


def test_run_verifies_at_the_shapes_it_runs(runner: CliRunner, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """--shape (and --input files) reach load(input_shapes=): what verification measures is
    what runs."""
    seen: dict[str, object] = {}
    import unirt.runtime.router as router_module

    real = router_module.load

    def spy(*args: object, **kwargs: object) -> object:
        seen.update(kwargs)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(router_module, "load", spy)
    path = M.save(M.dynamic_batch(), tmp_path / "m.onnx")
    result = runner.invoke(cli, ["run", str(path), "--shape", "x=3x8"])
    assert result.exit_code == 0, result.output
    assert seen["input_shapes"] == {"x": (3, 8)}


def test_unset_dynamic_dims_are_warned_about_and_image_sized(
        runner: CliRunner, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["images"], ["y"], name="r")], "g",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, "H", "W"])])
    path = tmp_path / "img.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    with caplog.at_level("WARNING", logger="unirt"):
        result = runner.invoke(cli, ["run", str(path), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout[result.stdout.index("{"):])["inputs"]["images"]["shape"] \
        == [1, 3, 32, 32]
    assert "input 'images': dims 0 ('N'), 2 ('H'), 3 ('W') not given, using 1, 32, 32; " \
           "set them with --shape images=1x3x32x32" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="unirt"):
        result = runner.invoke(cli, ["run", str(path), "--shape", "images=1x3x64x48"])
    assert result.exit_code == 0, result.output
    assert "not given" not in caplog.text


def test_a_run_failing_at_guessed_sizes_says_so(runner: CliRunner, tmp_path: Path,
                                                no_hints: None) -> None:
    """A model failing at the guessed sizes gets the engine's message and the fix. (The graph's
    hints find this model's traced size; here they are taken away, as for a model whose size
    nothing in the graph gives away.)"""
    path = M.save(M.baked_split(), tmp_path / "baked.onnx")
    result = runner.invoke(cli, ["run", str(path), "--backend", "onnxruntime", "-q"])
    assert result.exit_code == 1
    assert "(the dynamic dims of 'x' were guessed, see the warning above: set the model's " \
           "real sizes with --shape)" in result.output
    ok = runner.invoke(cli, ["run", str(path), "--backend", "onnxruntime", "-q", "--shape",
                             "x=1x16x4"])
    assert ok.exit_code == 0, ok.output


def test_a_reader_that_leaves_is_no_internal_error(runner: CliRunner,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """`unirt lint m.onnx | head` ends quietly, without a BrokenPipeError traceback."""
    import os

    @click.command("pipe-test")
    def pipe_test() -> None:
        raise BrokenPipeError(32, "Broken pipe")

    saved = os.dup(1)
    try:
        cli.add_command(pipe_test)
        result = runner.invoke(cli, ["pipe-test"])
    finally:
        cli.commands.pop("pipe-test", None)
        os.dup2(saved, 1)
        os.close(saved)
    assert result.exit_code == 1 and isinstance(result.exception, (SystemExit, type(None)))
    assert "Internal error" not in result.output
