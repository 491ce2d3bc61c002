"""Reading models: every bad file gets a ModelError naming the file and the problem."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

import unirt
from unirt.errors import ModelError, ModelNotFoundError
from unirt.model.info import read_model
from unirt.testing import models as M

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="model file not found: .*nope.onnx"):
        unirt.load(tmp_path / "nope.onnx")


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="is not a file"):
        read_model(tmp_path)


def test_empty_file(tmp_path: Path) -> None:
    p = tmp_path / "empty.onnx"
    p.write_bytes(b"")
    with pytest.raises(ModelError, match="empty.onnx: is empty"):
        unirt.load(p)


def test_text_file_is_not_onnx(tmp_path: Path) -> None:
    p = tmp_path / "notes.onnx"
    p.write_text("this is not a model\n" * 10)
    with pytest.raises(ModelError, match="notes.onnx: not"):
        unirt.load(p)


@pytest.mark.parametrize("fraction", [0.3, 0.6, 0.95])
def test_truncated_file(tmp_path: Path, fraction: float) -> None:
    data = M.conv_net().SerializeToString()
    p = tmp_path / "cut.onnx"
    p.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(ModelError, match="cut.onnx"):
        unirt.load(p)


def test_external_data_missing(tmp_path: Path) -> None:
    p = M.save_with_external_data(M.conv_net(), tmp_path / "ext.onnx")
    (tmp_path / "ext.onnx.data").unlink()
    with pytest.raises(ModelError, match=r"external data file 'ext.onnx.data' .* is missing"):
        unirt.load(p)


def test_external_data_truncated(tmp_path: Path) -> None:
    p = M.save_with_external_data(M.conv_net(), tmp_path / "ext.onnx")
    data = tmp_path / "ext.onnx.data"
    data.write_bytes(data.read_bytes()[:100])
    with pytest.raises(ModelError, match="is truncated"):
        unirt.load(p)


def test_external_data_loads(tmp_path: Path) -> None:
    p = M.save_with_external_data(M.conv_net(), tmp_path / "ext.onnx")
    info = read_model(p)
    assert info.external_data == ((tmp_path / "ext.onnx.data").resolve(),)
    with unirt.load(p) as sess:
        assert sess.run({"input": __import__("numpy").zeros((1, 3, 16, 16), "float32")})


def test_wrong_source_type() -> None:
    with pytest.raises(ModelError, match="cannot read a model from int"):
        read_model(42)  # type: ignore[arg-type]


def test_bytes_and_proto_sources() -> None:
    proto = M.add()
    for source in (proto, proto.SerializeToString()):
        info = read_model(source)
        assert info.path is None and info.data is not None
        assert [t.name for t in info.inputs] == ["x", "y"]


def test_graph_without_outputs_is_rejected() -> None:
    proto = M.add()
    del proto.graph.output[:]
    with pytest.raises(ModelError, match="declares no outputs"):
        read_model(proto)


def test_dynamic_dims_are_symbolic_names() -> None:
    info = read_model(M.dynamic_batch())
    assert info.inputs[0].shape == ("batch", 8)
    assert info.inputs[0].is_dynamic and info.has_dynamic_inputs
    assert info.outputs[0].describe() == "y: float32[batch,4]"


def test_subgraphs_are_walked() -> None:
    info = read_model(M.with_if())
    assert info.op_counts["If"] == 1 and info.op_counts["Mul"] == 1 and info.op_counts["Sub"] == 1
    assert {n.graph for n in info.nodes} == {"", "if/then_branch", "if/else_branch"}


def test_old_ir_initializers_are_not_inputs() -> None:
    info = read_model(LIGHT / "light_resnet50.onnx")
    assert info.ir_version == 3
    assert [t.name for t in info.inputs] == ["gpu_0/data_0"]
    assert info.inputs[0].shape == (1, 3, 224, 224)
