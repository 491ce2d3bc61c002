"""Fuzzing the model reader: mutated models either read (and validate) or raise a UnirtError.

Mutations of small models (built in code, plus the onnx wheel's light SqueezeNet): byte flips,
truncations, insertions, deletions, and field-level edits of the ModelProto (names, dims, element
types, attribute values, opsets, node order, external-data entries). Two properties:

* in this process, ``read_model`` + ``validate_graph`` succeed or raise ``UnirtError``; any
  other exception is a bug in unirt (fixed in ``unirt/model.py``);
* for models that pass, ``unirt.load(path, backend="onnxruntime")`` and one run end in success
  or a ``UnirtError``, observed in a child process so that an engine's segfault is a failed
  test, not a dead test run.

Hypothesis runs derandomized (the same examples on every run) and bounded (``max_examples``,
no shrinking of the child-process test), so CI time stays under a minute. A mutation that once
crashed something goes into ``REGRESSIONS`` as a description, never as a committed binary.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from functools import cache
from pathlib import Path
from typing import Any

import onnx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from unirt.errors import UnirtError
from unirt.model.info import read_model, validate_graph
from unirt.testing import models as M
from unirt.testing.real_models import light_model

Mutation = tuple[Any, ...]


@cache
def _bases() -> dict[str, bytes]:
    return {
        "conv_net": M.conv_net().SerializeToString(),
        "tiny": M.tiny().SerializeToString(),
        "multi_io": M.multi_io().SerializeToString(),
        "with_if": M.with_if().SerializeToString(),
        "squeezenet": light_model("squeezenet").read_bytes(),
    }


BASES = ("conv_net", "tiny", "multi_io", "with_if", "squeezenet")
_OPS = ("Relu", "Conv", "Add", "Reshape", "Gather", "Loop", "If", "NoSuchOp", "Concat", "Resize")
_frac = st.floats(0, 1, allow_nan=False)
_big_int = st.one_of(st.integers(-5, 5), st.integers(-(1 << 62), 1 << 62),
                     st.sampled_from([-1, 0, 1 << 31, 1 << 32, 1 << 40]))
_name = st.one_of(st.text(max_size=12), st.sampled_from(["", "x", "input", "y", "data_0"]))
_entry = st.one_of(st.sampled_from(["", "0", "-1", "abc", "1e3", "4096", "99999999999"]),
                   st.integers(0, 1 << 20).map(str))
_location = st.sampled_from(["../../../../etc/passwd", "/etc/passwd", "", "w.bin", ".",
                             "a\x00b", "x" * 300, "sub/../../w.bin"])

MUTATIONS = st.one_of(
    st.tuples(st.just("flip"), _frac, st.integers(1, 255)),
    st.tuples(st.just("truncate"), _frac),
    st.tuples(st.just("insert"), _frac, st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("delete"), _frac, st.integers(1, 16)),
    st.tuples(st.just("rename"), _frac, st.sampled_from(["input", "output", "init", "node"]),
              _name),
    st.tuples(st.just("dims"), _frac, st.lists(_big_int, max_size=4)),
    st.tuples(st.just("input_dim"), _frac, _big_int),
    st.tuples(st.just("dtype"), _frac, st.integers(-2, 40)),
    st.tuples(st.just("attr"), _frac, _big_int),
    st.tuples(st.just("opset"), st.integers(-3, 40) | _big_int),
    st.tuples(st.just("drop_node"), _frac),
    st.tuples(st.just("swap_nodes"), _frac, _frac),
    st.tuples(st.just("op_type"), _frac, st.sampled_from(_OPS)),
    st.tuples(st.just("external"), _frac, _location, _entry, _entry),
)


def _pick(seq: Any, frac: float) -> Any:
    return seq[min(int(frac * len(seq)), len(seq) - 1)] if len(seq) else None


def _field(data: bytes, mutation: Mutation) -> bytes:
    """Apply a field-level mutation to the parsed model (returned unchanged when the model has
    nothing to mutate there)."""
    m = onnx.ModelProto()
    m.ParseFromString(data)
    g = m.graph
    kind = mutation[0]
    if kind == "rename":
        _, frac, where, name = mutation
        if where == "input" and g.input:
            _pick(g.input, frac).name = name
        elif where == "output" and g.output:
            _pick(g.output, frac).name = name
        elif where == "init" and g.initializer:
            _pick(g.initializer, frac).name = name
        elif where == "node" and g.node:
            node = _pick(g.node, frac)
            if node.input:
                node.input[0] = name
    elif kind == "dims" and g.initializer:
        t = _pick(g.initializer, mutation[1])
        del t.dims[:]
        t.dims.extend(mutation[2])
    elif kind == "input_dim" and g.input:
        shape = _pick(g.input, mutation[1]).type.tensor_type.shape
        if shape.dim:
            shape.dim[0].dim_value = mutation[2]
    elif kind == "dtype" and g.initializer:
        _pick(g.initializer, mutation[1]).data_type = mutation[2]
    elif kind == "attr":
        attrs = [a for n in g.node for a in n.attribute if a.type in (2, 7)]
        a = _pick(attrs, mutation[1])
        if a is not None and a.type == 2:
            a.i = mutation[2]
        elif a is not None and a.ints:
            a.ints[0] = mutation[2]
    elif kind == "opset" and m.opset_import:
        m.opset_import[0].version = mutation[1]
    elif kind == "drop_node" and g.node:
        del g.node[min(int(mutation[1] * len(g.node)), len(g.node) - 1)]
    elif kind == "swap_nodes" and len(g.node) > 1:
        i = min(int(mutation[1] * len(g.node)), len(g.node) - 1)
        j = min(int(mutation[2] * len(g.node)), len(g.node) - 1)
        a, b = onnx.NodeProto(), onnx.NodeProto()
        a.CopyFrom(g.node[i])
        b.CopyFrom(g.node[j])
        g.node[i].CopyFrom(b)
        g.node[j].CopyFrom(a)
    elif kind == "op_type" and g.node:
        _pick(g.node, mutation[1]).op_type = mutation[2]
    elif kind == "external" and g.initializer:
        _, frac, location, offset, length = mutation
        t = _pick(g.initializer, frac)
        t.ClearField("raw_data")
        for f in ("float_data", "int32_data", "int64_data", "double_data"):
            t.ClearField(f)
        t.data_location = onnx.TensorProto.EXTERNAL
        del t.external_data[:]
        for k, v in (("location", location), ("offset", offset), ("length", length)):
            e = t.external_data.add()
            e.key, e.value = k, v
    return m.SerializeToString()


def mutate(base: str, mutation: Mutation) -> bytes:
    """The bytes of ``base`` after ``mutation`` (a plain tuple, so that a failing example reads
    as a reproducible description)."""
    data = _bases()[base]
    kind = mutation[0]
    n = len(data)
    if kind == "flip":
        i = min(int(mutation[1] * n), n - 1)
        return data[:i] + bytes([data[i] ^ mutation[2]]) + data[i + 1:]
    if kind == "truncate":
        return data[:int(mutation[1] * n)]
    if kind == "insert":
        i = int(mutation[1] * n)
        return data[:i] + mutation[2] + data[i:]
    if kind == "delete":
        i = int(mutation[1] * n)
        return data[:i] + data[i + mutation[2]:]
    return _field(data, mutation)


def _write(tmp: Path, base: str, mutation: Mutation, index: int = 0) -> Path:
    folder = tmp / f"m{index}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "w.bin").write_bytes(b"\0" * 8192)  # something for external locations to name
    path = folder / f"{base}.onnx"
    path.write_bytes(mutate(base, mutation))
    return path


def _validate(path: Path) -> bool:
    """True when the model passes; False on a UnirtError; anything else propagates (a bug)."""
    try:
        validate_graph(read_model(path))
    except UnirtError:
        return False
    return True


#: Mutations that once broke something (raw exception in the reader, or a crash downstream),
#: kept as explicit cases: (base, mutation).
REGRESSIONS: list[tuple[str, Mutation]] = [
    ("tiny", ("flip", 0.42, 0x80)),  # a flipped byte in a name: invalid UTF-8 (OpenCV segfault)
    ("conv_net", ("external", 0.0, "../../../../etc/passwd", "0", "")),
    ("conv_net", ("external", 0.0, "/etc/passwd", "0", "")),
    ("conv_net", ("external", 0.0, "w.bin", "0", "abc")),
    ("conv_net", ("external", 0.0, "a\x00b", "0", "")),
    ("conv_net", ("external", 0.0, "x" * 300, "0", "")),
    ("conv_net", ("external", 0.0, "w.bin", "8190", "")),  # data shorter than the tensor
    ("conv_net", ("external", 0.0, "w.bin", "0", "4")),  # length shorter than the tensor
    ("conv_net", ("dims", 0.0, [-1])),
    ("conv_net", ("dims", 0.0, [-5, 2])),
    ("conv_net", ("dims", 0.0, [1 << 40])),
    ("conv_net", ("input_dim", 0.0, 1 << 40)),
    ("conv_net", ("input_dim", 0.0, -5)),
    ("tiny", ("opset", 0)),
    ("tiny", ("opset", 1 << 40)),
    ("tiny", ("dtype", 0.0, 99)),
    ("tiny", ("rename", 0.0, "node", "ghost")),
    ("multi_io", ("swap_nodes", 0.0, 0.9)),
    ("squeezenet", ("flip", 0.5, 0xFF)),
    ("squeezenet", ("truncate", 0.5)),
    ("with_if", ("drop_node", 0.0)),
]


@pytest.mark.parametrize(("base", "mutation"), REGRESSIONS,
                         ids=[f"{b}-{m[0]}-{i}" for i, (b, m) in enumerate(REGRESSIONS)])
def test_regression_mutations_read_or_raise_unirt_error(tmp_path: Path, base: str,
                                                        mutation: Mutation) -> None:
    _validate(_write(tmp_path, base, mutation))


@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(base=st.sampled_from(BASES), mutation=MUTATIONS)
def test_mutated_models_read_or_raise_unirt_error(tmp_path: Path, base: str,
                                                  mutation: Mutation) -> None:
    _validate(_write(tmp_path, base, mutation))


# -- downstream: the engine, in a child process --------------------------------------------------
_WORKER = textwrap.dedent("""
    import json, sys
    import numpy as np
    import unirt
    from unirt.errors import UnirtError
    from unirt.evidence.inputs import make_inputs

    for i, path in enumerate(sys.argv[1:]):
        print(json.dumps({"start": i}), flush=True)
        try:
            with unirt.load(path, backend="onnxruntime") as s:
                feeds = make_inputs(s.inputs)
                if sum(a.size for a in feeds.values()) > 10_000_000:
                    out = "skipped (inputs too large to run)"
                else:
                    s.run(feeds)
                    out = "ok"
        except UnirtError as exc:
            out = "unirt error: " + type(exc).__name__
        except Exception as exc:  # a bug: a raw exception escaping unirt
            out = "BUG " + type(exc).__name__ + ": " + str(exc)[:300]
        print(json.dumps({"done": i, "outcome": out}), flush=True)
