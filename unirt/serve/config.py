"""What ``unirt serve`` serves and how: the command line and a config file, merged and checked.

The config file (TOML or JSON) is for several models with options of their own::

    [server]              # every key optional; the command line wins over the file
    host = "0.0.0.0"
    port = 8000
    max_batch = 8
    batch_timeout_ms = 2
    max_request_mb = 64
    verify_live = "auto"  # re-check served calls on the reference (unirt.runtime.live):
                          # "auto", "on", "off", true/false, or [FIRST, EVERY]; a model's
                          # own key wins

    [[models]]
    path = "detector.onnx"
    name = "detector"                   # default: the file name without .onnx
    prefer = ["openvino"]               # or backend = "openvino"
    precision = "exact"
    shape = { images = "1x3x640x640" }  # the shapes verification measures
    inputs = "frames/"                  # what the application sends (a --save-inputs folder):
                                        # verification and the serving plan run on it
    max_batch = 4                       # per-model batching overrides
    measure = false                     # serve max_batch and workers as given, untimed
    verify_live = [8, 100]              # the first 8 calls, then 1 in 100, on the reference

    [ray]                 # read only by ``unirt serve --ray``; ignored (and logged) without it
    address = "ray://head:10001"
    replicas = 2                        # or a [ray.autoscaling] table, not both
    replica_cpus = 1
    replica_gpus = 0
    max_ongoing_requests = 32

    [ray.autoscaling]                   # Ray Serve's autoscaling_config, checked against it
    min_replicas = 1
    max_replicas = 8

The ``[ray]`` keys are the ``--ray`` options' names; the command line wins key by key, except
that ``--replicas`` or ``--autoscaling`` replaces both of the file's (a fixed count and an
autoscaling range are one choice, not two settings to mix). Every mistake is a
:class:`~unirt.errors.UnirtError` naming the file and the key, raised before any model is opened
and without importing Ray (only the autoscaling keys wait for Ray Serve's own model, checked by
:func:`unirt.serve.ray.deployment_options` before Ray starts).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from unirt.errors import UnirtError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
#: Dynamic batching is off unless asked for: a batch of N rows costs N requests' memory, the
#: user's to allow. Asked for, the size served is measured (unirt.serve.plan). 0 ms: "stack what
#: is already queued when an engine slot frees", which costs a lone request no latency.
DEFAULT_MAX_BATCH = 1
DEFAULT_BATCH_TIMEOUT_MS = 0.0
DEFAULT_MAX_REQUEST_MB = 64.0
DEFAULT_DRAIN_TIMEOUT_S = 30.0
#: The Ray Serve application's name.
APP_NAME = "unirt"
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_PRECISIONS = ("exact", "fast")


def default_workers() -> int:
    """Engine threads: one per core (each engine call already uses the cores it can; more calls
    at once than cores only make them wait for each other), and at least two so that a slow
    call never holds every other model up."""
    return max(2, os.cpu_count() or 2)


@dataclass(frozen=True)
class ModelSpec:
    """One model to serve and the ``unirt.load`` options for it."""

    path: str
    name: str
    backend: str | None = None
    prefer: tuple[str, ...] = ()
    precision: str = "exact"
    shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    max_batch: int | None = None
    batch_timeout_ms: float | None = None
    measure: bool | None = None
    #: A folder of input sets (``unirt.evidence.input_files.save_inputs``): the operating point
    #: verification and the serving plan measure at, instead of generated inputs.
    inputs: str | None = None
    #: ``load(verify_live=)``; None: the server's setting.
    verify_live: Any = None


@dataclass(frozen=True)
class RayOptions:
    """How the deployment is placed and scaled; every field is passed to Ray Serve as is. Here,
    not in :mod:`unirt.serve.ray`, because a config file's ``[ray]`` table is read into it
    without importing that module's dependencies."""

    #: ``ray.init(address=...)``: None starts a local Ray (or joins ``RAY_ADDRESS``).
    address: str | None = None
    #: Fixed replica count (ignored when ``autoscaling`` is given).
    replicas: int = 1
    #: Ray Serve's ``autoscaling_config`` (min_replicas, max_replicas, target_ongoing_requests...).
    autoscaling: Mapping[str, Any] | None = None
    #: CPUs reserved per replica (Ray sets the replica's OMP_NUM_THREADS from it).
    num_cpus: float = 1.0
    #: GPUs per replica; None: 1 when a model names a GPU backend, else 0.
    num_gpus: float | None = None
    #: Requests a replica takes at once; None: 64, or twice the largest max_batch.
    max_ongoing_requests: int | None = None
    app_name: str = APP_NAME
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ServeConfig:
    models: tuple[ModelSpec, ...]
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    max_batch: int = DEFAULT_MAX_BATCH
    batch_timeout_ms: float = DEFAULT_BATCH_TIMEOUT_MS
    max_request_mb: float = DEFAULT_MAX_REQUEST_MB
    workers: int = field(default_factory=default_workers)
    drain_timeout_s: float = DEFAULT_DRAIN_TIMEOUT_S
    #: Time each model at load for its batch size and engine calls at once
    #: (:mod:`unirt.serve.plan`); off: ``max_batch`` and ``workers`` as given.
    measure: bool = True
    #: The Ray Serve placement (``[ray]`` merged with the command line's); None when neither
    #: gave any. Only ``unirt serve --ray`` and :mod:`unirt.serve.ray` read it.
    ray: RayOptions | None = None
    #: ``load(verify_live=)`` for models that do not set their own; None: ``load``'s default
    #: (``UNIRT_VERIFY_LIVE``, else auto).
    verify_live: Any = None

    @property
    def max_request_bytes(self) -> int:
        return int(self.max_request_mb * 1024 * 1024)

    def batching(self, spec: ModelSpec) -> tuple[int, float]:
        """``(max_batch, timeout in seconds)`` for one model."""
        mb = self.max_batch if spec.max_batch is None else spec.max_batch
        ms = self.batch_timeout_ms if spec.batch_timeout_ms is None else spec.batch_timeout_ms
        return mb, ms / 1000.0

    def live(self, spec: ModelSpec) -> Any:
        """``load(verify_live=)`` for one model."""
        return self.verify_live if spec.verify_live is None else spec.verify_live

    def measures(self, spec: ModelSpec) -> bool:
        """Whether ``spec``'s batch size and engine calls at once are measured at load."""
        return self.measure if spec.measure is None else spec.measure


