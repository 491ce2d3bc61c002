"""TensorRT backend: ``tensorrt`` (NVIDIA's engine builder and runtime, on a CUDA GPU).

Written against TensorRT's documented Python API (10.x and 11.x) and cuda-python, and tested
with a test double of both (``tests/fake_tensorrt``): it has not yet run on real TensorRT
hardware in unirt's workplace (see the README). Split as Polygraphy splits its TensorRT support:
:mod:`._build` parses and builds (in a child process), :mod:`._runtime` runs an engine,
:mod:`._profiles` decides the shape ranges, :mod:`._cuda` holds memory and streams.

Always registered; unavailable, with the reason and an install hint, where the ``tensorrt``
module, cuda-python or a CUDA device is missing, so ``prefer="tensorrt"`` falls back with one
warning and ``backend="tensorrt"`` raises :class:`~unirt.errors.BackendUnavailableError`. Nothing
is imported at ``import unirt``.

Engines are built in a child process with a timeout (option ``build_timeout``, default 30 min):
a build takes minutes on a real model, and the parser and builder run native code on a model not
yet known to be safe. Serialized engines are kept in unirt's artifact cache, content-addressed
by the model's bytes, the TensorRT version, the GPU's name and compute capability, the
profiles, the precision and the options; the entry also records the version and GPU it was built
for, and an engine recorded for another version or GPU is never deserialized (TensorRT engines
are specific to both). The builder's timing cache is kept per TensorRT version and GPU, merged
after every build.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
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
    # Imported where used: building (tempfile) costs every registry otherwise.
    from . import _build, _profiles

logger = logging.getLogger("unirt")

NAME = "tensorrt"
INSTALL_HINT = ('pip install "unirt[tensorrt]" (TensorRT 10 or 11 and cuda-python; needs an '
                "NVIDIA GPU and driver)")
#: Version of this plugin's build logic, part of every engine's cache key: bump it when what is
#: built for the same inputs changes.
BUILDER_VERSION = "1"
DEFAULT_BUILD_TIMEOUT_S = 1800.0
DEFAULT_QUERY_TIMEOUT_S = 300.0
#: Engines a session builds for shapes it sees (no explicit profiles) before it refuses more.
DEFAULT_MAX_ENGINES = 4

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

        with _onnx_file(model) as path:
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
        from . import _build, _profiles

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


@contextlib.contextmanager
def _onnx_file(model: ModelInfo, directory: Path | None = None) -> Iterator[str]:
    """A path to the model: its own file, or its bytes written to a temporary one."""
    source = model.source()
    if isinstance(source, str):
        yield source
        return
    import tempfile

    with tempfile.TemporaryDirectory(prefix="unirt-trt-", dir=directory) as tmp:
        path = os.path.join(tmp, "model.onnx")
        with open(path, "wb") as f:
            f.write(source)
        yield path


def describe_parse_errors(errors: Sequence[Mapping[str, Any]], model: ModelInfo) -> str:
    """The parser's errors, each with the node (name) and op it is about, on one line."""
    from . import _build

    main = [n for n in model.nodes if n.graph == ""]
    parts = []
    for e in errors[:3]:
        index = int(e.get("node", -1))
        node = str(e.get("node_name") or "") or (
            _build.node_label(main, index) if index >= 0 else "")
        op = str(e.get("op") or "") or (main[index].op_type if 0 <= index < len(main) else "")
        desc = " ".join(str(e.get("desc") or "").split())
        where = f"node {node!r} ({op})" if node else (f"op {op}" if op else "the model")
        code = str(e.get("code") or "").rsplit(".", 1)[-1]
        parts.append(f"{where}: {code + ': ' if code else ''}{desc}".rstrip(": "))
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    return "; ".join(parts) + more if parts else "the parser gave no reason"


