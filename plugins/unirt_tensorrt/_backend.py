"""The TensorRT backend: availability (TensorRT, cuda-python, a CUDA device), the refusals and
rules, the CUDA device, ``query`` (the parser's own answer, in a child), opening.

Always registered; unavailable, with the reason and an install hint, where the ``tensorrt``
module, cuda-python or a CUDA device is missing, so ``prefer="tensorrt"`` falls back with one
warning and ``backend="tensorrt"`` raises :class:`~unirt.errors.BackendUnavailableError`. Nothing
is imported at ``import unirt``.
"""

from __future__ import annotations

import importlib.util
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
    UnirtError,
)

from . import _profiles
from ._session import DEFAULT_BUILD_TIMEOUT_S, DEFAULT_MAX_ENGINES, TensorRtSession

NAME = "tensorrt"
INSTALL_HINT = ('pip install "unirt[tensorrt]" (TensorRT 10 or 11 and cuda-python; needs an '
                "NVIDIA GPU and driver)")
DEFAULT_QUERY_TIMEOUT_S = 300.0

#: Options a user may pass as ``load(options={"tensorrt": {...}})``.
OPTIONS: dict[str, OptionSpec] = {
    "profiles": OptionSpec("list of optimization profiles, each {input: {min, opt, max}} (or "
                           "[min, opt, max]); feeds outside all of them go to another backend"),
    "workspace": OptionSpec.number(
        "builder workspace limit in bytes (default: TensorRT's, the GPU's memory)"),
    "build_timeout": OptionSpec.number(
        f"seconds an engine build may take (default {DEFAULT_BUILD_TIMEOUT_S:.0f})"),
    "optimization_level": OptionSpec.number(
        "builder optimization level 0-5 (default: TensorRT's, 3)"),
    "max_engines": OptionSpec.number(
        f"engines built for new shapes per session (default {DEFAULT_MAX_ENGINES})"),
    "device": OptionSpec("CUDA device index or cuda:N (default 0)"),
    "cache_dir": OptionSpec(
        "artifact cache directory (default: $UNIRT_CACHE_DIR or the user cache)"),
}

#: Ops whose output shape depends on the data: this backend has no output allocator.
DATA_DEPENDENT_OPS = frozenset({"NonZero", "NonMaxSuppression", "Unique", "Compress"})


def _major(version: str) -> int:
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        return 0


def _spec_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a parent package that is missing
        return False