_SERVER_KEYS = {"host", "port", "max_batch", "batch_timeout_ms", "max_request_mb", "workers",
                "drain_timeout_s", "measure", "verify_live"}
#: ``[ray]``'s numbers: key -> (RayOptions field, integer?, minimum). Its other keys, address
#: and autoscaling, are checked for their type here and autoscaling's keys by Ray Serve's own
#: model, once Ray is imported.
_RAY_NUMBERS = {"replicas": ("replicas", True, 1), "replica_cpus": ("num_cpus", False, 0),
                "replica_gpus": ("num_gpus", False, 0),
                "max_ongoing_requests": ("max_ongoing_requests", True, 1)}
_RAY_KEYS = {"address", "autoscaling", *_RAY_NUMBERS}
_MODEL_KEYS = {"path", "name", "backend", "prefer", "precision", "shape", "inputs", "max_batch",
               "batch_timeout_ms", "measure", "verify_live"}


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The file's contents as a dict: ``.toml`` or ``.json``."""
    p = Path(path)
    try:
        text = p.read_bytes()
    except OSError as exc:
        raise UnirtError(f"cannot read the config file {p}: {exc.strerror or exc}") from None
    try:
        if p.suffix.lower() == ".json":
            doc = json.loads(text)
        elif p.suffix.lower() == ".toml":
            try:
                import tomllib
            except ImportError:  # Python 3.10
                import tomli as tomllib  # type: ignore[no-redef]
            doc = tomllib.loads(text.decode("utf-8"))
        else:
            raise UnirtError(f"config file {p}: write it as .toml or .json")
    except UnirtError:
        raise
    except Exception as exc:
        raise UnirtError(f"config file {p} cannot be parsed: {exc}") from None
    if not isinstance(doc, dict):
        raise UnirtError(f"config file {p}: the top level must be a table/object")
    unknown = set(doc) - {"server", "models", "ray"}
    if unknown:
        raise UnirtError(f"config file {p}: unknown key(s) {', '.join(sorted(unknown))}; "
                         "expected 'server', 'models' and 'ray'")
    return doc


