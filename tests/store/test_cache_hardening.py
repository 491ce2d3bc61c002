"""No cache state can crash a load or hand back a wrong answer.

A cache directory that cannot be used (a file in its place, a path under a file, read-only, full)
leaves unirt working without caching; a read-only populated cache is read; edited or forged
entries (verdicts, rankings, artifacts) are corrupt; a corrupted OpenVINO blob is recompiled,
never loaded; scratch of killed builds is swept.

These tests run as root here, and root is not stopped by file modes: ``chmod 555`` makes
nothing read-only for it. So a read-only or full cache is simulated by making the os calls that
would change something under the cache root raise ``PermissionError`` / ``OSError(ENOSPC)``
(:func:`_unwritable`), or by a file in place of the directory; one test uses a real read-only
bind mount where the test may mount (skipped elsewhere).
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import io
import json
import logging
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import unirt
from unirt.cli.cache import cache as cache_group
from unirt.errors import BackendError
from unirt.evidence import verify as verify_mod
from unirt.store import cache as cache_mod
from unirt.store.cache import (
    ENGINE_MANAGED,
    MANIFEST,
    SECRET,
    ArtifactCache,
    verify_entry,
)
from unirt.testing import models as M


def _root() -> Path:
    return Path(os.environ["UNIRT_CACHE_DIR"])


def _builder(calls: list[int], payload: bytes = b"artifact"):
    def build(tmp: Path) -> dict:
        calls.append(1)
        (tmp / "model.bin").write_bytes(payload)
        return {"extra": "yes"}
    return build


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under root with its size and mtime: what "nothing was written" compares."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        out[p.relative_to(root).as_posix()] = (st.st_size, st.st_mtime_ns)
    return out


def _warnings(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "unirt" and r.levelno == logging.WARNING and text in r.getMessage()]


@contextlib.contextmanager
def _unwritable(monkeypatch: pytest.MonkeyPatch, root: Path,
                code: int = errno.EACCES) -> Iterator[None]:
    """Every os call that would create, change or remove something under ``root`` raises
    ``OSError(code)`` (EACCES: permission denied; ENOSPC: a full disk; EROFS): what a read-only
    or full cache directory does to a process that root's privileges do not rescue."""
    base = str(root.resolve())

    def under(path: object, dir_fd: int | None = None) -> bool:
        if isinstance(path, int):
            return False
        p = os.fsdecode(os.fspath(path))  # type: ignore[arg-type]
        if dir_fd is not None and not os.path.isabs(p):
            p = os.path.join(os.readlink(f"/proc/self/fd/{dir_fd}"), p)
        return os.path.abspath(p).startswith(base)

    def deny(path: object) -> None:
        raise OSError(code, os.strerror(code), os.fspath(path))  # type: ignore[arg-type]

    def guard(fn, paths: int = 1, first: int = 0):
        def wrapped(*args, **kwargs):
            dir_fd = kwargs.get("dir_fd", kwargs.get("src_dir_fd"))
            for path in args[first:first + paths]:
                if under(path, dir_fd):
                    deny(path)
            return fn(*args, **kwargs)
        return wrapped

    real_open, real_io_open = os.open, io.open

    def os_open(path, flags, *args, **kwargs):
        writes = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
        if flags & writes and under(path, kwargs.get("dir_fd")):
            deny(path)
        return real_open(path, flags, *args, **kwargs)

    def open_(file, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+") and under(file):
            deny(file)
        return real_io_open(file, mode, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(os, "open", os_open)
        m.setattr(io, "open", open_)
        m.setattr(builtins, "open", open_)
        for name in ("mkdir", "unlink", "remove", "rmdir", "utime", "chmod"):
            m.setattr(os, name, guard(getattr(os, name)))
        m.setattr(os, "symlink", guard(os.symlink, first=1))  # (target, where the link goes)
        for name in ("rename", "replace", "link"):
            m.setattr(os, name, guard(getattr(os, name), paths=2))
        yield


def _unirt_run(model: Path) -> None:
    """``unirt run MODEL`` in a process of its own (the real exit status, not click's)."""
    res = subprocess.run([sys.executable, "-m", "unirt.cli", "run", str(model)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Internal error" not in res.stderr


def _resign(entry: Path) -> None:
    """What only unirt can do (it holds the secret): recompute the manifest and sign it."""
    doc = cache_mod._read_manifest(entry)
    assert doc is not None
    doc["files"] = cache_mod._manifest_for(entry)
    secret = cache_mod._read_secret(entry.parent.parent)
    assert secret is not None
    cache_mod._write_manifest(entry, doc, secret, entry.parent.name, entry.name)


def _forge(entry: Path) -> None:
    """What an attacker can do: recompute every checksum of the manifest (not the MAC)."""
    doc = json.loads((entry / MANIFEST).read_text())
    doc["files"] = cache_mod._manifest_for(entry)
    (entry / MANIFEST).write_text(json.dumps(doc))


# -- no cache, no problem ------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["under-a-file", "a-file"])
def test_unusable_cache_dir_loads_runs_and_warns_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        where: str) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory")
    root = blocker / "cache" if where == "under-a-file" else blocker
    monkeypatch.setenv("UNIRT_CACHE_DIR", str(root))
    path = M.save(M.conv_net(), tmp_path / "conv.onnx")
    x = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)
    with caplog.at_level(logging.WARNING, logger="unirt"):
        first = unirt.load(path)
        second = unirt.load(path)
        np.testing.assert_allclose(first(x), second(x))
        # the cache API works the same, privately: built, returned, released
        cache = ArtifactCache()
        assert cache.problem
        calls: list[int] = []
        entry, built = cache.get_or_build("ncnn", "k", _builder(calls))
        assert built and (entry / "model.bin").read_bytes() == b"artifact"
        assert cache.lookup("ncnn", "k") is None
        cache.release(entry)
        assert not entry.exists()
    assert len(_warnings(caplog, "cannot be created")) == 1, caplog.text
    assert blocker.read_text() == "not a directory"
    _unirt_run(path)
    res = CliRunner().invoke(cache_group, ["info"])
    assert res.exit_code == 0 and "not usable" in res.output, res.output


def test_verification_works_and_stores_nothing_without_a_cache(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_engines: None) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    monkeypatch.setenv("UNIRT_CACHE_DIR", str(blocker / "cache"))
    path = M.save(M.conv_net(), tmp_path / "conv.onnx")
    sess = unirt.load(path, backend="fake-faithful")
    assert sess.verification.status == "verified" and not sess.verification.cached
    again = unirt.load(path, backend="fake-faithful")
    assert not again.verification.cached  # nothing cached: measured again, still right
    with pytest.raises(BackendError, match="wrong numbers"):
        unirt.load(path, backend="fake-approx")


@pytest.mark.parametrize("code", [errno.EACCES, errno.ENOSPC, errno.EROFS])
def test_read_only_or_full_populated_cache_is_read_and_not_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        fake_engines: None, code: int) -> None:
    path = M.save(M.conv_net(), tmp_path / "conv.onnx")
    cache = ArtifactCache()
    calls: list[int] = []
    cache.get_or_build("ncnn", "known", _builder(calls))
    assert unirt.load(path, backend="fake-faithful").verification.cached is False
    before = _snapshot(cache.root)
    with _unwritable(monkeypatch, cache.root, code), caplog.at_level(logging.WARNING, "unirt"):
        c = ArtifactCache()
        hit, built = c.get_or_build("ncnn", "known", _builder(calls))
        assert hit == cache.entry_path("ncnn", "known")
        assert not built and calls == [1], "a verified entry of a read-only cache is used"
        fresh, built = c.get_or_build("ncnn", "new", _builder(calls))
        assert built and calls == [1, 1] and cache.root not in fresh.parents
        c.release(fresh)
        v = unirt.load(path, backend="fake-faithful").verification
        assert v.cached and v.status == "verified"
        # a verdict that is not there yet: measured, used, not stored
        other = M.save(M.conv_net(size=8), tmp_path / "other.onnx")
        assert unirt.load(other, backend="fake-faithful").verification.status == "verified"
        assert unirt.load(other).backend == "onnxruntime"
    assert _snapshot(cache.root) == before, "nothing under a read-only cache may change"
    assert len(_warnings(caplog, "cannot be written")) == 1, caplog.text


def test_a_full_disk_during_a_build_builds_privately(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = ArtifactCache()
    attempts: list[Path] = []

    def build(tmp: Path) -> None:
        attempts.append(tmp)
        if cache.root in tmp.parents:
            raise OSError(errno.ENOSPC, "No space left on device")
        (tmp / "model.bin").write_bytes(b"x")

    entry, built = cache.get_or_build("ncnn", "k", build)
    assert built and len(attempts) == 2 and cache.root not in entry.parents
    assert (entry / "model.bin").read_bytes() == b"x"
    assert not [p for p in (cache.root / "ncnn").iterdir() if p.name.startswith(".tmp-")]

    # the manifest cannot be written: the built artifact is moved out, not built again
    def no_space(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache_mod, "_write_manifest", no_space)
    calls: list[int] = []
    entry, built = cache.get_or_build("ncnn", "k2", _builder(calls))
    assert built and calls == [1] and (entry / "model.bin").read_bytes() == b"artifact"
    assert cache.root not in entry.parents
    assert cache.lookup("ncnn", "k2") is None


def test_a_lock_held_past_the_timeout_builds_privately(monkeypatch: pytest.MonkeyPatch) -> None:
    import filelock

    cache = ArtifactCache()
    (cache.root / "ncnn").mkdir()
    monkeypatch.setattr(cache_mod, "LOCK_TIMEOUT_S", 0.2)
    with filelock.FileLock(str(cache.root / "ncnn" / ".k.lock"), thread_local=False):
        entry, built = cache.get_or_build("ncnn", "k", _builder([]))
    assert built and cache.root not in entry.parents


# -- entries are bound to their key and content --------------------------------------------------
def test_secret_is_private_and_entries_are_signed() -> None:
    cache = ArtifactCache()
    entry, _ = cache.get_or_build("ncnn", "k", _builder([]))
    secret = cache.root / SECRET
    assert secret.stat().st_mode & 0o777 == 0o600 and len(secret.read_bytes()) == 32
    doc = json.loads((entry / MANIFEST).read_text())
    assert len(doc["mac"]) == 64 and verify_entry(entry)


@pytest.mark.parametrize("tamper", ["forged-checksums", "no-mac", "moved-to-another-key",
                                    "another-cache's-secret"])
def test_an_entry_that_is_not_signed_for_its_place_is_removed_and_rebuilt(tamper: str) -> None:
    cache = ArtifactCache()
    calls: list[int] = []
    entry, _ = cache.get_or_build("ncnn", "k", _builder(calls))
    target = "k"
    if tamper == "forged-checksums":
        (entry / "model.bin").write_bytes(b"evil")
        _forge(entry)
    elif tamper == "no-mac":
        doc = json.loads((entry / MANIFEST).read_text())
        del doc["mac"]
        (entry / MANIFEST).write_text(json.dumps(doc))
    elif tamper == "moved-to-another-key":
        os.rename(entry, entry.parent / "k2")
        target = "k2"
    else:
        (cache.root / SECRET).write_bytes(os.urandom(32))
    assert cache.lookup("ncnn", target) is None
    assert not (cache.root / "ncnn" / target).exists(), "a corrupt entry is removed"
    again, built = cache.get_or_build("ncnn", target, _builder(calls))
    assert built and (again / "model.bin").read_bytes() == b"artifact" and verify_entry(again)


def test_a_forged_verdict_is_never_trusted(tmp_path: Path, fake_engines: None,
                                           caplog: pytest.LogCaptureFixture) -> None:
    path = M.save(M.conv_net(), tmp_path / "conv.onnx")
    with pytest.raises(BackendError, match="wrong numbers"):
        unirt.load(path, backend="fake-approx")
    [entry] = [e.path for e in ArtifactCache().entries(verify_mod.CACHE_SECTION)]
    verdict = entry / verify_mod.VERDICT_FILE
    doc = json.loads(verdict.read_text())
    assert doc["status"] == "rejected"
    doc["status"] = "verified"
    doc["result"]["status"] = "pass"
    verdict.write_text(json.dumps(doc))
    _forge(entry)
    with caplog.at_level(logging.WARNING, "unirt"), \
            pytest.raises(BackendError, match="wrong numbers"):
        unirt.load(path, backend="fake-approx")  # measured again: a child ran
    assert _warnings(caplog, "corrupt or was altered")
    assert json.loads(verdict.read_text())["status"] == "rejected" and verify_entry(entry)


def test_a_verdict_of_unknown_status_is_a_miss_and_removed(tmp_path: Path,
                                                           fake_engines: None) -> None:
    path = M.save(M.conv_net(), tmp_path / "conv.onnx")
    v = unirt.load(path, backend="fake-faithful").verification
    entry = ArtifactCache().entry_path(verify_mod.CACHE_SECTION, v.key)
    doc = json.loads((entry / verify_mod.VERDICT_FILE).read_text())
    doc["status"] = "trusted"
    (entry / verify_mod.VERDICT_FILE).write_text(json.dumps(doc))
    _resign(entry)  # even signed (as another unirt version could), it is not a verdict
    assert verify_entry(entry)
    with pytest.raises(ValueError):
        verify_mod._read(entry, v.key)
    from unirt.plugin.registry import get_registry

    version = get_registry().backend("fake-faithful").available().version
    assert verify_mod.lookup(unirt.read_model(path), "fake-faithful", version) is None
    assert not entry.exists(), "removed, not left to be read again"
    again = unirt.load(path, backend="fake-faithful").verification
    assert not again.cached and again.status == "verified" and again.key == v.key
    assert json.loads((entry / verify_mod.VERDICT_FILE).read_text())["status"] == "verified"


def test_a_forged_ranking_is_never_trusted(tmp_path: Path) -> None:
    from unirt.evidence import timing as fastest

    cache = ArtifactCache()
    entry, _ = cache.get_or_build(fastest.CACHE_SECTION, "r", lambda tmp: (
        tmp / fastest.RESULT_FILE).write_text("{}") and None)
    (entry / fastest.RESULT_FILE).write_text('{"order": ["evil"]}')
    _forge(entry)
    assert cache.lookup(fastest.CACHE_SECTION, "r") is None and not entry.exists()


# -- the OpenVINO compile cache is checksummed ---------------------------------------------------
def _openvino_blob(sess: unirt.Session) -> Path:
    [blob] = [p for p in Path(sess.details["cache_dir"]).iterdir() if p.suffix == ".blob"]
    return blob


def test_a_corrupted_openvino_blob_is_recompiled_never_loaded(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("openvino")
    path = M.save(M.resnet_like(size=32), tmp_path / "r.onnx")
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    ref = unirt.load(path, backend="onnxruntime").run({"input": x})["logits"]
    first = unirt.load(path, backend="openvino", verify="never")
    assert first.details["loaded_from_cache"] is False
    blob = _openvino_blob(first)
    manifest = json.loads((blob.parent / MANIFEST).read_text())
    assert blob.name in manifest["files"] and (blob.parent / ENGINE_MANAGED).exists()
    res = CliRunner().invoke(cache_group, ["list", "--verify", "--backend", "openvino"])
    assert "INVALID" not in res.output, res.output

    raw = bytearray(blob.read_bytes())
    for i in range(len(raw) // 2, len(raw), max(1, len(raw) // 64)):
        raw[i] ^= 0xFF
    blob.write_bytes(bytes(raw))
    res = CliRunner().invoke(cache_group, ["list", "--verify", "--backend", "openvino"])
    assert "INVALID" in res.output, res.output

    with caplog.at_level(logging.WARNING, "unirt"):
        second = unirt.load(path, backend="openvino", verify="never")
    assert second.details["loaded_from_cache"] is False, "the flipped blob was loaded"
    assert _warnings(caplog, "do not match the manifest")
    np.testing.assert_allclose(second.run({"input": x})["logits"], ref, atol=1e-4)
    third = unirt.load(path, backend="openvino", verify="never")
    assert third.details["loaded_from_cache"] is True
    np.testing.assert_allclose(third.run({"input": x})["logits"], ref, atol=1e-4)


def test_an_unlisted_file_in_the_openvino_cache_is_removed(tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    path = M.save(M.tiny(), tmp_path / "tiny.onnx")
    first = unirt.load(path, backend="openvino", verify="never")
    d = Path(first.details["cache_dir"])
    planted = d / "123.blob"  # a compile killed mid-write, or a planted blob
    planted.write_bytes(b"\0" * 100)
    unirt.load(path, backend="openvino", verify="never")
    assert not planted.exists()


def test_openvino_without_a_cache_and_with_a_read_only_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("openvino")
    path = M.save(M.resnet_like(size=32), tmp_path / "r.onnx")
    x = np.ones((1, 3, 32, 32), np.float32)
    ref = unirt.load(path, backend="onnxruntime").run({"input": x})["logits"]
    first = unirt.load(path, backend="openvino")  # populates the cache (blob and verdict)
    root = _root()
    before = _snapshot(root)
    with _unwritable(monkeypatch, root):
        ro = unirt.load(path, backend="openvino")
        assert ro.verification.cached
        assert root not in Path(ro.details["cache_dir"]).parents  # links in a private dir
        np.testing.assert_allclose(ro.run({"input": x})["logits"], ref, atol=1e-4)
    assert _snapshot(root) == before
    assert first.details["cache_dir"] != ro.details["cache_dir"]

    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    monkeypatch.setenv("UNIRT_CACHE_DIR", str(blocker / "cache"))
    none = unirt.load(path, prefer="openvino")
    assert none.backend == "openvino" and none.details["cache_dir"] is None
    np.testing.assert_allclose(none.run({"input": x})["logits"], ref, atol=1e-4)


def test_a_real_read_only_mount(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A read-only bind mount stops root too (EROFS). OpenVINO there deletes a blob it finds
    stale and raised "cannot remove: Read-only file system"; it now gets a private directory
    of links. Skipped where the test may not mount."""
    pytest.importorskip("openvino")
    path = M.save(M.resnet_like(size=32), tmp_path / "r.onnx")
    unirt.load(path, backend="openvino")
    mnt = tmp_path / "ro"
    mnt.mkdir()
    if subprocess.run(["mount", "--bind", str(_root()), str(mnt)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot bind-mount here")
    try:
        if subprocess.run(["mount", "-o", "remount,ro,bind", str(mnt)],
                          capture_output=True).returncode != 0:
            pytest.skip("cannot remount read-only here")
        monkeypatch.setenv("UNIRT_CACHE_DIR", str(mnt))
        os.utime(path)  # OpenVINO now finds its blob stale: it wants to delete it
        x = np.ones((1, 3, 32, 32), np.float32)
        with unirt.load(path, prefer="openvino") as sess:
            assert sess.backend == "openvino" and sess.verification.cached
            ref = unirt.load(path, backend="onnxruntime").run({"input": x})["logits"]
            np.testing.assert_allclose(sess.run({"input": x})["logits"], ref, atol=1e-4)
        _unirt_run(path)
    finally:
        import gc

        gc.collect()  # engine objects holding files under the mount
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            # still busy (an engine's file handle): detach it now, freed when released
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_ncnn_works_without_a_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("ncnn")
    from unirt.plugin.registry import get_registry

    if not get_registry().backend("ncnn").available().available:
        pytest.skip("ncnn/pnnx not available")
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    monkeypatch.setenv("UNIRT_CACHE_DIR", str(blocker / "cache"))
    path = M.save(M.conv_net(), tmp_path / "conv.onnx")
    x = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)
    sess = unirt.load(path, backend="ncnn", verify="never")
    np.testing.assert_allclose(sess(x), unirt.load(path, backend="onnxruntime")(x), atol=1e-4)


# -- no scratch left behind ----------------------------------------------------------------------
def _scratch_dir(bdir: Path, name: str, age_s: float) -> Path:
    d = bdir / name
    (d / "sub").mkdir(parents=True)
    (d / "sub" / "half.bin").write_bytes(b"\0" * 1000)
    t = time.time() - age_s
    os.utime(d, (t, t))
    return d


def test_stale_scratch_is_swept_on_use_reported_and_cleared(monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    import filelock

    cache = ArtifactCache()
    bdir = cache.root / "ncnn"
    bdir.mkdir()
    key = "a" * 40
    (bdir / f".{key}.lock").touch()
    stale = _scratch_dir(bdir, f".tmp-{key}-x1y2z3", 3600)
    trash = _scratch_dir(bdir, ".trash-old-1-2", 3600)
    young = _scratch_dir(bdir, f".tmp-{key}-young", 10)
    held_key = "b" * 40
    live = _scratch_dir(bdir, f".tmp-{held_key}-live", 3600)

    with filelock.FileLock(str(bdir / f".{held_key}.lock"), thread_local=False):
        info = cache.info()["scratch"]
        assert info["dirs"] == 4 and info["stale"] == 2 and info["size_bytes"] >= 4000
        res = CliRunner().invoke(cache_group, ["info"])
        assert "4 unfinished build or trash directories" in res.output, res.output
        cache.lookup("ncnn", "c" * 40)  # any use of the section sweeps it, once per process
        assert not stale.exists() and not trash.exists()
        assert young.exists() and live.exists(), "a live build is never swept"
        t = time.time() - 3600
        os.utime(young, (t, t))
        cache.lookup("ncnn", "c" * 40)
        assert young.exists(), "at most once per process and section"
        res = CliRunner().invoke(cache_group, ["clear"])
        assert res.exit_code == 0 and not young.exists() and live.exists()
    CliRunner().invoke(cache_group, ["clear"])
    assert not live.exists()
    assert cache.info()["scratch"]["dirs"] == 0


# -- concurrency ---------------------------------------------------------------------------------
_FILLER = textwrap.dedent("""
    import sys, time
    from unirt.store.cache import ArtifactCache, verify_entry

    root, go, me = sys.argv[1], float(sys.argv[2]), sys.argv[3]
    while time.time() < go:
        time.sleep(0.005)

    def build(tmp):
        for i in range(3):
            (tmp / f"part{i}.bin").write_bytes(bytes([i]) * 100_000)
            time.sleep(0.02)

    c = ArtifactCache(root)
    shared, _ = c.get_or_build("ncnn", "shared", build)
    own, _ = c.get_or_build("ncnn", "own-" + me, build)
    print("OK" if verify_entry(shared) and verify_entry(own) else "BAD")
""")


def test_four_processes_fill_one_empty_cache(tmp_path: Path) -> None:
    root = tmp_path / "fresh"  # not even the directory exists: all four create it and the secret
    go = time.time() + 2.0
    procs = [subprocess.Popen([sys.executable, "-c", _FILLER, str(root), str(go), str(i)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(4)]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        assert out.strip() == "OK", out + err
    entries = list(ArtifactCache(root).entries(verify=True))
    assert len(entries) == 5 and all(e.valid for e in entries)
    assert not [p for p in (root / "ncnn").iterdir() if p.name.startswith((".tmp-", ".trash-"))]
    assert not [p for p in root.iterdir() if p.name.startswith(".secret-")]
