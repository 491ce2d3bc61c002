"""Deployment locks: the engine choice for a model made once, measured, and shipped as a file.

A fleet of identical devices should not each spend seconds of child processes choosing an engine,
and should never silently choose a different one. ``unirt lock model.onnx`` measures once (the
ranking of ``prefer="fastest"`` or one ``backend=``, verified against the reference) and writes
``unirt.runtime.lock``: a small, sorted, indented JSON file a person can read in a review. On the
devices ``unirt.load(path, lock="unirt.lock")`` opens exactly the locked backend without measuring
anything, after checking the two facts that the verification depended on: the model's bytes
(the same content digest the artifact cache keys on) and the engine versions of the locked backend
and of the reference it was compared with. If either differs, the verification in the lock says
nothing about this machine: ``lock_mode="raise"`` refuses with a :class:`~unirt.errors.LockError`
naming what differs, ``lock_mode="warn"`` logs why and routes as usual.

What is deliberately not a difference: another unirt version (verdict semantics are keyed by the
engine, not by unirt) and another CPU name (timings may change, numbers do not): both are notes.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unirt.errors import LockError, UnirtError
from unirt.evidence.verify import Verification

if TYPE_CHECKING:  # pragma: no cover
    from unirt.model.info import ModelInfo, ModelSource
    from unirt.plugin.registry import Registry

logger = logging.getLogger("unirt")

#: The lock file format this unirt writes and reads; a newer one is refused, never guessed at.
FORMAT = 1
DEFAULT_PATH = "unirt.lock"
LOCK_MODES = ("raise", "warn")
#: Hex digits of a digest shown in messages (enough to tell two models apart at a glance).
_SHORT = 12


# -- the lock ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class LockedModel:
    """The model a lock was made for. ``digest`` is :func:`unirt.store.cache.model_digest` (the
    model bytes and its external data files, what every cache key and verdict hangs on); ``sha256``
    is the plain digest of the ``.onnx`` file, so a person can check it with ``sha256sum``."""

    file: str
    digest: str
    sha256: str | None
    size: int


@dataclass(frozen=True)
class RankEntry:
    """One backend of the measured ranking, fastest first: median milliseconds per run and the
    worst max abs error over outputs against the reference (0 for the reference itself; None
    when it was not verified)."""

    backend: str
    median_ms: float | None
    max_abs: float | None


@dataclass(frozen=True)
class LockedFigures:
    """What verification measured for the locked backend: enough to fill the session's
    ``precision.max_abs`` and its route without running anything."""

    status: str
    precision: str | None  # what the engine computes in ("fp32", "bf16")
    max_abs: dict[str, float]
    summary: str


@dataclass
class Lock:
    """One locked choice: which backend runs which model bytes, at which precision and shapes,
    and every fact needed to tell whether that choice still holds on a machine."""

    model: LockedModel
    backend: str
    precision: str
    shapes: dict[str, list[int]]
    reference: str | None
    engines: dict[str, str | None]  # every available backend's version (ncnn's names pnnx's)
    ranking: list[RankEntry]
    rejected: dict[str, str]  # backends the ranking measured and refused, with why
    verification: LockedFigures | None  # None: the locked backend is the reference
    keys: dict[str, str]  # artifact keys ("verification": the verdict's cache key)
    machine: dict[str, Any]
    created: str
    unirt_version: str
    format: int = FORMAT
    #: The digest of the input sets the choice was verified and timed on
    #: (:func:`unirt.evidence.operating.inputs_digest`); empty for generated inputs.
    inputs: str = ""
    #: Where the lock was read from (for messages); never written.
    path: str | None = field(default=None, compare=False)

    @property
    def label(self) -> str:
        """How messages name the lock: its file name, or "the lock" for one never written."""
        return Path(self.path).name if self.path else "the lock"

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "model": _plain(self.model),
            "backend": self.backend,
            "precision": self.precision,
            "shapes": {k: list(v) for k, v in self.shapes.items()},
            "reference": self.reference,
            "engines": dict(self.engines),
            "ranking": [_plain(r) for r in self.ranking],
            "rejected": dict(self.rejected),
            "verification": None if self.verification is None else _plain(self.verification),
            "keys": dict(self.keys),
            "machine": dict(self.machine),
            "created": self.created,
            "unirt_version": self.unirt_version,
            "inputs": self.inputs,
        }

    def to_json(self) -> str:
        """Indented, keys sorted, newline-terminated: diffs of two locks read line by line."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str = DEFAULT_PATH) -> Lock:
        """Parse and validate a lock. Anything malformed, truncated or of another format
        version is a :class:`LockError` naming ``source`` and the problem."""
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            # A cut-off copy fails at its end, or inside a string that never closes.
            truncated = (exc.pos >= len(text.rstrip()) and text.strip()) or exc.msg.startswith(
                "Unterminated string")
            why = "it ends early (truncated?)" if truncated else "it is not valid JSON"
            raise LockError(f"{source} is not a readable unirt lock: {why}: {exc.msg} (line "
                            f"{exc.lineno}, column {exc.colno})") from None
        r = _Reader(source)
        if not isinstance(doc, dict):
            raise LockError(f"{source} is not a unirt lock: expected a JSON object, found "
                            f"{type(doc).__name__}")
        if "format" not in doc:
            raise LockError(f"{source} is not a unirt lock: it has no 'format' field")
        version = doc["format"]
        if isinstance(version, bool) or not isinstance(version, int):
            raise LockError(f"{source}: 'format' must be an integer, not {version!r}")
        if version != FORMAT:
            newer = version > FORMAT
            raise LockError(f"{source} is lock format {version}; this unirt reads format "
                            f"{FORMAT}" + ("; upgrade unirt to use it" if newer else
                                           "; make the lock again with unirt lock"))
        m = r.obj(doc, "model")
        model = LockedModel(file=r.text(m, "file", "model."), digest=r.text(m, "digest", "model."),
                            sha256=r.text(m, "sha256", "model.", optional=True),
                            size=r.integer(m, "size", "model."))
        ranking = []
        for i, e in enumerate(r.seq(doc, "ranking")):
            where = f"ranking[{i}]."
            if not isinstance(e, dict):
                raise LockError(f"{source}: {where[:-1]} must be an object")
            ranking.append(RankEntry(r.text(e, "backend", where),
                                     r.number(e, "median_ms", where, optional=True),
                                     r.number(e, "max_abs", where, optional=True)))
        figures = None
        if doc.get("verification") is not None:
            v = r.obj(doc, "verification")
            errors = r.obj(v, "max_abs", "verification.")
            for name in errors:
                r.number(errors, name, "verification.max_abs.")
            figures = LockedFigures(r.text(v, "status", "verification."),
                                    r.text(v, "precision", "verification.", optional=True),
                                    {k: float(x) for k, x in errors.items()},
                                    r.text(v, "summary", "verification."))
        shapes: dict[str, list[int]] = {}
        for name, dims in r.obj(doc, "shapes").items():
            if not isinstance(dims, list) or not all(
                    isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in dims):
                raise LockError(f"{source}: shapes.{name} must be a list of non-negative "
                                f"integers, not {dims!r}")
            shapes[name] = list(dims)
        engines = r.obj(doc, "engines")
        for name in engines:
            r.text(engines, name, "engines.", optional=True)
        rejected = r.obj(doc, "rejected", optional=True)
        for name in rejected:
            r.text(rejected, name, "rejected.")
        keys = r.obj(doc, "keys")
        for name in keys:
            r.text(keys, name, "keys.")
        return cls(model=model, backend=r.text(doc, "backend"),
                   precision=r.text(doc, "precision"), shapes=shapes,
                   reference=r.text(doc, "reference", optional=True), engines=dict(engines),
                   ranking=ranking, rejected=dict(rejected), verification=figures,
                   keys=dict(keys), machine=dict(r.obj(doc, "machine")),
                   created=r.text(doc, "created"), unirt_version=r.text(doc, "unirt_version"),
                   format=version, inputs=r.text(doc, "inputs", optional=True) or "")

    @property
    def made(self) -> str:
        """``made 2026-11-28 on AMD EPYC x16``."""
        cpu = self.machine.get("cpu") or "an unknown machine"
        cores = self.machine.get("cores")
        return f"made {self.created[:10]} on {cpu}" + (f" x{cores}" if cores else "")

    @property
    def figures(self) -> str:
        """``verified, max abs 1.2e-06 on y (fp32)``: what the locked backend was seen to do."""
        if self.verification is None:
            return "the reference, not compared with itself"
        return f"{self.verification.status}, {self.verification.summary}"

    def describe(self) -> str:
        """``made 2026-11-28 on AMD EPYC x16: verified, max abs 1.2e-06 on y (fp32)``."""
        return f"{self.made}: {self.figures}"


