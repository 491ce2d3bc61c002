"""The ONNX Runtime backends: options, the locale rule, the engine's own answer, opening.

Each backend runs on its one execution provider and checks after creating the session that ONNX
Runtime really uses it: the CUDA provider falls back to the CPU without an error when it cannot
load, and the router's fallback (with its reason) is what a user should see, not a 10x slowdown
found weeks later. ``onnxruntime`` itself is imported only when availability is asked or a model
is queried or opened.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from unirt.plugin import (
    Availability,
    Backend,
    BackendError,
    BackendSession,
    ModelInfo,
    OpenOptions,
    OptionSpec,
    UnirtError,
)

from ._session import OrtSession

if TYPE_CHECKING:  # pragma: no cover
    from unirt.plugin import Reason

#: ``SessionOptions`` attributes a user may set through ``load(options={"onnxruntime": {...}})``.
_SESSION_OPTIONS = {
    "graph_optimization_level": OptionSpec(
        "ORT_ENABLE_ALL|ORT_ENABLE_EXTENDED|ORT_ENABLE_BASIC|ORT_DISABLE_ALL"),
    "inter_op_num_threads": OptionSpec("int"),
    "execution_mode": OptionSpec("ORT_SEQUENTIAL|ORT_PARALLEL"),
    "enable_mem_pattern": OptionSpec("bool"),
    "enable_cpu_mem_arena": OptionSpec("bool"),
    "log_severity_level": OptionSpec("int 0-4"),
}
#: Every option, the session's and those of the execution provider.
OPTIONS = {
    **_SESSION_OPTIONS,
    "provider_options": OptionSpec("dict of the execution provider's own options"),
    "providers": OptionSpec("ignored: each backend uses its one execution provider"),
}


def _locale_exists(name: str) -> bool:
    """Whether the C library can build ``name`` (without touching the process locale)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.newlocale.restype = ctypes.c_void_p
        libc.newlocale.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p]
        loc = libc.newlocale(1, name.encode(), None)  # LC_CTYPE_MASK
        if loc:
            libc.freelocale(ctypes.c_void_p(loc))
        return bool(loc)
    except Exception:  # not glibc: cannot tell, assume present
        return True


