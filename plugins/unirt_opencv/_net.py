"""Reading a model into a ``cv2.dnn.Net`` (the loader side of the backend, as in Polygraphy's
``backend/onnxrt/loader.py``): which DNN backends and targets this build offers, the engine
(new or classic) a read uses, the DNN backend and target a classic net is set to, the names a
net forwards, and what a loaded net says about itself. See the package docstring for why each
is done the way it is.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from unirt.plugin import BackendError, ModelInfo, OpenOptions, clean

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


def read_net(cv2: Any, data: Any, attempt: _Attempt, has_engines: bool) -> Any:
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


def describe(cv2: Any, attempt: _Attempt, caps: Mapping[str, tuple[str, ...]],
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

