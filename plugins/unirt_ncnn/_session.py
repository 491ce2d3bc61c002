"""Converting and running a model on ncnn: a net per input-shape signature, run whole or sample
by sample.

pnnx converts at fixed input shapes and may bake them into the graph (a Resize's output size, a
Reshape's target), so a converted net is only trusted at the shapes it was converted at: a static
model is converted when opened; a model with dynamic dims is converted lazily at each new input
shape signature it is run with (each conversion cached on disk and held in memory). The one
exception is the batch axis: ncnn runs one sample, so when pnnx marks every blob of the batch-1
conversion as batched (``batch_index=0``) a batch of N runs sample by sample and is stacked.

A conversion is cached in unirt's content-addressed artifact cache, keyed by the model's bytes,
the ncnn and pnnx versions, the input shapes and the precision: pnnx costs far more than loading
its output.

Mats built on numpy memory are cloned before ``ex.input``: in-place layers would write into the
caller's array or into freed memory. Default options use fp16 storage and arithmetic where the
CPU has it (errors ~1e-3), so they are turned off (and pnnx's fp16 weights) for
``precision="exact"``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unirt.plugin import BackendError, BackendSession, ModelInfo, ShapeLimitError

from . import _graph

if TYPE_CHECKING:  # pragma: no cover
    # Imported where used: converting (subprocess, tempfile) would cost every registry.
    from . import _pnnx

logger = logging.getLogger("unirt")

NAME = "ncnn"
#: Version of this plugin's conversion logic, part of every cache key: bump it when what is
#: written into an entry changes.
CONVERTER_VERSION = "1"

Signature = tuple[tuple[int, ...], ...]

#: pnnx's names for what it could not lower to an ncnn layer, back to the ONNX op they came from.
_PNNX_TO_ONNX = {"Tensor.to": "Cast", "torch.topk": "TopK", "torch.argmax": "ArgMax",
                 "torch.argmin": "ArgMin", "torch.full": "ConstantOfShape",
                 "Tensor.index": "Gather", "torch.where": "Where", "Constant": "Constant"}


@dataclass(frozen=True)
class Config:
    """What the backend settled at open, for every conversion the session makes later: the
    converter, the versions and options that key the cache, the device."""

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
    def __init__(self, model: ModelInfo, config: Config) -> None:
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

            self._tmp = tempfile.TemporaryDirectory(prefix="unirt-ncnn-")
            self._prepared_onnx = _graph.write_prepared(
                self.model, self._host, Path(self._tmp.name) / "model.onnx")
        return self._prepared_onnx

    def _net_for(self, sig: Signature) -> _Net:
        """The net converted at exactly ``sig`` (from the cache, or converted now)."""
        from . import _pnnx

        net = self._nets.get(sig)
        if net is not None:
            return net
        c = self.config
        fp16 = c.precision != "exact"
        key_options = {"fp16_weights": fp16, "optlevel": c.optlevel,
                       "outputs": self._ncnn_outputs}
        from unirt.plugin import artifact_key

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
