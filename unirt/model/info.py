"""ModelInfo: an ONNX model read once, so every backend and check works from the same facts.

Reading validates the file up front (missing, not ONNX, truncated; names that are not UTF-8,
node inputs nothing produces, cycles, dims and opsets out of range, tensors whose data does not
match their dims; external data outside the model's folder, missing, short, or not a regular
file) so the user gets one clear :class:`~unirt.errors.ModelError` naming the file and the
node or tensor instead of whatever the first engine to touch it would do: OpenCV reads a forged
external-data path and segfaults on invalid UTF-8 where ONNX Runtime refuses. External weights
are never loaded into memory here: only their location, kind and size are checked.

Reading imports no ``onnx`` (it costs 50-150 ms): the file is parsed with message classes built
from ONNX's own schema (:mod:`unirt.model.onnx_schema`), which read exactly as ``onnx``'s do.
``onnx`` is imported where it is needed: an ``onnx.ModelProto`` given by the caller, shape
inference (:attr:`ModelInfo.value_types`), the checker, a model handed to ``onnx`` tools.
"""

from __future__ import annotations

import errno
import functools
import logging
import math
import os
import stat
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from unirt.errors import ModelError, ModelNotFoundError, first_line
from unirt.tensor import Dim, TensorInfo, normalize_dim

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
    #: ``((inode, size, mtime_ns, ctime_ns), sha256)`` of the file as it was read whole, so that
    #: its digest (:func:`unirt.store.cache.model_digest`) does not read it again while it is
    #: unchanged; None when it was read as a skeleton or not from a file.
    file_digest: tuple[tuple[int, int, int, int], str] | None = field(
        default=None, compare=False, repr=False)

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

    def io(self) -> Iterator[tuple[str, TensorInfo]]:
        """``("input", info)`` for each graph input, then ``("output", info)`` for each output:
        what a backend's refusals (``Backend._refusals_impl``) walk and name."""
        for info in self.inputs:
            yield "input", info
        for info in self.outputs:
            yield "output", info

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

    Validation runs here, before any engine sees the model, because engines differ in what they
    survive: OpenCV reads external data outside the model's folder and segfaults on invalid
    UTF-8 names, where ONNX Runtime refuses. It is cheap (a walk of the proto already in memory;
    no weights read) so that ``unirt.load`` pays well under a millisecond per hundred nodes.
    Raises :class:`ModelNotFoundError` or :class:`ModelError` naming the file and the problem.
    """
    if isinstance(source, ModelInfo):
        return source
    path: Path | None = None
    data: bytes | None = None
    stripped: list[dict[int, int]] | None = None
    digest = None
    if isinstance(source, (str, os.PathLike)):
        path, proto, size, stripped, digest = _read_file(source)
        label = str(source)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        size = len(data)
        label = "<bytes>"
        try:
            proto = _parse(data)
        except Exception as exc:
            raise ModelError(f"{label}: not a valid ONNX model ({first_line(exc)})") from exc
    elif _is_onnx_proto(source):
        proto = source
        label = f"<ModelProto {_text(proto.graph.name) or 'unnamed'}>"
        try:
            data = proto.SerializeToString()
        except Exception as exc:  # > 2 GiB, or a field protobuf cannot encode
            raise ModelError(f"{label}: cannot be serialized ({first_line(exc)})") from exc
        size = len(data)
    else:
        raise ModelError(
            f"cannot read a model from {type(source).__name__}: "
            "give a file path, serialized bytes or an onnx.ModelProto"
        )

    _check_structure(proto, label)
    external, graphs = _check_graphs(proto, path, label, stripped)
    return _describe(proto, path, data, size, external, graphs, digest)


def _model_class() -> Any:
    """``ModelProto`` of unirt's copy of the ONNX schema: parsing needs no ``import onnx``."""
    from unirt.model.onnx_schema import message_class

    return message_class("ModelProto")


def _parse(data: bytes) -> Any:
    """A model's bytes parsed as ``onnx.load_from_string`` parses them (the same protobuf
    parser, and its check that every byte was read), without ``onnx``."""
    proto = _model_class()()
    read = proto.ParseFromString(data)
    if read is not None and read != len(data):
        from google.protobuf.message import DecodeError

        raise DecodeError(f"Protobuf decoding consumed too few bytes: {read} out of {len(data)}")
    return proto


def _is_onnx_proto(source: Any) -> bool:
    """Whether ``source`` is an ``onnx.ModelProto`` (one can exist only once ``onnx`` was
    imported: asking costs no import)."""
    onnx = sys.modules.get("onnx")
    return onnx is not None and isinstance(source, onnx.ModelProto)


def _text(value: Any) -> str:
    """A proto string field as text: protobuf hands invalid UTF-8 back as ``bytes``."""
    return value if isinstance(value, str) else repr(value)