class TensorRtSession(BackendSession):
    """Engines for one model: one at open for a static model or given profiles; otherwise one
    per new range of shapes seen (up to ``max_engines``), each built once and then cached."""

    def __init__(self, model: ModelInfo, options: OpenOptions, trt: Any, version: str,
                 gpu: Any, plan: _build.PrecisionPlan,
                 explicit: list[_profiles.Profile] | None) -> None:
        super().__init__()
        from unirt.plugin import ArtifactCache, model_digest

        self.model = model
        self.options = options
        self.trt = trt
        self.version = version
        self.gpu = gpu
        self.plan = plan
        self.fixed = explicit is not None
        self.cache = ArtifactCache(options.extra.get("cache_dir"))
        self.digest = model_digest(model)
        self.engines: list[Any] = []  # _runtime.Engine
        self._failed: dict[tuple[Any, ...], BackendError] = {}
        self._lock = threading.Lock()
        self._trt_logger = trt.Logger(trt.Logger.ERROR)
        self._declared = {t.name: t for t in model.outputs}
        self._input_names = [t.name for t in model.inputs]
        self.precision = plan.label
        self.details.update({"tensorrt": version, "device": gpu.describe(),
                             "compute_capability": gpu.compute_capability, "engines": [],
                             "strongly_typed": plan.strongly_typed})
        if plan.note:
            self.details["note"] = plan.note

    # -- building -----------------------------------------------------------------------------
    def _key(self, profiles: Sequence[_profiles.Profile]) -> str:
        from unirt.plugin import artifact_key

        return artifact_key(NAME, self.digest, versions=self._versions(),
                            shapes=[[r.as_list() for r in p] for p in profiles],
                            precision=self.options.precision, options=self._key_options())

    def _versions(self) -> dict[str, str]:
        return {"tensorrt": self.version, "unirt-tensorrt": BUILDER_VERSION}

    def _key_options(self) -> dict[str, Any]:
        extra = self.options.extra
        return {"gpu": self.gpu.name, "compute_capability": self.gpu.compute_capability,
                "plan": [self.plan.label, list(self.plan.set_flags), list(self.plan.clear_flags),
                         self.plan.strongly_typed, self.plan.convert_fp16],
                "workspace": extra.get("workspace"),
                "optimization_level": extra.get("optimization_level")}

    def _identity(self) -> dict[str, Any]:
        """What an engine file is specific to: checked before any deserialization."""
        return {"tensorrt": self.version, "gpu": self.gpu.name,
                "compute_capability": self.gpu.compute_capability}

    def _timing_key(self) -> str:
        import hashlib

        doc = json.dumps(self._identity(), sort_keys=True).encode()
        return "timing-" + hashlib.sha256(doc).hexdigest()[:32]

    def prepare(self, profiles: list[_profiles.Profile]) -> Any:
        """Build (or load from the cache) the engine for ``profiles`` and keep it."""
        from . import _build, _profiles, _runtime

        key = self._key(profiles)
        timeout = float(self.options.extra.get("build_timeout") or DEFAULT_BUILD_TIMEOUT_S)
        label = self.model.name
        described = _profiles.describe(profiles)

        def build(tmp: Path) -> dict[str, Any]:
            from unirt.plugin import TIMEOUT, Step, run_isolated, step

            with _onnx_file(self.model, tmp) as path:
                spec = _build.BuildSpec(
                    onnx_path=path, engine_path=str(tmp / "engine.plan"),
                    profiles=[[r.as_list() for r in p] for p in profiles], plan=self.plan,
                    workspace=self.options.extra.get("workspace"),
                    optimization_level=self.options.extra.get("optimization_level"),
                    cache_root=None if self.cache.problem is not None else str(self.cache.root),
                    timing_key=self._timing_key(),
                    extra={"device": self.gpu.index})
                with step(Step.BUILD, NAME, label,
                          f"{self.plan.label}, profiles {described}") as running:
                    outcome = run_isolated(_build.build_engine, spec, timeout=timeout)
                    running.detail = outcome.describe()
            if outcome.status == TIMEOUT:
                raise BackendError(f"{NAME}: building the engine for {label} timed out after "
                                   f"{timeout:.0f} s (option build_timeout)")
            if not outcome.ok:
                raise BackendError(f"{NAME}: the engine build for {label} failed: "
                                   f"{outcome.describe()}")
            result = outcome.value
            if not result["ok"]:
                if result["stage"] == "parse":
                    raise BackendError(f"{NAME} cannot parse {label}: "
                                       f"{describe_parse_errors(result['errors'], self.model)}")
                log = "; ".join(result.get("log") or []) or "no reason given"
                raise BackendError(f"{NAME}: the builder refused {label}: {log}")
            (tmp / "engine.json").write_text(json.dumps(
                {**self._identity(), "profiles": [[r.as_list() for r in p] for p in profiles],
                 "precision": self.plan.label}))
            return {"build_seconds": result.get("seconds"), "layers": result.get("layers")}

        entry, built = self.cache.get_or_build(
            NAME, key, build, meta={"model": label, "profiles": described,
                                    "precision": self.plan.label, **self._identity()})
        try:
            recorded = json.loads((entry / "engine.json").read_text())
            mismatch = {k: (recorded.get(k), v) for k, v in self._identity().items()
                        if recorded.get(k) != v}
            if mismatch:
                raise BackendError(
                    f"{NAME}: the cached engine {entry} was built for another TensorRT or GPU "
                    f"({', '.join(f'{k} {a!r}, here {b!r}' for k, (a, b) in mismatch.items())}); "
                    "it is not loaded")
            data = (entry / "engine.plan").read_bytes()
        except OSError as exc:
            raise BackendError(f"{NAME}: cannot read the engine in {entry}: {exc}") from exc
        finally:
            self.cache.release(entry)
        engine, runtime = _runtime.deserialize(self.trt, self._trt_logger, data, label)
        eng = _runtime.Engine(self.trt, runtime, engine, profiles, label)
        self.engines.append(eng)
        self.details["engines"].append({"profiles": described, "cached": not built,
                                        "entry": str(entry)})
        return eng

    # -- running ------------------------------------------------------------------------------
    def _engine_for(self, shapes: dict[str, tuple[int, ...]]) -> tuple[Any, int]:
        from . import _profiles

        for eng in self.engines:
            index = eng.covers(shapes)
            if index is not None:
                return eng, index
        with self._lock:
            for eng in self.engines:  # another thread may have built it meanwhile
                index = eng.covers(shapes)
                if index is not None:
                    return eng, index
            seen = ", ".join(f"{n}:{list(s)}" for n, s in shapes.items())
            if self.fixed:
                built = "; ".join(_profiles.describe(e.profiles) for e in self.engines)
                raise ShapeLimitError(
                    f"{NAME}: {self.model.name} input shapes {seen} are outside every "
                    f"optimization profile it was built for ({built})")
            limit = int(self.options.extra.get("max_engines", DEFAULT_MAX_ENGINES))
            if len(self.engines) >= limit:
                raise ShapeLimitError(
                    f"{NAME}: {self.model.name} input shapes {seen} are outside the "
                    f"{len(self.engines)} engine(s) built for it, the most it builds "
                    "(option max_engines; or give options profiles)")
            profile = _profiles.from_seen(self.model, shapes)
            sig = tuple(repr(r.as_list()) for r in profile)
            failed = self._failed.get(sig)
            if failed is not None:
                raise failed
            try:
                eng = self.prepare([profile])
            except BackendError as exc:
                # A build at a new shape that fails: this shape can go to another backend.
                limit_error = ShapeLimitError(str(exc))
                self._failed[sig] = limit_error
                raise limit_error from exc
            return eng, 0

    def run(self, feeds: dict[str, Any], output_names: Sequence[str]) -> Sequence[Any]:
        from unirt.plugin import conform

        shapes = {n: tuple(int(d) for d in feeds[n].shape) for n in self._input_names}
        eng, profile = self._engine_for(shapes)
        got = eng.run(feeds, profile)
        dims = {d: size for t in self.model.inputs if t.shape
                for d, size in zip(t.shape, feeds[t.name].shape) if isinstance(d, str)}
        results = []
        for name in output_names:
            if name not in got:
                raise BackendError(f"{NAME}: the engine for {self.model.name} has no output "
                                   f"{name!r}")
            results.append(conform(got[name], self._declared[name], dims,
                                   f"{NAME}: {self.model.name} output {name!r}"))
        return results

    def close(self) -> None:
        with self._lock:
            engines, self.engines = self.engines, []
        for eng in engines:
            with contextlib.suppress(Exception):
                eng.close()


@hookimpl
def register_backends(register: Any) -> None:
    register(TensorRtBackend)