def _check(cond: bool, where: str, message: str) -> None:
    if not cond:
        raise UnirtError(f"{where}: {message}")


def _number(value: Any, where: str, *, integer: bool, minimum: float,
            strict: bool = False) -> Any:
    ok = isinstance(value, int if integer else (int, float)) and not isinstance(value, bool)
    _check(ok and (value > minimum if strict else value >= minimum), where,
           f"must be {'an integer' if integer else 'a number'} "
           f"{'>' if strict else '>='} {minimum:g}, got {value!r}")
    return value


def _flag(value: Any, where: str) -> bool:
    _check(isinstance(value, bool), where, f"must be true or false, got {value!r}")
    return bool(value)


def _live(value: Any, where: str) -> Any:
    """A ``verify_live`` value as ``load`` takes it (a TOML/JSON list is a pair), checked."""
    from unirt.runtime.live_setting import resolve_setting

    if isinstance(value, list):
        value = tuple(value)
    try:
        resolve_setting(value)
    except UnirtError as exc:
        raise UnirtError(f"{where}: {exc}") from None
    return value


def _shapes(value: Any, where: str) -> dict[str, tuple[int, ...]]:
    from unirt.evidence.inputs import parse_assignments, parse_shape

    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if isinstance(v, str):
                out[str(k)] = parse_shape(v)
            elif isinstance(v, list) and all(isinstance(d, int) and d >= 0 for d in v):
                out[str(k)] = tuple(v)
            else:
                raise UnirtError(f"{where}[{k!r}]: write a shape as \"1x3x224x224\" or a list")
        return out
    if isinstance(value, (list, tuple)):
        return {k: parse_shape(v) for k, v in parse_assignments(list(value), "--shape").items()}
    raise UnirtError(f"{where}: a table of input name -> shape")


def _model(entry: Any, where: str, base: Path | None) -> ModelSpec:
    _check(isinstance(entry, dict), where, "each model must be a table/object with 'path'")
    unknown = set(entry) - _MODEL_KEYS
    _check(not unknown, where, f"unknown key(s) {', '.join(sorted(unknown))}; expected "
           f"{', '.join(sorted(_MODEL_KEYS))}")
    path = entry.get("path")
    _check(isinstance(path, str) and bool(path), where, "'path' (the model file) is required")
    if base is not None and not Path(path).is_absolute():
        path = str(base / path)
    prefer = entry.get("prefer", ())
    if isinstance(prefer, str):
        prefer = (prefer,)
    _check(isinstance(prefer, (list, tuple)) and all(isinstance(p, str) for p in prefer),
           f"{where}.prefer", "a backend name or a list of them")
    backend = entry.get("backend")
    _check(backend is None or isinstance(backend, str), f"{where}.backend", "a backend name")
    inputs = entry.get("inputs")
    _check(inputs is None or (isinstance(inputs, str) and bool(inputs)), f"{where}.inputs",
           "a folder of input sets written by --save-inputs")
    if inputs is not None and base is not None and not Path(inputs).is_absolute():
        inputs = str(base / inputs)
    spec = ModelSpec(
        path=path, name=entry.get("name") or model_name(path), backend=backend,
        prefer=tuple(prefer), precision=entry.get("precision", "exact"),
        shapes=_shapes(entry.get("shape", {}), f"{where}.shape"),
        max_batch=None if "max_batch" not in entry else _number(
            entry["max_batch"], f"{where}.max_batch", integer=True, minimum=1),
        batch_timeout_ms=None if "batch_timeout_ms" not in entry else _number(
            entry["batch_timeout_ms"], f"{where}.batch_timeout_ms", integer=False, minimum=0),
        measure=None if "measure" not in entry else _flag(entry["measure"], f"{where}.measure"),
        inputs=inputs,
        verify_live=None if entry.get("verify_live") is None else _live(
            entry["verify_live"], f"{where}.verify_live"))
    _check_spec(spec, where)
    return spec


