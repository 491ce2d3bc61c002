"""ncnn backend, through the pnnx converter.

ncnn does not read ONNX: pnnx converts the model (run as a child process, see :mod:`._pnnx`),
and the conversion is cached in unirt's content-addressed artifact cache, keyed by the model's
bytes, the ncnn and pnnx versions, the input shapes and the precision.

pnnx converts at fixed input shapes and may bake them into the graph (a Resize's output size, a
Reshape's target), so a converted net is only trusted at the shapes it was converted at: a static
model is converted when opened; a model with dynamic dims is converted lazily at each new input
shape signature it is run with (each conversion cached on disk and held in memory). The one
exception is the batch axis: ncnn runs one sample, so when pnnx marks every blob of the batch-1
conversion as batched (``batch_index=0``) a batch of N runs sample by sample and is stacked.

Engine facts handled here (see ENGINE_NOTES): Mats built on numpy memory are cloned before
``ex.input`` (in-place layers would write into the caller's array or into freed memory); ncnn
takes float32 inputs only, a Mat at most 4 dims; default options use fp16 storage and arithmetic,
turned off (and pnnx's fp16 weights) for ``precision="exact"``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unirt.plugin import (
    Availability,
    Backend,
    BackendError,
    BackendSession,
    BackendUnavailableError,
    ModelInfo,
    OpenOptions,
    OptionSpec,
    ShapeLimitError,
    UnirtError,
    hookimpl,
)

if TYPE_CHECKING:  # pragma: no cover
    # Imported where used: converting (subprocess, tempfile) costs every registry otherwise.
    from . import _pnnx

logger = logging.getLogger("unirt")

NAME = "ncnn"
INSTALL_HINT = 'pip install "unirt[ncnn]" && pip install --no-deps pnnx'
#: Version of this plugin's conversion logic, part of every cache key: bump it when what is
#: written into an entry changes.
CONVERTER_VERSION = "1"
DEFAULT_TIMEOUT_S = 120.0

#: Options a user may pass as ``load(options={"ncnn": {...}})``.
OPTIONS = {
    "timeout": OptionSpec("seconds pnnx may take per conversion (default 120)"),
    "cache_dir": OptionSpec(
        "artifact cache directory (default: $UNIRT_CACHE_DIR or the user cache)"),
    "device": OptionSpec("cpu, vulkan or vulkan:N (default: cpu; device='gpu' means vulkan:0)"),
    "optlevel": OptionSpec("pnnx optimisation level 0-2 (default 2)"),
}

Signature = tuple[tuple[int, ...], ...]

#: pnnx's names for what it could not lower to an ncnn layer, back to the ONNX op they came from.
_PNNX_TO_ONNX = {"Tensor.to": "Cast", "torch.topk": "TopK", "torch.argmax": "ArgMax",
                 "torch.argmin": "ArgMin", "torch.full": "ConstantOfShape",
                 "Tensor.index": "Gather", "torch.where": "Where", "Constant": "Constant"}


def _gpu_count() -> int:
    import ncnn

    from unirt.plugin import captured

    # ncnn prints 'dlopen failed libvulkan.so.1' from C when probing for a GPU: expected on a
    # machine without Vulkan, a debug line rather than the user's terminal.
    with captured(NAME):
        return int(ncnn.get_gpu_count())


#: Where the Vulkan loader looks for driver manifests (ICDs), besides the environment.
_ICD_DIRS = ("/usr/share/vulkan/icd.d", "/usr/local/share/vulkan/icd.d", "/etc/vulkan/icd.d",
             "/usr/local/etc/vulkan/icd.d", "~/.local/share/vulkan/icd.d")


def _vulkan_manifests() -> bool:
    """Whether a Vulkan driver manifest exists where the loader looks (a stat per folder)."""
    if os.environ.get("VK_ICD_FILENAMES") or os.environ.get("VK_DRIVER_FILES"):
        return True
    for d in _ICD_DIRS:
        try:
            if any(p.suffix == ".json" for p in Path(d).expanduser().iterdir()):
                return True
        except OSError:
            continue
    return False


#: ``GpuInfo.type()`` of a Vulkan device that is really the CPU (Mesa's lavapipe, "llvmpipe").
VULKAN_CPU_TYPE = 3


def _vulkan_devices() -> list[tuple[int, str, bool]]:
    """(index, name, is_cpu) for every Vulkan device ncnn finds."""
    import ncnn

    from unirt.plugin import captured

    out = []
    with captured(NAME):
        for i in range(int(ncnn.get_gpu_count())):
            info = ncnn.get_gpu_info(i)
            out.append((i, str(info.device_name()), int(info.type()) == VULKAN_CPU_TYPE))
    return out


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

        if importlib.util.find_spec("ncnn") is None:
            return Availability(False, reason="the ncnn package is not installed",
                                install_hint=INSTALL_HINT)
        from . import _pnnx

        exe, where = _pnnx.find_pnnx()
        if exe is None:
            return Availability(False, reason=where, install_hint=INSTALL_HINT)
        import ncnn

        version = getattr(ncnn, "__version__", None)
        if not version:
            from importlib import metadata

            version = metadata.version("ncnn")
        self._pnnx = (exe, _pnnx.pnnx_version(exe, where))
        devices = ["cpu"] + [f"vulkan:{i}" for i in range(_gpu_count())]
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
        count = _gpu_count()
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
        from . import _graph

        return {h.output for h in _graph.host_tail(model)}

    # -- opening -----------------------------------------------------------------------------------
    def _open_impl(self, model: ModelInfo, options: OpenOptions) -> BackendSession:
        if self._pnnx is None:  # available() ran in another Backend instance
            from . import _pnnx

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

        config = _Config(
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


@dataclass(frozen=True)
class _Config:
    exe: Path
    pnnx_version: str
    ncnn_version: str
    cache: Any  # unirt.store.cache.ArtifactCache
    digest: str
    precision: str
    threads: int | None
    device: int | None
    timeout: float
    optlevel: int


class _Net:
    """A converted model loaded into an ``ncnn.Net``, run at the shapes it was converted at.

    ``ncnn.Net`` is shareable between threads; each call gets its own extractor.
    """

    def __init__(self, conv: _pnnx.Converted, net: Any) -> None:
        import ncnn

        self.conv = conv
        self.net = net
        self._Mat = ncnn.Mat
        self.inputs = [(b.blob, b.onnx_name, b.batch_index) for b in conv.inputs]
        self.outputs = {b.onnx_name: b for b in conv.outputs}

    def run(self, feeds: dict[str, Any], names: Sequence[str]) -> dict[str, Any]:
        import numpy as np

        Mat = self._Mat
        with self.net.create_extractor() as ex:
            for blob, onnx_name, bi in self.inputs:
                # clone: in-place layers must not write into (or after the life of) numpy memory
                ex.input(blob, Mat(feeds[onnx_name], batch_index=bi).clone())
            out: dict[str, Any] = {}
            for name in names:
                b = self.outputs[name]
                ret, mat = ex.extract(b.blob)
                if ret != 0:
                    raise BackendError(f"{NAME}: extracting {b.blob} ({name!r}) failed "
                                       f"(ncnn returned {ret})")
                arr = np.array(mat.numpy(batch_index=b.batch_index), dtype=np.float32)
                dims = [d for d in b.shape or () if d is not None]
                if b.shape is not None and len(dims) == len(b.shape):
                    if arr.size != int(np.prod(dims, dtype=np.int64)):
                        raise BackendError(
                            f"{NAME}: output {name!r} has {arr.size} values, but pnnx converted "
                            f"it as shape {b.shape}")
                    arr = arr.reshape(dims)
                out[name] = arr
        return out


@dataclass(frozen=True)
class _Plan:
    """How to run one input-shape signature: one net directly, or sample by sample."""

    net: _Net
    per_sample: int = 0  # batch size to split into when > 0

    def run(self, feeds: dict[str, Any], names: Sequence[str]) -> dict[str, Any]:
        if not self.per_sample:
            return self.net.run(feeds, names)
        import numpy as np

        parts = [self.net.run({k: v[i:i + 1] for k, v in feeds.items()}, names)
                 for i in range(self.per_sample)]
        return {n: np.concatenate([p[n] for p in parts], axis=0) for n in names}


class NcnnSession(BackendSession):
    def __init__(self, model: ModelInfo, config: _Config) -> None:
        from . import _graph

        super().__init__()
        self.model = model
        self.config = config
        self._input_names = [t.name for t in model.inputs]
        self._declared = {t.name: t for t in model.outputs}
        self._host = _graph.host_tail(model)
        self._host_by_output = {h.output: h for h in self._host}
        self._ncnn_outputs = _graph.ncnn_outputs(model, self._host)
        self._plans: dict[Signature, _Plan] = {}
        self._nets: dict[Signature, _Net] = {}
        self._failed: dict[Signature, BackendError] = {}
        self._lock = threading.Lock()
        self._prepared_onnx: Path | None = None
        self._tmp: Any = None
        exact = config.precision == "exact"
        self.precision = "fp32" if exact else "fp16"
        self.details.update({
            "pnnx": str(config.exe), "device": "cpu" if config.device is None
            else f"vulkan:{config.device}",
            "host_ops": [f"{h.op}->{h.output}" for h in self._host],
            "conversions": [], "convert_s": 0.0,
        })

    # -- conversion ------------------------------------------------------------------------------
    def _onnx_for_pnnx(self) -> Path:
        if self._prepared_onnx is None:
            import tempfile

            from . import _graph

            self._tmp = tempfile.TemporaryDirectory(prefix="unirt-ncnn-")
            self._prepared_onnx = _graph.write_prepared(
                self.model, self._host, Path(self._tmp.name) / "model.onnx")
        return self._prepared_onnx

    def _net_for(self, sig: Signature) -> _Net:
        """The net converted at exactly ``sig`` (from the cache, or converted now)."""
        net = self._nets.get(sig)
        if net is not None:
            return net
        c = self.config
        fp16 = c.precision != "exact"
        key_options = {"fp16_weights": fp16, "optlevel": c.optlevel,
                       "outputs": self._ncnn_outputs}
        from unirt.plugin import artifact_key

        from . import _pnnx

        key = artifact_key(
            NAME, c.digest,
            versions={"ncnn": c.ncnn_version, "pnnx": c.pnnx_version,
                      "unirt-ncnn": CONVERTER_VERSION},
            shapes=[list(s) for s in sig], precision=c.precision, options=key_options)
        dynamic = [[not isinstance(d, int) for d in (t.shape or ())] for t in self.model.inputs]
        shapes2 = [tuple(2 * d if dyn and d > 1 else d + 1 if dyn else d
                         for d, dyn in zip(s, flags)) for s, flags in zip(sig, dynamic)]

        def build(tmp: Path) -> dict[str, Any]:
            from unirt.plugin import Step, step

            at = ",".join("x".join(map(str, s)) for s in sig)
            with step(Step.CONVERT, NAME, self.model.name, f"pnnx at {at}"):
                return _pnnx.convert(
                    c.exe, self._onnx_for_pnnx(), tmp, input_names=self._input_names,
                    output_names=self._ncnn_outputs, shapes=sig,
                    shapes2=shapes2 if any(any(f) for f in dynamic) else None,
                    fp16=fp16, optlevel=c.optlevel, timeout=c.timeout, label=self.model.name)

        start = time.perf_counter()
        entry, built = c.cache.get_or_build(
            NAME, key, build, meta={"model": self.model.name, "shapes": [list(s) for s in sig],
                                    "precision": c.precision})
        conv = _pnnx.Converted.load(entry)
        net = _Net(conv, self._load(conv))
        c.cache.release(entry)  # a private build (no writable cache): its files are loaded now
        seconds = time.perf_counter() - start
        self.details["conversions"].append({
            "shapes": [list(s) for s in sig], "cached": not built, "entry": str(entry),
            "seconds": round(seconds, 3)})
        if built:  # a cached conversion is a load, not a conversion
            self.details["convert_s"] = round(self.details.get("convert_s", 0.0) + seconds, 4)
        logger.info("%s: %s %s at %s in %.2fs", NAME, "converted" if built else "loaded cached",
                    self.model.name, list(sig), time.perf_counter() - start)
        self._nets[sig] = net
        return net

    def _load(self, conv: _pnnx.Converted) -> Any:
        import ncnn

        missing = [t for t in conv.layer_types if t != "Input" and ncnn.create_layer(t) is None]
        if missing:
            raise BackendError(f"{NAME}: cannot run {self.model.name}: "
                               f"{'; '.join(self._describe_missing(t) for t in missing)}")
        c = self.config
        net = ncnn.Net()
        opt = net.opt
        if c.precision == "exact":
            for attr in ("use_fp16_packed", "use_fp16_storage", "use_fp16_arithmetic",
                         "use_bf16_storage", "use_bf16_packed"):
                if hasattr(opt, attr):
                    setattr(opt, attr, False)
        if c.threads is not None:
            opt.num_threads = int(c.threads)
        if c.device is not None:
            opt.use_vulkan_compute = True
            net.set_vulkan_device(c.device)
        net.opt = opt
        eff = net.opt
        flags = {a: bool(getattr(eff, a)) for a in (
            "use_fp16_packed", "use_fp16_storage", "use_fp16_arithmetic", "use_bf16_storage")
            if hasattr(eff, a)}
        self.details["ncnn_options"] = {**flags, "num_threads": int(eff.num_threads)}
        if any(flags.values()) or c.precision != "exact":
            self.precision = "bf16" if flags.get("use_bf16_storage") else "fp16"
        else:
            self.precision = "fp32"
        if net.load_param(str(conv.param)) != 0:
            raise BackendError(f"{NAME}: ncnn could not load the converted {self.model.name} "
                               f"(layers: {', '.join(conv.layer_types)})")
        if net.load_model(str(conv.bin)) != 0:
            raise BackendError(f"{NAME}: ncnn could not load the weights of {self.model.name}")
        return net

    def _describe_missing(self, layer: str) -> str:
        """Name the ONNX op (and its nodes) behind a layer pnnx left that ncnn cannot create."""
        op = _PNNX_TO_ONNX.get(layer, layer.split(".")[-1])
        nodes = [n.name or n.op_type for n in self.model.nodes if n.op_type.lower() == op.lower()]
        where = f" (node{'s' if len(nodes) > 1 else ''} {', '.join(map(repr, nodes[:3]))})" \
            if nodes else ""
        return (f"ONNX op {op}{where} became pnnx layer {layer!r}, which ncnn has no "
                "implementation of")

    def _plan_for(self, sig: Signature) -> _Plan:
        with self._lock:
            plan = self._plans.get(sig)
            if plan is None:
                failed = self._failed.get(sig)
                if failed is not None:  # pnnx is not asked twice to fail on the same shapes
                    raise failed
                try:
                    plan = self._make_plan(sig)
                except BackendError as exc:
                    self._failed[sig] = exc
                    raise
                self._plans[sig] = plan
            return plan

    def _make_plan(self, sig: Signature) -> _Plan:
        inputs = self.model.inputs
        batch = {s[0] for s in sig if s}
        if (len(batch) == 1 and all(s for s in sig) and next(iter(batch)) > 1
                and all(not isinstance(t.shape[0], int) for t in inputs if t.shape)
                and all(not t.shape or not isinstance(t.shape[0], int)
                        for t in self.model.outputs)):
            one = tuple((1, *s[1:]) for s in sig)
            net1 = self._net_for(one)
            blobs = [*net1.conv.inputs, *net1.conv.outputs]
            if all(b.batch_index == 0 for b in blobs):
                return _Plan(net1, per_sample=next(iter(batch)))
        net = self._net_for(sig)
        for b, shape in zip(net.conv.inputs, sig):
            if b.batch_index == 0 and shape and shape[0] != 1:
                raise ShapeLimitError(
                    f"{NAME}: ncnn runs one sample at a time, and {self.model.name} cannot be "
                    f"split into samples (pnnx does not treat axis 0 as a batch axis at batch 1: "
                    f"the model mixes it into other computation); input {b.onnx_name!r} has "
                    f"batch {shape[0]}: run it with batch 1")
            rank = len(shape) - (1 if b.batch_index == 0 else 0)
            if rank > 4:
                raise ShapeLimitError(f"{NAME}: input {b.onnx_name!r} would need a {rank}-dim Mat; "
                                   "an ncnn Mat holds at most 4 dims")
        return _Plan(net)

    def prepare(self, sig: Signature) -> None:
        """Convert and load for ``sig`` now (at open for static models, so refusals come early)."""
        self._plan_for(sig)

    # -- running ---------------------------------------------------------------------------------
    def run(self, feeds: dict[str, Any], output_names: Sequence[str]) -> Sequence[Any]:
        import numpy as np

        sig = tuple(tuple(feeds[n].shape) for n in self._input_names)
        plan = self._plans.get(sig)
        if plan is None:
            try:
                plan = self._plan_for(sig)
            except ShapeLimitError:
                raise
            except BackendError as exc:
                # Converting at a new shape failed: this shape can go to another backend (the
                # run-time fallback takes ShapeLimitError only; a conversion that fails at every
                # shape is still better served elsewhere than raised).
                raise ShapeLimitError(str(exc)) from exc
        host = self._host_by_output
        needed = list(dict.fromkeys(
            host[n].input if n in host else n for n in output_names))
        got = plan.run(feeds, needed)
        dims = {d: size for t in self.model.inputs if t.shape
                for d, size in zip(t.shape, feeds[t.name].shape) if isinstance(d, str)}
        results = []
        for name in output_names:
            h = host.get(name)
            arr = h(got[h.input]) if h is not None else got[name]
            results.append(self._finish(name, arr, dims, np))
        return results

    def _finish(self, name: str, arr: Any, dims: dict[str, int], np: Any) -> Any:
        """The declared shape and dtype (:func:`unirt.plugin.conform.conform`), or a clear refusal:
        never a silently different layout. ncnn computes in float, so integer outputs are
        rounded first (an index of 2.9999998 is 3)."""
        from unirt.plugin import conform

        info = self._declared[name]
        if info.dtype is not None and info.dtype.kind in "iub" and arr.dtype.kind == "f":
            arr = np.rint(arr)
        return conform(arr, info, dims, f"{NAME}: {self.model.name} output {name!r}")

    def close(self) -> None:
        with self._lock:
            self._plans.clear()
            self._nets.clear()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


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
        if not _vulkan_manifests():
            # Asked on every first load (GPU backends come first): without a Vulkan driver
            # manifest the loader finds nothing, so ncnn is not imported just to say so.
            return Availability(False, reason="no Vulkan GPU: no Vulkan driver manifest "
                                "(VK_ICD_FILENAMES, VK_DRIVER_FILES, or *.json in "
                                f"{', '.join(_ICD_DIRS)})")
        base = super()._available_impl()
        if not base.available:
            return base
        devices = _vulkan_devices()
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
        gpus = [i for i, _, cpu in _vulkan_devices() if not cpu]
        if not gpus:
            raise BackendUnavailableError(f"{self.name}: ncnn finds no Vulkan GPU")
        return gpus[0]


@hookimpl
def register_backends(register: Any) -> None:
    register(NcnnBackend)
    register(NcnnVulkanBackend)
