"""The OpenCV DNN backend: options, the plan of engines and targets to try, the refusals of
inputs and outputs, opening.

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
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from unirt.plugin import (
    Availability,
    Backend,
    BackendError,
    BackendSession,
    BackendUnavailableError,
    ModelInfo,
    OpenOptions,
    OptionSpec,
    TensorInfo,
    UnirtError,
    captured,
)

from ._errors import engine_message
from ._net import (
    DNN_BACKENDS,
    DNN_TARGETS,
    FP16_TARGETS,
    Attempt,
    capabilities,
    describe,
    has_cuda_device,
    output_names,
    read_net,
)
from ._session import OpenCvSession

logger = logging.getLogger("unirt")

ENGINES = ("auto", "new", "classic")
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
        caps = capabilities(cv2)
        devices = ["cpu"]
        if "cuda" in caps and has_cuda_device(cv2):
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
        from unirt.plugin import Reason

        return [Reason(why, kind="input" if info.dtype is None else "dtype")
                for what, info in model.io() if (why := _refusal(info, what))]

    # -- options ------------------------------------------------------------------------------
    @staticmethod
    def _choice(extra: Mapping[str, Any], key: str) -> str | None:
        """The value of a choice option as :data:`OPTIONS` names it (validated by ``open``)."""
        value = extra.get(key)
        return None if value is None else str(value).strip().lower()

    def _plan(self, options: OpenOptions, caps: Mapping[str, tuple[str, ...]],
              has_engines: bool) -> list[Attempt]:
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

        attempts: list[Attempt] = []
        if target is None:
            exact_target, fast_target = DEFAULT_TARGETS[backend]
            if (not exact and engine != "new" and fast_target != exact_target
                    and available(backend, fast_target)):
                attempts += [Attempt(e, backend, fast_target)
                             for e in usable(backend, fast_target)]
            target = exact_target
        engines = usable(backend, target)
        if not available(backend, target):
            have = "; ".join(f"{b}: {', '.join(ts)}" for b, ts in caps.items()) or "none"
            raise BackendUnavailableError(
                f"{self.name}: DNN backend {backend!r} with target {target!r} is not available "
                f"in this OpenCV build on this machine (available: {have})")
        attempts += [Attempt(e, backend, target) for e in engines]
        return attempts

    # -- opening ------------------------------------------------------------------------------
    def _open_impl(self, model: ModelInfo, options: OpenOptions) -> BackendSession:
        import cv2
        import numpy as np

        caps = capabilities(cv2)
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
                    net = read_net(cv2, data, attempt, has_engines)
                forward_names = output_names(net, model, attempt.engine)
            except (cv2.error, BackendError) as exc:
                message = engine_message(exc) if isinstance(exc, cv2.error) else str(exc)
                failures.append(f"{attempt.engine} engine: {message}")
                logger.debug("opencv: %s engine could not load %s: %s", attempt.engine,
                             model.name, message)
                continue
            reload = None
            if attempt.engine == "classic" and model.has_dynamic_inputs:
                def reload(cv2: Any = cv2, data: Any = data, attempt: Attempt = attempt,
                           has_engines: bool = has_engines) -> Any:
                    return read_net(cv2, data, attempt, has_engines)
            sess = OpenCvSession(net, model, forward_names, cv2.error, reload)
            sess.precision = attempt.precision
            sess.details.update(describe(cv2, attempt, caps, failures, options))
            logger.debug("opencv: loaded %s with the %s engine (%s/%s)", model.name,
                         attempt.engine, attempt.backend, attempt.target)
            return sess
        raise BackendError(f"{self.name} could not open {model.name}: " + "; ".join(failures))