def _plain(obj: Any) -> dict[str, Any]:
    return dict(obj.__dict__)


class _Reader:
    """Field access on a parsed lock that turns every missing or mistyped field into one
    :class:`LockError` naming the file and the field (never a bare KeyError)."""

    def __init__(self, source: str) -> None:
        self.source = source

    def _get(self, d: Mapping[str, Any], key: str, where: str, optional: bool) -> Any:
        if key not in d:
            if optional:
                return None
            raise LockError(f"{self.source}: field '{where}{key}' is missing")
        return d[key]

    def _bad(self, key: str, where: str, want: str, value: Any) -> LockError:
        return LockError(f"{self.source}: field '{where}{key}' must be {want}, not {value!r}")

    def text(self, d: Mapping[str, Any], key: str, where: str = "",
             optional: bool = False) -> Any:
        value = self._get(d, key, where, optional)
        if value is None and optional:
            return None
        if not isinstance(value, str):
            raise self._bad(key, where, "a string", value)
        return value

    def integer(self, d: Mapping[str, Any], key: str, where: str = "") -> int:
        value = self._get(d, key, where, False)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._bad(key, where, "an integer", value)
        return value

    def number(self, d: Mapping[str, Any], key: str, where: str = "",
               optional: bool = False) -> Any:
        value = self._get(d, key, where, optional)
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self._bad(key, where, "a number", value)
        return float(value)

    def obj(self, d: Mapping[str, Any], key: str, where: str = "",
            optional: bool = False) -> dict[str, Any]:
        value = self._get(d, key, where, optional)
        if value is None and optional:
            return {}
        if not isinstance(value, dict):
            raise self._bad(key, where, "an object", value)
        return value

    def seq(self, d: Mapping[str, Any], key: str, where: str = "") -> list[Any]:
        value = self._get(d, key, where, False)
        if not isinstance(value, list):
            raise self._bad(key, where, "a list", value)
        return value


