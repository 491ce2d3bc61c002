"""The artifact cache: content-addressed keys, atomic builds, corruption detection, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from unirt.cli.cache import cache as cache_group
from unirt.errors import CacheError, UnirtError
from unirt.model.info import read_model
from unirt.store.cache import (
    MANIFEST,
    ArtifactCache,
    artifact_key,
    cache_dir,
    model_digest,
    parse_duration,
    verify_entry,
)
from unirt.testing import models as M

VERSIONS = {"engine": "1.0", "converter": "2.0"}


def _key(model, **kw):
    args = {"versions": VERSIONS, "shapes": [[1, 3, 16, 16]], "precision": "exact",
            "options": {"opt": 1}}
    args.update(kw)
    return artifact_key("ncnn", model, **args)


def _builder(calls: list[int], payload: bytes = b"artifact"):
    def build(tmp: Path) -> dict:
        calls.append(1)
        (tmp / "model.bin").write_bytes(payload)
        (tmp / "sub").mkdir()
        (tmp / "sub" / "meta.txt").write_text("x")
        return {"extra": "yes"}
    return build


# -- location ------------------------------------------------------------------------------------
def test_cache_dir_env_and_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNIRT_CACHE_DIR", str(tmp_path / "env"))
    assert cache_dir() == tmp_path / "env"
    assert cache_dir(tmp_path / "opt") == tmp_path / "opt"
    assert (tmp_path / "opt").is_dir()
    monkeypatch.delenv("UNIRT_CACHE_DIR")
    assert "unirt" in str(cache_dir())


# -- keys ----------------------------------------------------------------------------------------
def test_key_is_stable_and_changes_with_every_input(tmp_path: Path) -> None:
    a = read_model(M.save(M.conv_net(), tmp_path / "a.onnx"))
    a_again = read_model(M.save(M.conv_net(), tmp_path / "copy.onnx"))
    b = read_model(M.save(M.conv_net(size=8), tmp_path / "b.onnx"))
    base = _key(a)
    assert base == _key(a_again), "same bytes, same key (wherever the file lives)"
    assert base == _key(a, options={"opt": 1}), "dict order does not matter"
    variants = {
        "model bytes": _key(b),
        "engine version": _key(a, versions={**VERSIONS, "engine": "1.1"}),
        "converter version": _key(a, versions={**VERSIONS, "converter": "2.1"}),
        "shapes": _key(a, shapes=[[2, 3, 16, 16]]),
        "precision": _key(a, precision="fast"),
        "options": _key(a, options={"opt": 2}),
        "backend": artifact_key("openvino", a, versions=VERSIONS, shapes=[[1, 3, 16, 16]],
                                precision="exact", options={"opt": 1}),
    }
    assert base not in variants.values()
    assert len(set(variants.values())) == len(variants)


def test_key_covers_external_data(tmp_path: Path) -> None:
    path = M.save_with_external_data(M.conv_net(), tmp_path / "ext.onnx")
    before = model_digest(read_model(path))
    data = path.parent / (path.name + ".data")
    raw = bytearray(data.read_bytes())
    raw[10] ^= 0xFF
    time.sleep(0.01)
    data.write_bytes(bytes(raw))
    assert model_digest(read_model(path)) != before


def test_bytes_and_file_models_have_digests(tmp_path: Path) -> None:
    proto = M.add()
    from_bytes = read_model(proto.SerializeToString())
    assert model_digest(from_bytes) == model_digest(read_model(proto.SerializeToString()))
    assert model_digest(from_bytes) != model_digest(read_model(M.tiny().SerializeToString()))


# -- building and loading ------------------------------------------------------------------------
def test_build_once_then_hit(tmp_path: Path) -> None:
    c = ArtifactCache(tmp_path)
    calls: list[int] = []
    entry, built = c.get_or_build("ncnn", "k1", _builder(calls), meta={"model": "m.onnx"})
    assert built and calls == [1]
    assert (entry / "model.bin").read_bytes() == b"artifact"
    assert verify_entry(entry)
    manifest = json.loads((entry / MANIFEST).read_text())
    assert manifest["meta"] == {"model": "m.onnx", "extra": "yes"}
    assert set(manifest["files"]) == {"model.bin", "sub/meta.txt"}
    entry2, built2 = c.get_or_build("ncnn", "k1", _builder(calls))
    assert entry2 == entry and not built2 and calls == [1]


def test_a_json_result_is_written_replaced_and_read_back(tmp_path: Path) -> None:
    c = ArtifactCache(tmp_path)
    assert c.read_json("serve-plan", "k", "plan.json") is None  # no entry
    c.write_json("serve-plan", "k", "plan.json", {"max_batch": 4}, {"kind": "serving plan"})
    assert c.read_json("serve-plan", "k", "plan.json") == {"max_batch": 4}
    entry = c.lookup("serve-plan", "k")
    assert entry is not None and verify_entry(entry)
    assert json.loads((entry / MANIFEST).read_text())["meta"]["kind"] == "serving plan"
    # a new result replaces the old one
    c.write_json("serve-plan", "k", "plan.json", {"max_batch": 8}, {"kind": "serving plan"})
    assert c.read_json("serve-plan", "k", "plan.json") == {"max_batch": 8}
    # an entry whose file is not the JSON asked for: the caller hears of it
    with pytest.raises(OSError):
        c.read_json("serve-plan", "k", "other.json")


@pytest.mark.parametrize("damage", ["truncate", "flip", "no-manifest", "extra-file",
                                    "missing-file", "bad-manifest"])
def test_corrupt_entry_is_rebuilt_never_loaded(tmp_path: Path, damage: str) -> None:
    c = ArtifactCache(tmp_path)
    calls: list[int] = []
    entry, _ = c.get_or_build("ncnn", "k", _builder(calls, b"0123456789" * 100))
    target = entry / "model.bin"
    if damage == "truncate":
        target.write_bytes(target.read_bytes()[:500])
    elif damage == "flip":
        raw = bytearray(target.read_bytes())
        raw[7] ^= 1
        target.write_bytes(bytes(raw))
    elif damage == "no-manifest":
        (entry / MANIFEST).unlink()
    elif damage == "extra-file":
        (entry / "stray").write_text("?")
    elif damage == "missing-file":
        (entry / "sub" / "meta.txt").unlink()
    else:
        (entry / MANIFEST).write_text("{not json")
    assert not verify_entry(entry)
    assert c.lookup("ncnn", "k") is None
    entry2, built = c.get_or_build("ncnn", "k", _builder(calls, b"0123456789" * 100))
    assert built and calls == [1, 1]
    assert verify_entry(entry2)
    assert (entry2 / "model.bin").read_bytes() == b"0123456789" * 100


def test_failed_build_leaves_nothing(tmp_path: Path) -> None:
    c = ArtifactCache(tmp_path)

    def build(tmp: Path) -> None:
        (tmp / "half").write_text("written before failing")
        raise UnirtError("converter said no")

    with pytest.raises(UnirtError, match="converter said no"):
        c.get_or_build("ncnn", "k", build)
    assert list((tmp_path / "ncnn").iterdir()) == [tmp_path / "ncnn" / ".k.lock"]
    assert list(c.entries()) == []


def test_names_cannot_escape_the_root(tmp_path: Path) -> None:
    c = ArtifactCache(tmp_path)
    with pytest.raises(CacheError):
        c.entry_path("ncnn", "../evil")
    with pytest.raises(CacheError):
        c.entry_path("../x", "k")


_WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from unirt.store.cache import ArtifactCache, verify_entry

    root, marker, go = sys.argv[1], Path(sys.argv[2]), float(sys.argv[3])
    while time.time() < go:
        time.sleep(0.005)

    def build(tmp):
        with open(marker, "a") as f:
            f.write("built\\n")
        for i in range(5):
            (tmp / f"part{i}.bin").write_bytes(bytes([i]) * 200_000)
            time.sleep(0.05)

    entry, built = ArtifactCache(root).get_or_build("ncnn", "shared", build)
    print("OK" if verify_entry(entry) else "BAD", built)
""")


