"""Parsing an ONNX model and building a TensorRT engine: what runs in the build child.

The loader half of the Polygraphy split (its ``NetworkFromOnnxPath`` / ``EngineFromNetwork``):
:func:`build_engine` and :func:`query_support` run in a child process
(:func:`unirt.process.isolation.run_isolated`), because the ONNX parser and the builder run native
code on a model not yet known to be safe, and a build takes minutes on a real model and must be
stoppable (the child is killed at the timeout). They return plain dicts; what the parser refused
comes back as data (node index, name, op, code, description) for the parent to word
(:func:`describe_parse_errors`), not as an exception whose text the parent would have to pick
apart. The child is given a path (:func:`onnx_file`), never the model's bytes through a pipe.

TensorRT 10.x and 11.x differ in precision: 10.x is weakly typed by default and takes the
``FP16``/``BF16`` builder flags; 11.x removed those flags and every network is strongly typed,
so reduced precision means a model whose tensors are fp16 (converted here with
onnxconverter-common's ``float16`` tools, inputs and outputs kept as declared).
:func:`plan_precision` makes that choice from the version alone, testable without TensorRT.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from unirt.plugin import ModelInfo

#: TensorRT major versions this plugin is written for.
SUPPORTED_MAJORS = (10, 11)


@dataclass(frozen=True)
class PrecisionPlan:
    """How to build for a ``precision=`` on one TensorRT version and GPU."""

    label: str  # what Session.precision reports: fp32, tf32, fp16
    set_flags: tuple[str, ...] = ()  # BuilderFlag names to set
    clear_flags: tuple[str, ...] = ()  # BuilderFlag names to clear
    strongly_typed: bool = False
    convert_fp16: bool = False  # build from the model converted to fp16 (11.x fast)
    note: str | None = None


def plan_precision(major: int, precision: str, cc: tuple[int, int],
                   converter: bool) -> PrecisionPlan:
    """The builder settings for ``precision`` ("exact" or "fast") on TensorRT ``major`` and a
    GPU of compute capability ``cc``; ``converter``: onnxconverter-common is importable.

    exact: TF32 cleared (Ampere and later otherwise run fp32 matmuls and convolutions with a
    10-bit mantissa), fp32 as declared. fast on 10.x: FP16 (and BF16 from sm_80), TF32 kept.
    fast on 11.x: the fp16-converted model, strongly typed; without the converter the model is
    built as declared (TF32 from sm_80) and the note says so.
    """
    tf32 = cc >= (8, 0)
    if precision == "exact":
        return PrecisionPlan("fp32", clear_flags=("TF32",), strongly_typed=major >= 11)
    if major < 11:
        flags = ("FP16", "BF16") if cc >= (8, 0) else ("FP16",)
        return PrecisionPlan("fp16", set_flags=flags)
    if converter:
        return PrecisionPlan("fp16", strongly_typed=True, convert_fp16=True)
    return PrecisionPlan("tf32" if tf32 else "fp32", strongly_typed=True, note=(
        "precision='fast' on TensorRT 11 needs the model in fp16 (11 removed the FP16 builder "
        "flag and is always strongly typed); onnxconverter-common is not installed, so the "
        "model was built as declared: pip install onnxconverter-common"))


@dataclass(frozen=True)
class BuildSpec:
    """Everything the build child needs (pickled to it)."""

    onnx_path: str
    engine_path: str
    profiles: list[list[Any]]  # per profile, [name, min, opt, max] per ranged input
    plan: PrecisionPlan
    workspace: int | None = None
    optimization_level: int | None = None
    cache_root: str | None = None  # the artifact cache holding the timing cache
    timing_key: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class _Logger:
    """Collects TensorRT's errors for the report; built on first use (needs ``tensorrt``)."""

    @staticmethod
    def make(trt: Any) -> Any:
        class Collecting(trt.ILogger):  # type: ignore[misc, name-defined]
            def __init__(self) -> None:
                trt.ILogger.__init__(self)
                self.errors: list[str] = []

            def log(self, severity: Any, msg: str) -> None:
                if severity in (trt.ILogger.ERROR, trt.ILogger.INTERNAL_ERROR):
                    self.errors.append(str(msg))

        return Collecting()


