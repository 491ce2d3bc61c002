"""OpenCV DNN backend: ``opencv`` (``cv2.dnn``; CPU, or CUDA/OpenVINO where the build has them).

A plugin like any third-party one: it registers through the ``register_backends`` hook and
imports ``cv2`` only when availability is asked or a model is opened.

Which OpenCV engine. OpenCV 5 has two DNN engines behind one ``Net`` API: the new one (a typed
graph with shape inference; CPU only) and the classic 4.x one (which alone has the CUDA, OpenVINO
and fp16 targets). ``readNetFromONNX(path, ENGINE_AUTO)`` tries the new one and silently falls
back to the classic one, after which nothing says which engine runs the model. Measured here on
the test-kit models, the new engine runs models the classic one refuses or fails on (a multi-axis
Unsqueeze, a Gather of int64 ids times a scalar, an empty output, a constant output), while the
classic one is faster on small CNNs (``resnet_like``: about 0.56 ms vs 1.1 ms per call here) and
slower on ResNet-50 (77 ms vs 52 ms). unirt's job is right answers first, so ``engine="auto"``
(the default) does the fallback itself: the new engine, then the classic one when the new one
cannot read the model, recording which one was used and why in ``details``. ``engine="new"`` or
``"classic"`` pins one; a non-CPU or fp16 target needs the classic engine and selects it.
``ENGINE_ORT`` (OpenCV wrapping ONNX Runtime) is not offered: the PyPI builds are made without it,
and unirt runs ONNX Runtime itself.

What this backend guards against, each found by running OpenCV 5.0 (see ENGINE_NOTES):

* Outputs that are not what the model declares: ``None`` for an empty tensor, float32 for a
  float16 output, int32 for int64 (classic engine), raw uint16 for bf16. Outputs are forwarded by
  their ONNX names, checked against the names the net reports at open, and conformed to the
  declared shape and dtype (:mod:`unirt.conform`), or refused with a clear error.
* Inputs its numpy binding cannot take (strings, sequences, bf16, float8, int4, complex) are
  refused at open. int64/uint64 inputs are narrowed to 32 bits when fed (values outside the
  int32 range come back wrapped, without an error), so each run checks their range.
* Crashes: the new engine dies with SIGFPE on a zero-size input (a batch of 0), so empty feeds
  are refused before they reach it. A model that crashes OpenCV on load or forward cannot be
  caught here; the core's child-process verification is what covers that.
* Thread safety: a ``Net`` must not run in two threads at once; each session has a lock.
* Error text: ``cv2.error`` messages are pages of ``OpenCV(5.0.0) /io/...cpp:NNN: error:`` noise;
  :func:`engine_message` keeps the part a user can act on.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from unirt.backend import Availability, Backend, BackendSession, OpenOptions, OptionSpec
from unirt.errors import BackendError, BackendUnavailableError, UnirtError, clean
from unirt.hookspecs import hookimpl
from unirt.model import ModelInfo
from unirt.native import captured
from unirt.tensor import TensorInfo

logger = logging.getLogger("unirt")

ENGINES = ("auto", "new", "classic")
#: unirt's names for OpenCV's DNN backends and targets -> the ``cv2.dnn`` constants.
DNN_BACKENDS: dict[str, str] = {
    "opencv": "DNN_BACKEND_OPENCV",
    "cuda": "DNN_BACKEND_CUDA",
    "openvino": "DNN_BACKEND_INFERENCE_ENGINE",
}
DNN_TARGETS: dict[str, str] = {
    "cpu": "DNN_TARGET_CPU",
    "cpu_fp16": "DNN_TARGET_CPU_FP16",
    "opencl": "DNN_TARGET_OPENCL",
    "opencl_fp16": "DNN_TARGET_OPENCL_FP16",
    "cuda": "DNN_TARGET_CUDA",
    "cuda_fp16": "DNN_TARGET_CUDA_FP16",
}
FP16_TARGETS = frozenset({"cpu_fp16", "opencl_fp16", "cuda_fp16"})
#: Options a user may pass as ``load(options={"opencv": {...}})``, with what they accept.
OPTIONS: dict[str, OptionSpec] = {
    "engine": OptionSpec.choice(
        "auto (default: the new engine, else the classic one), new, classic", ENGINES),
    "backend": OptionSpec.choice(
        "OpenCV DNN backend: opencv (default), cuda, openvino", tuple(DNN_BACKENDS)),
    "target": OptionSpec.choice(
        "OpenCV DNN target: cpu (default), cpu_fp16, opencl, opencl_fp16, cuda, cuda_fp16",
        tuple(DNN_TARGETS)),
}
#: Where each DNN backend runs when no target is given: (exact, fast).
DEFAULT_TARGETS: dict[str, tuple[str, str]] = {
    "opencv": ("cpu", "cpu_fp16"),
    "cuda": ("cuda", "cuda_fp16"),
    "openvino": ("cpu", "cpu"),
}

#: Input dtypes OpenCV's numpy binding takes and computes with as they are.
_FEEDABLE = frozenset({"float32", "float16", "float64", "int8", "uint8", "int16", "uint16",
                       "int32", "uint32", "int64", "uint64", "bool"})
#: Inputs fed through 32 bits: OpenCV wraps values outside the int32 range without an error.
_NARROWED = frozenset({"int64", "uint64"})
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1

_LOCATION = re.compile(r"OpenCV\([^)]*\)\s+\S+:\d+:\s*error:\s*\(\s*-?\d+:([^)]*)\)\s*")
_IN_FUNCTION = re.compile(r"\s*in function '[^']*'\s*$")


def engine_message(exc: BaseException) -> str:
    """The part of a ``cv2.error`` a user can act on, on one line.

    OpenCV writes ``OpenCV(5.0.0) /io/opencv/modules/dnn/src/...cpp:1114: error: (-2:Unspecified
    error) in function 'handleNode'`` and nests the real cause (``> Node [Unsqueeze@ai.onnx]:...
    parse error: ... Multidimensional unsqueeze``) in later lines, so the core's ``first_line``
    would show only the file and line. Source locations and ``in function`` suffixes are dropped;
    the error class is kept where it says something (``Assertion failed: inp.total()``).
    """
    parts: list[str] = []
    for raw in str(exc).splitlines():
        line = raw.strip().lstrip(">").strip()

        def _kind(m: re.Match[str]) -> str:
            kind = m.group(1).strip()
            return "" if kind in ("", "Unspecified error") else f"{kind}: "

        line = _LOCATION.sub(_kind, line)
        line = _IN_FUNCTION.sub("", line).strip().rstrip(":").strip()
        if line and line not in parts:
            parts.append(line)
    if not parts:
        return type(exc).__name__
    return clean("; ".join(parts[:2]))


def _capabilities(cv2: Any) -> dict[str, tuple[str, ...]]:
    """unirt DNN backend name -> the targets this OpenCV build (and machine) offers for it."""
    by_value = {getattr(cv2.dnn, const): name for name, const in DNN_TARGETS.items()
                if hasattr(cv2.dnn, const)}
    caps: dict[str, tuple[str, ...]] = {}
    for name, const in DNN_BACKENDS.items():
        if not hasattr(cv2.dnn, const):
            continue
        try:
            targets = cv2.dnn.getAvailableTargets(getattr(cv2.dnn, const))
        except Exception:  # a backend whose probe fails is not available
            logger.debug("opencv: getAvailableTargets(%s) failed", const, exc_info=True)
            continue
        names = tuple(by_value.get(int(t), f"target{int(t)}") for t in targets)
        if names:
            caps[name] = names
    return caps


def _has_cuda_device(cv2: Any) -> bool:
    try:
        return bool(cv2.cuda.getCudaEnabledDeviceCount() > 0)
    except Exception:  # no cuda module in this build
        return False


def _refusal(info: TensorInfo, what: str) -> str | None:
    """Why OpenCV cannot take input (or give output) ``info``, or ``None`` when it can."""
    dtype = info.dtype
    if dtype is None:
        return f"{what} {info.name!r} is not a tensor (a sequence, map or optional)"
    if getattr(dtype, "kind", "") in ("O", "S", "U"):  # ONNX strings read as object arrays
        return f"{what} {info.name!r} is a string tensor: OpenCV DNN has no string tensors"
    name = dtype.name
    if what == "input" and name not in _FEEDABLE:
        return (f"input {info.name!r} is {name}, which OpenCV's numpy binding cannot take "
                f"(it takes {', '.join(sorted(_FEEDABLE))})")
    if what == "output" and name not in _FEEDABLE and name != "bfloat16":
        return f"output {info.name!r} is {name}, which OpenCV DNN cannot return"
    return None


@dataclass(frozen=True)
class _Attempt:
    """One way to load the model: engine, DNN backend, DNN target."""

    engine: str
    backend: str
    target: str

    @property
    def precision(self) -> str:
        if self.target in FP16_TARGETS:
            return "fp16"
        return "unknown" if self.backend == "openvino" else "fp32"


class OpenCvSession(BackendSession):
    """A loaded ``cv2.dnn.Net`` behind a lock (a ``Net`` runs one forward at a time)."""

    def __init__(self, net: Any, model: ModelInfo, forward_names: Sequence[str],
                 cv_error: type[BaseException], reload: Any = None) -> None:
        from unirt.conform import conform  # imports numpy: not at plugin load

        super().__init__()
        self._conform = conform
        self._net = net
        # The classic engine keeps the shapes of its first forward: fed another input shape it
        # returns wrong numbers without an error (measured: off by ~1.7 on resnet_like at batch
        # 2 after batch 1, and still off back at batch 1). So with the classic engine and a
        # dynamic model, each input-shape signature gets a Net of its own, read by ``reload``.
        self._reload = reload
        self._nets: dict[tuple[Any, ...], Any] = {}
        self._lock = threading.Lock()
        self._label = model.name
        self._cv_error = cv_error
        self._forward_names = list(forward_names)  # the net's names, in model output order
        self._outputs = model.outputs
        self._index = {t.name: i for i, t in enumerate(model.outputs)}
        # The shape an output must have to be returned untouched (fully static ones only).
        self._static = [t.shape if t.shape is not None and not t.is_dynamic else None
                        for t in model.outputs]
        self._narrowed = tuple(t.name for t in model.inputs
                               if t.dtype is not None and t.dtype.name in _NARROWED)
        # Where the feeds say what a symbolic dim is, for dynamic or empty outputs.
        self._symbols = tuple((t.name, axis, d) for t in model.inputs for axis, d in
                              enumerate(t.shape or ()) if isinstance(d, str))

    def _check_feeds(self, feeds: Mapping[str, Any]) -> None:
        for name, value in feeds.items():
            if getattr(value, "size", 1) == 0:
                raise BackendError(
                    f"opencv cannot run {self._label} on the empty input {name!r} (shape "
                    f"{list(value.shape)}): OpenCV DNN fails or crashes on zero-size tensors")
        for name in self._narrowed:
            value = feeds[name]
            lo, hi = value.min(), value.max()
            if lo < _INT32_MIN or hi > _INT32_MAX:
                raise BackendError(
                    f"opencv cannot run {self._label}: input {name!r} has {value.dtype} values "
                    f"outside the int32 range ({lo}..{hi}), which OpenCV DNN would wrap "
                    f"silently (it feeds 64-bit integers through 32 bits)")

    def _bind(self, feeds: Mapping[str, Any]) -> dict[str, int]:
        dims: dict[str, int] = {}
        for name, axis, symbol in self._symbols:
            shape = getattr(feeds.get(name), "shape", ())
            if axis < len(shape):
                dims.setdefault(symbol, int(shape[axis]))
        return dims

    def _net_for(self, feeds: Mapping[str, Any]) -> Any:
        """The Net for this input-shape signature (classic engine, dynamic model): the first
        signature uses the Net that was opened, each new one reads the model again."""
        sig = tuple((name, getattr(value, "shape", None)) for name, value in sorted(
            feeds.items()))
        if not self._nets:
            self._nets[sig] = self._net
        net = self._nets.get(sig)
        if net is None:
            try:
                net = self._nets[sig] = self._reload()
            except self._cv_error as exc:
                raise BackendError(f"opencv could not reload {self._label} for a new input "
                                   f"shape: {engine_message(exc)}") from exc
            self.details["nets_per_shape"] = len(self._nets)
        return net

    def run(self, feeds: dict[str, Any], output_names: Sequence[str]) -> Sequence[Any]:
        self._check_feeds(feeds)
        with self._lock:
            net = self._net
            if net is None:
                raise BackendError(f"opencv: the session for {self._label} is closed")
            if self._reload is not None:
                net = self._net_for(feeds)
            try:
                for name, value in feeds.items():
                    net.setInput(value, name)
                results = net.forward(self._forward_names)
            except self._cv_error as exc:
                raise BackendError(f"opencv failed running {self._label}: "
                                   f"{engine_message(exc)}") from exc
        if len(results) != len(self._forward_names):
            raise BackendError(f"opencv returned {len(results)} outputs for {self._label}, "
                               f"which declares {len(self._forward_names)}")
        dims: dict[str, int] | None = None
        out = []
        for name in output_names:
            i = self._index[name]
            value, info = results[i], self._outputs[i]
            if (value is not None and value.dtype == info.dtype
                    and value.shape == self._static[i]):
                out.append(value)
                continue
            if dims is None:
                dims = self._bind(feeds)
            out.append(self._conform(value, info, dims,
                                     f"opencv: {self._label} output {name!r}"))
        return out

    def close(self) -> None:
        with self._lock:
            self._net = None
            self._nets.clear()


class OpenCvBackend(Backend):
    name = "opencv"
    description = "OpenCV DNN (cv2.dnn): CPU; CUDA or OpenVINO where the build has them"
    install_hint = 'pip install "unirt[opencv]"'
    device_class = "cpu"
    default_rank = 60
    options = OPTIONS
    #: The DNN backend each device means where no ``backend`` option is given.
    device_names = {"auto": "opencv", "cpu": "opencv", "gpu": "cuda", "cuda": "cuda"}

    def _available_impl(self) -> Availability:
        import importlib.util

        if importlib.util.find_spec("cv2") is None:
            return Availability(False, reason="the cv2 module (opencv-python-headless) is "
                                              "not installed")
        import cv2

        version = getattr(cv2, "__version__", None)
        if not hasattr(cv2, "dnn") or not hasattr(cv2.dnn, "readNetFromONNX"):
            return Availability(False, version, reason=f"this OpenCV build ({version}) has no "
                                                       "dnn module with an ONNX reader")
        caps = _capabilities(cv2)
        devices = ["cpu"]
        if "cuda" in caps and _has_cuda_device(cv2):
            devices.append("cuda")
        if any(t.startswith("opencl") for t in caps.get("opencv", ())):
            devices.append("opencl")
        return Availability(True, version, devices=tuple(devices))

    def _refusals_impl(self, model: ModelInfo) -> list[Any]:
        """Inputs and outputs OpenCV cannot take or give: a sequence, optional or map (kind
        ``input``), a string or unfeedable dtype (kind ``dtype``).

        Rules deliberately absent, because measuring did not bear them out (OpenCV 5.0.0, both
        engines, ``readNetFromONNX`` + ``forward`` in a child process, compared with ONNX
        Runtime):

        * 3D MaxPool/AveragePool with a unit kernel axis (PyTorch ``MaxPool3d((1,2,2))``, said
          to fail in ``pooling_layer getMemoryShapes``): kernels (1,2,2), (2,1,2), (2,2,1) and
          (1,1,1), with and without explicit pads/dilations/ceil_mode, at opsets 9-17, on a bare
          pool and after a Conv3d, on static and symbolic dims, all ran and matched. Refusing
          them would be a guess; the op-support table judges 3D pooling on its measured cases.
        * Dynamic input dims: the default engine (new) gave right answers on every shape change
          tried (dynamic batch Gemm, a conv net at batch 1/2/1, Resize at two sizes). The
          classic engine did not: on ``resnet_like(batch="N")`` a ``Net`` that first ran batch 1
          returned numbers off by ~1.7 at batch 2 and then at batch 1 again, without an error.
          A static rule cannot tell which engine a load will use (only ``engine="classic"``, a
          non-CPU target or a model the new engine cannot read select it), so that is not a
          model rule. A zero-size feed, which crashes the new engine, is refused at run time.
        """
        from unirt.capability import Reason

        return [Reason(why, kind="input" if info.dtype is None else "dtype")
                for what, info in model.io() if (why := _refusal(info, what))]

    # -- options ------------------------------------------------------------------------------
    @staticmethod
    def _choice(extra: Mapping[str, Any], key: str) -> str | None:
        """The value of a choice option as :data:`OPTIONS` names it (validated by ``open``)."""
        value = extra.get(key)
        return None if value is None else str(value).strip().lower()

    def _plan(self, options: OpenOptions, caps: Mapping[str, tuple[str, ...]],
              has_engines: bool) -> list[_Attempt]:
        """The (engine, DNN backend, target) combinations to try, in order."""
        extra = options.extra
        engine = self._choice(extra, "engine") or "auto"
        backend = self._choice(extra, "backend")
        target = self._choice(extra, "target")
        exact = options.precision == "exact"
        if not has_engines and engine == "new":
            raise UnirtError("opencv option engine='new' needs OpenCV 5; this build has only "
                             "the classic engine")
        if backend is None:
            backend = "cuda" if (target or "").startswith("cuda") else self.device_name(options)
        if exact and backend == "openvino":
            raise UnirtError(
                "opencv backend='openvino' lets OpenVINO pick its precision (bf16 on CPUs with "
                "AMX/AVX-512-BF16), which precision='exact' cannot pin through OpenCV: use "
                "precision='fast', or unirt's own openvino backend")
        if target is not None and exact and target in FP16_TARGETS:
            raise UnirtError(f"opencv target {target!r} computes in fp16, but "
                             "precision='exact' needs fp32: pass precision='fast' or a "
                             "non-fp16 target")

        def available(b: str, t: str) -> bool:
            return t in caps.get(b, ())

        def usable(b: str, t: str) -> list[str]:
            # The new engine runs on OpenCV's own CPU path only.
            if (b, t) != ("opencv", "cpu"):
                if engine == "new":
                    raise UnirtError(f"opencv backend {b!r} / target {t!r} needs the classic "
                                     "engine (the new one runs on the CPU only): pass "
                                     "engine='classic' or 'auto'")
                return ["classic"]
            if engine == "auto" and has_engines:
                return ["new", "classic"]
            return ["classic" if not has_engines else engine]

        attempts: list[_Attempt] = []
        if target is None:
            exact_target, fast_target = DEFAULT_TARGETS[backend]
            if (not exact and engine != "new" and fast_target != exact_target
                    and available(backend, fast_target)):
                attempts += [_Attempt(e, backend, fast_target)
                             for e in usable(backend, fast_target)]
            target = exact_target
        engines = usable(backend, target)
        if not available(backend, target):
            have = "; ".join(f"{b}: {', '.join(ts)}" for b, ts in caps.items()) or "none"
            raise BackendUnavailableError(
                f"{self.name}: DNN backend {backend!r} with target {target!r} is not available "
                f"in this OpenCV build on this machine (available: {have})")
        attempts += [_Attempt(e, backend, target) for e in engines]
        return attempts

    # -- opening ------------------------------------------------------------------------------
    def _open_impl(self, model: ModelInfo, options: OpenOptions) -> BackendSession:
        import cv2
        import numpy as np

        caps = _capabilities(cv2)
        has_engines = hasattr(cv2.dnn, "ENGINE_NEW")
        attempts = self._plan(options, caps, has_engines)
        if options.threads is not None:
            # cv::setNumThreads is process-wide: it applies to every OpenCV session.
            cv2.setNumThreads(int(options.threads))
            logger.info("opencv: set OpenCV's process-wide thread count to %d", options.threads)

        source = model.source()
        data = source if isinstance(source, str) else np.frombuffer(source, np.uint8)
        failures: list[str] = []
        for attempt in attempts:
            try:
                with captured(self.name):  # OpenCV's [ WARN:...] lines: the debug log
                    net = self._read(cv2, data, attempt, has_engines)
                forward_names = self._output_names(net, model, attempt.engine)
            except (cv2.error, BackendError) as exc:
                message = engine_message(exc) if isinstance(exc, cv2.error) else str(exc)
                failures.append(f"{attempt.engine} engine: {message}")
                logger.debug("opencv: %s engine could not load %s: %s", attempt.engine,
                             model.name, message)
                continue
            reload = None
            if attempt.engine == "classic" and model.has_dynamic_inputs:
                def reload(cv2: Any = cv2, data: Any = data, attempt: _Attempt = attempt,
                           has_engines: bool = has_engines) -> Any:
                    return self._read(cv2, data, attempt, has_engines)
            sess = OpenCvSession(net, model, forward_names, cv2.error, reload)
            sess.precision = attempt.precision
            sess.details.update(self._describe(cv2, attempt, caps, failures, options))
            logger.debug("opencv: loaded %s with the %s engine (%s/%s)", model.name,
                         attempt.engine, attempt.backend, attempt.target)
            return sess
        raise BackendError(f"{self.name} could not open {model.name}: " + "; ".join(failures))

    @staticmethod
    def _read(cv2: Any, data: Any, attempt: _Attempt, has_engines: bool) -> Any:
        if has_engines:
            flag = cv2.dnn.ENGINE_NEW if attempt.engine == "new" else cv2.dnn.ENGINE_CLASSIC
            net = cv2.dnn.readNetFromONNX(data, flag)
        else:
            net = cv2.dnn.readNetFromONNX(data)
        if net.empty():
            raise BackendError("OpenCV read an empty network")
        if attempt.engine == "classic":  # the new engine ignores (and warns about) these
            net.setPreferableBackend(getattr(cv2.dnn, DNN_BACKENDS[attempt.backend]))
            net.setPreferableTarget(getattr(cv2.dnn, DNN_TARGETS[attempt.target]))
        return net

    @staticmethod
    def _output_names(net: Any, model: ModelInfo, engine: str) -> list[str]:
        """The names to forward, one per model output in model order.

        The new engine reports the graph outputs by their ONNX names, in graph order; should a
        name differ, the position still matches. The classic engine reports only outputs no
        other layer consumes, in its own order, but knows every forwardable blob as a layer:
        a name it does not know (a constant or pass-through output) cannot be returned.
        """
        wanted = [t.name for t in model.outputs]
        reported = list(net.getUnconnectedOutLayersNames())
        if all(name in reported for name in wanted):
            return wanted
        if engine == "new":
            if len(reported) == len(wanted):
                logger.debug("opencv: %s output names %s map by position to %s", model.name,
                             reported, wanted)
                return reported
            raise BackendError(f"the net reports outputs {reported}, the model declares "
                               f"{wanted}")
        missing = [n for n in wanted if n not in reported and net.getLayerId(n) < 0]
        if missing:
            raise BackendError(
                f"the classic engine has no blob for output{'s' if len(missing) > 1 else ''} "
                f"{', '.join(map(repr, missing))} (constant or pass-through outputs)")
        return wanted

    @staticmethod
    def _describe(cv2: Any, attempt: _Attempt, caps: Mapping[str, tuple[str, ...]],
                  failures: Sequence[str], options: OpenOptions) -> dict[str, Any]:
        details: dict[str, Any] = {
            "engine": attempt.engine,
            "dnn_backend": attempt.backend,
            "dnn_target": attempt.target,
            "available_dnn_targets": {b: list(ts) for b, ts in caps.items()},
            "cuda": "cuda" in caps and _has_cuda_device(cv2),
            "threads": cv2.getNumThreads(),
            "opencv_version": cv2.__version__,
        }
        if failures:
            details["fallback"] = "; ".join(failures)
        if options.precision == "fast" and attempt.precision == "fp32":
            details["precision_note"] = (
                "fast: no fp16 target for this DNN backend in this OpenCV build "
                "(or the engine in use has none); computing in fp32")
        return details


@hookimpl
def register_backends(register: Any) -> None:
    register(OpenCvBackend)