def _path_error(source: Any, exc: OSError, what: str = "model file") -> ModelError:
    """An ``OSError`` from stat/open turned into the error a user can act on (never a raw
    ``OSError``/``RuntimeError``: unirt's contract is one exception family)."""
    code = exc.errno
    if code in (errno.ENOENT, errno.ENOTDIR):
        return ModelNotFoundError(f"{what} not found: {source}")
    if code == errno.ELOOP:
        return ModelError(f"{source}: symlink loop (too many levels of symbolic links)")
    if code == errno.ENAMETOOLONG:
        return ModelError(f"{_short(source)}: path too long ({exc.strerror})")
    if code in (errno.EACCES, errno.EPERM):
        return ModelError(f"{source}: cannot be read (permission denied)")
    return ModelError(f"{_short(source)}: cannot be read ({exc.strerror or exc})")


def _short(source: Any, limit: int = 120) -> str:
    text = str(source)
    return text if len(text) <= limit else f"{text[:limit // 2]}...{text[-limit // 2:]}"


def _file_kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


def _read_file(source: str | os.PathLike[str]) -> tuple[
        Path, Any, int, list[dict[int, int]] | None, Any]:
    """Open a model file without ever blocking or following it outside regular files.

    ``stat`` first (a FIFO or a device would block ``open`` forever), then open with
    ``O_NONBLOCK`` and ``fstat`` the descriptor (the path could have been swapped in between),
    then read a skeleton (large files) or the whole file from that one descriptor, once. The
    proto is of unirt's schema classes (:func:`_model_class`), not ``onnx``'s. A file read
    whole is hashed from the bytes read (:attr:`ModelInfo.file_digest`): the digest every
    cache key needs then costs no second read.
    """
    raw = os.fspath(source)
    text = os.fsdecode(raw) if isinstance(raw, bytes) else raw
    if "\x00" in text:
        raise ModelError(f"{text!r}: the path contains a NUL byte")
    try:
        st = os.stat(text)
    except OSError as exc:
        raise _path_error(source, exc) from exc
    except ValueError as exc:  # embedded NUL on some platforms
        raise ModelError(f"{source!r}: invalid path ({exc})") from exc
    if stat.S_ISDIR(st.st_mode):
        raise ModelError(f"{source}: is not a file (a directory)")
    if not stat.S_ISREG(st.st_mode):
        raise ModelError(f"{source}: is not a regular file ({_file_kind(st.st_mode)}); "
                         "unirt reads models from regular files only")
    path = Path(os.path.realpath(text))
    try:
        fd = os.open(text, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise _path_error(source, exc) from exc
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):  # swapped after the stat above
            raise ModelError(f"{source}: is not a regular file ({_file_kind(st.st_mode)})")
        size = st.st_size
        if size == 0:
            raise ModelError(f"{source}: is empty, not an ONNX model")
        proto: Any = None
        stripped: list[dict[int, int]] | None = None
        digest = None
        if size >= _SKELETON_BYTES:
            skeleton = _skeleton_of(f.fileno(), path, _model_class())
            if skeleton is not None:
                proto, stripped = skeleton
        if proto is None:
            try:
                f.seek(0)
                proto = _model_class()()
                data = f.read()
                proto.ParseFromString(data)
                if len(data) == size:
                    import hashlib

                    digest = ((st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns),
                              hashlib.sha256(data).hexdigest())
            except OSError as exc:
                raise _path_error(source, exc) from exc
            except Exception as exc:  # protobuf DecodeError, ...
                raise ModelError(
                    f"{source}: not a valid ONNX model ({first_line(exc)})") from exc
    return path, proto, size, stripped, digest


def _check_structure(proto: Any, label: str) -> None:
    # A random or truncated file can still parse as a protobuf message with nothing in it.
    if proto.ir_version <= 0 or not proto.HasField("graph"):
        raise ModelError(f"{label}: not an ONNX model (no IR version or no graph)")
    if not proto.graph.output:
        raise ModelError(f"{label}: the graph declares no outputs (truncated or not ONNX?)")
    if not proto.opset_import and proto.ir_version >= 3:
        raise ModelError(f"{label}: the model declares no opset import")
    for o in proto.opset_import:  # the same domain twice is accepted: skl2onnx writes that
        domain = o.domain
        if not isinstance(domain, str):
            raise ModelError(f"{label}: an opset import names domain {domain!r}, "
                             "which is not valid UTF-8")
        shown = domain or "ai.onnx"
        if o.version < 1 or o.version > _MAX_OPSET:
            raise ModelError(f"{label}: opset {shown} version {o.version} is not a known "
                             "opset version")


#: Above this, an opset version is corruption, not a future release (ai.onnx is at 2x today).
#: Versions newer than the installed onnx knows are accepted: engines judge those themselves.
_MAX_OPSET = 10_000
#: The largest size unirt accepts for a declared input dimension: no engine indexes past int32
#: per axis, and generating a probe feed of such a size would exhaust memory.
_MAX_DIM = 1 << 31

