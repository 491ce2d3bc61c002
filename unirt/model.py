"""ModelInfo: an ONNX model read once, so every backend and check works from the same facts.

Reading validates the file up front (missing, not ONNX, truncated, external data missing) so the
user gets one clear :class:`~unirt.errors.ModelError` naming the file instead of whatever the
first engine to touch it would print. External weights are never loaded into memory here: only
their presence and size are checked.

``onnx`` is imported inside :func:`read_model`, not at ``import unirt`` (it costs ~0.2 s).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from .errors import ModelError, ModelNotFoundError, first_line
from .tensor import Dim, TensorInfo

if TYPE_CHECKING:  # pragma: no cover
    import onnx

ModelSource = Union[str, "os.PathLike[str]", bytes, "onnx.ModelProto"]


@dataclass(frozen=True)
class NodeInfo:
    """One node of the model (main graph or a subgraph), with the attributes that matter.

    ``graph`` is ``""`` for the main graph and a path such as ``"If_0/then_branch"`` inside
    subgraphs. Tensor- and graph-valued attributes are summarised, not copied.
    """

    name: str
    op_type: str
    domain: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attributes: dict[str, Any]
    graph: str = ""


@dataclass(frozen=True, eq=False)
class ModelInfo:
    """Facts about one ONNX model that backends, checks and the CLI need.

    ``path`` is the file the model came from (``None`` when it was given as bytes or a proto, in
    which case ``data`` holds the serialized model). Engines should open :meth:`source`.
    """

    path: Path | None
    data: bytes | None
    ir_version: int
    producer: str
    opsets: dict[str, int]
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    nodes: tuple[NodeInfo, ...]
    external_data: tuple[Path, ...]
    size_bytes: int
    op_counts: Counter[str] = field(default_factory=Counter)

    @property
    def name(self) -> str:
        """A short label for messages: the file name, or ``<bytes>``."""
        return self.path.name if self.path is not None else "<in-memory model>"

    @property
    def custom_domains(self) -> tuple[str, ...]:
        """Opset domains other than the standard ``ai.onnx`` (``""``) and ``ai.onnx.ml``."""
        return tuple(d for d in self.opsets if d not in ("", "ai.onnx", "ai.onnx.ml"))

    @property
    def has_dynamic_inputs(self) -> bool:
        return any(t.is_dynamic for t in self.inputs)

    def source(self) -> str | bytes:
        """What to hand an engine: the file path (keeps external data working) or the bytes."""
        if self.path is not None:
            return str(self.path)
        assert self.data is not None
        return self.data


def read_model(source: ModelSource | ModelInfo) -> ModelInfo:
    """Read and validate a model from a path, serialized bytes or an ``onnx.ModelProto``.

    Raises :class:`ModelNotFoundError` or :class:`ModelError` naming the file and the problem.
    """
    if isinstance(source, ModelInfo):
        return source
    import onnx

    path: Path | None = None
    data: bytes | None = None
    if isinstance(source, (str, os.PathLike)):
        path = Path(source).resolve()
        if not path.exists():
            raise ModelNotFoundError(f"model file not found: {source}")
        if not path.is_file():
            raise ModelError(f"{source}: is not a file")
        size = path.stat().st_size
        if size == 0:
            raise ModelError(f"{source}: is empty, not an ONNX model")
        label = str(source)
        try:
            proto = onnx.load(str(path), load_external_data=False)
        except Exception as exc:  # protobuf DecodeError, OSError, ...
            raise ModelError(f"{label}: not a valid ONNX model ({first_line(exc)})") from exc
    elif isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        size = len(data)
        label = "<bytes>"
        try:
            proto = onnx.load_from_string(data)
        except Exception as exc:
            raise ModelError(f"{label}: not a valid ONNX model ({first_line(exc)})") from exc
    elif isinstance(source, onnx.ModelProto):
        proto = source
        data = proto.SerializeToString()
        size = len(data)
        label = f"<ModelProto {proto.graph.name or 'unnamed'}>"
    else:
        raise ModelError(
            f"cannot read a model from {type(source).__name__}: "
            "give a file path, serialized bytes or an onnx.ModelProto"
        )

    _check_structure(proto, label)
    external = _check_external_data(proto, path, label)
    return _describe(proto, path, data, size, external)


def _check_structure(proto: onnx.ModelProto, label: str) -> None:
    # A random or truncated file can still parse as a protobuf message with nothing in it.
    if proto.ir_version <= 0 or not proto.HasField("graph"):
        raise ModelError(f"{label}: not an ONNX model (no IR version or no graph)")
    if not proto.graph.output:
        raise ModelError(f"{label}: the graph declares no outputs (truncated or not ONNX?)")
    if not proto.opset_import and proto.ir_version >= 3:
        raise ModelError(f"{label}: the model declares no opset import")


def _iter_graphs(graph: Any, prefix: str = ""):  # -> Iterator[tuple[str, GraphProto]]
    from onnx import AttributeProto

    yield prefix, graph
    for node in graph.node:
        for attr in node.attribute:
            sub = f"{prefix}/{node.name or node.op_type}/{attr.name}".lstrip("/")
            if attr.type == AttributeProto.GRAPH:
                yield from _iter_graphs(attr.g, sub)
            elif attr.type == AttributeProto.GRAPHS:
                for i, g in enumerate(attr.graphs):
                    yield from _iter_graphs(g, f"{sub}[{i}]")


def _check_external_data(proto: onnx.ModelProto, path: Path | None, label: str) -> tuple[Path, ...]:
    from onnx import TensorProto

    files: dict[Path, int] = {}  # file -> bytes needed
    for _, graph in _iter_graphs(proto.graph):
        for tensor in graph.initializer:
            if tensor.data_location != TensorProto.EXTERNAL:
                continue
            info = {e.key: e.value for e in tensor.external_data}
            location = info.get("location")
            if not location:
                raise ModelError(f"{label}: initializer {tensor.name!r} is external but names no file")
            if path is None:
                raise ModelError(
                    f"{label}: initializer {tensor.name!r} lives in external file {location!r}, "
                    "which cannot be found for a model given in memory; load it from its path"
                )
            file = (path.parent / location).resolve()
            end = int(info.get("offset", 0) or 0) + int(info.get("length", 0) or 0)
            files[file] = max(files.get(file, 0), end)
            if not file.is_file():
                raise ModelError(
                    f"{label}: external data file {location!r} for initializer "
                    f"{tensor.name!r} is missing (looked in {path.parent})"
                )
    for file, needed in files.items():
        if file.stat().st_size < needed:
            raise ModelError(
                f"{label}: external data file {file.name!r} is truncated "
                f"({file.stat().st_size} bytes, the model needs {needed})"
            )
    return tuple(files)


def _tensor_info(value: Any) -> TensorInfo:
    from onnx import helper

    t = value.type
    if t.WhichOneof("value") != "tensor_type":
        return TensorInfo(value.name, None, None)
    tt = t.tensor_type
    try:
        dtype = helper.tensor_dtype_to_np_dtype(tt.elem_type)
    except Exception:  # undefined or exotic element type
        dtype = None
    if not tt.HasField("shape"):
        return TensorInfo(value.name, None, dtype)
    dims: list[Dim] = []
    for d in tt.shape.dim:
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param"):
            dims.append(d.dim_param)
        else:
            dims.append(None)
    return TensorInfo(value.name, tuple(dims), dtype)


def _attributes(node: Any) -> dict[str, Any]:
    from onnx import AttributeProto, helper

    attrs: dict[str, Any] = {}
    for a in node.attribute:
        if a.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS):
            attrs[a.name] = "<graph>"
        elif a.type == AttributeProto.TENSOR:
            attrs[a.name] = f"<tensor {list(a.t.dims)}>"
        elif a.type in (AttributeProto.TENSORS, AttributeProto.SPARSE_TENSOR,
                        AttributeProto.SPARSE_TENSORS, AttributeProto.TYPE_PROTO,
                        AttributeProto.TYPE_PROTOS):
            attrs[a.name] = "<complex>"
        else:
            v = helper.get_attribute_value(a)
            if isinstance(v, bytes):
                v = v.decode("utf-8", "replace")
            elif isinstance(v, list):
                v = tuple(x.decode("utf-8", "replace") if isinstance(x, bytes) else x for x in v)
            attrs[a.name] = v
    return attrs


def _describe(
    proto: onnx.ModelProto, path: Path | None, data: bytes | None, size: int,
    external: tuple[Path, ...],
) -> ModelInfo:
    g = proto.graph
    # IR < 4 lists initializers among the inputs: those are weights, not things to feed.
    initializers = {t.name for t in g.initializer}
    inputs = tuple(_tensor_info(v) for v in g.input if v.name not in initializers)
    outputs = tuple(_tensor_info(v) for v in g.output)
    nodes = []
    counts: Counter[str] = Counter()
    for gpath, graph in _iter_graphs(g):
        for n in graph.node:
            nodes.append(NodeInfo(n.name, n.op_type, n.domain, tuple(n.input), tuple(n.output),
                                  _attributes(n), gpath))
            counts[n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}::{n.op_type}"] += 1
    opsets: dict[str, int] = {}
    for o in proto.opset_import:
        opsets[o.domain] = int(o.version)
    return ModelInfo(
        path=path, data=None if path is not None else data, ir_version=int(proto.ir_version),
        producer=f"{proto.producer_name} {proto.producer_version}".strip(), opsets=opsets,
        inputs=inputs, outputs=outputs, nodes=tuple(nodes), external_data=external,
        size_bytes=size + sum(f.stat().st_size for f in external), op_counts=counts,
    )
