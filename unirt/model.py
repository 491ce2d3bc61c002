"""ModelInfo: an ONNX model read once, so every backend and check works from the same facts.

Reading validates the file up front (missing, not ONNX, truncated, external data missing) so the
user gets one clear :class:`~unirt.errors.ModelError` naming the file instead of whatever the
first engine to touch it would print. External weights are never loaded into memory here: only
their presence and size are checked.

``onnx`` is imported inside :func:`read_model`, not at ``import unirt`` (it costs ~0.2 s).
"""

from __future__ import annotations

import functools
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from .errors import ModelError, ModelNotFoundError, first_line
from .tensor import Dim, TensorInfo, normalize_dim

if TYPE_CHECKING:  # pragma: no cover
    import onnx

ModelSource = Union[str, "os.PathLike[str]", bytes, "onnx.ModelProto"]

logger = logging.getLogger("unirt")


@dataclass(frozen=True)
class TypeFact:
    """Rank and element type of one tensor, as declared or as shape inference found them.

    ``rank``/``dtype`` are ``None`` when unknown (shape inference failed or could not tell);
    ``dtype`` is the ONNX element type name in lower case (``"float32"``, ``"int64"``,
    ``"bfloat16"``...) so that types numpy lacks still have a name. ``kind`` is ``"tensor"``,
    ``"sequence"``, ``"optional"``, ``"map"`` or ``"?"``.
    """

    rank: int | None
    dtype: str | None
    kind: str = "tensor"
    dims: tuple[Dim, ...] | None = None


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
    #: Names of the tensors fixed in the model (initializers, Constant outputs, in every graph):
    #: weights, as opposed to values computed or fed at run time.
    constants: frozenset[str] = frozenset()

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

    # -- per-tensor types: computed on first use, so that ``unirt.load`` never pays for them ----
    @functools.cached_property
    def _type_facts(self) -> tuple[dict[str, TypeFact], str | None]:
        return _infer_types(self)

    @property
    def value_types(self) -> dict[str, TypeFact]:
        """Every tensor name (graph inputs, outputs, initializers, intermediate values, in
        subgraphs too) -> its :class:`TypeFact`, from ONNX shape inference. Computed lazily once;
        a failure of shape inference is tolerated (declared types are still used) and reported by
        :attr:`shape_inference_error`."""
        return self._type_facts[0]

    @property
    def shape_inference_error(self) -> str | None:
        """Why ONNX shape inference failed on this model, or ``None`` when it ran."""
        return self._type_facts[1]

    def node_types(self, node: NodeInfo) -> tuple[tuple[TypeFact | None, ...],
                                                  tuple[TypeFact | None, ...]]:
        """(input facts, output facts) of ``node``; ``None`` for an omitted optional input
        (empty name); an unknown tensor gets ``TypeFact(None, None, "?")``."""
        types = self.value_types
        unknown = TypeFact(None, None, "?")

        def fact(name: str) -> TypeFact | None:
            return None if not name else types.get(name, unknown)

        return (tuple(fact(n) for n in node.inputs), tuple(fact(n) for n in node.outputs))


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
            proto = _read_skeleton(path) if size >= _SKELETON_BYTES else None
            if proto is None:
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
                raise ModelError(
                    f"{label}: initializer {tensor.name!r} is external but names no file")
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
    return TensorInfo(value.name, tuple(_dim(d) for d in tt.shape.dim), dtype)


def _dim(d: Any) -> Dim:
    """A ``TensorShapeProto.Dimension`` as unirt represents it (see
    :func:`~unirt.tensor.normalize_dim`). The one place dims are read from a proto, so that
    every exporter's spelling of "dynamic" (Paddle's ``dim_value: -1``, ``dim_param: "?"``,
    ``"None"``, ``""``) reads as ``None`` in inputs, outputs and shape-inference facts alike.
    ``dim_value: 0`` stays a fixed 0, as ONNX Runtime and OpenVINO treat it (they refuse any
    other size for an input declared so)."""
    if d.HasField("dim_value"):
        return normalize_dim(int(d.dim_value))
    if d.HasField("dim_param"):
        return normalize_dim(d.dim_param)
    return None


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