#: ONNX element type name -> bits per element (packed for sub-byte types); types without a fixed
#: size (strings) or whose packing unirt does not know are absent, and their sizes unchecked.
ELEMENT_BITS = {
    "FLOAT": 32, "UINT8": 8, "INT8": 8, "UINT16": 16, "INT16": 16, "INT32": 32, "INT64": 64,
    "BOOL": 8, "FLOAT16": 16, "DOUBLE": 64, "UINT32": 32, "UINT64": 64, "COMPLEX64": 64,
    "COMPLEX128": 128, "BFLOAT16": 16, "FLOAT8E4M3FN": 8, "FLOAT8E4M3FNUZ": 8,
    "FLOAT8E5M2": 8, "FLOAT8E5M2FNUZ": 8, "FLOAT8E8M0": 8, "UINT4": 4, "INT4": 4,
    "FLOAT4E2M1": 4, "UINT2": 2, "INT2": 2,
}
#: data_type -> (typed data field, values per element) for the types whose typed field holds
#: exactly one fixed-size value per element (the others are checked through raw_data only).
_TYPED_FIELDS = {1: ("float_data", 1), 6: ("int32_data", 1), 7: ("int64_data", 1),
                 11: ("double_data", 1), 12: ("uint64_data", 1), 13: ("uint64_data", 1),
                 14: ("float_data", 2), 15: ("double_data", 2)}
#: TensorProto field numbers of raw_data, float_data, double_data (bytes per value when packed).
_RAW, _PACKED_BYTES = 9, {4: 4, 10: 8}


@functools.cache
def _element_bits_by_type() -> dict[int, int | None]:
    """data_type -> bits per element (``None``: size not fixed or unknown to unirt), for every
    element type of ONNX's schema (:mod:`unirt.model.onnx_schema`); a data_type absent from it
    is no ONNX type unless the installed onnx, newer than the schema, defines it
    (:func:`_newer_element_type`)."""
    from unirt.model.onnx_schema import data_types

    return {v: ELEMENT_BITS.get(name) for v, name in data_types().items() if v != 0}


@functools.cache
def _newer_element_type(data_type: int) -> bool:
    """Whether the installed onnx defines ``data_type`` though unirt's schema does not (an onnx
    newer than the schema): asked, importing onnx, only for a type the schema does not know."""
    try:
        from onnx import TensorProto

        return data_type != 0 and data_type in TensorProto.DataType.values()
    except Exception:  # no onnx, or a broken one: the schema's answer stands
        return False