class TensorRtBackend(Backend):
    name = NAME
    description = "NVIDIA TensorRT on a CUDA GPU (engines built in a child, cached)"
    install_hint = INSTALL_HINT
    device_class = "gpu"
    default_rank = 10  # before onnxruntime-cuda: TensorRT is the faster engine on NVIDIA GPUs
    options = OPTIONS
    device_names = {"auto": "cuda:0", "gpu": "cuda:0", "cuda": "cuda:0"}
    device_hint = "it runs on a CUDA GPU"

    def _available_impl(self) -> Availability:
        if not _spec_exists("tensorrt"):
            return Availability(False, reason="the tensorrt package is not installed")
        if not _spec_exists("cuda.bindings"):
            return Availability(False, reason="cuda-python (cuda.bindings) is not installed")
        import tensorrt as trt

        from . import _build

        version = str(getattr(trt, "__version__", "") or "unknown")
        if _major(version) not in _build.SUPPORTED_MAJORS:
            return Availability(False, version, reason=(
                f"TensorRT {version} is not supported (unirt supports "
                f"{' and '.join(f'{m}.x' for m in _build.SUPPORTED_MAJORS)})"))
        from . import _cuda

        count, why = _cuda.device_count()
        if not count:
            return Availability(False, version, reason=why or "CUDA finds no device")
        return Availability(True, version, devices=tuple(f"cuda:{i}" for i in range(count)))

    # -- static rules -------------------------------------------------------------------------
    def _refusals_impl(self, model: ModelInfo) -> list[Any]:
        """Inputs/outputs that are not numeric tensors: TensorRT takes and gives tensors of
        numbers only."""
        from unirt.plugin import Reason

        reasons = []
        for what, info in model.io():
            if info.dtype is None:
                reasons.append(Reason(f"{what} {info.name!r} is not a tensor: TensorRT "
                                      "takes and gives tensors only", what))
            elif info.dtype.kind in "OSU":
                reasons.append(Reason(f"{what} {info.name!r} is a {info.dtype} tensor: "
                                      "TensorRT has no string type", what))
        return reasons

    def _rules_impl(self, model: ModelInfo) -> list[Any]:
        """Ops with data-dependent output shapes (UNKNOWN: refused at run time when such a
        shape reaches an output, fine when it stays inside)."""
        from unirt.plugin import UNKNOWN, Reason

        reasons = []
        for n in model.nodes:
            if n.op_type in DATA_DEPENDENT_OPS and n.domain in ("", "ai.onnx"):
                reasons.append(Reason(
                    f"{n.op_type} has a data-dependent output shape; unirt's TensorRT backend "
                    "has no output allocator, so a model output of such a shape is refused",
                    "rule", n.name or n.op_type, n.op_type, verdict=UNKNOWN))
        return reasons

    # -- options ------------------------------------------------------------------------------
    def device_index(self, options: OpenOptions) -> int:
        """The CUDA device to build and run on."""
        self.device_name(options)  # refuses the CPU
        raw = options.extra.get("device", 0)
        text = str(raw).strip().lower()
        if text.startswith("cuda:"):
            text = text[5:]
        if isinstance(raw, bool) or not text.isdigit():
            raise UnirtError(f"{NAME} option device must be a CUDA device index or cuda:N, "
                             f"not {raw!r}")
        index = int(text)
        count = len(self.available().devices)
        if index >= count:
            raise BackendUnavailableError(f"{NAME}: CUDA device {index} is not available "
                                          f"({count} device(s) here)")
        return index

    # -- asking the engine --------------------------------------------------------------------
    def _query_impl(self, model: ModelInfo, options: OpenOptions) -> set[str] | None:
        """Node names TensorRT's parser cannot take (``supports_model_v2``), asked in a child."""
        from unirt.plugin import run_isolated

        from . import _build

        with _build.onnx_file(model) as path:
            outcome = run_isolated(_build.query_support, path, timeout=DEFAULT_QUERY_TIMEOUT_S)
        if not outcome.ok:
            raise BackendError(f"{NAME} could not query {model.name}: {outcome.describe()}")
        answer = outcome.value
        if answer["supported"]:
            return set()
        main = [n for n in model.nodes if n.graph == ""]
        supported = set(answer["supported_nodes"])
        names = {_build.node_label(main, i) for i in range(len(main)) if i not in supported}
        if not names:  # refused, yet every node is in a supported subgraph: say what it said
            names = {e["node_name"] or _build.node_label(main, e["node"])
                     for e in answer["errors"] if e["node"] >= 0 or e["node_name"]}
        return names

    # -- opening ------------------------------------------------------------------------------
    def _open_impl(self, model: ModelInfo, options: OpenOptions) -> BackendSession:
        from . import _build

        explicit = None
        if options.extra.get("profiles") is not None:
            explicit = _profiles.parse_profiles(model, options.extra["profiles"])
        device = self.device_index(options)
        import tensorrt as trt

        from . import _cuda

        if device:
            _cuda.check(_cuda.runtime().cudaSetDevice(device), "cudaSetDevice")
        gpu = _cuda.gpu(device)
        version = str(trt.__version__)
        plan = _build.plan_precision(_major(version), options.precision,
                                     (gpu.major, gpu.minor), _spec_exists("onnxconverter_common"))
        sess = TensorRtSession(model, options, trt, version, gpu, plan, explicit)
        try:
            if explicit is not None:
                sess.prepare(explicit)
            elif not _profiles.dynamic_inputs(model):
                sess.prepare([])
            elif all(n in options.input_shapes for n in _profiles.dynamic_inputs(model)):
                sess.prepare([_profiles.from_seen(model, options.input_shapes)])
        except BaseException:
            sess.close()
            raise
        return sess
