"""Reading and compiling a model with OpenVINO (the loader side of the backend, as in
Polygraphy's ``backend/onnxrt/loader.py``): the properties a compile gets, the compiled-model
cache directory, compiling (and compiling again after a failed run), what a compiled model says
about itself, and mapping OpenVINO operations back to ONNX nodes for ``query``. See the
package docstring for why each is done the way it is.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from unirt.plugin import ModelInfo, OpenOptions, clean

logger = logging.getLogger("unirt")

#: OpenVINO element type names -> the names ``BackendSession.precision`` uses.
PRECISION_NAMES = {"f32": "fp32", "bf16": "bf16", "f16": "fp16", "f64": "fp64", "i8": "int8"}

_NOISE_LINE = re.compile(r"^(Exception from \S+:\d+:?|Summary:|\[ GENERAL_ERROR \])$")
_NOISE_PART = re.compile(r"\s*Check '.*?' failed at \S+:\d+:?|^FrontEnd API failed with \w+:\s*")


def _engine_message(exc: BaseException) -> str:
    """The lines of an OpenVINO error a user can act on, joined on one line.

    OpenVINO prefixes every message with the C++ file and line that threw (often twice), so the
    core's ``first_line`` would show only ``Exception from src/inference/src/cpp/core.cpp:84:``.
    """
    lines = [ln.strip(" -") for ln in str(exc).splitlines()]
    lines = [_NOISE_PART.sub("", ln).strip() for ln in lines if not _NOISE_LINE.match(ln.strip())]
    useful = [ln.rstrip(".:;") for ln in (clean(x) for x in lines) if ln.rstrip(".:;")]
    if not useful:
        return type(exc).__name__
    return "; ".join(useful[:3])


def properties(options: OpenOptions) -> dict[str, Any]:
    """The OpenVINO properties a compile (or ``query_model``) gets for ``options``."""
    extra = options.extra
    config: dict[str, Any] = {
        "PERFORMANCE_HINT": str(extra.get("performance_hint") or "LATENCY").strip().upper(),
    }
    if options.precision == "exact":
        config["INFERENCE_PRECISION_HINT"] = "f32"
    if options.threads is not None:
        config["INFERENCE_NUM_THREADS"] = int(options.threads)
    if "num_streams" in extra:
        config["NUM_STREAMS"] = str(extra["num_streams"]).upper()
    config.update(extra.get("config") or {})
    return config


@contextlib.contextmanager
def cache_dir(backend: str, model: ModelInfo, options: OpenOptions,
              config: Mapping[str, Any]) -> Iterator[str | None]:
    """OpenVINO's ``CACHE_DIR`` for one compile: unirt's engine-managed directory for this
    model's content, checked file by file against the manifest unirt signed after the last
    compile and vouched for again after this one (:meth:`unirt.store.cache.ArtifactCache.managed`).
    OpenVINO itself loads a blob with flipped bytes without a word (outputs off by 1e36,
    measured on 2026.4), so no blob reaches it unchecked. None: compile without a cache
    (turned off, a ``CACHE_DIR`` of the user's own in ``config``, or no usable cache)."""
    if not options.extra.get("cache", True) or "CACHE_DIR" in config:
        yield config.get("CACHE_DIR")
        return
    from unirt.plugin import ArtifactCache, model_digest

    with ArtifactCache().managed(backend, model_digest(model)[:32], "openvino") as d:
        yield None if d is None else str(d)


def compiler(backend: str, core: Any, model: ModelInfo, options: OpenOptions, device: str,
             base: Mapping[str, Any], config: dict[str, Any]) -> Callable[..., Any]:
    """The function that compiles ``model`` on ``device`` (the session's ``reopen``). It sets
    ``config["CACHE_DIR"]`` to the cache directory of each compile, for ``describe``."""
    source = model.source()

    def compile_model(old: Any = None) -> Any:
        """Compile the model; given the compiled model a failed run left behind, make a new
        one from its exported blob (the very model that was opened, without reading the
        file again: clean on the PP-OCR recognizer, 50-130 ms), or failing that compile."""
        if old is not None:
            try:
                return core.import_model(old.export_model(), device, config)
            except RuntimeError as exc:  # a device that cannot export: compile instead
                logger.debug("openvino: export/import of %s failed (%s); compiling",
                             model.name, _engine_message(exc))
        with cache_dir(backend, model, options, base) as directory:
            config.pop("CACHE_DIR", None)
            if directory is not None:
                config["CACHE_DIR"] = directory
            if isinstance(source, str):
                return core.compile_model(source, device, config)
            return core.compile_model(core.read_model(source), device, config)

    return compile_model


def read_precision(compiled: Any, options: OpenOptions) -> str:
    try:
        kind = compiled.get_property("INFERENCE_PRECISION_HINT")
        name = kind.get_type_name() if hasattr(kind, "get_type_name") else str(kind)
    except Exception:  # AUTO/MULTI may not expose it: say what was asked, as far as known
        return "fp32" if options.precision == "exact" else "unknown"
    return PRECISION_NAMES.get(name, name)


def describe(compiled: Any, device: str, config: Mapping[str, Any]) -> dict[str, Any]:
    details: dict[str, Any] = {"device": device}
    for key, prop in (("execution_devices", "EXECUTION_DEVICES"),
                      ("performance_hint", "PERFORMANCE_HINT"),
                      ("num_streams", "NUM_STREAMS"),
                      ("threads", "INFERENCE_NUM_THREADS"),
                      ("optimal_requests", "OPTIMAL_NUMBER_OF_INFER_REQUESTS"),
                      ("loaded_from_cache", "LOADED_FROM_CACHE")):
        try:
            value = compiled.get_property(prop)
        except Exception:
            continue
        if isinstance(value, (bool, int)):
            details[key] = value
        elif isinstance(value, (list, tuple)):
            details[key] = list(value)
        else:  # enums (PerformanceMode.LATENCY) read as their name
            details[key] = getattr(value, "name", None) or str(value)
    details["cache_dir"] = config.get("CACHE_DIR")
    return details


def _is_placeholder(type_name: str) -> bool:
    """Whether an operation stands for an ONNX node the frontend could not convert: an
    ``ONNXFrameworkNode`` (read from a file) or a ``NotSupportedONNXNode`` (read from a stream)."""
    return "FrameworkNode" in type_name or "NotSupported" in type_name


def _onnx_node_names(ops: Sequence[Any], model: ModelInfo) -> set[str]:
    """Map OpenVINO operations back to the names of the ONNX nodes they were converted from.

    ``query_model`` speaks in OpenVINO operations, and one ONNX node may become several (ArgMax
    becomes TopK + Squeeze) whose friendly names are not the ONNX node's name. What survives
    conversion reliably is the tensor names: the operation producing an ONNX node's output
    carries that output's name. So an operation maps to the ONNX node producing one of its
    output tensors; failing that, to a node of the same name; failing that (an internal step of a
    decomposition), to the first node reached downstream. An operation that maps to nothing is
    reported under its OpenVINO friendly name. An unnamed ONNX node is reported as
    ``<op_type>:<first output>``. Nodes inside subgraphs (If/Loop bodies) are not separate
    operations for ``query_model``: the verdict is on the node that holds the subgraph.
    """
    main = [n for n in model.nodes if n.graph == ""]
    by_output = {out: n for n in main for out in n.outputs if out}
    by_name = {n.name: n for n in main if n.name}

    def label(node: Any) -> str:
        return node.name or f"{node.op_type}:{node.outputs[0] if node.outputs else '?'}"

    def direct(op: Any) -> str | None:
        for port in op.outputs():
            for tensor in sorted(port.get_names()):
                if tensor in by_output:
                    return label(by_output[tensor])
        node = by_name.get(op.get_friendly_name())
        return label(node) if node is not None else None

    names: set[str] = set()
    for op in ops:
        found = direct(op)
        frontier, seen = [op], {op.get_name()}
        while found is None and frontier and len(seen) < 256:
            nxt = []
            for current in frontier:
                for port in current.outputs():
                    for target in port.get_target_inputs():
                        consumer = target.get_node()
                        if consumer.get_name() not in seen:
                            seen.add(consumer.get_name())
                            nxt.append(consumer)
            for consumer in nxt:
                found = direct(consumer)
                if found is not None:
                    break
            frontier = nxt
        names.add(found if found is not None else op.get_friendly_name())
    return names
