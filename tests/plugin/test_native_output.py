"""Engines' native output stays off the user's terminal (into the debug log), and reasons are
clean text: no ANSI codes, no other libraries' log lines."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from unirt.capability.verdict import Reason
from unirt.cli.main import cli
from unirt.errors import clean
from unirt.plugin.native import captured
from unirt.testing import models as M

WARN = b"[ WARN:0@0.123] global onnx_importer.cpp:1 native warning line\n"


def test_captured_sends_fd2_to_the_debug_log(capfd: pytest.CaptureFixture[str],
                                              caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="unirt"):
        with captured("engine"):
            with captured("nested"):  # one redirection, restored once
                os.write(2, b"\x1b[31m" + WARN)
            os.write(2, b"second line\n")
        os.write(2, b"after\n")
    err = capfd.readouterr().err
    assert "native warning" not in err and "second line" not in err and "after" in err
    logged = [r.getMessage() for r in caplog.records]
    assert "engine: [ WARN:0@0.123] global onnx_importer.cpp:1 native warning line" in logged
    assert "engine: second line" in logged


def test_reasons_are_clean_text() -> None:
    pnnx = ("\x1b[1;31merror\x1b[0m: 2026-11-28 09:06:48.1 [W:onnxruntime:pnnx, cpuid_info.cc:105 "
            "LogEarlyWarning] Unknown CPU vendor; op Foo not supported")
    assert clean(pnnx) == "error: op Foo not supported"
    r = Reason(pnnx, kind="engine")
    assert "\x1b[" not in r.message and "onnxruntime" not in r.message
    assert clean("line one\n2026-01-02 03:04:05.6 [E:x:y, z.cc:1 F] noise\nline two") == \
        "line one\nline two"


def test_opencv_native_warning_goes_to_the_debug_log(
        tmp_path: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("cv2")
    from unirt_opencv import _backend

    import unirt

    real = _backend.read_net

    def warning_read(cv2: Any, data: Any, attempt: Any, has_engines: bool) -> Any:
        os.write(2, WARN)  # what OpenCV's importer prints from C++ (CV_LOG_WARNING)
        return real(cv2, data, attempt, has_engines)

    monkeypatch.setattr(_backend, "read_net", warning_read)
    path = M.save(M.tiny(), tmp_path / "tiny.onnx")
    with caplog.at_level(logging.DEBUG, logger="unirt"), \
            unirt.load(path, backend="opencv", verify="never", check=False) as sess:
        assert sess.backend == "opencv"
    assert "WARN" not in capfd.readouterr().err
    assert any("opencv: [ WARN:0@0.123]" in r.getMessage() for r in caplog.records)


def test_capabilities_leaves_no_native_lines(tmp_path: Path,
                                             capfd: pytest.CaptureFixture[str]) -> None:
    path = M.save(M.resize_concat(dynamic=True), tmp_path / "rc.onnx")
    result = CliRunner().invoke(cli, ["capabilities", str(path), "--backends",
                                      "opencv,ncnn,openvino", "--json"])
    assert result.exit_code == 0, result.output
    err = capfd.readouterr().err  # fd 2 itself, where engines write from C
    assert not [ln for ln in err.splitlines() if ln.strip()], err
    data = json.loads(result.stdout)
    text = json.dumps(data)
    assert "\\u001b[" not in text and "\x1b[" not in text
    table = CliRunner().invoke(cli, ["capabilities", str(path), "--backends", "opencv,ncnn"])
    assert table.exit_code == 0 and "\x1b[" not in table.stdout