class _GraphChecker:
    """One walk over every graph of a model (subgraphs included, outer-scope names visible)
    that finds what makes engines crash or misbehave rather than refuse: names that are not
    valid UTF-8, node inputs nothing produces, cycles, tensors whose data does not match their
    dims, declared input dims out of range, and external data that is missing, short or outside
    the model's folder. Each problem is a :class:`ModelError` naming the node or tensor."""

    def __init__(self, path: Path | None, label: str, stripped: list[dict[int, int]] | None):
        self.path = path
        self.label = label
        self.stripped = stripped
        self.external: list[tuple[Any, str]] = []  # (TensorProto, where)
        self.bits = _element_bits_by_type()
        #: (path, graph) of every graph, in the order and with the paths of iter_graphs.
        self.graphs: list[tuple[str, Any]] = []

    def fail(self, message: str) -> ModelError:
        return ModelError(f"{self.label}: {message}")

    def invalid(self, message: str) -> ModelError:
        """A structural problem, worded as :func:`validate_graph` words the checker's."""
        return ModelError(f"{self.label}: invalid ONNX graph: {message}")

    def name(self, value: Any, what: str) -> str:
        if not isinstance(value, str):
            raise self.fail(f"{what} {value!r} is not valid UTF-8")
        return value

    def graph(self, graph: Any, gpath: str, outer: tuple[set[str], ...]) -> None:
        """Check one graph; ``outer`` holds the name sets of its enclosing graphs (live: a
        subgraph is checked when its node is reached, so it sees what is defined before it).

        Written for speed (it runs on every ``unirt.load``): the common case is one set test per
        node; the node-by-node diagnosis runs only once something is known to be wrong.
        """
        self.graphs.append((gpath, graph))
        where = f" in subgraph {gpath}" if gpath else ""
        known: set[str] = {self.name(v.name, f"graph input{where}") for v in graph.input}
        for i, t in enumerate(graph.initializer):
            known.add(self.tensor(t, f"initializer{where}",
                                  self.stripped[i] if self.stripped is not None and not gpath
                                  and i < len(self.stripped) else None))
        for st in graph.sparse_initializer:
            known.add(self.tensor(st.values, f"sparse initializer{where}"))
            self.tensor(st.indices, f"indices of sparse initializer{where}")
        for v in graph.value_info:
            self.name(v.name, f"value_info{where}")
        seen = set(known)
        seen.add("")  # an omitted optional input
        scopes = (*outer, seen)
        texts: list[Any] = []  # node names, op types, domains, attribute names: UTF-8 checked
        outputs: list[Any] = []  # at the end, in one pass
        nodes = graph.node
        later: set[str] | None = None  # every name this graph's nodes write, once needed
        for n in nodes:
            texts += (n.name, n.op_type, n.domain)
            ins = n.input
            if not seen.issuperset(ins):
                later = self.resolve(graph, n, where, seen, outer, later)
            outs = n.output
            outputs += outs
            seen.update(outs)
            attrs = n.attribute
            if attrs:
                special = False
                for a in attrs:
                    texts.append(a.name)
                    special = special or a.type not in _PLAIN_ATTRIBUTES
                if special:
                    self.attributes(n, gpath, where, scopes if later is None else
                                    (*scopes, later))
        if bytes in set(map(type, texts)) or bytes in set(map(type, outputs)):
            for n in nodes:
                label = self.node_label(n)
                self.name(n.domain, f"domain of node {label}{where}")
                for a in n.attribute:
                    self.name(a.name, f"attribute of node {label}{where}")
                for o in n.output:
                    self.name(o, f"output of node {label}{where}")
        named = [o for o in outputs if o]
        if len(set(named)) != len(named) or not known.isdisjoint(named):
            defined = set(known)
            for n in nodes:
                for o in n.output:
                    if o and o in defined:
                        raise self.invalid(
                            f"node {self.node_label(n)}{where} writes {o!r}, which another "
                            "node, input or initializer already defines (a graph must assign "
                            "each name once)")
                    defined.add(o)
        for v in graph.output:
            o = self.name(v.name, f"graph output{where}")
            if o not in seen and not any(o in s for s in outer):
                raise self.invalid(f"graph output {o!r}{where} is produced by no node, input "
                                   "or initializer")
        if later is not None:
            self.check_acyclic(graph, where)

    def resolve(self, graph: Any, n: Any, where: str, seen: set[str],
                outer: tuple[set[str], ...], later: set[str] | None) -> set[str] | None:
        """The slow path for a node whose inputs are not all defined yet in its own graph:
        each must come from an enclosing graph or (out of order) a later node of this one, else
        a ModelError names it. Returns the set of names this graph writes once it was needed
        (``None`` while every input came from outside)."""
        label: str | None = None
        for i_name in n.input:
            if i_name in seen or any(i_name in s for s in outer):
                continue
            label = label or self.node_label(n)
            i_name = self.name(i_name, f"input of node {label}{where}")
            if later is None:
                later = {o for m in graph.node for o in m.output}
            if i_name not in later:
                raise self.invalid(f"node {label}{where} reads {i_name!r}, which no graph "
                                   "input, initializer or node produces")
        return later

    def attributes(self, n: Any, gpath: str, where: str, scopes: tuple[set[str], ...]) -> None:
        """The attributes of a node that has a tensor, a graph or an invalid type among them
        (their names are checked for UTF-8 by the caller)."""
        label: str | None = None
        for a in n.attribute:
            kind = a.type
            if kind in _PLAIN_ATTRIBUTES:
                continue
            if kind == _TENSOR:  # Constant's value: the common case, kept cheap
                self.tensor(a.t, (n, a.name, where))
                continue
            label = label or self.node_label(n)
            aname = self.name(a.name, f"attribute of node {label}{where}")
            sub = f"{gpath}/{_text(n.name) or _text(n.op_type)}/{aname}".lstrip("/")
            if kind == _GRAPH:
                self.graph(a.g, sub, scopes)
            elif kind == _GRAPHS:
                for j, g in enumerate(a.graphs):
                    self.graph(g, f"{sub}[{j}]", scopes)
            elif kind == _TENSORS:
                for t in a.tensors:
                    self.tensor(t, (n, a.name, where))
            elif kind not in _ATTRIBUTE_TYPES:
                raise self.invalid(f"attribute {aname!r} of node {label}{where} has no valid "
                                   f"type ({kind})")

    def node_label(self, n: Any) -> str:
        name, op = n.name, n.op_type
        if not isinstance(name, str) or not isinstance(op, str):
            raise self.invalid(f"a node's name or op type ({name!r}, {op!r}) is not valid UTF-8")
        return f"{name!r} ({op})" if name else f"<unnamed {op}>"

    def check_acyclic(self, graph: Any, where: str) -> None:
        """Nodes out of topological order are accepted (ONNX Runtime sorts them itself); a
        cycle is not, as no engine can order it."""
        nodes = list(graph.node)
        producers = {o: i for i, n in enumerate(nodes) for o in n.output if o}
        waiting = [0] * len(nodes)
        users: dict[int, list[int]] = {}
        for i, n in enumerate(nodes):
            for name in set(n.input):
                j = producers.get(name)
                if j is not None:
                    waiting[i] += 1
                    users.setdefault(j, []).append(i)
        ready = [i for i, w in enumerate(waiting) if w == 0]
        done = 0
        while ready:
            i = ready.pop()
            done += 1
            for k in users.get(i, ()):
                waiting[k] -= 1
                if waiting[k] == 0:
                    ready.append(k)
        if done < len(nodes):
            first = next(i for i, w in enumerate(waiting) if w)
            raise self.invalid(f"node {self.node_label(nodes[first])}{where} is part of a "
                               "cycle (its inputs depend on its own outputs)")
        logger.debug("%s: nodes%s are not in topological order (accepted: acyclic)",
                     self.label, where)

    def tensor(self, t: Any, what: Any, dropped: dict[int, int] | None = None) -> str:
        """Check one tensor's name, dims, type and data size; returns its name. ``what`` says
        where the tensor is: a string, or a node whose label is only worked out on failure (the
        common case pays for no message)."""
        name = t.name
        if type(name) is not str:
            self.name(name, f"{self.where(what)} name")
        dims = t.dims
        if dims and min(dims) < 0:
            raise self.invalid(f"{self.where(what)} {name!r} has a negative dimension "
                               f"({list(dims)})")
        bits = self.bits.get(t.data_type, False)
        if bits is False and _newer_element_type(t.data_type):
            bits = None  # a type newer than unirt's schema: its size is not checked
        if bits is False:
            raise self.invalid(f"{self.where(what)} {name!r} has element type {t.data_type}, "
                               "which is not an ONNX element type")
        if t.data_location == 1:  # EXTERNAL
            self.external.append((t, f"{self.where(what)} {name!r}"))
            return name
        if not bits:
            return name
        numel = math.prod(dims)
        nbytes = (numel * bits + 7) // 8
        raw = len(t.raw_data) if t.HasField("raw_data") else (dropped or {}).get(_RAW)
        if raw is not None:
            if raw != nbytes:
                raise self.invalid(f"{self.where(what)} {name!r} holds {raw} bytes of data, "
                                   f"but its dims {list(dims)} need {nbytes}")
            return name
        typed = _TYPED_FIELDS.get(t.data_type)
        if typed is not None:
            count = len(getattr(t, typed[0]))
            if dropped:
                for field_no, per in _PACKED_BYTES.items():
                    count += dropped.get(field_no, 0) // per
            if count != numel * typed[1] and not (count == 0 and dropped):
                raise self.invalid(f"{self.where(what)} {name!r} holds {count} values, but its "
                                   f"dims {list(dims)} need {numel * typed[1]}")
        elif numel and not dropped and not _has_typed_data(t):
            raise self.invalid(f"{self.where(what)} {name!r} holds no data for its {numel} "
                               "elements")
        return name

    def where(self, what: Any) -> str:
        """The words for where a tensor is: ``what`` itself, or for ``(node, attribute name,
        where)`` the tensor of that node's attribute."""
        if isinstance(what, str):
            return what
        node, aname, where = what
        return f"tensor of attribute {_text(aname)!r} of node {self.node_label(node)}{where}"

    def external_data(self) -> tuple[Path, ...]:
        """Check every external tensor: where its file is (inside the model's folder, after
        symlinks), what it is (a readable regular file) and that its bytes cover the tensor."""
        if not self.external:
            return ()
        resolved: dict[str, tuple[str, os.stat_result]] = {}
        files: dict[str, None] = {}
        base = os.path.realpath(self.path.parent) if self.path is not None else ""
        for t, shown in self.external:
            info: dict[str, str] = {}
            for e in t.external_data:
                key = self.name(e.key, f"external data key of {shown}")
                info[key] = self.name(e.value, f"external data entry {key!r} of {shown}")
            location = info.get("location")
            if not location:
                raise self.fail(f"{shown} is external but names no file")
            if self.path is None:
                raise self.fail(
                    f"{shown} lives in external file {location!r}, which cannot be found for a "
                    "model given in memory; load it from its path")
            offset = self.offset(info, "offset", shown, location)
            length = self.offset(info, "length", shown, location)
            if location not in resolved:
                resolved[location] = self.locate(location, shown, base)
            target, st = resolved[location]
            files[target] = None
            bits = self.bits.get(t.data_type)
            numel = 1
            for d in t.dims:
                numel *= d
            nbytes = (numel * bits + 7) // 8 if bits else None
            if length is not None and nbytes is not None and length != nbytes:
                raise self.fail(f"{shown}: external data file {location!r} gives length "
                                f"{length}, but its dims {list(t.dims)} need {nbytes} bytes")
            needed = (offset or 0) + (length if length is not None else nbytes or 0)
            if st.st_size < needed:
                raise self.fail(f"external data file {location!r} for {shown} is truncated "
                                f"({st.st_size} bytes, the tensor needs bytes up to {needed})")
        return tuple(Path(f) for f in files)

    def offset(self, info: dict[str, str], key: str, shown: str, location: str) -> int | None:
        value = info.get(key)
        if value is None or value == "":
            return None
        if not (value.isascii() and value.isdigit()):
            raise self.fail(f"{shown}: external data {key} {value!r} (file {location!r}) is "
                            "not a non-negative integer")
        return int(value)

    def locate(self, location: str, shown: str, base: str) -> tuple[str, os.stat_result]:
        assert self.path is not None
        problem = None
        if "\x00" in location:
            problem = "contains a NUL byte"
        elif os.path.isabs(location):
            problem = "is an absolute path; external data must lie in the model's folder"
        if problem:
            raise self.fail(f"external data location {location!r} of {shown} {problem}")
        try:
            target = os.path.realpath(os.path.join(base, location))
        except (OSError, ValueError) as exc:
            raise self.fail(f"external data location {_short(location)!r} of {shown} cannot "
                            f"be resolved ({first_line(exc)})") from exc
        if target == base or os.path.commonpath([base, target]) != base:
            raise self.fail(f"external data location {_short(location)!r} of {shown} resolves "
                            f"to {target}, outside the model's folder {base}; unirt reads "
                            "external data only from inside it")
        try:
            st = os.stat(target)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                raise self.fail(f"external data file {location!r} for {shown} is missing "
                                f"(looked in {self.path.parent})") from exc
            err = _path_error(_short(location), exc, "external data file")
            raise self.fail(f"external data of {shown}: {err}") from exc
        if not stat.S_ISREG(st.st_mode):
            raise self.fail(f"external data file {location!r} for {shown} is not a regular "
                            f"file ({_file_kind(st.st_mode)})")
        if not os.access(target, os.R_OK):
            raise self.fail(f"external data file {location!r} for {shown} cannot be read "
                            "(permission denied)")
        return target, st


