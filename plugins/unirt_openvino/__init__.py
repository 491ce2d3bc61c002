"""OpenVINO backend: ``openvino`` (Intel's engine; CPU by default, GPU/NPU/AUTO when present).

A plugin like any third-party one: it registers through the ``register_backends`` hook and
imports ``openvino`` only when availability is asked, a model is queried or a model is opened.

What this backend guards against, each found by running OpenVINO (see ENGINE_NOTES):

* Precision. On CPUs with AMX/AVX-512-BF16 OpenVINO computes in bf16 unless told otherwise, and
  returns numbers that differ from ONNX Runtime by up to whole units without any warning.
  ``precision="exact"`` pins ``INFERENCE_PRECISION_HINT=f32``; ``"fast"`` keeps the engine's
  default. Either way ``BackendSession.precision`` is read back from the compiled model, never
  copied from what was asked.
* Reused output buffers. With ``share_outputs=True`` an infer request hands out views of its own
  output tensors, which the next run overwrites in place: a caller's earlier results would change
  under them. Outputs are always copied out (``share_outputs=False``), so callers own them.
* Thread safety. An ``InferRequest`` runs one inference at a time; one ``CompiledModel`` may serve
  many. Each thread gets its own request (``threading.local``), created on its first run, so
  concurrent ``Session.run`` calls never share a request and never wait on a lock of ours.
* Error text. OpenVINO's exceptions start with C++ source locations (``Exception from
  src/inference/...``); :func:`_engine_message` keeps the lines a user can act on.
* A refused run poisons the compiled model. When the CPU plugin's shape inference refuses an
  input shape (an AvgPool kernel larger than the feature map at a small image height: the PP-OCR
  recognizer at height 32), the compiled model keeps the dims of the refused call: the next call
  at a shape that ran fine before is refused with the old dims in the message (every time, even
  on a one-node graph), and on the PP-OCR recognizer a good shape after a refused one returned
  all-NaN in about half of fresh processes (2026.4.1). The state lives in the compiled model, not
  the request: a fresh ``InferRequest`` still returns NaN; compiling again is clean every time.
  So after any engine error from a run the session compiles the model again (from OpenVINO's
  cache: tens of milliseconds) and every thread takes a fresh request on the new one. A refusal
  raised by shape inference is a :class:`~unirt.errors.ShapeLimitError`, so a Session re-routes
  that shape to another engine instead of failing.

Compiled models are cached by OpenVINO itself (its ``CACHE_DIR`` property), in an engine-managed
directory of unirt's artifact cache (``<cache>/openvino/<key>``), one per model content
(:func:`unirt.cache.model_digest`: the ONNX bytes and any external data files). The
subdirectory is what makes the cache safe: OpenVINO keys a model compiled from a path on the
path, size and modification time only, so a model rewritten in place with the same size and time
(retrained weights copied with ``cp -p`` or ``rsync -a``, or build systems that pin mtimes) loads
the *old* compiled blob and returns the old model's numbers without an error (checked on
2026.4). Within a subdirectory OpenVINO keys its blobs on device, properties and its own version.
OpenVINO does not check a blob's content: one with flipped bytes loads and returns outputs off
by up to 1e36. So each compile runs inside :meth:`unirt.cache.ArtifactCache.managed`: under the
directory's lock, every file is checked against the manifest (sizes, SHA-256, signed) unirt wrote
after the last compile, a file that does not match is deleted (OpenVINO compiles again), and
the manifest is updated after the compile. That costs one SHA-256 of the blob per process
(~0.1 s for ResNet-50's 100 MB), against a compile of over a second.
A model opened from a file is compiled from its path, so a cached load skips reading the ONNX
file; one given as bytes is read first.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from unirt.backend import Availability, Backend, BackendSession, OpenOptions, OptionSpec
from unirt.errors import (
    BackendError,
    BackendUnavailableError,
    ShapeLimitError,
    UnirtError,
    clean,
)
from unirt.hookspecs import hookimpl
from unirt.model import ModelInfo

logger = logging.getLogger("unirt")

PERFORMANCE_HINTS = ("LATENCY", "THROUGHPUT", "CUMULATIVE_THROUGHPUT")
#: Options a user may pass as ``load(options={"openvino": {...}})``, with what they accept.
OPTIONS: dict[str, OptionSpec] = {
    "device": OptionSpec(
        "an OpenVINO device: CPU, GPU, GPU.1, NPU, AUTO, AUTO:GPU,CPU, HETERO:GPU,CPU ..."),
    "performance_hint": OptionSpec.choice(
        "LATENCY (default), THROUGHPUT or CUMULATIVE_THROUGHPUT", PERFORMANCE_HINTS),
    "num_streams": OptionSpec("int, or AUTO"),
    "cache": OptionSpec("bool: use OpenVINO's compiled-model cache (default True)"),
    "config": OptionSpec.mapping("dict of raw OpenVINO properties, applied last",
                                 "a dict of OpenVINO properties"),
}
#: Devices that stand for other devices (their list follows a colon) rather than hardware.
VIRTUAL_DEVICES = ("AUTO", "MULTI", "HETERO", "BATCH")
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


class OpenVinoSession(BackendSession):
    """A compiled model plus one infer request per calling thread."""

    def __init__(self, compiled: Any, model: ModelInfo, label: str,
                 reopen: Callable[[Any], Any] | None = None) -> None:
        super().__init__()
        self._compiled = compiled
        self._label = label
        # Makes a new compiled model from the old one: a run that raised leaves the compiled
        # model in a state that can spoil later runs (see the module docstring), so it is
        # replaced, not reused.
        self._reopen = reopen
        # Bumped each time the compiled model is replaced; a thread's request carries the
        # generation it was made in and is dropped once that is not the current one.
        self._generation = 0
        self._lock = threading.Lock()
        #: How many times a run's error made the session compile the model again.
        self.reopened = 0
        self._local = threading.local()
        ports = list(compiled.outputs)
        by_name: dict[str, int] = {}
        for i, port in enumerate(ports):
            for name in port.get_names():
                by_name.setdefault(name, i)
        # ONNX output name -> (index among the compiled outputs, dtype to convert to or None).
        # OpenVINO keeps the declared element types for ONNX models as far as seen, but a device
        # may narrow one (i64 -> i32, f16 -> f32); the caller must get what the model declares.
        self._where: dict[str, tuple[int, Any]] = {}
        for position, info in enumerate(model.outputs):
            index = by_name.get(info.name, position)
            if index >= len(ports):
                raise BackendError(f"openvino: {model.name} output {info.name!r} has no match "
                                   f"among the compiled outputs")
            got = _numpy_dtype(ports[index].get_element_type())
            want = info.dtype if info.dtype is not None and got != info.dtype else None
            self._where[info.name] = (index, want)
        self._all_names = tuple(t.name for t in model.outputs)
        # The fast path: every output asked for, in model order, at the position and dtype the
        # engine already gives. Then run returns the engine's tuple as it is.
        self._identity = all(self._where[n] == (i, None) for i, n in enumerate(self._all_names))
        # Inputs the ONNX frontend dropped (unused by any node) must not be fed to the request.
        # ONNX input name -> the compiled input port it feeds, or None for an input the ONNX
        # frontend dropped (read by no node). Ports are matched by tensor name first; a port
        # that lost its name (a pass-through graph, Parameter -> Result, is named after the
        # output) is matched by position when the frontend kept every input. Dropping such an
        # input instead would leave the port unset and return uninitialised memory (measured:
        # values of 1e33 for a lone Dropout).
        ports = [set(port.get_names()) for port in compiled.inputs]
        keys: dict[str, int | None] = {}
        for t in model.inputs:
            keys[t.name] = next((i for i, names in enumerate(ports) if t.name in names), None)
        unmatched = [i for i in range(len(ports)) if i not in keys.values()]
        if len(ports) == len(model.inputs):
            for t in model.inputs:
                if keys[t.name] is None:
                    keys[t.name] = unmatched.pop(0)
        self._unused_inputs = frozenset(n for n, k in keys.items() if k is None)
        named = all(k is None or t.name in ports[k]
                    for t, k in zip(model.inputs, keys.values()))
        # Feed by port index unless every used input is found under its own name (fast path).
        self._feed_keys: dict[str, int] | None = None if named else {
            n: k for n, k in keys.items() if k is not None}

    def _request(self) -> tuple[int, Any]:
        """A new infer request for this thread, on the current compiled model."""
        with self._lock:
            if self._compiled is None:
                if self._reopen is None:
                    raise BackendError(f"openvino: the session for {self._label} is closed")
                try:  # the last run's error dropped the compiled model and compiling failed then
                    self._compiled = self._reopen(None)
                except RuntimeError as exc:
                    raise BackendError(f"openvino could not compile {self._label} again: "
                                       f"{_engine_message(exc)}") from exc
            slot = (self._generation, self._compiled.create_infer_request().infer)
        self._local.slot = slot
        return slot

    def _discard(self, generation: int) -> None:
        """After a run raised: replace the compiled model (once, however many threads saw it
        fail) so that no later run, on any thread, uses the one the failed run left behind."""
        with self._lock:
            if generation != self._generation or self._compiled is None:
                return  # another thread already replaced it (or the session is closed)
            self._generation += 1
            self.reopened += 1
            old, self._compiled = self._compiled, None
            if self._reopen is None:
                self._compiled = old  # nothing to compile from: fresh requests are all there is
                return
            try:
                self._compiled = self._reopen(old)
            except RuntimeError as exc:  # tried again by the next run, which reports it
                logger.debug("openvino: compiling %s again failed: %s", self._label,
                             _engine_message(exc))
        logger.debug("openvino: %s compiled again after a failed run", self._label)

    def run(self, feeds: dict[str, Any], output_names: Sequence[str]) -> Sequence[Any]:
        try:
            generation, infer = self._local.slot
            if generation != self._generation:
                generation, infer = self._request()
        except AttributeError:
            generation, infer = self._request()
        if self._feed_keys is not None:
            ports_of = self._feed_keys
            by_port: dict[Any, Any] = {ports_of[k]: v for k, v in feeds.items() if k in ports_of}
            feeds = by_port
        elif self._unused_inputs:
            feeds = {k: v for k, v in feeds.items() if k not in self._unused_inputs}
        try:
            # share_inputs: the request reads the caller's arrays in place (no copy);
            # share_outputs=False: results are fresh arrays the caller owns, not views of the
            # request's buffers that the next run on this thread would overwrite.
            results = infer(feeds, share_inputs=True, share_outputs=False).to_tuple()
        except RuntimeError as exc:
            self._discard(generation)
            error = ShapeLimitError if _is_shape_refusal(exc) else BackendError
            raise error(f"openvino failed running {self._label}: "
                        f"{_engine_message(exc)}") from exc
        if self._identity and (output_names is self._all_names
                               or tuple(output_names) == self._all_names):
            return results
        out = []
        for name in output_names:
            index, want = self._where[name]
            value = results[index]
            out.append(value if want is None else value.astype(want))
        return out

    def close(self) -> None:
        # Requests of other threads live in their thread-local slots; dropping the local drops
        # them all, and with them the last references to the compiled model.
        with self._lock:
            self._local = threading.local()
            self._compiled = None
            self._reopen = None
            self._generation += 1


def _is_shape_refusal(exc: BaseException) -> bool:
    """Whether a run's error is OpenVINO's shape inference refusing the input shapes (a kernel
    larger than the feature map, a Reshape whose size does not divide): a limit of the engine
    at that shape, which another engine may well run, not a fault of the model."""
    text = str(exc)
    return "shape_inference" in text or "While validating node" in text


def _numpy_dtype(element_type: Any) -> Any:
    try:
        import numpy as np

        return np.dtype(element_type.to_dtype())
    except Exception:  # string or exotic element types have no numpy equivalent here
        return None


class OpenVinoBackend(Backend):
    name = "openvino"
    description = "Intel OpenVINO (CPU by default; GPU, NPU, AUTO when present)"
    install_hint = 'pip install "unirt[openvino]"'
    device_class = "cpu"
    default_rank = 40
    # Several requests in flight run on CPU streams only under the THROUGHPUT hint; each thread
    # on a session has its own infer request (OpenVinoSession), so threads are the requests.
    throughput_options = {"performance_hint": "THROUGHPUT"}
    options = OPTIONS
    device_names = {"auto": "CPU", "cpu": "CPU", "gpu": "GPU"}
    device_hint = "OpenVINO's GPU device is an Intel GPU, not an NVIDIA one"

    def __init__(self) -> None:
        super().__init__()
        self._core: Any = None
        self._core_lock = threading.Lock()

    # -- engine access ------------------------------------------------------------------------
    def core(self) -> Any:
        """One ``openvino.Core`` per backend: creating one loads the device plugins (slow)."""
        with self._core_lock:
            if self._core is None:
                import openvino as ov

                self._core = ov.Core()
            return self._core

    def _available_impl(self) -> Availability:
        import importlib.util

        if importlib.util.find_spec("openvino") is None:
            return Availability(False, reason="the openvino package is not installed")
        import openvino as ov

        version = getattr(ov, "__version__", None) or ov.get_version()
        devices = tuple(self.core().available_devices)
        if not devices:
            return Availability(False, version, reason="OpenVINO finds no device to run on")
        return Availability(True, version.split("-")[0], devices=devices)

    # -- static rules -------------------------------------------------------------------------
    def _refusals_impl(self, model: ModelInfo) -> list[Any]:
        """Graph inputs/outputs that are sequences, optionals or maps: OpenVINO cannot be fed
        or return them. Measured on 2026.4: ``read_model`` itself fails on a model taking a
        sequence ("No conversion rule found for operations: util::SequenceAt"), returning one
        (``util::SequenceMark``) or taking an optional (``OptionalGetElement-18``). Only inputs
        and outputs that are not tensors pay for the (memoised) type facts that tell which."""
        from unirt.capability import Reason

        reasons = []
        for what, info in model.io():
            if info.dtype is not None or info.shape is not None:
                continue  # a tensor (an exotic element type is the table's business)
            fact = model.value_types.get(info.name)
            if fact is not None and fact.kind == "tensor":
                continue  # a tensor of undefined element type and rank, not a container
            kind = fact.kind if fact is not None and fact.kind != "?" else \
                "sequence, optional or map"
            article = "an" if kind[0] in "aeiou" else "a"
            reasons.append(Reason(
                f"{what} {info.name!r} is {article} {kind}: OpenVINO cannot be fed sequences "
                "or optionals (nor return them): it takes and gives tensors only", "input"))
        return reasons

    # -- options ------------------------------------------------------------------------------
    def device(self, options: OpenOptions) -> str:
        """The OpenVINO device for ``options``; a clear error when it is not on this machine.

        ``options={"openvino": {"device": ...}}`` wins; otherwise ``device="auto"`` and ``"cpu"``
        mean ``CPU`` and ``"gpu"`` means OpenVINO's ``GPU`` (an Intel GPU). ``"cuda"`` is refused:
        OpenVINO does not run on NVIDIA GPUs.
        """
        available = list(self.core().available_devices)
        requested = options.extra.get("device")
        if requested is None:
            requested = self.device_name(options)
        if not isinstance(requested, str) or not requested.strip():
            raise UnirtError(f"{self.name} option device must be a device name such as CPU or "
                             f"GPU, not {requested!r}")
        device = requested.strip().upper()
        head, _, listed = device.partition(":")
        wanted = [d for d in listed.split(",") if d] if head in VIRTUAL_DEVICES else [device]
        for name in wanted:
            if not any(a == name or a.split(".")[0] == name for a in available):
                raise BackendUnavailableError(
                    f"{self.name}: device {name} is not available on this machine "
                    f"(OpenVINO sees: {', '.join(available) or 'none'})")
        return device

    def _config(self, options: OpenOptions) -> dict[str, Any]:
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
    def _cache_dir(self, model: ModelInfo, options: OpenOptions,
                   config: Mapping[str, Any]) -> Iterator[str | None]:
        """OpenVINO's ``CACHE_DIR`` for one compile: unirt's engine-managed directory for this
        model's content, checked file by file against the manifest unirt signed after the last
        compile and vouched for again after this one (:meth:`unirt.cache.ArtifactCache.managed`).
        OpenVINO itself loads a blob with flipped bytes without a word (outputs off by 1e36,
        measured on 2026.4), so no blob reaches it unchecked. None: compile without a cache
        (turned off, a ``CACHE_DIR`` of the user's own in ``config``, or no usable cache)."""
        if not options.extra.get("cache", True) or "CACHE_DIR" in config:
            yield config.get("CACHE_DIR")
            return
        from unirt.cache import ArtifactCache, model_digest

        with ArtifactCache().managed(self.name, model_digest(model)[:32], "openvino") as d:
            yield None if d is None else str(d)

    # -- opening ------------------------------------------------------------------------------
    def _open_impl(self, model: ModelInfo, options: OpenOptions) -> BackendSession:
        core = self.core()
        device = self.device(options)
        base = self._config(options)
        config = dict(base)
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
            with self._cache_dir(model, options, base) as cache_dir:
                config.pop("CACHE_DIR", None)
                if cache_dir is not None:
                    config["CACHE_DIR"] = cache_dir
                if isinstance(source, str):
                    return core.compile_model(source, device, config)
                return core.compile_model(core.read_model(source), device, config)

        start = time.perf_counter()
        try:
            compiled = compile_model()
        except RuntimeError as exc:
            raise BackendError(f"{self.name} could not open {model.name} on {device}: "
                               f"{_engine_message(exc)}") from exc
        sess = OpenVinoSession(compiled, model, model.name, reopen=compile_model)
        sess.precision = self._read_precision(compiled, options)
        sess.details.update(self._describe(compiled, device, config))
        sess.details["convert_s"] = round(time.perf_counter() - start, 4)  # read and compile
        logger.debug("openvino compiled %s on %s (%s)", model.name, device, sess.precision)
        return sess

    @staticmethod
    def _read_precision(compiled: Any, options: OpenOptions) -> str:
        try:
            kind = compiled.get_property("INFERENCE_PRECISION_HINT")
            name = kind.get_type_name() if hasattr(kind, "get_type_name") else str(kind)
        except Exception:  # AUTO/MULTI may not expose it: say what was asked, as far as known
            return "fp32" if options.precision == "exact" else "unknown"
        return PRECISION_NAMES.get(name, name)

    @staticmethod
    def _describe(compiled: Any, device: str, config: Mapping[str, Any]) -> dict[str, Any]:
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

    # -- asking the engine --------------------------------------------------------------------
    def _query_impl(self, model: ModelInfo, options: OpenOptions) -> set[str] | None:
        """ONNX node names OpenVINO cannot run on the device (empty: it can run them all).

        The model is converted with the ONNX frontend's ``convert_partially``, which keeps nodes
        it has no conversion rule for as ``ONNXFrameworkNode`` placeholders instead of failing.
        If there are any, those nodes are the answer: what follows them has unknown shapes and
        types, so the device's verdict on it says nothing. Otherwise ``Core.query_model`` names
        the OpenVINO operations the device supports, and the rest are mapped back to the ONNX
        nodes they came from (see :func:`_onnx_node_names`).
        """
        from openvino.frontend import FrontEndManager

        core = self.core()
        device = self.device(options)
        frontend = FrontEndManager().load_by_framework("onnx")
        source = model.source()
        try:
            converted = frontend.convert_partially(
                frontend.load(source if isinstance(source, str) else io.BytesIO(source)))
        except RuntimeError as exc:
            raise BackendError(f"{self.name} could not read {model.name}: "
                               f"{_engine_message(exc)}") from exc
        ops = [op for op in converted.get_ordered_ops()
               if op.get_type_name() not in ("Parameter", "Result")]
        placeholders = [op for op in ops if _is_placeholder(op.get_type_name())]
        if placeholders:
            return _onnx_node_names(placeholders, model)
        try:
            supported = core.query_model(converted, device, self._config(options))
        except RuntimeError as exc:
            raise BackendError(f"{self.name} could not query {model.name} on {device}: "
                               f"{_engine_message(exc)}") from exc
        return _onnx_node_names([op for op in ops if op.get_friendly_name() not in supported],
                                model)


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


@hookimpl
def register_backends(register: Any) -> None:
    register(OpenVinoBackend)
