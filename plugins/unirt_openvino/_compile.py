"""Compiling a model with OpenVINO: the properties a compile gets, the compiled-model cache,
compiling again after a failed run, and what a compiled model says about itself.

Precision. On CPUs with AMX/AVX-512-BF16 OpenVINO computes in bf16 unless told otherwise, and
returns numbers that differ from ONNX Runtime by up to whole units without any warning.
``precision="exact"`` pins ``INFERENCE_PRECISION_HINT=f32``; ``"fast"`` keeps the engine's
default. Either way ``BackendSession.precision`` is read back from the compiled model, never
copied from what was asked.

Compiled models are cached by OpenVINO itself (its ``CACHE_DIR`` property), in an engine-managed
directory of unirt's artifact cache (``<cache>/openvino/<key>``), one per model content
(:func:`unirt.store.cache.model_digest`: the ONNX bytes and any external data files). The
subdirectory is what makes the cache safe: OpenVINO keys a model compiled from a path on the
path, size and modification time only, so a model rewritten in place with the same size and time
(retrained weights copied with ``cp -p`` or ``rsync -a``, or build systems that pin mtimes) loads
the *old* compiled blob and returns the old model's numbers without an error (checked on
2026.4). Within a subdirectory OpenVINO keys its blobs on device, properties and its own version.
OpenVINO does not check a blob's content: one with flipped bytes loads and returns outputs off
by up to 1e36. So each compile runs inside :meth:`unirt.store.cache.ArtifactCache.managed`: under
the directory's lock, every file is checked against the manifest (sizes, SHA-256, signed) unirt
wrote after the last compile, a file that does not match is deleted (OpenVINO compiles again), and
the manifest is updated after the compile. That costs one SHA-256 of the blob per process
(~0.1 s for ResNet-50's 100 MB), against a compile of over a second.
A model opened from a file is compiled from its path, so a cached load skips reading the ONNX
file; one given as bytes is read first.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from unirt.plugin import ModelInfo, OpenOptions

from ._errors import engine_message

logger = logging.getLogger("unirt")

#: OpenVINO element type names -> the names ``BackendSession.precision`` uses.
PRECISION_NAMES = {"f32": "fp32", "bf16": "bf16", "f16": "fp16", "f64": "fp64", "i8": "int8"}


def properties(options: OpenOptions) -> dict[str, Any]:
    """The OpenVINO properties a compile (or ``query_model``) gets for ``options``."""
    extra = options.extra
    config: dict[str, Any] = {
        "PERFORMANCE_HINT": str(extra.get("performance_hint") or "LATENCY").strip().upper(),
    }
    if options.precision == "exact":
        config["INFERENCE_PRECISION_HINT"] = "f32"
    if options.threads is not None:
        config["INFERENCE_NUM_THREADS"] = int(options.threads)
    if "num_streams" in extra:
        config["NUM_STREAMS"] = str(extra["num_streams"]).upper()
    config.update(extra.get("config") or {})
    return config


@contextlib.contextmanager
def cache_dir(backend: str, model: ModelInfo, options: OpenOptions,
              config: Mapping[str, Any]) -> Iterator[str | None]:
    """OpenVINO's ``CACHE_DIR`` for one compile: unirt's engine-managed directory for this
    model's content, checked file by file against the manifest unirt signed after the last
    compile and vouched for again after this one (:meth:`unirt.store.cache.ArtifactCache.managed`).
    OpenVINO itself loads a blob with flipped bytes without a word (outputs off by 1e36,
    measured on 2026.4), so no blob reaches it unchecked. None: compile without a cache
    (turned off, a ``CACHE_DIR`` of the user's own in ``config``, or no usable cache)."""
    if not options.extra.get("cache", True) or "CACHE_DIR" in config:
        yield config.get("CACHE_DIR")
        return
    from unirt.plugin import ArtifactCache, model_digest

    with ArtifactCache().managed(backend, model_digest(model)[:32], "openvino") as d:
        yield None if d is None else str(d)


def compiler(backend: str, core: Any, model: ModelInfo, options: OpenOptions, device: str,
             base: Mapping[str, Any], config: dict[str, Any]) -> Callable[..., Any]:
    """The function that compiles ``model`` on ``device`` (the session's ``reopen``). It sets
    ``config["CACHE_DIR"]`` to the cache directory of each compile, for ``describe``."""
    source = model.source()

    def compile_model(old: Any = None) -> Any:
        """Compile the model; given the compiled model a failed run left behind, make a new
        one from its exported blob (the very model that was opened, without reading the
        file again: clean on the PP-OCR recognizer, 50-130 ms), or failing that compile."""
        if old is not None:
            try:
                return core.import_model(old.export_model(), device, config)
            except RuntimeError as exc:  # a device that cannot export: compile instead
                logger.debug("openvino: export/import of %s failed (%s); compiling",
                             model.name, engine_message(exc))
        with cache_dir(backend, model, options, base) as directory:
            config.pop("CACHE_DIR", None)
            if directory is not None:
                config["CACHE_DIR"] = directory
            if isinstance(source, str):
                return core.compile_model(source, device, config)
            return core.compile_model(core.read_model(source), device, config)

    return compile_model


def read_precision(compiled: Any, options: OpenOptions) -> str:
    try:
        kind = compiled.get_property("INFERENCE_PRECISION_HINT")
        name = kind.get_type_name() if hasattr(kind, "get_type_name") else str(kind)
    except Exception:  # AUTO/MULTI may not expose it: say what was asked, as far as known
        return "fp32" if options.precision == "exact" else "unknown"
    return PRECISION_NAMES.get(name, name)


def describe(compiled: Any, device: str, config: Mapping[str, Any]) -> dict[str, Any]:
    details: dict[str, Any] = {"device": device}
    for key, prop in (("execution_devices", "EXECUTION_DEVICES"),
                      ("performance_hint", "PERFORMANCE_HINT"),
                      ("num_streams", "NUM_STREAMS"),
                      ("threads", "INFERENCE_NUM_THREADS"),
                      ("optimal_requests", "OPTIMAL_NUMBER_OF_INFER_REQUESTS"),
                      ("loaded_from_cache", "LOADED_FROM_CACHE")):
        try:
            value = compiled.get_property(prop)
        except Exception:
            continue
        if isinstance(value, (bool, int)):
            details[key] = value
        elif isinstance(value, (list, tuple)):
            details[key] = list(value)
        else:  # enums (PerformanceMode.LATENCY) read as their name
            details[key] = getattr(value, "name", None) or str(value)
    details["cache_dir"] = config.get("CACHE_DIR")
    return details