def _check_spec(spec: ModelSpec, where: str) -> None:
    _check(isinstance(spec.name, str) and bool(_NAME.match(spec.name)), where,
           f"model name {spec.name!r} must be letters, digits, '_', '.' or '-' (it is a URL "
           "path segment)")
    _check(spec.precision in _PRECISIONS, where,
           f"precision must be one of {', '.join(_PRECISIONS)}, got {spec.precision!r}")
    _check(not (spec.backend and spec.prefer), where, "give backend or prefer, not both")


def _ray_values(values: Mapping[str, Any], label: Callable[[str], str]) -> dict[str, Any]:
    """``[ray]`` (or command-line) values checked, as RayOptions fields; ``label`` names a key
    in an error."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key == "address":
            _check(isinstance(value, str) and bool(value), label(key),
                   f"a Ray address such as \"ray://head:10001\", got {value!r}")
            out["address"] = value
        elif key == "autoscaling":
            _check(isinstance(value, Mapping), label(key),
                   "a table of Ray Serve autoscaling_config keys (min_replicas, max_replicas...)")
            out["autoscaling"] = dict(value)
        else:
            name, integer, minimum = _RAY_NUMBERS[key]
            out[name] = _number(value, label(key), integer=integer, minimum=minimum)
    return out


def _ray_options(table: Any, given: Mapping[str, Any] | None, where_file: str
                 ) -> RayOptions | None:
    """The file's ``[ray]`` table with the command line's values (None: not given) over it.
    A command-line ``replicas`` or ``autoscaling`` replaces both of the file's: the two are
    one choice, so a file's autoscaling does not outlive ``--replicas 3``."""
    if table is None and given is None:
        return None
    where = f"{where_file}: [ray]"
    _check(table is None or isinstance(table, dict), where, "must be a table/object")
    table = table or {}
    given = {k: v for k, v in (given or {}).items() if v is not None}
    for source, name in ((table, where), (given, "ray options")):
        unknown = set(source) - _RAY_KEYS
        _check(not unknown, name, f"unknown key(s) {', '.join(sorted(unknown))}; expected "
               f"{', '.join(sorted(_RAY_KEYS))}")
    _check(not ("replicas" in table and "autoscaling" in table), where,
           "give replicas or an autoscaling table, not both")
    if "replicas" in given and "autoscaling" in given:
        raise UnirtError("give --replicas or --autoscaling, not both")
    values = _ray_values(table, lambda key: f"{where} {key}")
    if "replicas" in given or "autoscaling" in given:
        values.pop("replicas", None)
        values.pop("autoscaling", None)
    values.update(_ray_values(given, lambda key: "--" + key.replace("_", "-")))
    return RayOptions(**values)


def model_name(path: str) -> str:
    """The default name of a served model: its file name without ``.onnx``."""
    name = Path(path).name
    return name[:-5] if name.lower().endswith(".onnx") else name