_ATTRIBUTE_TYPES = frozenset(range(1, 15))
#: AttributeProto.AttributeType numbers of the kinds that hold tensors or graphs.
_TENSOR, _GRAPH, _TENSORS, _GRAPHS = 4, 5, 9, 10
#: Attribute types that hold no tensor and no graph (FLOAT, INT, STRING, FLOATS, INTS, STRINGS,
#: TYPE_PROTO(S), SPARSE_TENSOR(S)): nothing in them for validation to walk.
_PLAIN_ATTRIBUTES = frozenset((1, 2, 3, 6, 7, 8, 11, 12, 13, 14))


def _has_typed_data(t: Any) -> bool:
    return any(len(getattr(t, f)) for f in ("float_data", "int32_data", "string_data",
                                            "int64_data", "double_data", "uint64_data"))


def _check_graphs(proto: Any, path: Path | None, label: str,
                  stripped: list[dict[int, int]] | None,
                  ) -> tuple[tuple[Path, ...], list[tuple[str, Any]]]:
    """Everything :class:`_GraphChecker` checks, plus the declared inputs' dims. Returns the
    external data files and every graph with its path (so that describing the model does not
    walk the attributes again)."""
    checker = _GraphChecker(path, label, stripped)
    checker.graph(proto.graph, "", ())
    weights = {t.name for t in proto.graph.initializer}  # IR < 4 lists them as inputs too
    for v in proto.graph.input:
        if v.name in weights:
            continue
        t = v.type
        if t.WhichOneof("value") != "tensor_type" or not t.tensor_type.HasField("shape"):
            continue
        for d in t.tensor_type.shape.dim:
            if d.HasField("dim_value") and d.dim_value > _MAX_DIM:
                raise ModelError(f"{label}: input {v.name!r} declares dimension {d.dim_value}, "
                                 f"beyond the largest any engine accepts (2^31)")
            if d.HasField("dim_param"):
                checker.name(d.dim_param, f"a dim name of input {v.name!r}")
    for v in proto.graph.output:
        t = v.type
        if t.WhichOneof("value") == "tensor_type" and t.tensor_type.HasField("shape"):
            for d in t.tensor_type.shape.dim:
                if d.HasField("dim_param"):
                    checker.name(d.dim_param, f"a dim name of output {v.name!r}")
    return checker.external_data(), checker.graphs


