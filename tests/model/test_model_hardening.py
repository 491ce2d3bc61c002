"""Corrupt models and forged paths: each is a ModelError naming the thing, raised by unirt before
any engine sees the model (OpenCV would read a forged external-data location, return
uninitialised memory for short data, or segfault on invalid UTF-8; nothing may hang on a FIFO).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import unirt
from unirt.errors import ModelError, ModelNotFoundError, UnirtError
from unirt.model.info import read_model
from unirt.testing import models as M

DEEP_UP = "../" * 40  # more than any tmp path is deep: realpath stops at /


def _external(tmp_path: Path, name: str = "m.onnx") -> tuple[Path, onnx.ModelProto]:
    """conv_net with its weights in ``<name>.data``; returns the path and the proto as saved
    (weights left out), for a test to forge entries in and write back."""
    path = M.save_with_external_data(M.conv_net(), tmp_path / name)
    return path, onnx.load(str(path), load_external_data=False)


def _forge(path: Path, proto: onnx.ModelProto, tensor: int = 0, **entries: str) -> str:
    """Set external-data ``entries`` (location=, offset=, length=) on one initializer and write
    the model back; returns that initializer's name."""
    t = proto.graph.initializer[tensor]
    current = {e.key: e.value for e in t.external_data}
    current.update(entries)
    del t.external_data[:]
    for k, v in current.items():
        e = t.external_data.add()
        e.key, e.value = k, v
    path.write_bytes(proto.SerializeToString())
    return t.name


# -- external data: where it lives ---------------------------------------------------------------
@pytest.mark.parametrize("location", [DEEP_UP + "etc/passwd", "/etc/passwd",
                                      "sub/../../outside.bin"])
def test_external_location_outside_the_folder(tmp_path: Path, location: str) -> None:
    (tmp_path / "model").mkdir()
    path, proto = _external(tmp_path / "model")
    (tmp_path / "outside.bin").write_bytes(b"\0" * 4096)
    name = _forge(path, proto, location=location)
    with pytest.raises(ModelError, match=rf"{name}.*(outside the model's folder|absolute path)"):
        read_model(path)
    # No engine is reached: the default route and OpenCV alone (which would read the file).
    with pytest.raises(ModelError, match="outside the model's folder|absolute path"):
        unirt.load(path)
    with pytest.raises(ModelError, match="outside the model's folder|absolute path"):
        unirt.load(path, backend="opencv", verify="never")


def test_symlink_leading_out_of_the_folder(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    path, _ = _external(tmp_path / "model")
    secret = tmp_path / "secret.bin"
    secret.write_bytes((tmp_path / "model" / "m.onnx.data").read_bytes())
    (tmp_path / "model" / "m.onnx.data").unlink()
    os.symlink(secret, tmp_path / "model" / "m.onnx.data")
    with pytest.raises(ModelError, match=r"'m.onnx.data'.*resolves to .*secret.bin, outside"):
        read_model(path)
    with pytest.raises(ModelError, match="outside the model's folder"):
        unirt.load(path, backend="opencv", verify="never")


def test_symlink_inside_the_folder_is_fine(tmp_path: Path) -> None:
    path, _ = _external(tmp_path)
    (tmp_path / "m.onnx.data").rename(tmp_path / "real.data")
    os.symlink("real.data", tmp_path / "m.onnx.data")
    assert read_model(path).external_data == ((tmp_path / "real.data").resolve(),)


def test_model_reached_through_a_symlinked_folder(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    _external(tmp_path / "real")
    os.symlink(tmp_path / "real", tmp_path / "link")
    read_model(tmp_path / "link" / "m.onnx")


@pytest.mark.parametrize(("location", "problem"), [
    ("m.onnx.data\x00.txt", "NUL byte"), ("", "names no file")])
def test_invalid_location(tmp_path: Path, location: str, problem: str) -> None:
    path, proto = _external(tmp_path)
    name = _forge(path, proto, location=location)
    with pytest.raises(ModelError, match=rf"{name}.*{problem}|{problem}.*{name}"):
        read_model(path)


def test_location_is_a_directory(tmp_path: Path) -> None:
    path, proto = _external(tmp_path)
    (tmp_path / "weights").mkdir()
    name = _forge(path, proto, location="weights")
    with pytest.raises(ModelError, match=rf"'weights' for initializer '{name}' is not a regular "
                                         r"file \(a directory\)"):
        read_model(path)


def test_location_is_a_fifo(tmp_path: Path) -> None:
    path, proto = _external(tmp_path)
    os.mkfifo(tmp_path / "pipe")
    _forge(path, proto, location="pipe")
    with pytest.raises(ModelError, match=r"'pipe' .* is not a regular file \(a FIFO\)"):
        read_model(path)  # never opened: opening a FIFO would block


def test_location_is_a_symlink_loop(tmp_path: Path) -> None:
    path, proto = _external(tmp_path)
    os.symlink("loop_b", tmp_path / "loop_a")
    os.symlink("loop_a", tmp_path / "loop_b")
    name = _forge(path, proto, location="loop_a")
    with pytest.raises(ModelError, match=rf"{name}.*symlink loop"):
        read_model(path)


def test_location_too_long(tmp_path: Path) -> None:
    path, proto = _external(tmp_path)
    name = _forge(path, proto, location="w" * 300)
    with pytest.raises(ModelError, match=rf"{name}.*path too long"):
        read_model(path)


def test_location_unreadable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests may run as root, whom chmod does not stop: the access check is what is tested.
    path, _ = _external(tmp_path)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p).endswith(".data")
                        else real_access(p, mode))
    with pytest.raises(ModelError, match=r"'m.onnx.data' .* cannot be read \(permission denied"):
        read_model(path)


