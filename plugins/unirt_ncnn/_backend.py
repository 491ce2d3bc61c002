"""The ncnn backends: availability (ncnn and the pnnx executable), the device, what a model
raises before any conversion, opening.

A rule here refuses only what no conversion can change (an input that is not float32, a Mat of
more than 4 dims, an output that is not a tensor). What only converting or running can settle
(a static batch, dynamic dims, a TopK feeding a Cast) is UNKNOWN: pnnx's own decisions, read
back after converting, and a measured run are the evidence there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from unirt.plugin import (
    Availability,
    Backend,
    BackendSession,
    BackendUnavailableError,
    ModelInfo,
    OpenOptions,
    OptionSpec,
    UnirtError,
)

from . import _graph, _vulkan
from ._session import Config, NcnnSession

NAME = "ncnn"
INSTALL_HINT = 'pip install "unirt[ncnn]" && pip install --no-deps pnnx'
DEFAULT_TIMEOUT_S = 120.0

#: Options a user may pass as ``load(options={"ncnn": {...}})``.
OPTIONS = {
    "timeout": OptionSpec("seconds pnnx may take per conversion (default 120)"),
    "cache_dir": OptionSpec(
        "artifact cache directory (default: $UNIRT_CACHE_DIR or the user cache)"),
    "device": OptionSpec("cpu, vulkan or vulkan:N (default: cpu; device='gpu' means vulkan:0)"),
    "optlevel": OptionSpec("pnnx optimisation level 0-2 (default 2)"),
}


class NcnnBackend(Backend):
    name = NAME
    description = "Tencent ncnn (CPU, or Vulkan where a GPU exists), models converted by pnnx"
    install_hint = INSTALL_HINT
    device_class = "cpu"
    default_rank = 70
    options = OPTIONS
    device_names = {"auto": "cpu", "cpu": "cpu", "gpu": "vulkan:0"}
    device_hint = "it runs on the CPU or on a Vulkan GPU (device='gpu')"

    def __init__(self) -> None:
        super().__init__()
        self._pnnx: tuple[Path, str] | None = None

    def _available_impl(self) -> Availability:
        import importlib.util

        from . import _pnnx

        if importlib.util.find_spec("ncnn") is None:
            return Availability(False, reason="the ncnn package is not installed",
                                install_hint=INSTALL_HINT)
        exe, where = _pnnx.find_pnnx()
        if exe is None:
            return Availability(False, reason=where, install_hint=INSTALL_HINT)
        import ncnn

        version = getattr(ncnn, "__version__", None)
        if not version:
            from importlib import metadata

            version = metadata.version("ncnn")
        self._pnnx = (exe, _pnnx.pnnx_version(exe, where))
        devices = ["cpu"] + [f"vulkan:{i}" for i in range(_vulkan.gpu_count())]
        return Availability(True, f"{version} (pnnx {self._pnnx[1]})", devices=tuple(devices))

    # -- options ---------------------------------------------------------------------------------
    def _device(self, options: OpenOptions) -> int | None:
        """The Vulkan device index, or None for the CPU."""
        requested = str(options.extra.get("device") or "") or self.device_name(options)
        if requested == "cpu":
            return None
        if requested == "vulkan":
            requested = "vulkan:0"
        if not requested.startswith("vulkan:") or not requested[7:].isdigit():
            raise UnirtError(f"{self.name}: unknown device {requested!r}; use cpu, vulkan or "
                             "vulkan:N")
        index = int(requested[7:])
        count = _vulkan.gpu_count()
        if index >= count:
            raise BackendUnavailableError(
                f"{self.name}: Vulkan device {index} is not available: ncnn finds "
                f"{count} Vulkan GPU(s) (no Vulkan loader or no GPU on this machine)")
        return index

    def _refusals_impl(self, model: ModelInfo) -> list[Any]:
        """Inputs ncnn cannot be fed (float32 tensors only, a Mat's rank), outputs that are
        not tensors: see :func:`_refusals`."""
        from unirt.plugin import Reason

        return [Reason(why, kind=kind) for kind, why in _refusals(model)]

    def _rules_impl(self, model: ModelInfo) -> list[Any]:
        """What only converting (or running) can settle, as UNKNOWN: see :func:`_doubts`."""
        from unirt.plugin import UNKNOWN, Reason

        return [Reason(why, kind=kind, node=node, op=op, verdict=UNKNOWN)
                for kind, why, node, op in _doubts(model)]

    def _host_outputs_impl(self, model: ModelInfo) -> set[str]:
        """ArgMax/ArgMin at the end of the graph run in numpy (ncnn has no such layer)."""
        return {h.output for h in _graph.host_tail(model)}

    # -- opening -----------------------------------------------------------------------------------
    def _open_impl(self, model: ModelInfo, options: OpenOptions) -> BackendSession:
        from . import _pnnx

        if self._pnnx is None:  # available() ran in another Backend instance
            exe, where = _pnnx.find_pnnx()
            if exe is None:
                raise BackendUnavailableError(f"{self.name}: {where}")
            self._pnnx = (exe, _pnnx.pnnx_version(exe, where))
        device = self._device(options)
        try:
            timeout = float(options.extra.get("timeout", DEFAULT_TIMEOUT_S))
            optlevel = int(options.extra.get("optlevel", 2))
        except (TypeError, ValueError) as exc:
            raise UnirtError(f"{self.name}: option timeout/optlevel must be a number") from exc
        import ncnn

        from unirt.plugin import ArtifactCache, model_digest

        config = Config(
            exe=self._pnnx[0], pnnx_version=self._pnnx[1], ncnn_version=ncnn.__version__,
            cache=ArtifactCache(options.extra.get("cache_dir")),
            digest=model_digest(model), precision=options.precision,
            threads=options.threads, device=device, timeout=timeout, optlevel=optlevel,
        )
        sess = NcnnSession(model, config)
        if not model.has_dynamic_inputs:
            sess.prepare(tuple(tuple(int(d) for d in t.shape or ()  # type: ignore[arg-type]
                                     ) for t in model.inputs))
        return sess


def _refusals(model: ModelInfo) -> list[tuple[str, str]]:
    """(kind, reason) for every input or output ncnn cannot take, whatever the conversion."""
    out = []
    for t in model.inputs:
        if t.dtype is None or t.shape is None:
            out.append(("input", f"input {t.name!r} is not a tensor of known rank; ncnn takes "
                                 "float32 tensors only"))
        elif str(t.dtype) != "float32":
            out.append(("dtype", f"input {t.name!r} is {t.dtype}; ncnn can only be fed float32 "
                                 "inputs"))
        elif len(t.shape) > 5:
            out.append(("rank", f"input {t.name!r} has rank {len(t.shape)}; an ncnn Mat holds "
                                "at most 4 dims (5 with a batch axis)"))
    for t in model.outputs:
        if t.dtype is None:
            out.append(("dtype", f"output {t.name!r} is not a tensor"))
    return out


def _doubts(model: ModelInfo) -> list[tuple[str, str, str | None, str | None]]:
    """(kind, reason, node, op) for what may fail on ncnn but cannot be known without running
    pnnx (statically, and cheaply: one pass over the nodes, nothing converted):

    * a static batch > 1: ncnn runs one sample at a time. :meth:`NcnnSession._make_plan` splits
      a batch into samples only for a *dynamic* batch axis; a static batch N is converted at N,
      and refused at open when pnnx marks axis 0 as a batch axis (``batch_index=0``), run whole
      only when pnnx treats it as an ordinary dim. Only the conversion says which.
    * dynamic dims: such a model is converted per input shape at its first run, and pnnx has
      crashed (SIGSEGV) converting models with dynamic dims (ENGINE_NOTES).
    * a TopK whose output feeds a Cast: ncnn segfaulted running such a model converted by pnnx
      (ENGINE_NOTES). Not every one crashes: a bare TopK(k=3) -> Cast(indices) on float32[1,10]
      was refused cleanly at open here (ncnn has no TopK/Tensor.to layer), so this stays UNKNOWN.
    """
    out: list[tuple[str, str, str | None, str | None]] = []
    for t in model.inputs:
        if t.shape is None or t.dtype is None:
            continue  # refused outright by _refusals
        first = t.shape[0] if t.shape else None
        if isinstance(first, int) and first > 1:
            out.append(("batch", f"input {t.name!r} has a static batch of {first}; ncnn runs "
                                 "one sample at a time: a batch of N is split into samples only "
                                 "on a dynamic batch axis that pnnx marks as batch (axis 0); a "
                                 "static one runs only where pnnx does not treat axis 0 as a "
                                 "batch axis, else it is refused at open", None, None))
        dynamic = [str(d) if d is not None else f"axis {i}" for i, d in enumerate(t.shape)
                   if not isinstance(d, int)]
        if dynamic:
            out.append(("dynamic", f"input {t.name!r} has dynamic dims ({', '.join(dynamic)}): "
                                   "converted per input shape at first run; pnnx can crash on "
                                   "dynamic dims", None, None))
    topk: dict[str, str] = {}  # TopK output -> node label
    casts: list[tuple[str, str]] = []  # (Cast input, Cast label)
    for i, n in enumerate(model.nodes):
        if n.domain not in ("", "ai.onnx"):
            continue
        if n.op_type == "TopK":
            label = n.name or f"TopK#{i}"
            topk.update((o, label) for o in n.outputs if o)
        elif n.op_type == "Cast" and n.inputs:
            casts.append((n.inputs[0], n.name or f"Cast#{i}"))
    for tensor, cast in casts:
        producer = topk.get(tensor)
        if producer is not None:
            out.append(("crash", f"TopK output {tensor!r} feeds Cast {cast!r}: ncnn segfaulted "
                                 "running a TopK+Cast model converted by pnnx", producer, "TopK"))
    return out


class NcnnVulkanBackend(NcnnBackend):
    """ncnn on a Vulkan GPU (``use_vulkan_compute``): the GPU-class twin of :class:`NcnnBackend`,
    so that ``device="gpu"`` and the default GPU-first order can route to it. Available only
    where ncnn finds a Vulkan device that is a GPU: a CPU-backed Vulkan driver (lavapipe) never
    counts for routing, but stays usable on request with ``backend="ncnn"`` and
    ``options={"ncnn": {"device": "vulkan"}}``. ``precision="exact"`` keeps fp16 storage and
    arithmetic off as on the CPU."""

    name = "ncnn-vulkan"
    description = "Tencent ncnn on a Vulkan GPU (use_vulkan_compute), models converted by pnnx"
    device_class = "gpu"
    default_rank = 30
    device_hint = "it runs on a Vulkan GPU (device='gpu')"

    def _available_impl(self) -> Availability:
        if not _vulkan.has_manifest():
            # Asked on every first load (GPU backends come first): without a Vulkan driver
            # manifest the loader finds nothing, so ncnn is not imported just to say so.
            return Availability(False, reason="no Vulkan GPU: no Vulkan driver manifest "
                                "(VK_ICD_FILENAMES, VK_DRIVER_FILES, or *.json in "
                                f"{', '.join(_vulkan.ICD_DIRS)})")
        base = super()._available_impl()
        if not base.available:
            return base
        devices = _vulkan.devices()
        gpus = [f"vulkan:{i}" for i, _, cpu in devices if not cpu]
        if gpus:
            return Availability(True, base.version, devices=tuple(gpus))
        if not devices:
            why = "ncnn finds no Vulkan GPU (get_gpu_count() is 0: no Vulkan driver or no GPU)"
        else:
            names = ", ".join(f"vulkan:{i} {name}" for i, name, _ in devices)
            why = (f"a CPU-backed Vulkan device ({names}) is not a GPU; use it on request "
                   "with backend='ncnn' and options={'ncnn': {'device': 'vulkan'}}")
        # ncnn is installed: installing it again would not help, so no install hint.
        return Availability(False, base.version, reason=why)

    def _device(self, options: OpenOptions) -> int | None:
        if options.extra.get("device") or options.device not in ("auto", "gpu"):
            index = super()._device(options)
            if index is None:
                raise UnirtError(f"{self.name} runs on a Vulkan GPU; for the CPU use backend "
                                 "'ncnn'")
            return index
        gpus = [i for i, _, cpu in _vulkan.devices() if not cpu]
        if not gpus:
            raise BackendUnavailableError(f"{self.name}: ncnn finds no Vulkan GPU")
        return gpus[0]