def iter_graphs(graph: Any, prefix: str = ""):  # -> Iterator[tuple[str, GraphProto]]
    yield prefix, graph
    for node in graph.node:
        for attr in node.attribute:
            sub = f"{prefix}/{node.name or node.op_type}/{attr.name}".lstrip("/")
            if attr.type == _GRAPH:
                yield from iter_graphs(attr.g, sub)
            elif attr.type == _GRAPHS:
                for i, g in enumerate(attr.graphs):
                    yield from iter_graphs(g, f"{sub}[{i}]")


#: Element types -> numpy dtype names, as ``onnx.helper.tensor_dtype_to_np_dtype`` maps them
#: (the others, bfloat16 and the float8/4-bit types, are asked of onnx: their numpy types come
#: from ml_dtypes, as onnx has them).
_NP_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32",
              7: "int64", 8: "object", 9: "bool", 10: "float16", 11: "float64", 12: "uint32",
              13: "uint64", 14: "complex64", 15: "complex128"}


def _np_dtype(elem_type: int) -> Any:
    """The numpy dtype of an ONNX element type, or None for an undefined or exotic one."""
    name = _NP_DTYPES.get(elem_type)
    if name is not None:
        import numpy as np

        return np.dtype(name)
    if elem_type == 0:
        return None
    try:
        from onnx import helper

        return helper.tensor_dtype_to_np_dtype(elem_type)
    except Exception:  # undefined or exotic element type
        return None