# -- external data: what it says -----------------------------------------------------------------
@pytest.mark.parametrize(("key", "value"), [("length", "abc"), ("offset", "-1"),
                                            ("length", "-5"), ("offset", "1e3"),
                                            ("length", "\u0663")])
def test_offset_and_length_must_be_non_negative_integers(tmp_path: Path, key: str,
                                                         value: str) -> None:
    path, proto = _external(tmp_path)
    name = _forge(path, proto, **{key: value})
    with pytest.raises(ModelError, match=rf"{name}.*external data {key} .* is not a "
                                         r"non-negative integer"):
        read_model(path)


def test_offset_plus_length_beyond_the_file(tmp_path: Path) -> None:
    path, proto = _external(tmp_path)
    size = (tmp_path / "m.onnx.data").stat().st_size
    name = _forge(path, proto, offset=str(size))
    with pytest.raises(ModelError, match=rf"'m.onnx.data' for initializer '{name}' is truncated"):
        read_model(path)


def test_length_shorter_than_the_tensor(tmp_path: Path) -> None:
    path, proto = _external(tmp_path)
    t = proto.graph.initializer[0]
    name = _forge(path, proto, length="4")
    need = int(np.prod(t.dims)) * 4
    with pytest.raises(ModelError, match=rf"{name}.*gives length 4, but its dims .* need {need}"):
        read_model(path)
    with pytest.raises(ModelError, match="gives length 4"):
        unirt.load(path, backend="opencv", verify="never")


def test_no_length_and_a_file_shorter_than_the_tensor(tmp_path: Path) -> None:
    path, proto = _external(tmp_path)
    last = len(proto.graph.initializer) - 1
    t = proto.graph.initializer[last]
    offset = int({e.key: e.value for e in t.external_data}["offset"])
    name = _forge(path, proto, last, length="")
    data = tmp_path / "m.onnx.data"
    data.write_bytes(data.read_bytes()[:offset + 2])
    with pytest.raises(ModelError, match=rf"for initializer '{name}' is truncated"):
        read_model(path)


def test_external_data_missing_names_the_tensor(tmp_path: Path) -> None:
    path, proto = _external(tmp_path)
    name = _forge(path, proto, location="gone.bin")
    with pytest.raises(ModelError, match=rf"'gone.bin' for initializer '{name}' is missing"):
        read_model(path)


def test_capabilities_from_another_directory(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "elsewhere").mkdir()
    path, _ = _external(tmp_path / "model")
    monkeypatch.chdir(tmp_path / "elsewhere")
    report = unirt.capabilities(path, backends=["onnxruntime"])
    assert report is not None


# -- the model path itself -----------------------------------------------------------------------
def test_model_path_is_a_fifo(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "model.onnx")
    with pytest.raises(ModelError, match=r"model.onnx: is not a regular file \(a FIFO\)"):
        unirt.load(tmp_path / "model.onnx")