""")


def run_in_children(paths: list[Path], timeout: float = 120.0,
                    worker: str = _WORKER) -> dict[int, str]:
    """Index -> outcome of load + run for each model, one child for as many models as it
    survives: when a child dies, the model it was on is recorded as a crash and a new child
    goes on with the next."""
    outcomes: dict[int, str] = {}
    start = 0
    while start < len(paths):
        try:
            proc = subprocess.run([sys.executable, "-c", worker, *map(str, paths[start:])],
                                  capture_output=True, text=True, timeout=timeout)
            stdout, stderr, rc = proc.stdout, proc.stderr, proc.returncode
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout
            stdout = out.decode() if isinstance(out, bytes) else (out or "")
            stderr, rc = "", None
        current = None
        for line in stdout.splitlines():
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if "start" in msg:
                current = start + msg["start"]
            elif "done" in msg:
                outcomes[start + msg["done"]] = msg["outcome"]
                current = None
        if current is None:
            if rc != 0:
                outcomes[start] = f"CRASH before the first model (rc {rc})"
            break
        outcomes[current] = ("HANG (timed out)" if rc is None
                             else f"CRASH (rc {rc}): {stderr[-300:]}")
        start = current + 1
    return outcomes


def _check_downstream(tmp_path: Path, cases: list[tuple[str, Mutation]]) -> None:
    passing: list[tuple[Path, str, Mutation]] = []
    for i, (base, mutation) in enumerate(cases):
        path = _write(tmp_path, base, mutation, i)
        if _validate(path):
            passing.append((path, base, mutation))
    if not passing:
        return
    outcomes = run_in_children([p for p, _, _ in passing])
    bad = [f"{base} {mutation!r}: {outcomes.get(i, 'no outcome')}"
           for i, (_, base, mutation) in enumerate(passing)
           if not outcomes.get(i, "").startswith(("ok", "unirt error", "skipped"))]
    assert not bad, "mutations that pass validation but break downstream:\n" + "\n".join(bad)


def test_regressions_downstream(tmp_path: Path) -> None:
    _check_downstream(tmp_path, REGRESSIONS)


#: Valid ONNX (checker and shape inference accept it) that crashes an engine: found by this
#: fuzzer. SqueezeNet with its first Conv's stride 100: a MaxPool then yields a zero-size
#: spatial axis, and ONNX Runtime 1.32 with its default optimizations (NCHWc kernels) dies of
#: SIGFPE at run time; with optimizations off it raises a clean error. unirt opens the reference
#: in-process (no child on a first load), so the first process dies as raw ONNX Runtime's would;
#: the crash guard (unirt.runtime.crashguard) makes every later one survive, and with
#: ``UNIRT_CRASH_GUARD=child`` none dies at all.
ENGINE_CRASHES: list[tuple[str, Mutation]] = [("squeezenet", ("attr", 0.0, 100))]


def test_engine_crashes_downstream(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = [_write(tmp_path, base, mutation, i) for i, (base, mutation) in
             enumerate(ENGINE_CRASHES)]
    first = run_in_children(paths)
    again = run_in_children(paths)
    assert all(o.startswith(("ok", "unirt error", "CRASH")) for o in first.values()), first
    assert all(o.startswith(("ok", "unirt error")) for o in again.values()), (
        "a process died again on a model a process had died on", again)
    monkeypatch.setenv("UNIRT_CACHE_DIR", str(tmp_path / "other-cache"))
    monkeypatch.setenv("UNIRT_CRASH_GUARD", "child")
    guarded = run_in_children(paths)
    assert all(o.startswith(("ok", "unirt error")) for o in guarded.values()), guarded


@settings(max_examples=2, deadline=None, derandomize=True, database=None,
          phases=[Phase.explicit, Phase.generate],  # no shrinking: each example is a child run
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(cases=st.lists(st.tuples(st.sampled_from(BASES), MUTATIONS), min_size=25, max_size=25))
def test_mutated_models_downstream(tmp_path_factory: pytest.TempPathFactory,
                                   cases: list[tuple[str, Mutation]]) -> None:
    _check_downstream(tmp_path_factory.mktemp("fuzz"), cases)


def test_child_crash_is_observed(tmp_path: Path) -> None:
    """The harness itself: a child that dies is reported as a crash of the model it was on,
    and the models after it are still run."""
    worker = textwrap.dedent("""
        import json, os, signal, sys
        for i, path in enumerate(sys.argv[1:]):
            print(json.dumps({"start": i}), flush=True)
            if path.endswith("boom"):
                os.kill(os.getpid(), signal.SIGSEGV)
            print(json.dumps({"done": i, "outcome": "ok"}), flush=True)
    """)
    paths = [tmp_path / "a", tmp_path / "boom", tmp_path / "c"]
    outcomes = run_in_children(paths, worker=worker)
    assert outcomes[0] == "ok" and outcomes[2] == "ok"
    assert outcomes[1].startswith("CRASH (rc -11)")
