"""ModelInfo's per-tensor types: lazy (``unirt.load`` never pays for shape inference), tolerant
of shape inference failing, walking subgraphs, and the graph validation capabilities() uses."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from unirt.errors import ModelError
from unirt.model.info import TypeFact, read_model, validate_graph
from unirt.testing import models as M


def test_types_are_computed_lazily_and_once() -> None:
    info = read_model(M.conv_net("N"))
    assert "_type_facts" not in info.__dict__  # reading the model did not run shape inference
    conv = next(n for n in info.nodes if n.op_type == "Conv")
    ins, outs = info.node_types(conv)
    assert ins[0] == TypeFact(4, "float32", "tensor", ("N", 3, 16, 16))
    assert ins[1].dims == (8, 3, 3, 3)  # initializers count too
    assert outs[0].rank == 4 and outs[0].dtype == "float32"
    assert info.value_types is info.value_types
    assert info.shape_inference_error is None


def test_subgraph_values_and_omitted_inputs() -> None:
    info = read_model(M.with_if())
    assert info.value_types["c2"].rank == 0
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="nearest")
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                      [1, 1, 4, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 8, 8])],
                          [numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")])
    info = read_model(helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)]))
    ins, _ = info.node_types(info.nodes[0])
    assert ins[1] is None and ins[2].dtype == "float32"


def test_shape_inference_failure_is_tolerated() -> None:
    # A node of an unregistered domain with an attribute shape inference cannot check, and a
    # Reshape with a wrong constant: inference may fail; declared types must survive.
    node = helper.make_node("Reshape", ["x", "shape"], ["y"])
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                      [2, 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [7])],
                          [numpy_helper.from_array(np.array([7], np.int64), "shape")])
    info = read_model(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
    assert info.value_types["x"].rank == 2
    assert info.value_types["y"].rank == 1  # declared output type kept either way


def test_initializers_listed_as_inputs_are_not_inputs() -> None:
    w = numpy_helper.from_array(np.ones((2, 2), np.float32), "w")
    g = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2]),
                           helper.make_tensor_value_info("w", TensorProto.FLOAT, [2, 2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 9)])
    m.ir_version = 3
    info = read_model(m)
    assert [t.name for t in info.inputs] == ["x"]
    assert info.value_types["w"].rank == 2


def test_external_data_types_without_loading_weights(tmp_path: Path) -> None:
    p = M.save_with_external_data(M.conv_net(), tmp_path / "ext.onnx")
    info = read_model(p)
    assert info.external_data
    assert info.value_types["w1"].dims == (8, 3, 3, 3)


def test_invalid_graph_is_a_model_error() -> None:
    g = helper.make_graph([helper.make_node("Relu", ["nope"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    with pytest.raises(ModelError, match="reads 'nope', which no graph input"):
        read_model(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
    # What only the ONNX checker sees (an attribute Relu does not have) is validate_graph's.
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], bogus=1)], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    info = read_model(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
    with pytest.raises(ModelError, match="invalid ONNX graph"):
        validate_graph(info)
    validate_graph(read_model(M.conv_net()))


def test_import_unirt_stays_light() -> None:
    code = ("import sys, unirt, unirt.capability, unirt.process.isolation, "
            "unirt.tools.probe_ops, unirt.cli.capabilities; "
            "print(sorted(m for m in ('onnx', 'numpy', 'onnxruntime', 'openvino', 'cv2', 'ncnn')"
            " if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_model_proto_is_not_changed() -> None:
    m = M.conv_net()
    before = m.SerializeToString()
    read_model(m).value_types  # noqa: B018
    assert m.SerializeToString() == before
    assert isinstance(onnx.load_from_string(before), onnx.ModelProto)


def _big_model() -> onnx.ModelProto:
    w = numpy_helper.from_array(np.arange(3 << 20, dtype=np.float32).reshape(3, -1), "w")
    shape = numpy_helper.from_array(np.array([-1], np.int64), "shape")
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["m"], name="mm"),
                           helper.make_node("Reshape", ["m", "shape"], ["y"], name="rs")], "big",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [w, shape])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_large_model_is_read_without_its_weights(tmp_path: Path) -> None:
    from unirt.model.info import _read_skeleton

    p = M.save(_big_model(), tmp_path / "big.onnx")
    assert p.stat().st_size > 8 << 20
    skeleton = _read_skeleton(p)
    assert skeleton is not None and skeleton.ByteSize() < 10_000
    assert list(skeleton.graph.initializer[0].dims) == [3, 1 << 20]
    info, full = read_model(p), read_model(_big_model())
    assert info.nodes == full.nodes and info.inputs == full.inputs
    assert info.size_bytes == p.stat().st_size
    assert info.value_types["y"] == full.value_types["y"]  # small Reshape shape kept
    assert info.value_types["m"].dims == ("N", 1 << 20)
    validate_graph(info)


def test_large_truncated_model_is_a_model_error(tmp_path: Path) -> None:
    data = _big_model().SerializeToString()
    p = tmp_path / "cut.onnx"
    p.write_bytes(data[: len(data) - 100])
    with pytest.raises(ModelError, match="cut.onnx"):
        read_model(p)


# -- reading without onnx (unirt.model.onnx_schema) -----------------------------------------------
def _fields(descriptor) -> dict[str, tuple[int, int, bool]]:
    """name -> (number, type, repeated) of every field of a message."""
    def repeated(f) -> bool:  # protobuf 7 has is_repeated and no label
        return f.is_repeated if hasattr(f, "is_repeated") else f.label == 3

    return {f.name: (f.number, f.type, repeated(f)) for f in descriptor.fields}


def _messages(descriptor, prefix: str = ""):
    for d in descriptor.message_types_by_name.values() if prefix == "" else descriptor:
        yield d
        yield from _messages(d.nested_types, "nested")


def test_the_schema_reads_as_the_installed_onnx() -> None:
    # unirt's copy of ONNX's schema and the installed onnx's agree on every field both know
    # (field numbers are ONNX's wire format: they never change; a newer onnx only adds fields).
    from unirt.model import onnx_schema

    pool = onnx_schema._pool()
    theirs = list(_messages(onnx.onnx_ml_pb2.DESCRIPTOR))
    assert len(theirs) > 20
    for d in theirs:
        try:
            mine = pool.FindMessageTypeByName(d.full_name)
        except KeyError:  # a message newer than the schema: unirt's reading never needs it
            continue
        a, b = _fields(mine), _fields(d)
        assert {k: a[k] for k in a.keys() & b.keys()} == {k: b[k] for k in a.keys() & b.keys()}
        if onnx.__version__ == onnx_schema.ONNX_VERSION:
            assert a == b, d.full_name
    assert onnx_schema.data_types() == {v: TensorProto.DataType.Name(v)
                                        for v in TensorProto.DataType.values()} or \
        onnx.__version__ != onnx_schema.ONNX_VERSION


def test_a_model_reads_the_same_without_onnx(tmp_path: Path) -> None:
    from unirt.model.info import _model_class, _tensor_info

    for proto in (M.conv_net("N"), M.with_if(), _big_model()):
        data = proto.SerializeToString()
        mine = _model_class()()
        mine.ParseFromString(data)
        assert mine.SerializeToString() == data
        path = M.save(proto, tmp_path / "m.onnx")
        a, b, c = read_model(path), read_model(data), read_model(proto)
        for other in (b, c):
            assert (a.nodes, a.inputs, a.outputs, a.opsets, a.op_counts, a.constants) == \
                (other.nodes, other.inputs, other.outputs, other.opsets, other.op_counts,
                 other.constants)
    for elem in TensorProto.DataType.values():  # every element type's numpy dtype, as onnx's
        vi = helper.make_tensor_value_info("x", elem, [1])
        try:
            expected = helper.tensor_dtype_to_np_dtype(elem)
        except Exception:
            expected = None
        assert _tensor_info(vi).dtype == expected, elem


def test_reading_and_loading_a_model_import_no_onnx() -> None:
    model = Path(__file__).resolve().parents[2] / "examples" / "tiny_cnn.onnx"
    code = ("import sys, unirt, numpy as np\n"
            f"info = unirt.read_model({str(model)!r})\n"
            "read = 'onnx' in sys.modules\n"
            "s = unirt.load(info)\n"
            "s.run({i.name: np.zeros([d if isinstance(d, int) else 1 for d in i.shape], "
            "i.dtype) for i in s.inputs})\n"
            "print(read, 'onnx' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_an_element_type_newer_than_the_schema_is_asked_of_onnx(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from unirt.model import info as model_info
    from unirt.model import onnx_schema

    known = dict(onnx_schema.data_types())
    del known[TensorProto.FLOAT8E4M3FN]  # as if the schema predated it
    monkeypatch.setattr(onnx_schema, "data_types", lambda: known)
    model_info._element_bits_by_type.cache_clear()
    try:
        t = helper.make_tensor("w", TensorProto.FLOAT8E4M3FN, [2], vals=b"\x00\x00", raw=True)
        g = helper.make_graph([helper.make_node("Identity", ["w"], ["y"])], "g", [],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT8E4M3FN,
                                                             [2])], [t])
        model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
        read_model(model)  # the installed onnx knows it: accepted, its size unchecked
        model.graph.initializer[0].data_type = 999  # no onnx knows it
        with pytest.raises(ModelError, match="element type 999, which is not an ONNX"):
            read_model(model)
    finally:
        model_info._element_bits_by_type.cache_clear()


def test_the_fast_and_the_public_protobuf_paths_read_alike() -> None:
    # With upb, unirt builds its classes with the extension module (no descriptor_pool import);
    # the public API's classes (any other protobuf) must read every model the same.
    from unirt.model import onnx_schema

    public = onnx_schema._public_class(
        onnx_schema._public_pool().FindMessageTypeByName("onnx.ModelProto"))
    fast = onnx_schema.message_class("ModelProto")
    for proto in (M.conv_net("N"), M.with_if(), _big_model()):
        data = proto.SerializeToString()
        a, b = fast(), public()
        a.ParseFromString(data)
        b.ParseFromString(data)
        assert a.SerializeToString() == b.SerializeToString() == data
        assert [n.op_type for n in a.graph.node] == [n.op_type for n in b.graph.node]
    assert onnx_schema.message_class("ModelProto") is fast  # made once