def test_model_path_is_a_symlink_loop(tmp_path: Path) -> None:
    os.symlink("b.onnx", tmp_path / "a.onnx")
    os.symlink("a.onnx", tmp_path / "b.onnx")
    with pytest.raises(ModelError, match=r"a.onnx: symlink loop"):
        unirt.load(tmp_path / "a.onnx")


def test_model_path_too_long(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="path too long"):
        unirt.load(tmp_path / ("m" * 300 + ".onnx"))


def test_model_path_with_a_nul(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="NUL byte"):
        read_model(str(tmp_path / "m\x00.onnx"))


def test_model_path_through_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ModelNotFoundError, match="not found"):
        read_model(tmp_path / "file" / "m.onnx")


def test_model_path_unreadable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = M.save(M.tiny(), tmp_path / "m.onnx")

    def denied(*args: object, **kwargs: object) -> int:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "open", denied)
    with pytest.raises(ModelError, match=r"m.onnx: cannot be read \(permission denied\)"):
        read_model(path)


# -- the graph -----------------------------------------------------------------------------------
def _flip(data: bytes, needle: bytes) -> bytes:
    i = data.index(needle)
    return data[:i] + b"\xff" + data[i + 1:]


@pytest.mark.parametrize("needle", [b"relu", b"two", b"Mul"])
def test_invalid_utf8_name(tmp_path: Path, needle: bytes) -> None:
    p = tmp_path / "m.onnx"
    p.write_bytes(_flip(M.tiny().SerializeToString(), needle))
    with pytest.raises(ModelError, match=r"m.onnx: .*\\xff.* is not valid UTF-8"):
        unirt.load(p, backend="opencv", verify="never")


def _graph(nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto] | None = None,
           x_shape: list[int | str | None] | None = None, opset: int = 17) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape or [2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          inits or [])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def test_unresolved_input_names_the_node() -> None:
    m = _graph([helper.make_node("Add", ["x", "ghost"], ["y"], name="add1")])
    with pytest.raises(ModelError, match=r"node 'add1' \(Add\) reads 'ghost', which no graph"):
        read_model(m)


def test_unresolved_input_in_a_subgraph() -> None:
    m = M.with_if()
    m.graph.node[-1].attribute[0].g.node[1].input[0] = "ghost"  # Mul(x, c2) or Sub(x, c1)
    with pytest.raises(ModelError, match=r"node <unnamed (Mul|Sub)> in subgraph "
                                         r"if/(then|else)_branch reads 'ghost'"):
        read_model(m)


def test_outer_scope_names_are_visible() -> None:
    read_model(M.with_if())


def test_out_of_order_nodes_are_accepted_but_a_cycle_is_not() -> None:
    out_of_order = _graph([helper.make_node("Relu", ["r"], ["y"], name="second"),
                           helper.make_node("Relu", ["x"], ["r"], name="first")])
    read_model(out_of_order)  # ONNX Runtime sorts it itself
    cycle = _graph([helper.make_node("Add", ["x", "b"], ["a"], name="one"),
                    helper.make_node("Relu", ["a"], ["b"], name="two"),
                    helper.make_node("Relu", ["a"], ["y"], name="three")])
    with pytest.raises(ModelError, match="is part of a cycle"):
        read_model(cycle)


def test_a_name_written_twice() -> None:
    m = _graph([helper.make_node("Relu", ["x"], ["y"], name="a"),
                helper.make_node("Relu", ["x"], ["y"], name="b")])
    with pytest.raises(ModelError, match=r"node 'b' \(Relu\) writes 'y', which another"):
        read_model(m)


def test_graph_output_nothing_produces() -> None:
    m = _graph([helper.make_node("Relu", ["x"], ["z"], name="a")])
    with pytest.raises(ModelError, match="graph output 'y' is produced by no node"):
        read_model(m)


@pytest.mark.parametrize("dims", [[-1], [-5, 2], [2, -1]])
def test_negative_initializer_dims(dims: list[int]) -> None:
    w = numpy_helper.from_array(np.zeros(2, np.float32), "w")
    del w.dims[:]
    w.dims.extend(dims)
    m = _graph([helper.make_node("Add", ["x", "w"], ["y"], name="add")], [w])
    with pytest.raises(ModelError, match=r"initializer 'w' has a negative dimension"):
        read_model(m)


