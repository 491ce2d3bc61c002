"""Deployment locks: made once, read back exactly, trusted only while model bytes and engine
versions match, and every broken file a LockError naming it."""

from __future__ import annotations

import json
import logging
import stat
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import unirt
from tests.fakes import FakePlugin, Unavailable, Working
from unirt.errors import LockError, UnirtError
from unirt.evidence.agreement import OutputDiff
from unirt.evidence.probe import PASS, ProbeResult
from unirt.evidence.verify import Verification, VerifyStatus
from unirt.plugin.backend import Availability, OpenOptions
from unirt.plugin.registry import Registry
from unirt.runtime import lock as L
from unirt.runtime.session import Session
from unirt.testing import models as M
from unirt.tools.lock import make_lock

LOCKED = "fake-working"


@pytest.fixture
def registry() -> Registry:
    """The reference and an in-process fake engine (version 0.0-test): nothing here measures."""
    reg = Registry(builtins=("unirt_onnxruntime",), entry_points=False)
    reg.register(FakePlugin(Working, Unavailable), "fakes")
    return reg


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return M.save(M.conv_net(), tmp_path / "conv.onnx")


def _verified(max_abs: float = 2.5e-7) -> Verification:
    result = ProbeResult(LOCKED, PASS, precision="fp32",
                         outputs=[OutputDiff("probs", max_abs, 1e-6, 1e-8, 1.0)])
    return Verification(VerifyStatus.VERIFIED, result, False, "somekey")


def _lock_file(model: Path, registry: Registry, tmp_path: Path) -> Path:
    lock = make_lock(model, LOCKED, verification=_verified(), precision="exact",
                       registry=registry)
    return L.write_lock(lock, tmp_path / "unirt.lock")


def _no_children(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("a lock must open its backend without measuring")

    import unirt.evidence.probe
    import unirt.evidence.verify
    import unirt.process.isolation

    monkeypatch.setattr(unirt.evidence.verify, "probe", fail)
    monkeypatch.setattr(unirt.evidence.probe, "probe", fail)
    monkeypatch.setattr(unirt.process.isolation.Worker, "__init__", fail)


def _set_version(monkeypatch: pytest.MonkeyPatch, registry: Registry, name: str,
                 version: str) -> None:
    monkeypatch.setattr(registry.backend(name), "available",
                        lambda: Availability(True, version, devices=("cpu",)))


# -- the file ---------------------------------------------------------------------------------
def test_write_read_roundtrip_human_readable(model: Path, registry: Registry,
                                             tmp_path: Path) -> None:
    lock = make_lock(model, LOCKED, verification=_verified(), shapes={"input": [1, 3, 16, 16]},
                       registry=registry)
    path = L.write_lock(lock, tmp_path / "deploy" / "unirt.lock")
    back = L.read_lock(path)
    assert back == lock and back.path == str(path)
    assert back.backend == LOCKED and back.reference == "onnxruntime"
    assert back.engines[LOCKED] == "0.0-test" and "fake-unavailable" not in back.engines
    assert back.model.file == "conv.onnx" and back.model.size == model.stat().st_size
    from unirt.store.cache import file_sha256, model_digest

    assert back.model.digest == model_digest(unirt.read_model(model))
    assert back.model.sha256 == file_sha256(model)
    assert back.verification is not None and back.verification.max_abs == {"probs": 2.5e-7}
    assert back.keys["verification"] and back.machine["cpu"] and back.unirt_version
    text = path.read_text()
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"
    assert '\n  "backend": "fake-working",\n' in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in path.parent.iterdir()] == ["unirt.lock"]  # no temp file left


def test_ranking_rows_from_a_fastest_ranking(model: Path, registry: Registry) -> None:
    from unirt.evidence.timing import Ranking

    ranking = Ranking([LOCKED, "onnxruntime"], {LOCKED: 0.00042, "onnxruntime": 0.0011},
                      {"fake-raises": "engine exploded"})
    lock = make_lock(model, LOCKED, ranking, _verified(), registry=registry)
    assert lock.ranking == [L.RankEntry(LOCKED, 0.42, 2.5e-7),
                            L.RankEntry("onnxruntime", 1.1, 0.0)]
    assert lock.rejected == {"fake-raises": "engine exploded"}