#: Ops whose output is not fixed even when their inputs are.
_RANDOM_OPS = frozenset({"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
                         "Multinomial", "Bernoulli", "Dropout"})


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
    constants: set[str] = set()
    for gpath, graph in _iter_graphs(g):
        constants.update(t.name for t in graph.initializer)
        for n in graph.node:
            # Constant folding, in the graph's topological order: a node of the standard
            # domain whose inputs are all fixed computes a fixed value (weights built by
            # ConstantOfShape, a Reshape of an initializer), unless it draws random numbers.
            if n.domain in ("", "ai.onnx") and n.op_type not in _RANDOM_OPS and (
                    n.op_type == "Constant"
                    or (n.input and all(not i or i in constants for i in n.input))):
                constants.update(o for o in n.output if o)
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
        constants=frozenset(constants),
    )


def _type_fact(tp: Any) -> TypeFact:
    from onnx import helper

    which = tp.WhichOneof("value")
    if which == "tensor_type" or which == "sparse_tensor_type":
        tt = getattr(tp, which)
        try:
            dtype = helper.tensor_dtype_to_string(tt.elem_type).removeprefix("TensorProto.").lower()
        except Exception:  # undefined element type
            dtype = None
        dtype = _DTYPE_NAMES.get(dtype, dtype) if tt.elem_type and dtype is not None else None
        if not tt.HasField("shape"):
            return TypeFact(None, dtype)
        dims = tuple(_dim(d) for d in tt.shape.dim)
        return TypeFact(len(dims), dtype, "tensor", dims)
    if which == "sequence_type":
        inner = _type_fact(tp.sequence_type.elem_type)
        return TypeFact(inner.rank, inner.dtype, "sequence")
    if which == "optional_type":
        inner = _type_fact(tp.optional_type.elem_type)
        return TypeFact(inner.rank, inner.dtype, "optional")
    if which == "map_type":
        return TypeFact(None, None, "map")
    return TypeFact(None, None, "?")


#: ONNX element type names -> the numpy-style names used in tables and messages.
_DTYPE_NAMES = {"float": "float32", "double": "float64", "float16": "float16", "bool": "bool",
                "string": "string"}


def _load_proto(info: ModelInfo, weights: bool = False) -> onnx.ModelProto:
    import onnx

    if info.path is not None:
        if not weights and info.size_bytes >= _SKELETON_BYTES:
            proto = _read_skeleton(info.path)
            if proto is not None:
                return proto
        return onnx.load(str(info.path), load_external_data=False)
    assert info.data is not None
    return onnx.load_from_string(info.data)


#: Initializers above this many bytes are emptied before shape inference (kept: small ones, whose
#: values — Reshape shapes, axes — inference reads).
_STRIP_BYTES = 1024


def _strip_weights(proto: onnx.ModelProto) -> None:
    """Make the weights look external: shape inference copies the whole proto into C++ and back,
    which for a 100 MB model costs most of a second, and it needs only their dims and types."""
    from onnx import TensorProto

    for _, graph in _iter_graphs(proto.graph):
        for t in graph.initializer:
            if t.data_location == TensorProto.EXTERNAL or len(t.raw_data) <= _STRIP_BYTES:
                continue
            t.ClearField("raw_data")
            t.data_location = TensorProto.EXTERNAL
            del t.external_data[:]
            entry = t.external_data.add()
            entry.key, entry.value = "location", "unirt-stripped"


def _infer_types(info: ModelInfo) -> tuple[dict[str, TypeFact], str | None]:
    """Why lazily and tolerant: shape inference costs far more than reading the model and fails
    on some valid models (custom domains, odd opsets); declared types are still worth having."""
    import onnx

    error: str | None = None
    try:
        proto = _load_proto(info)
    except Exception as exc:  # the file changed under us
        return {}, f"{type(exc).__name__}: {first_line(exc)}"
    _strip_weights(proto)
    try:
        inferred = onnx.shape_inference.infer_shapes(proto, check_type=False, strict_mode=False,
                                                     data_prop=False)
    except Exception as exc:
        error = f"{type(exc).__name__}: {first_line(exc)}"
        logger.debug("shape inference failed on %s: %s", info.name, error)
        inferred = proto
    facts: dict[str, TypeFact] = {}
    for _, graph in _iter_graphs(inferred.graph):
        for t in graph.initializer:
            if t.name not in facts:
                dtype = _type_fact(onnx.helper.make_tensor_type_proto(t.data_type, None)).dtype
                facts[t.name] = TypeFact(len(t.dims), dtype, "tensor",
                                         tuple(int(d) for d in t.dims))
        for v in (*graph.input, *graph.output, *graph.value_info):
            fact = _type_fact(v.type)
            old = facts.get(v.name)
            if old is None or (old.rank is None and fact.rank is not None):
                facts[v.name] = fact
        for n in graph.node:  # Constant outputs: shape inference knows them, but be sure
            if n.op_type == "Constant" and n.output and n.output[0] not in facts:
                for a in n.attribute:
                    if a.name == "value" and a.HasField("t"):
                        dtype = _type_fact(
                            onnx.helper.make_tensor_type_proto(a.t.data_type, None)).dtype
                        facts[n.output[0]] = TypeFact(len(a.t.dims), dtype, "tensor",
                                                      tuple(int(d) for d in a.t.dims))
    return facts, error