def test_two_processes_building_the_same_entry_both_end_valid(tmp_path: Path) -> None:
    marker = tmp_path / "builds.txt"
    go = time.time() + 1.5  # both start interpreters first, then race
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path / "c"), str(marker),
                               str(go)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    results = [p.communicate(timeout=60) for p in procs]
    for (out, err), p in zip(results, procs):
        assert p.returncode == 0, err
        assert out.split()[0] == "OK", out
    assert marker.read_text().count("built") == 1, "the lock makes the second one wait and reuse"
    built_flags = sorted(out.split()[1] for out, _ in results)
    assert built_flags == ["False", "True"]
    entries = list(ArtifactCache(tmp_path / "c").entries(verify=True))
    assert len(entries) == 1 and entries[0].valid


# -- reporting, pruning, CLI ---------------------------------------------------------------------
def _age(entry: Path, seconds: float) -> None:
    t = time.time() - seconds
    os.utime(entry / MANIFEST, (t, t))


def test_parse_duration() -> None:
    assert parse_duration("90") == 90
    assert parse_duration("15m") == 900
    assert parse_duration("12h") == 43200
    assert parse_duration("7d") == 7 * 86400
    assert parse_duration("1.5w") == 1.5 * 604800
    with pytest.raises(UnirtError, match="invalid duration"):
        parse_duration("soon")