def build_config(models: Sequence[str] = (), *, name: str | None = None,
                 backend: str | None = None, prefer: Sequence[str] = (),
                 precision: str | None = None, shapes: Mapping[str, tuple[int, ...]] | None = None,
                 config_file: str | None = None, ray: Mapping[str, Any] | None = None,
                 inputs: str | None = None, **server: Any) -> ServeConfig:
    """The command line (``models`` and the options for them, ``server`` overrides left None
    when not given) merged over the config file, checked. The command line's load options
    (``backend``, ``prefer``, ``precision``, ``shapes``, ``inputs``) also apply to the file's
    models that do not set their own. ``ray``: the Ray Serve options, keyed as the ``[ray]``
    table (None values not given), merged over that table into ``ServeConfig.ray``."""
    doc: dict[str, Any] = read_config_file(config_file) if config_file else {}
    where_file = f"config file {config_file}"
    settings = doc.get("server", {})
    _check(isinstance(settings, dict), f"{where_file}: [server]", "must be a table/object")
    unknown = set(settings) - _SERVER_KEYS
    _check(not unknown, f"{where_file}: [server]", f"unknown key(s) "
           f"{', '.join(sorted(unknown))}; expected {', '.join(sorted(_SERVER_KEYS))}")
    given = {k: v for k, v in server.items() if v is not None}
    # where a setting came from, for its error: the command line's option or the file's key
    source = {k: f"{where_file}: [server] {k}" for k in settings}
    source.update({k: "--" + k.replace("_", "-") for k in given})
    settings = {**settings, **given}
    ray_options = _ray_options(doc.get("ray"), ray, where_file)
    specs: list[ModelSpec] = []
    entries = doc.get("models", [])
    _check(isinstance(entries, list), f"{where_file}: models", "must be a list of tables")
    base = Path(config_file).parent if config_file else None
    for i, entry in enumerate(entries):
        spec = _model(entry, f"{where_file}: models[{i}]", base)
        # The command line's load options are the defaults of the file's models.
        if backend and not spec.backend and not spec.prefer:
            spec = replace(spec, backend=backend)
        if prefer and not spec.backend and not spec.prefer:
            spec = replace(spec, prefer=tuple(prefer))
        if precision and "precision" not in entry:
            spec = replace(spec, precision=precision)
        if shapes and "shape" not in entry:
            spec = replace(spec, shapes=dict(shapes))
        if inputs and "inputs" not in entry:
            spec = replace(spec, inputs=inputs)
        specs.append(spec)
    if name is not None and len(models) != 1:
        raise UnirtError(f"--name names one model; {len(models)} MODEL arguments were given "
                         "(name several in a --config file)")
    for path in models:
        spec = ModelSpec(path=path, name=name or model_name(path), backend=backend,
                         prefer=tuple(prefer), precision=precision or "exact",
                         shapes=dict(shapes or {}), inputs=inputs)
        _check_spec(spec, f"model {path}")
        specs.append(spec)
    if not specs:
        raise UnirtError("nothing to serve: give MODEL files or a --config file with [[models]]")
    seen: dict[str, str] = {}
    for spec in specs:
        if spec.name in seen:
            raise UnirtError(f"two models are named {spec.name!r} ({seen[spec.name]} and "
                             f"{spec.path}): give one a name (--name, or name = in the config)")
        seen[spec.name] = spec.path
    cfg = ServeConfig(models=tuple(specs), ray=ray_options)
    checks = {"host": None, "port": (True, 0), "max_batch": (True, 1),
              "batch_timeout_ms": (False, 0), "max_request_mb": (False, 0),
              "workers": (True, 1), "drain_timeout_s": (False, 0)}
    values: dict[str, Any] = {}
    for key, value in settings.items():
        rule = checks.get(key)
        if key == "measure":
            _flag(value, source[key])
        elif key == "verify_live":
            value = _live(value, source[key])
        elif rule is None:
            _check(isinstance(value, str) and bool(value), source[key], "a host name or address")
        else:
            _number(value, source[key], integer=rule[0], minimum=rule[1],
                    strict=key == "max_request_mb")
        values[key] = value
    if "port" in values:
        _check(values["port"] <= 65535, source["port"],
               f"must be at most 65535, got {values['port']}")
    return replace(cfg, **values)