def _parser_errors(parser: Any) -> list[dict[str, Any]]:
    """The parser's errors as plain data (``node_name``/``node_operator`` exist from 10.x)."""
    out = []
    for i in range(int(parser.num_errors)):
        err = parser.get_error(i)

        def get(attr: str, default: Any = None, _err: Any = err) -> Any:
            fn = getattr(_err, attr, None)
            try:
                return fn() if fn is not None else default
            except Exception:
                return default

        code = get("code", "")
        out.append({"code": str(getattr(code, "name", None) or code),
                    "desc": str(get("desc", "") or ""),
                    "node": int(get("node", -1)), "node_name": get("node_name") or "",
                    "op": get("node_operator") or ""})
    return out


def _network(trt: Any, builder: Any, strongly_typed: bool) -> Any:
    flags = 0
    if strongly_typed and int(str(trt.__version__).split(".")[0]) < 11:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return builder.create_network(flags)


def _fp16_copy(onnx_path: str, workdir: str) -> str:
    """The model with its float tensors in fp16, inputs and outputs kept as declared."""
    import onnx
    from onnxconverter_common import float16

    model = float16.convert_float_to_float16(onnx.load(onnx_path), keep_io_types=True)
    path = os.path.join(workdir, "model-fp16.onnx")
    onnx.save(model, path)
    return path


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def build_engine(spec: BuildSpec) -> dict[str, Any]:
    """Parse ``spec.onnx_path`` and build a serialized engine into ``spec.engine_path``.

    Returns ``{"ok": True, "seconds": ..., "layers": ...}``, or ``{"ok": False, "stage":
    "parse"|"build", "errors": [...], "log": [...]}`` where TensorRT refused.
    """
    import tensorrt as trt

    start = time.perf_counter()
    if spec.extra.get("device"):
        from . import _cuda

        _cuda.check(_cuda.runtime().cudaSetDevice(int(spec.extra["device"])), "cudaSetDevice")
    logger = _Logger.make(trt)
    builder = trt.Builder(logger)
    network = _network(trt, builder, spec.plan.strongly_typed)
    parser = trt.OnnxParser(network, logger)
    with tempfile.TemporaryDirectory(prefix="unirt-trt-") as work:
        path = _fp16_copy(spec.onnx_path, work) if spec.plan.convert_fp16 else spec.onnx_path
        if not parser.parse_from_file(path):
            return {"ok": False, "stage": "parse", "errors": _parser_errors(parser),
                    "log": logger.errors[-5:]}
    config = builder.create_builder_config()
    if spec.workspace:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(spec.workspace))
    if spec.optimization_level is not None:
        config.builder_optimization_level = int(spec.optimization_level)
    for name in spec.plan.set_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    for name in spec.plan.clear_flags:
        config.clear_flag(getattr(trt.BuilderFlag, name))
    for ranges in spec.profiles:
        profile = builder.create_optimization_profile()
        for name, lo, opt, hi in ranges:
            profile.set_shape(name, tuple(lo), tuple(opt), tuple(hi))
        config.add_optimization_profile(profile)
    result = _with_timing_cache(trt, builder, network, config, spec)
    if result is None:
        return {"ok": False, "stage": "build", "errors": [], "log": logger.errors[-5:]}
    with open(spec.engine_path, "wb") as f:
        f.write(memoryview(result))
    return {"ok": True, "seconds": round(time.perf_counter() - start, 3),
            "layers": int(getattr(network, "num_layers", 0))}