def test_cli_info_list_clear_older_than(tmp_path: Path) -> None:
    c = ArtifactCache(tmp_path)
    old, _ = c.get_or_build("ncnn", "old", _builder([]), meta={"model": "a.onnx"})
    new, _ = c.get_or_build("ncnn", "new", _builder([]), meta={"model": "b.onnx"})
    other, _ = c.get_or_build("openvino", "blob", _builder([]))
    _age(old, 10 * 86400)
    _age(other, 10 * 86400)
    runner = CliRunner()
    root = ["--dir", str(tmp_path)]

    res = runner.invoke(cache_group, ["info", *root, "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    assert info["entries"] == 3 and info["backends"]["ncnn"]["entries"] == 2
    res = runner.invoke(cache_group, ["info", *root])
    assert "ncnn: 2 entries" in res.output

    res = runner.invoke(cache_group, ["list", *root, "--json", "--verify"])
    listed = json.loads(res.stdout)
    assert {(e["backend"], e["key"]) for e in listed} == {
        ("ncnn", "old"), ("ncnn", "new"), ("openvino", "blob")}
    assert all(e["valid"] for e in listed)
    res = runner.invoke(cache_group, ["list", *root, "--backend", "ncnn"])
    assert "a.onnx" in res.output and "openvino" not in res.output

    res = runner.invoke(cache_group, ["clear", *root, "--older-than", "7d", "--backend", "ncnn",
                                      "--json"])
    assert res.exit_code == 0, res.output
    assert [e["key"] for e in json.loads(res.stdout)["entries"]] == ["old"]
    assert not old.exists() and new.exists() and other.exists()

    res = runner.invoke(cache_group, ["clear", *root, "--older-than", "7d"])
    assert "removed 1 entry" in res.output
    assert not other.exists() and new.exists()

    res = runner.invoke(cache_group, ["clear", *root, "--json"])
    assert json.loads(res.stdout)["removed"] == 1
    assert list(c.entries()) == []


def test_cli_bad_duration_is_a_unirt_error(tmp_path: Path) -> None:
    res = CliRunner().invoke(cache_group, ["clear", "--dir", str(tmp_path), "--older-than", "x"])
    assert res.exit_code != 0
    assert isinstance(res.exception, UnirtError)


def test_lookup_refreshes_last_use(tmp_path: Path) -> None:
    c = ArtifactCache(tmp_path)
    entry, _ = c.get_or_build("ncnn", "k", _builder([]))
    _age(entry, 10 * 86400)
    assert c.lookup("ncnn", "k") == entry
    assert c.clear(older_than=86400) == []


def test_a_model_read_whole_is_hashed_once(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    # read_model hashes the bytes it parsed: the digest every cache key needs reads nothing
    # again while the file is unchanged, and reads the file anew once it changed.
    import hashlib

    from unirt.store import cache as cache_module

    path = M.save(M.conv_net(), tmp_path / "m.onnx")
    info = read_model(path)
    assert info.file_digest is not None
    assert info.file_digest[1] == hashlib.sha256(path.read_bytes()).hexdigest()
    cache_module._file_hashes.clear()

    def no_reading(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model file was read again")

    monkeypatch.setattr(cache_module, "open", no_reading, raising=False)
    first = model_digest(info)
    monkeypatch.undo()
    cache_module._file_hashes.clear()
    import dataclasses

    assert first == model_digest(dataclasses.replace(info, file_digest=None))  # as the file's
    cache_module._file_hashes.clear()
    path.write_bytes(M.save(M.conv_net(size=8), tmp_path / "other.onnx").read_bytes())
    assert model_digest(info) != first  # changed under it: hashed from the file again