def _tensor_info(value: Any) -> TensorInfo:
    t = value.type
    if t.WhichOneof("value") != "tensor_type":
        return TensorInfo(value.name, None, None)
    tt = t.tensor_type
    dtype = _np_dtype(tt.elem_type)
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
    """A node's attributes as Python values (tensors and graphs summarised). Reads the fields
    directly rather than through ``onnx.helper.get_attribute_value``: this runs for every node
    on every ``unirt.load``. Attribute types are AttributeProto's numbers (1 FLOAT, 2 INT,
    3 STRING, 4 TENSOR, 5 GRAPH, 6 FLOATS, 7 INTS, 8 STRINGS, 10 GRAPHS; the rest summarised)."""
    attrs: dict[str, Any] = {}
    for a in node.attribute:
        kind = a.type
        if kind == 2:
            attrs[a.name] = a.i
        elif kind == 7:
            attrs[a.name] = tuple(a.ints)
        elif kind == 1:
            attrs[a.name] = a.f
        elif kind == 6:
            attrs[a.name] = tuple(a.floats)
        elif kind == 3:
            attrs[a.name] = a.s.decode("utf-8", "replace")
        elif kind == 8:
            attrs[a.name] = tuple(x.decode("utf-8", "replace") for x in a.strings)
        elif kind in (5, 10):
            attrs[a.name] = "<graph>"
        elif kind == 4:
            attrs[a.name] = f"<tensor {list(a.t.dims)}>"
        else:
            attrs[a.name] = "<complex>"
    return attrs


#: Ops whose output is not fixed even when their inputs are.
_RANDOM_OPS = frozenset({"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
                         "Multinomial", "Bernoulli", "Dropout"})