# -- files -------------------------------------------------------------------------------------
def write_lock(lock: Lock, path: str | os.PathLike[str] = DEFAULT_PATH) -> Path:
    """Write ``lock`` to ``path`` atomically (a temporary file renamed into place, mode 0644):
    a device reading the lock while a new one is written sees the old or the new, never half."""
    from unirt.store.files import write_atomic

    target = Path(path)
    write_atomic(target, lock.to_json(), mode=0o644)
    lock.path = str(target)
    return target


def read_lock(path: str | os.PathLike[str]) -> Lock:
    """Read and validate a lock file; every problem is a :class:`LockError` naming the file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LockError(f"{p}: no such lock file (make one with: unirt lock MODEL --out "
                        f"{p})") from None
    except UnicodeDecodeError:
        raise LockError(f"{p} is not a unirt lock: it is not UTF-8 text") from None
    except OSError as exc:
        raise LockError(f"{p}: cannot read the lock file: {exc.strerror or exc}") from None
    lock = Lock.from_json(text, source=str(p))
    lock.path = str(p)
    return lock


# -- checking a lock ---------------------------------------------------------------------------
@dataclass(frozen=True)
class LockCheck:
    """``differences``: what makes the lock's choice untrustworthy here (empty: it holds);
    ``notes``: what changed without touching that (unirt's version, the CPU)."""

    differences: list[str]
    notes: list[str]

    @property
    def ok(self) -> bool:
        return not self.differences


def inspect_lock(lock: Lock, model: ModelSource | ModelInfo | None = None,
                 registry: Registry | None = None, *, precision: str | None = None) -> LockCheck:
    """Compare ``lock`` with this machine (and ``model``'s bytes, when given).

    Only the engines the locked verification depended on are asked for their version (the
    locked backend and the reference): asking every engine would import them all at load time.
    """
    from unirt.model.info import read_model
    from unirt.plugin.registry import get_registry
    from unirt.process.machine import cpu_name
    from unirt.store.cache import model_digest
    from unirt.version import __version__

    registry = registry or get_registry()
    label = lock.label
    diffs: list[str] = []
    notes: list[str] = []
    if model is not None:
        info = read_model(model)
        digest = model_digest(info)
        if digest != lock.model.digest:
            diffs.append(f"{label} was made for model digest {lock.model.digest[:_SHORT]}.. "
                         f"({lock.model.file}), this is {digest[:_SHORT]}.. ({info.name})")
    if precision is not None and precision != lock.precision:
        diffs.append(f"{label} was made for precision {lock.precision}, this load asks for "
                     f"{precision}")
    engines = [lock.backend] + ([lock.reference] if lock.reference and
                                lock.reference != lock.backend else [])
    for name in engines:
        role = "locked backend" if name == lock.backend else "reference"
        if name not in registry.backends:
            diffs.append(f"{label}'s {role} {name} is not installed on this machine "
                         f"(registered backends: {', '.join(registry.backends) or 'none'})")
            continue
        avail = registry.backend(name).available()
        if not avail.available:
            diffs.append(f"{label}'s {role} {name} is not available on this machine: "
                         f"{avail.reason}")
            continue
        locked = lock.engines.get(name)
        if locked != avail.version:
            diffs.append(f"{label} was made with {name} {locked or '(no version)'}, this machine "
                         f"has {avail.version or '(no version)'}")
    if lock.unirt_version != __version__:
        notes.append(f"{label} was made with unirt {lock.unirt_version}, this is unirt "
                     f"{__version__}")
    cpu, cores = lock.machine.get("cpu"), lock.machine.get("cores")
    here_cpu, here_cores = cpu_name(), os.cpu_count()
    if (cpu, cores) != (here_cpu, here_cores):
        notes.append(f"{label} was made on {cpu} x{cores}, this machine is {here_cpu} "
                     f"x{here_cores}: its timings may not hold here")
    return LockCheck(diffs, notes)


def check_lock(lock: Lock, model: ModelSource | ModelInfo | None = None,
               registry: Registry | None = None) -> list[str]:
    """The differences between ``lock`` and this machine (and ``model``): empty when the lock
    holds. A newer unirt or another CPU is not a difference (see :func:`inspect_lock`)."""
    return inspect_lock(lock, model, registry).differences


# -- opening from a lock -----------------------------------------------------------------------
@dataclass(frozen=True)
class LockedVerification(Verification):
    """The locked backend's verification, read from the lock instead of measured: the session
    gets its ``precision.max_abs`` and its route reason from it, with no child started."""

    lock: Lock | None = None

    def describe(self) -> str:
        if self.lock is None:
            return super().describe()
        return f"from lock {self.lock.label} ({self.lock.made}): {self.lock.figures}"


def _verification_from(lock: Lock) -> LockedVerification:
    from unirt.evidence.agreement import OutputDiff
    from unirt.evidence.probe import NO_REFERENCE, PASS, ProbeResult
    from unirt.evidence.verify import VerifyStatus

    nan = float("nan")
    f = lock.verification
    if f is None:  # the reference: nothing compared, accepted like the router accepts it
        result = ProbeResult(lock.backend, NO_REFERENCE, "the reference is not compared with "
                             "itself")
        return LockedVerification(VerifyStatus.UNVERIFIED, result, True, "", lock)
    outputs = [OutputDiff(name, err, nan, nan, None) for name, err in f.max_abs.items()]
    result = ProbeResult(lock.backend, PASS, precision=f.precision, outputs=outputs)
    return LockedVerification(VerifyStatus.VERIFIED, result, True,
                              lock.keys.get("verification", ""), lock)


def resolve_lock(lock_path: str | os.PathLike[str] | Lock, info: ModelInfo,
                 registry: Registry | None = None, mode: str = "raise", *,
                 precision: str | None = None) -> tuple[str, LockedVerification] | None:
    """What ``load(..., lock=...)`` opens: ``(backend name, its verification from the lock)``.

    Reads only the lock file, hashes the model and asks two engines their version: no child
    process, no measurement. On a mismatch (or an unreadable lock) ``mode="raise"`` raises
    :class:`LockError` naming every difference; ``mode="warn"`` logs a warning saying why and
    returns None, for the caller to route as usual. ``precision``: the precision the caller
    asked for, a difference when it is not the lock's (None: take the lock's).
    """
    if mode not in LOCK_MODES:
        raise UnirtError(f"lock_mode must be one of {', '.join(LOCK_MODES)}, not {mode!r}")
    try:
        lock = lock_path if isinstance(lock_path, Lock) else read_lock(lock_path)
    except LockError as exc:
        if mode == "raise":
            raise
        logger.warning("unirt: not using the lock for %s, routing as usual: %s", info.name, exc)
        return None
    check = inspect_lock(lock, info, registry, precision=precision)
    if not check.ok:
        why = "; ".join(check.differences)
        if mode == "raise":
            shapes = "".join(f" --shape {k}={'x'.join(map(str, v))}"
                             for k, v in lock.shapes.items())
            prec = "" if lock.precision == "exact" else f" --precision {lock.precision}"
            raise LockError(f"{why} (make the lock again with: unirt lock "
                            f"{info.path or info.name}{shapes}{prec} --out "
                            f"{lock.path or DEFAULT_PATH}; or load with lock_mode=\"warn\")")
        logger.warning("unirt: not using %s for %s, routing as usual: %s", lock.label,
                       info.name, why)
        return None
    for note in check.notes:
        logger.info("unirt: %s", note)
    return lock.backend, _verification_from(lock)