def _with_timing_cache(trt: Any, builder: Any, network: Any, config: Any,
                       spec: BuildSpec) -> Any:
    """Build with the timing cache kept in unirt's artifact cache for this TensorRT version and
    GPU (read before the build, merged with what is there after it: another process may have
    added to it meanwhile). Timing measurements are what makes a second build of a similar
    model take seconds instead of minutes."""
    if spec.cache_root is None or spec.timing_key is None:
        return builder.build_serialized_network(network, config)
    from unirt.plugin import ArtifactCache

    cache = ArtifactCache(spec.cache_root)
    with cache.managed("tensorrt", spec.timing_key, "tensorrt") as d:
        before = _read(os.path.join(d, "timing.cache")) if d is not None else None
    timing = config.create_timing_cache(before or b"")
    config.set_timing_cache(timing, False)  # a cache of another version or GPU is not used
    result = builder.build_serialized_network(network, config)
    if result is None:
        return None
    with cache.managed("tensorrt", spec.timing_key, "tensorrt") as d:
        if d is not None:
            file = os.path.join(d, "timing.cache")
            now = _read(file)
            merged = config.get_timing_cache()
            if now and now != before:
                merged.combine(config.create_timing_cache(now), False)
            with open(file, "wb") as f:
                f.write(memoryview(merged.serialize()))
    return result


def query_support(onnx_path: str) -> dict[str, Any]:
    """TensorRT's own answer on which nodes it can take: ``supports_model_v2`` and its subgraph
    partition. Returns ``{"supported": bool, "nodes": [indices of nodes in no supported
    subgraph], "errors": [...]}``. A node counts as supported only inside a subgraph the parser
    marks supported; every other node of the main graph is reported."""
    import tensorrt as trt

    logger = _Logger.make(trt)
    builder = trt.Builder(logger)
    network = _network(trt, builder, int(str(trt.__version__).split(".")[0]) >= 11)
    parser = trt.OnnxParser(network, logger)
    with open(onnx_path, "rb") as f:
        data = f.read()
    ok = bool(parser.supports_model_v2(data, onnx_path))
    supported: set[int] = set()
    seen: set[int] = set()
    for i in range(int(parser.num_subgraphs)):
        nodes = [int(n) for n in parser.get_subgraph_nodes(i)]
        seen.update(nodes)
        if parser.is_subgraph_supported(i):
            supported.update(nodes)
    return {"supported": ok, "supported_nodes": sorted(supported), "listed": sorted(seen),
            "errors": _parser_errors(parser)}


def node_label(nodes: Sequence[Any], index: int) -> str:
    """A main-graph node by index as unirt names nodes: its name, else ``op:first output``."""
    if 0 <= index < len(nodes):
        n = nodes[index]
        return n.name or f"{n.op_type}:{n.outputs[0] if n.outputs else '?'}"
    return f"node #{index}"


def describe_parse_errors(errors: Sequence[Mapping[str, Any]], model: ModelInfo) -> str:
    """The parser's errors, each with the node (name) and op it is about, on one line."""
    main = [n for n in model.nodes if n.graph == ""]
    parts = []
    for e in errors[:3]:
        index = int(e.get("node", -1))
        node = str(e.get("node_name") or "") or (
            node_label(main, index) if index >= 0 else "")
        op = str(e.get("op") or "") or (main[index].op_type if 0 <= index < len(main) else "")
        desc = " ".join(str(e.get("desc") or "").split())
        where = f"node {node!r} ({op})" if node else (f"op {op}" if op else "the model")
        code = str(e.get("code") or "").rsplit(".", 1)[-1]
        parts.append(f"{where}: {code + ': ' if code else ''}{desc}".rstrip(": "))
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    return "; ".join(parts) + more if parts else "the parser gave no reason"


@contextlib.contextmanager
def onnx_file(model: ModelInfo, directory: Path | None = None) -> Iterator[str]:
    """A path to the model: its own file, or its bytes written to a temporary one."""
    source = model.source()
    if isinstance(source, str):
        yield source
        return
    with tempfile.TemporaryDirectory(prefix="unirt-trt-", dir=directory) as tmp:
        path = os.path.join(tmp, "model.onnx")
        with open(path, "wb") as f:
            f.write(source)
        yield path