def _describe(
    proto: Any, path: Path | None, data: bytes | None, size: int,
    external: tuple[Path, ...], graphs: list[tuple[str, Any]] | None = None,
    file_digest: Any = None,
) -> ModelInfo:
    """The :class:`ModelInfo` of a validated proto; ``graphs`` is every graph with its path as
    validation found them (walked again when not given)."""
    g = proto.graph
    # IR < 4 lists initializers among the inputs: those are weights, not things to feed.
    initializers = {t.name for t in g.initializer}
    inputs = tuple(_tensor_info(v) for v in g.input if v.name not in initializers)
    outputs = tuple(_tensor_info(v) for v in g.output)
    nodes = []
    counts: Counter[str] = Counter()
    constants: set[str] = set()
    for gpath, graph in (graphs if graphs is not None else iter_graphs(g)):
        constants.update(t.name for t in graph.initializer)
        for n in graph.node:
            # Each field read once: a protobuf field read makes a new Python object each time.
            op, domain, ins, outs = n.op_type, n.domain, tuple(n.input), tuple(n.output)
            standard = domain in ("", "ai.onnx")
            # Constant folding, in the graph's topological order: a node of the standard
            # domain whose inputs are all fixed computes a fixed value (weights built by
            # ConstantOfShape, a Reshape of an initializer), unless it draws random numbers.
            if standard and op not in _RANDOM_OPS and (
                    op == "Constant" or (ins and all(not i or i in constants for i in ins))):
                constants.update(o for o in outs if o)
            nodes.append(NodeInfo(n.name, op, domain, ins, outs, _attributes(n), gpath))
            counts[op if standard else f"{domain}::{op}"] += 1
    opsets: dict[str, int] = {}
    for o in proto.opset_import:
        opsets[o.domain] = int(o.version)
    return ModelInfo(
        path=path, data=None if path is not None else data, ir_version=int(proto.ir_version),
        producer=f"{proto.producer_name} {proto.producer_version}".strip(), opsets=opsets,
        inputs=inputs, outputs=outputs, nodes=tuple(nodes), external_data=external,
        size_bytes=size + sum(f.stat().st_size for f in external), op_counts=counts,
        constants=frozenset(constants), file_digest=file_digest,
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


def load_proto(info: ModelInfo, weights: bool = False) -> onnx.ModelProto:
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


def strip_weights(proto: onnx.ModelProto) -> None:
    """Make the weights look external: shape inference copies the whole proto into C++ and back,
    which for a 100 MB model costs most of a second, and it needs only their dims and types."""
    from onnx import TensorProto

    for _, graph in iter_graphs(proto.graph):
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
        proto = load_proto(info)
    except Exception as exc:  # the file changed under us
        return {}, f"{type(exc).__name__}: {first_line(exc)}"
    strip_weights(proto)
    try:
        inferred = onnx.shape_inference.infer_shapes(proto, check_type=False, strict_mode=False,
                                                     data_prop=False)
    except Exception as exc:
        error = f"{type(exc).__name__}: {first_line(exc)}"
        logger.debug("shape inference failed on %s: %s", info.name, error)
        inferred = proto
    return facts_of(inferred), error


def facts_of(inferred: onnx.ModelProto) -> dict[str, TypeFact]:
    """Every tensor's :class:`TypeFact` in a proto that shape inference has annotated (shared
    with :mod:`unirt.tools.lint`, which runs inference in strict mode with data propagation)."""
    import onnx

    facts: dict[str, TypeFact] = {}
    for _, graph in iter_graphs(inferred.graph):
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
    return facts


def validate_graph(info: ModelInfo, full_check: bool = True) -> None:
    """Run the ONNX checker (graph structure, types, topological order and, with
    ``full_check``, strict shape inference) and turn a failure into a :class:`ModelError` naming
    the model and the problem. Not part of :func:`read_model`: on a model with its weights
    inline it reads and copies every weight, which ``unirt.load`` should not pay for; the checks
    that keep engines from crashing are :func:`read_model`'s own.

    A model read from a file is checked by its path, so that the checker resolves external data
    next to the model, not in the current directory."""
    import onnx

    try:
        if info.path is not None:
            onnx.checker.check_model(str(info.path), full_check=full_check)
        else:
            assert info.data is not None
            onnx.checker.check_model(info.data, full_check=full_check)
    except Exception as exc:
        line = first_line(exc)
        if any(p in line for p in BENIGN_CHECKER_ERRORS):
            logger.debug("%s: ONNX checker: %s (engines accept this)", info.name, line)
            return
        raise ModelError(f"{info.name}: invalid ONNX graph: {line}") from exc


#: Checker complaints that engines accept: an output declared without a shape, ops of a domain
#: onnx does not know (custom ops), an opset newer than the installed onnx.
BENIGN_CHECKER_ERRORS = ("Field 'shape' of 'type' is required", "No Op registered",
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


def _strip_message(buf: Any, start: int, end: int, path: tuple[int, ...],
                   sink: list[dict[int, int]] | None = None) -> list[Any]:
    """Copy a message, descending along ``path`` (ModelProto.graph=7 -> GraphProto.initializer=5)
    and dropping large data fields of the tensors at its end. ``sink`` gets, per tensor in
    order, the byte length of each field dropped: what lets validation check a weight's size
    against its dims without reading it."""
    parts: list[Any] = []
    dropped: dict[int, int] = {}
    for field_no, wire, key_start, value_start, nxt in _fields(buf, start, end):
        if path and wire == 2 and field_no == path[0]:
            inner = _strip_message(buf, value_start, nxt, path[1:], sink)
            size = sum(len(p) for p in inner)
            parts.append(buf[key_start:value_start - len(_encode_varint(nxt - value_start))])
            parts.append(_encode_varint(size))
            parts.extend(inner)
        elif not path and field_no in _DATA_FIELDS and nxt - value_start > _KEEP_DATA_BYTES:
            dropped[field_no] = dropped.get(field_no, 0) + nxt - value_start
            continue
        else:
            parts.append(buf[key_start:nxt])
    if not path and sink is not None:
        sink.append(dropped)
    return parts


def _skeleton_of(fd: int, path: Path, cls: Any = None
                 ) -> tuple[Any, list[dict[int, int]]] | None:
    """The model in file descriptor ``fd`` without the data of its large initializers (names,
    dims, types kept), read through mmap so the weights' pages are never touched: what makes
    reading a 100 MB model cost milliseconds. Also returns, per main-graph initializer, the
    sizes of the data fields left out. The proto is a ``cls`` (``onnx.ModelProto`` unless
    told). ``None`` on anything unexpected; the caller then reads the file whole (and reports a
    broken file properly)."""
    import mmap

    try:
        sink: list[dict[int, int]] = []
        with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as mm:
            view = memoryview(mm)
            parts: list[Any] = []
            try:
                parts = _strip_message(view, 0, len(mm), (7, 5), sink)
                data = b"".join(parts)
            finally:
                del parts
                view.release()
        if cls is None:
            import onnx

            cls = onnx.ModelProto
        proto = cls()
        proto.ParseFromString(data)
        if len(sink) != len(proto.graph.initializer):  # a layout the walk did not expect
            return None
        return proto, sink
    except Exception:
        logger.debug("skeleton read of %s failed; reading it whole", path, exc_info=True)
        return None


def _read_skeleton(path: Path) -> onnx.ModelProto | None:
    """:func:`_skeleton_of` for a path (re-reading a model already validated)."""
    try:
        with open(path, "rb") as f:
            skeleton = _skeleton_of(f.fileno(), path)
    except OSError:
        return None
    return skeleton[0] if skeleton is not None else None