def validate_graph(info: ModelInfo) -> None:
    """Run the ONNX checker (graph structure, types, topological order) and turn a failure into a
    :class:`ModelError` naming the model and the problem. Not part of :func:`read_model`: it costs
    time that ``unirt.load`` should not pay, and engines judge what they can run themselves."""
    import onnx

    try:
        proto = _load_proto(info, weights=True)  # the checker checks weights' sizes too
        onnx.checker.check_model(proto)
    except Exception as exc:
        line = first_line(exc)
        if any(p in line for p in _BENIGN_CHECKER_ERRORS):
            logger.debug("%s: ONNX checker: %s (engines accept this)", info.name, line)
            return
        raise ModelError(f"{info.name}: invalid ONNX graph: {line}") from exc


#: Checker complaints that engines accept: an output declared without a shape, ops of a domain
#: onnx does not know (custom ops), an opset newer than the installed onnx.
_BENIGN_CHECKER_ERRORS = ("Field 'shape' of 'type' is required", "No Op registered",
                          "No opset import for domain", "is not a registered function/op",
                          "is under development", "is too new")


# -- reading a large model without its weights ---------------------------------------------------
#: Files at least this large are read as a skeleton (weights left on disk).
_SKELETON_BYTES = 8 << 20
#: TensorProto fields that hold data (float_data, int32_data, string_data, int64_data, raw_data,
#: double_data, uint64_data): dropped from initializers larger than this many bytes.
_DATA_FIELDS = frozenset((4, 5, 6, 7, 9, 10, 11))
_KEEP_DATA_BYTES = 1024


def _varint(buf: Any, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _encode_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _fields(buf: Any, start: int, end: int):  # -> Iterator[(field, wire, key, value, end)]
    pos = start
    while pos < end:
        key_start = pos
        key, pos = _varint(buf, pos)
        field_no, wire = key >> 3, key & 7
        if wire == 0:
            _, nxt = _varint(buf, pos)
        elif wire == 1:
            nxt = pos + 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            nxt = pos + length
        elif wire == 5:
            nxt = pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if nxt > end:
            raise ValueError("truncated message")
        yield field_no, wire, key_start, pos, nxt
        pos = nxt


def _strip_message(buf: Any, start: int, end: int, path: tuple[int, ...]) -> list[Any]:
    """Copy a message, descending along ``path`` (ModelProto.graph=7 -> GraphProto.initializer=5)
    and dropping large data fields of the tensors at its end."""
    parts: list[Any] = []
    for field_no, wire, key_start, value_start, nxt in _fields(buf, start, end):
        if path and wire == 2 and field_no == path[0]:
            inner = _strip_message(buf, value_start, nxt, path[1:])
            size = sum(len(p) for p in inner)
            parts.append(buf[key_start:value_start - len(_encode_varint(nxt - value_start))])
            parts.append(_encode_varint(size))
            parts.extend(inner)
        elif not path and field_no in _DATA_FIELDS and nxt - value_start > _KEEP_DATA_BYTES:
            continue
        else:
            parts.append(buf[key_start:nxt])
    return parts


def _read_skeleton(path: Path) -> onnx.ModelProto | None:
    """The model without the data of its large initializers (names, dims, types kept), read
    through mmap so the weights' pages are never touched: what makes reading a 100 MB model
    cost milliseconds. ``None`` on anything unexpected; the caller then reads it whole (and
    reports a broken file properly)."""
    import mmap

    import onnx

    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            view = memoryview(mm)
            try:
                parts = _strip_message(view, 0, len(mm), (7, 5))
                data = b"".join(parts)
            finally:
                del parts
                view.release()
        proto = onnx.ModelProto()
        proto.ParseFromString(data)
        return proto
    except Exception:
        logger.debug("skeleton read of %s failed; reading it whole", path, exc_info=True)
        return None