@pytest.mark.parametrize("damage, problem", [
    (lambda t: t[: len(t) // 2], "ends early"),
    (lambda t: "this is not json", "not valid JSON"),
    (lambda t: "[1, 2]", "expected a JSON object"),
    (lambda t: t.replace('"format": 1', '"format": 2'), "lock format 2; this unirt reads "
                                                         "format 1; upgrade unirt"),
    (lambda t: t.replace('"format": 1,', ''), "no 'format' field"),
    (lambda t: t.replace('"digest"', '"digets"'), "field 'model.digest' is missing"),
    (lambda t: t.replace('"size": ', '"size": "big", "x": '), "field 'model.size' must be an "
                                                              "integer"),
    (lambda t: t.replace('"probs": 2.5e-07', '"probs": "small"'),
     "field 'verification.max_abs.probs' must be a number"),
])
def test_a_broken_lock_is_a_lock_error_naming_the_file(model: Path, registry: Registry,
                                                       tmp_path: Path, damage, problem) -> None:
    path = _lock_file(model, registry, tmp_path)
    path.write_text(damage(path.read_text()))
    with pytest.raises(LockError) as err:
        L.read_lock(path)
    assert str(path) in str(err.value) and problem in str(err.value)


def test_a_missing_lock_file(tmp_path: Path) -> None:
    with pytest.raises(LockError, match="no such lock file"):
        L.read_lock(tmp_path / "nowhere.lock")
    with pytest.raises(LockError, match="cannot read"):
        L.read_lock(tmp_path)  # a directory


# -- making -----------------------------------------------------------------------------------
def test_make_lock_needs_a_verified_backend(model: Path, registry: Registry) -> None:
    with pytest.raises(LockError, match="no verification of it is cached"):
        make_lock(model, LOCKED, registry=registry)
    wrong = Verification(VerifyStatus.REJECTED, ProbeResult(LOCKED, "fail", "wrong numbers: "
                                                            "probs"), False, "k")
    with pytest.raises(LockError, match="its verification is rejected: wrong numbers"):
        make_lock(model, LOCKED, verification=wrong, registry=registry)
    with pytest.raises(LockError, match="not available on this machine"):
        make_lock(model, "fake-unavailable", registry=registry)
    with pytest.raises(unirt.BackendNotFoundError):
        make_lock(model, "no-such-engine", registry=registry)
    reference = make_lock(model, "onnxruntime", registry=registry)  # needs no verification
    assert reference.verification is None and reference.keys == {}


# -- resolving for load -----------------------------------------------------------------------
def test_resolve_opens_the_locked_backend_without_children(
        model: Path, registry: Registry, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    path = _lock_file(model, registry, tmp_path)
    _no_children(monkeypatch)
    info = unirt.read_model(model)
    got = L.resolve_lock(path, info, registry, "raise")
    assert got is not None
    name, v = got
    assert name == LOCKED and v.accepted and v.cached
    assert v.describe().startswith("from lock unirt.lock (made ")
    assert v.describe().endswith("): verified, max abs 2.5e-07 on probs (fp32)")
    sess = Session(info, name, registry.backend(name).open(info, OpenOptions()),
                   verification=v)  # what load builds from it: the lock's measured error
    assert sess.precision.max_abs == {"probs": 2.5e-7}


def test_a_changed_model_byte_is_refused_naming_both_digests(
        model: Path, registry: Registry, tmp_path: Path) -> None:
    path = _lock_file(model, registry, tmp_path)
    locked = L.read_lock(path).model.digest
    changed = M.conv_net()
    changed.doc_string = "retrained"
    M.save(changed, model)
    info = unirt.read_model(model)
    from unirt.store.cache import model_digest

    now = model_digest(info)
    with pytest.raises(LockError) as err:
        L.resolve_lock(path, info, registry, "raise")
    msg = str(err.value)
    assert (f"unirt.lock was made for model digest {locked[:12]}.. (conv.onnx), this is "
            f"{now[:12]}.. (conv.onnx)") in msg
    assert "conv.onnx --out " in msg and "make the lock again with: unirt lock " in msg


def test_a_changed_engine_version_is_refused_naming_both(
        model: Path, registry: Registry, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    path = _lock_file(model, registry, tmp_path)
    info = unirt.read_model(model)
    _set_version(monkeypatch, registry, LOCKED, "0.1-test")
    with pytest.raises(LockError, match="unirt.lock was made with fake-working 0.0-test, this "
                                        "machine has 0.1-test"):
        L.resolve_lock(path, info, registry, "raise")
    assert L.check_lock(L.read_lock(path), model, registry) == [
        "unirt.lock was made with fake-working 0.0-test, this machine has 0.1-test"]


def test_the_reference_version_matters_too(model: Path, registry: Registry, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    path = _lock_file(model, registry, tmp_path)
    _set_version(monkeypatch, registry, "onnxruntime", "0.9.0")
    diffs = L.check_lock(L.read_lock(path), None, registry)
    assert len(diffs) == 1 and "made with onnxruntime " in diffs[0]
    assert diffs[0].endswith("this machine has 0.9.0")


def test_an_unavailable_or_missing_backend_is_a_difference(
        model: Path, registry: Registry, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    lock = L.read_lock(_lock_file(model, registry, tmp_path))
    monkeypatch.setattr(registry.backend(LOCKED), "available",
                        lambda: Availability(False, reason="libfake.so not found"))
    assert L.check_lock(lock, model, registry) == [
        "unirt.lock's locked backend fake-working is not available on this machine: "
        "libfake.so not found"]
    bare = Registry(builtins=("unirt_onnxruntime",), entry_points=False)
    assert "fake-working is not installed" in L.check_lock(lock, model, bare)[0]


def test_warn_mode_falls_back_with_the_reason(model: Path, registry: Registry, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch,
                                              caplog: pytest.LogCaptureFixture) -> None:
    path = _lock_file(model, registry, tmp_path)
    info = unirt.read_model(model)
    _set_version(monkeypatch, registry, LOCKED, "0.1-test")
    with caplog.at_level(logging.WARNING, logger="unirt"):
        assert L.resolve_lock(path, info, registry, "warn") is None
    assert "routing as usual" in caplog.text
    assert "made with fake-working 0.0-test, this machine has 0.1-test" in caplog.text
    caplog.clear()
    path.write_text("{")
    with caplog.at_level(logging.WARNING, logger="unirt"):
        assert L.resolve_lock(path, info, registry, "warn") is None
    assert str(path) in caplog.text and "ends early" in caplog.text
    with pytest.raises(LockError, match="ends early"):
        L.resolve_lock(path, info, registry, "raise")
    with pytest.raises(UnirtError, match="lock_mode must be one of raise, warn"):
        L.resolve_lock(path, info, registry, "ignore")


def test_notes_are_not_differences(model: Path, registry: Registry, tmp_path: Path) -> None:
    lock = L.read_lock(_lock_file(model, registry, tmp_path))
    lock.unirt_version = "0.0.1"
    lock.machine["cpu"] = "Some Other CPU"
    check = L.inspect_lock(lock, model, registry)
    assert check.ok and check.differences == []
    assert any("made with unirt 0.0.1" in n for n in check.notes)
    assert any("made on Some Other CPU" in n for n in check.notes)
    assert L.resolve_lock(lock, unirt.read_model(model), registry) is not None


def test_a_precision_other_than_the_lock_s(model: Path, registry: Registry,
                                           tmp_path: Path) -> None:
    path = _lock_file(model, registry, tmp_path)
    with pytest.raises(LockError, match="made for precision exact, this load asks for fast"):
        L.resolve_lock(path, unirt.read_model(model), registry, precision="fast")


# -- the command line -------------------------------------------------------------------------
@pytest.fixture
def cli() -> click.Group:
    """The lock command under the CLI's own group (its one-line UnirtError handling)."""
    from unirt.cli.lock import lock_command
    from unirt.cli.main import _Group

    group = _Group()
    group.add_command(lock_command)
    return group


def test_cli_lock_and_check(cli: click.Group, model: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "ship" / "unirt.lock"
    result = runner.invoke(cli, ["lock", str(model), "--backend", "onnxruntime",
                                 "--out", str(out), "--shape", "input=1x3x16x16"])
    assert result.exit_code == 0, result.output
    assert "locked on onnxruntime" in result.output and f"lock written to {out}" in result.output
    lock = L.read_lock(out)
    assert lock.backend == "onnxruntime" and lock.shapes == {"input": [1, 3, 16, 16]}

    result = runner.invoke(cli, ["lock", "--check", str(out), str(model)])
    assert result.exit_code == 0, result.output
    assert "unirt.lock holds on this machine and conv.onnx: onnxruntime" in result.output
    data = json.loads(runner.invoke(cli, ["lock", "--check", str(out), "--json"]).stdout)
    assert data["ok"] and data["differences"] == [] and data["model_checked"] is None
    assert "model not checked" in data["notes"][0]

    doc = json.loads(out.read_text())
    doc["engines"]["onnxruntime"] = "0.1.0"
    out.write_text(json.dumps(doc))
    changed = M.conv_net()
    changed.doc_string = "retrained"
    M.save(changed, model)
    result = runner.invoke(cli, ["lock", "--check", str(out), str(model)])
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("unirt.lock was made for model digest ")
    assert lines[1].startswith("unirt.lock was made with onnxruntime 0.1.0, this machine has ")
    result = runner.invoke(cli, ["lock", "--check", str(out), str(model), "--json"])
    assert result.exit_code == 1 and len(json.loads(result.stdout)["differences"]) == 2


def test_cli_checks_the_model_next_to_the_lock(cli: click.Group, model: Path) -> None:
    runner = CliRunner()
    out = model.parent / "unirt.lock"
    assert runner.invoke(cli, ["lock", str(model), "-b", "onnxruntime", "-o", str(out)]
                         ).exit_code == 0
    data = json.loads(runner.invoke(cli, ["lock", "--check", str(out), "--json"]).stdout)
    assert data["ok"] and data["model_checked"] == str(model)


def test_cli_errors_are_one_line(cli: click.Group, model: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["lock", "--check", str(tmp_path / "none.lock")])
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and "no such lock file" in result.output
    bad = tmp_path / "bad.lock"
    bad.write_text('{"format": 7}')
    result = runner.invoke(cli, ["lock", "--check", str(bad)])
    assert result.exit_code == 1 and "lock format 7" in result.output
    assert "Traceback" not in result.output
    result = runner.invoke(cli, ["lock", "--check", str(bad), "--backend", "onnxruntime"])
    assert result.exit_code == 1 and "--check reads a lock" in result.output
    result = runner.invoke(cli, ["lock", str(model), "--backend", "no-such-engine"])
    assert result.exit_code == 1 and "unknown backend 'no-such-engine'" in result.output
    assert runner.invoke(cli, ["lock"]).exit_code == 2  # usage: nothing to lock or check


def test_cli_lock_fastest_measures_once_and_records_the_ranking(
        cli: click.Group, model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """End to end on the real engines: the ranking load measured is the one written."""
    from unirt.evidence import timing as fastest

    monkeypatch.setenv("UNIRT_VERIFY_TIMEOUT", "60")
    calls = []
    measure = fastest._measure
    monkeypatch.setattr(fastest, "_measure", lambda *a, **k: calls.append(1) or measure(*a, **k))
    out = tmp_path / "unirt.lock"
    result = CliRunner().invoke(cli, ["lock", str(model), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    assert len(calls) == 1
    lock = L.read_lock(out)
    assert json.loads(result.stdout)["lock"]["backend"] == lock.backend
    assert lock.ranking and lock.ranking[0].backend == lock.backend
    assert all(r.median_ms and r.median_ms > 0 for r in lock.ranking)
    ref = next(r for r in lock.ranking if r.backend == "onnxruntime")
    assert ref.max_abs == 0.0
    assert all(r.max_abs is not None and r.max_abs < 1e-3 for r in lock.ranking)
    assert set(lock.engines) >= {r.backend for r in lock.ranking}
    assert (lock.verification is None) == (lock.backend == "onnxruntime")
    assert L.check_lock(lock, model) == []


def test_make_lock_refuses_shapes_of_unknown_inputs(model: Path, registry: Registry) -> None:
    with pytest.raises(UnirtError, match="shapes names 'x', not an input of conv.onnx; inputs: "
                                         "input"):
        make_lock(model, "onnxruntime", shapes={"x": [1]}, registry=registry)
