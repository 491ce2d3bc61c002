"""Where a command writes: checked before any work (:func:`unirt.store.files.check_writable`), one
line and exit status 1 for a bad place, the same rule for every command that writes files.

``unirt rewrite ... -o /proc/x.onnx`` (or ``-o nodir/x.onnx``) must be refused before the
rewrite and its verification run, not end in a ``FileNotFoundError`` traceback after them."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from unirt.cli.main import cli
from unirt.errors import UnirtError
from unirt.store.files import check_writable
from unirt.testing import models as M
from unirt.testing import rewrite_models as rm

UNWRITABLE = "/proc/unirt-test/x.onnx"  # no one, root included, creates files in /proc


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return M.save(M.tiny(), tmp_path / "tiny.onnx")


def test_a_missing_parent_is_fine_and_not_made_by_the_check(tmp_path: Path) -> None:
    target = tmp_path / "new" / "deeper" / "x.onnx"
    assert check_writable(target, "-o") == target
    assert not (tmp_path / "new").exists()  # the writer creates it, the check does not


@pytest.mark.parametrize(("where", "match"), [
    (UNWRITABLE, "cannot write in /proc"),
    ("{file}/x.onnx", "tiny.onnx is not a directory"),
    ("{dir}", "is a directory; give a file name"),
    ("{file}", "is the input model; write somewhere else"),
])
def test_bad_places_to_write_a_file(where: str, match: str, model: Path) -> None:
    path = where.format(file=model, dir=model.parent)
    with pytest.raises(UnirtError, match=match):
        check_writable(path, "-o", inputs=[model])


def test_a_folder_to_write_in(tmp_path: Path, model: Path) -> None:
    assert check_writable(tmp_path / "out", "--output-dir", directory=True)
    with pytest.raises(UnirtError, match="--output-dir .*: not a directory"):
        check_writable(model, "--output-dir", directory=True)
    with pytest.raises(UnirtError, match="cannot write in /proc"):
        check_writable("/proc/unirt-test", "--output-dir", directory=True)


def _fails_up_front(args: list[str], match: str) -> None:
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 1, res.output
    assert "Traceback" not in res.output and "Internal error" not in res.output
    assert match in res.output, res.output
    assert "verify" not in res.stderr.replace(match, "")  # no progress line: nothing ran


@pytest.mark.parametrize("args", [
    ["rewrite", "{model}", "--for", "onnxruntime", "-o", UNWRITABLE],
    ["reduce", "{model}", "--backend", "onnxruntime", "-o", UNWRITABLE],
    ["run", "{model}", "--output-dir", "/proc/unirt-test"],
    ["run", "{model}", "--save-inputs", "/proc/unirt-test"],
    ["compare", "{model}", "--save-inputs", "/proc/unirt-test"],
    ["bench", "{model}", "--json-out", UNWRITABLE],
    ["bench", "{model}", "--csv", UNWRITABLE],
    ["bench", "{model}", "--plot", UNWRITABLE],
    ["lock", "{model}", "--out", UNWRITABLE],
    ["tune", "{model}", "--lock", UNWRITABLE],
    ["probe-ops", "--backend", "onnxruntime", "--out", UNWRITABLE],
], ids=lambda a: " ".join(x for x in a[:3] if x != "{model}") + " " + a[-2])
def test_every_command_checks_where_it_writes_before_any_work(args: list[str],
                                                              model: Path) -> None:
    _fails_up_front([a.format(model=model) for a in args], "cannot write in /proc")


@pytest.mark.parametrize("command", [["rewrite", "--for", "onnxruntime"],
                                     ["reduce", "--backend", "onnxruntime"]])
def test_writing_over_the_input_model_is_refused(command: list[str], model: Path) -> None:
    _fails_up_front([command[0], str(model), *command[1:], "-o", str(model)],
                    "is the input model; write somewhere else")


def test_rewrite_creates_a_missing_folder_as_reduce_does(tmp_path: Path) -> None:
    path = M.save(rm.pool_rank(), tmp_path / "m.onnx")
    out = tmp_path / "nodir" / "fixed.onnx"
    from unirt.plugin.registry import Registry

    reg = Registry(entry_points=False)
    if "openvino" not in reg.backends or not reg.backend("openvino").available().available:
        pytest.skip("openvino not installed")
    res = CliRunner().invoke(cli, ["rewrite", "-q", str(path), "--for", "openvino", "-o",
                                   str(out)])
    assert res.exit_code == 0, res.output
    assert out.is_file() and f"wrote {out}" in res.stdout


def test_a_write_that_fails_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    from unirt.store.files import write_atomic, write_with

    target = tmp_path / "deep" / "report.json"
    write_atomic(target, "old")

    def fail(f: object) -> None:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_with(target, fail)
    assert target.read_text() == "old"
    assert sorted(p.name for p in target.parent.iterdir()) == ["report.json"]


def test_a_written_file_has_the_mode_asked_or_open_s(tmp_path: Path) -> None:
    import os

    from unirt.store.files import write_atomic

    write_atomic(tmp_path / "private", b"x", mode=0o600)
    write_atomic(tmp_path / "shared", b"x", mode=0o644)
    write_atomic(tmp_path / "plain", b"x")
    mask = os.umask(0o022)
    os.umask(mask)
    assert (tmp_path / "private").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "shared").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "plain").stat().st_mode & 0o777 == 0o666 & ~mask