def _engine_version() -> str | None:
    from importlib import metadata

    for dist in ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    description = "ONNX Runtime, CPU execution provider (the reference)"
    is_reference = True
    install_hint = "pip install onnxruntime"
    device_class = "cpu"
    default_rank = 50
    provider = "CPUExecutionProvider"
    device_label = "cpu"
    known_domains = ("com.microsoft", "com.microsoft.nchwc", "ai.onnx.contrib")
    options = OPTIONS
    #: The device runs bind their inputs and outputs on (``_binding``), None for plain ``run``.
    #: The CPU's plain run copies nothing; tests set ``"cpu"`` here to exercise the CUDA path.
    bind_device: str | None = None

    def _rules_impl(self, model: ModelInfo) -> list[Reason]:
        # StringNormalizer builds a C++ locale (en_US.UTF-8 unless the node names one) when it
        # changes case; where the system lacks that locale the session fails to load.
        from unirt.plugin import Reason

        reasons = []
        for n in model.nodes:
            if n.op_type != "StringNormalizer" or n.domain not in ("", "ai.onnx"):
                continue
            if n.attributes.get("case_change_action", "NONE") == "NONE":
                continue
            name = str(n.attributes.get("locale") or "en_US.UTF-8")
            if not _locale_exists(name):
                reasons.append(Reason(f"needs the {name} locale, which this system lacks",
                                      "rule", n.name or "StringNormalizer", "StringNormalizer"))
        return reasons

    def _query_impl(self, model: ModelInfo, options: OpenOptions) -> set[str] | None:
        """The engine's own answer: creating a session (graph optimisations off, so it costs
        little). ONNX Runtime names a node it has no kernel for; any other refusal is raised
        with the engine's message."""
        import re

        import onnxruntime as ort

        so = ort.SessionOptions()
        so.log_severity_level = 4  # the refusal comes back as the exception
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        try:
            ort.InferenceSession(model.source(), sess_options=so, providers=[self.provider])
        except Exception as exc:
            text = str(exc)
            m = re.search(r"node with name '([^']*)'", text)
            if m and "implementation" in text:
                return {m.group(1)}
            raise
        return set()

    def _available_impl(self) -> Availability:
        import importlib.util

        if importlib.util.find_spec("onnxruntime") is None:
            return Availability(False, reason="the onnxruntime package is not installed")
        import onnxruntime as ort

        version = getattr(ort, "__version__", None) or _engine_version()
        providers = ort.get_available_providers()
        if self.provider not in providers:
            return Availability(False, version, reason=(
                f"{self.provider} is not in this onnxruntime build "
                f"(has: {', '.join(providers)})"))
        return self._device_availability(version)

    def _device_availability(self, version: str | None) -> Availability:
        return Availability(True, version, devices=(self.device_label,))

    def _session_options(self, options: OpenOptions) -> Any:
        import onnxruntime as ort

        so = ort.SessionOptions()
        # Fatal only: every error ONNX Runtime would print (in colour, to the user's stderr)
        # also comes back as an exception, which unirt raises as a BackendError naming the
        # backend and the model. The option log_severity_level turns it back on.
        so.log_severity_level = 4
        if options.threads is not None:
            so.intra_op_num_threads = options.threads
        for key, value in options.extra.items():
            if key not in _SESSION_OPTIONS:
                continue  # not a SessionOptions attribute (validate_options knows them all)
            if key == "graph_optimization_level":
                value = getattr(ort.GraphOptimizationLevel, str(value))
            elif key == "execution_mode":
                value = getattr(ort.ExecutionMode, str(value))
            setattr(so, key, value)
        return so

    def _open_impl(self, model: ModelInfo, options: OpenOptions) -> BackendSession:
        import onnxruntime as ort

        provider_options = dict(options.extra.get("provider_options", {}))
        sess = ort.InferenceSession(
            model.source(), sess_options=self._session_options(options),
            providers=[(self.provider, provider_options)],
        )
        used = sess.get_providers()
        if used[0] != self.provider:
            raise BackendError(
                f"{self.name}: onnxruntime did not use {self.provider} (it silently fell back to "
                f"{', '.join(used)}); check the CUDA/cuDNN libraries"
            )
        return OrtSession(sess, self._bind_device(provider_options))

    def _bind_device(self, provider_options: dict[str, Any]) -> str | None:
        """The device runs bind on: the provider's own ``device_id`` where one is given."""
        if self.bind_device is None or "device_id" not in provider_options:
            return self.bind_device
        device = self.bind_device.partition(":")[0]
        try:
            return f"{device}:{int(provider_options['device_id'])}"
        except (TypeError, ValueError):
            raise UnirtError(f"{self.name}: provider_options device_id must be an integer, "
                             f"not {provider_options['device_id']!r}") from None


class OnnxRuntimeCudaBackend(OnnxRuntimeBackend):
    name = "onnxruntime-cuda"
    description = "ONNX Runtime, CUDA execution provider"
    install_hint = 'pip install "unirt[cuda]" (replaces onnxruntime with onnxruntime-gpu)'
    device_class = "gpu"
    default_rank = 20
    provider = "CUDAExecutionProvider"
    device_label = "cuda"
    is_reference = False
    bind_device = "cuda:0"

    def _device_availability(self, version: str | None) -> Availability:
        import ctypes.util

        # The provider is compiled in, but it loads only with a driver present.
        if ctypes.util.find_library("cuda") is None:
            return Availability(False, version,
                                reason="no CUDA driver (libcuda) found: no NVIDIA GPU here")
        return Availability(True, version, devices=("cuda:0",))