def test_huge_initializer_dims() -> None:
    w = numpy_helper.from_array(np.zeros(2, np.float32), "w")
    del w.dims[:]
    w.dims.extend([1 << 40])
    m = _graph([helper.make_node("Add", ["x", "w"], ["y"], name="add")], [w])
    with pytest.raises(ModelError, match=r"initializer 'w' holds 8 bytes of data, but its dims "
                                         rf"\[{1 << 40}\] need {4 << 40}"):
        read_model(m)


def test_inline_data_shorter_than_dims() -> None:
    w = numpy_helper.from_array(np.zeros(2, np.float32), "w")
    w.raw_data = w.raw_data[:5]
    m = _graph([helper.make_node("Add", ["x", "w"], ["y"], name="add")], [w])
    with pytest.raises(ModelError, match="initializer 'w' holds 5 bytes"):
        read_model(m)
    v = TensorProto(name="v", data_type=TensorProto.FLOAT, dims=[3], float_data=[1.0, 2.0])
    c = helper.make_node("Constant", [], ["c"], name="k", value=v)
    m = _graph([c, helper.make_node("Add", ["x", "c"], ["y"], name="add")])
    with pytest.raises(ModelError, match=r"attribute 'value' of node 'k' \(Constant\) 'v' holds "
                                         "2 values"):
        read_model(m)


def test_unknown_element_type() -> None:
    w = numpy_helper.from_array(np.zeros(2, np.float32), "w")
    w.data_type = 99
    m = _graph([helper.make_node("Add", ["x", "w"], ["y"], name="add")], [w])
    with pytest.raises(ModelError, match="initializer 'w' has element type 99"):
        read_model(m)


@pytest.mark.parametrize("dim", [-1, -5])
def test_negative_declared_dims_are_dynamic(dim: int) -> None:
    m = _graph([helper.make_node("Relu", ["x"], ["y"])], x_shape=[dim, 3])
    assert read_model(m).inputs[0].shape == (None, 3)


def test_huge_declared_input_dim() -> None:
    m = _graph([helper.make_node("Relu", ["x"], ["y"])], x_shape=[1 << 40, 3])
    with pytest.raises(ModelError, match=rf"input 'x' declares dimension {1 << 40}"):
        read_model(m)


@pytest.mark.parametrize("version", [0, -3, 1 << 40])
def test_unknown_opset(version: int) -> None:
    m = _graph([helper.make_node("Relu", ["x"], ["y"])])
    m.opset_import[0].version = version
    with pytest.raises(ModelError, match=rf"opset ai.onnx version {version} is not a known"):
        read_model(m)


def test_attribute_without_a_type() -> None:
    m = _graph([helper.make_node("Relu", ["x"], ["y"], name="r", alpha=1.0)])
    m.graph.node[0].attribute[0].type = 0
    with pytest.raises(ModelError, match=r"attribute 'alpha' of node 'r' \(Relu\) has no valid"):
        read_model(m)


def test_every_error_is_a_unirt_error(tmp_path: Path) -> None:
    """The raw exceptions the issue measured (RuntimeError, OSError, ValueError) are gone."""
    assert issubclass(ModelError, UnirtError)
    os.symlink("x", tmp_path / "x")
    for bad in (tmp_path / "x", tmp_path / ("a" * 300), str(tmp_path / "a\x00")):
        with pytest.raises(UnirtError):
            read_model(bad)


def test_large_model_weights_sized_without_reading_them(tmp_path: Path) -> None:
    """Files past the skeleton threshold are read without their weights: the sizes of the data
    left on disk are still checked against the dims."""
    n = (9 << 20) // 4
    w = numpy_helper.from_array(np.zeros(n, np.float32), "w")
    m = _graph([helper.make_node("Add", ["x", "w"], ["y"], name="add")], [w], x_shape=[n])
    p = tmp_path / "big.onnx"
    p.write_bytes(m.SerializeToString())
    read_model(p)
    m.graph.initializer[0].dims[0] = n + 1
    p.write_bytes(m.SerializeToString())
    with pytest.raises(ModelError, match=rf"initializer 'w' holds {4 * n} bytes of data, but its "
                                         rf"dims \[{n + 1}\] need {4 * n + 4}"):
        read_model(p)
