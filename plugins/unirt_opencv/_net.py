"""Reading a model into a ``cv2.dnn.Net``: which DNN backends and targets this build offers, the
engine (new or classic) a read uses, the DNN backend and target a classic net is set to, the
names a net forwards, and what a loaded net says about itself.

Names are checked at open (:func:`output_names`) because the two engines report outputs
differently: a name the net does not know would otherwise fail at the first run, or forward the
wrong blob.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from unirt.plugin import BackendError, ModelInfo, OpenOptions

logger = logging.getLogger("unirt")

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


def capabilities(cv2: Any) -> dict[str, tuple[str, ...]]:
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


def has_cuda_device(cv2: Any) -> bool:
    try:
        return bool(cv2.cuda.getCudaEnabledDeviceCount() > 0)
    except Exception:  # no cuda module in this build
        return False


@dataclass(frozen=True)
class Attempt:
    """One way to load the model: engine, DNN backend, DNN target."""

    engine: str
    backend: str
    target: str

    @property
    def precision(self) -> str:
        if self.target in FP16_TARGETS:
            return "fp16"
        return "unknown" if self.backend == "openvino" else "fp32"


def read_net(cv2: Any, data: Any, attempt: Attempt, has_engines: bool) -> Any:
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


def output_names(net: Any, model: ModelInfo, engine: str) -> list[str]:
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


def describe(cv2: Any, attempt: Attempt, caps: Mapping[str, tuple[str, ...]],
              failures: Sequence[str], options: OpenOptions) -> dict[str, Any]:
    details: dict[str, Any] = {
        "engine": attempt.engine,
        "dnn_backend": attempt.backend,
        "dnn_target": attempt.target,
        "available_dnn_targets": {b: list(ts) for b, ts in caps.items()},
        "cuda": "cuda" in caps and has_cuda_device(cv2),
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

