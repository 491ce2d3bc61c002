"""Building, caching and running TensorRT engines for one model: one engine at open for a static
model or given profiles, otherwise one per new range of input shapes seen.

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
import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unirt.plugin import BackendError, BackendSession, ModelInfo, OpenOptions, ShapeLimitError

from . import _profiles

if TYPE_CHECKING:  # pragma: no cover
    # Imported where used: the builder's module would cost every registry.
    from . import _build

NAME = "tensorrt"
#: Version of this plugin's build logic, part of every engine's cache key: bump it when what is
#: built for the same inputs changes.
BUILDER_VERSION = "1"
DEFAULT_BUILD_TIMEOUT_S = 1800.0
#: Engines a session builds for shapes it sees (no explicit profiles) before it refuses more.
DEFAULT_MAX_ENGINES = 4


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
        from . import _build, _runtime

        key = self._key(profiles)
        timeout = float(self.options.extra.get("build_timeout") or DEFAULT_BUILD_TIMEOUT_S)
        label = self.model.name
        described = _profiles.describe(profiles)

        def build(tmp: Path) -> dict[str, Any]:
            from unirt.plugin import TIMEOUT, Step, run_isolated, step

            with _build.onnx_file(self.model, tmp) as path:
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
                    why = _build.describe_parse_errors(result["errors"], self.model)
                    raise BackendError(f"{NAME} cannot parse {label}: {why}")
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
