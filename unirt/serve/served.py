"""A model as the server holds it: its session, its metadata, whether it batches and how many
engine calls it takes at once.

Both are decided once, at load, by measurement rather than by the declaration alone. A model may
batch when every input's first dim is one dynamic batch axis, and two different rows run
stacked on the chosen backend give what each gives alone, on that backend (not moved to another
by a run-time shape fallback). It then batches when a larger batch measured faster than batch 1
(:mod:`unirt.serve.plan`), at the size that did. A model that mixes rows, a backend that cannot
take a batch of 2, or a batch that gains nothing serves unbatched, and the metadata says why.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from unirt.errors import UnirtError, first_line
from unirt.serve.plan import TOLERANCE, Plan, plan_for
from unirt.serve.protocol import datatype_of
from unirt.tensor import is_static

if TYPE_CHECKING:  # pragma: no cover
    from unirt.evidence.operating import InputSets
    from unirt.runtime.session import Session
    from unirt.serve.config import ModelSpec, ServeConfig

logger = logging.getLogger("unirt")

VERSION = "1"


@dataclass(frozen=True)
class Batching:
    """How a model batches: ``max_batch`` rows per engine call when ``enabled`` (the measured
    size, at most what was asked), ``slots`` engine calls of it at once."""

    enabled: bool
    max_batch: int
    timeout_s: float
    reason: str
    slots: int = 1
    #: the measurement behind ``max_batch`` and ``slots``, None when not measured
    plan: Plan | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"enabled": self.enabled, "max_batch": self.max_batch,
                "timeout_ms": self.timeout_s * 1000.0, "reason": self.reason,
                "slots": self.slots,
                "measured": None if self.plan is None else self.plan.as_dict()}


class ServedModel:
    """A loaded session under a name, with what the protocol's metadata says about it."""

    def __init__(self, name: str, session: Session, batching: Batching) -> None:
        self.name = name
        self.session = session
        self.batching = batching
        self.version = VERSION
        self._input_names = frozenset(t.name for t in session.inputs)

    @property
    def backend(self) -> str:
        return self.session.backend

    def metadata(self) -> dict[str, Any]:
        """The v2 model metadata, plus unirt's ``parameters``: backend, precision, route,
        batching."""
        sess = self.session
        return {
            "name": self.name,
            "versions": [self.version],
            "platform": "onnx",
            "inputs": [_tensor_metadata(t) for t in sess.inputs],
            "outputs": [_tensor_metadata(t) for t in sess.outputs],
            "parameters": {
                "backend": sess.backend,
                "precision": str(sess.precision),
                "route": [step.as_dict() for step in sess.route],
                "batching": self.batching.as_dict(),
            },
        }

    def check(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Feeds checked (and made contiguous) as ``Session.run`` checks them, before they join
        a batch: a bad request must fail alone, not the batch it would have joined. Errors
        name the model as the client knows it, by its served name."""
        return self.session.check_feeds(feeds, self.name)

    def rows(self, feeds: Mapping[str, np.ndarray]) -> int:
        """The batch-axis size of a checked request (all inputs must agree to be stacked)."""
        sizes = {a.shape[0] for a in feeds.values()}
        return sizes.pop() if len(sizes) == 1 else -1


def _tensor_metadata(t: Any) -> dict[str, Any]:
    shape = [-1] if t.shape is None else [d if is_static(d) else -1 for d in t.shape]
    return {"name": t.name, "datatype": datatype_of(t.dtype), "shape": shape}


def batch_axis(session: Session) -> str | None:
    """Why the model has no single dynamic batch axis, or None when it has one."""
    inputs = session.inputs
    symbols = set()
    for t in inputs:
        if t.dtype is None or t.shape is None or not t.shape:
            return f"input {t.name!r} has no leading axis"
        if is_static(t.shape[0]):
            return f"input {t.name!r} has a fixed first dimension ({t.shape[0]})"
        symbols.add(t.shape[0])
    named = {str(s) for s in symbols if s is not None}
    if len(named) > 1:
        return f"the inputs' first dimensions are different axes ({', '.join(sorted(named))})"
    for t in session.outputs:
        if t.shape is not None and t.shape and is_static(t.shape[0]):
            return f"output {t.name!r} has a fixed first dimension ({t.shape[0]})"
    return None


def probe_rows(session: Session, shapes: Mapping[str, tuple[int, ...]]
               ) -> tuple[list[dict[str, np.ndarray]], str | None]:
    """Two different generated requests of one row each (the shapes verification measured,
    batch 1), or why there are none."""
    from unirt.evidence.inputs import make_inputs

    base = {}
    for t in session.inputs:
        given = shapes.get(t.name)
        if given is not None:
            base[t.name] = (1, *tuple(given)[1:])
    try:
        return [make_inputs(session.inputs, base, seed=seed) for seed in (0, 1)], None
    except UnirtError as exc:
        return [], f"no probe input: {first_line(exc)}"


def _user_rows(inputs: InputSets | None, most: int = 2) -> list[dict[str, np.ndarray]]:
    """Up to ``most`` requests of one row each from the user's input sets (row by row along
    axis 0, set after set), for the batching probe and the plan; empty without inputs."""
    rows: list[dict[str, np.ndarray]] = []
    for feeds in inputs.sets if inputs is not None else ():
        batch = min((a.shape[0] for a in feeds.values() if a.ndim), default=0)
        for i in range(batch):
            rows.append({n: a[i:i + 1] for n, a in feeds.items()})
            if len(rows) == most:
                return rows
    return rows


def _request(session: Session, shapes: Mapping[str, tuple[int, ...]]
             ) -> dict[str, np.ndarray] | None:
    """A generated request at the shapes verification measured, to time a model that is not
    batched; None (logged) when none can be made."""
    from unirt.evidence.inputs import make_inputs

    try:
        return make_inputs(session.inputs, dict(shapes) or None, seed=0)
    except UnirtError as exc:
        logger.info("unirt serve: not measured: no input can be generated (%s)",
                    first_line(exc))
        return None


def _probe_batching(session: Session, rows: list[dict[str, np.ndarray]]) -> str | None:
    """Why batching is off after running two different rows alone and stacked, or None."""
    both = {n: np.concatenate([r[n] for r in rows], axis=0) for n in rows[0]}
    steps = len(session.route)
    try:
        alone = [session.run(r) for r in rows]
        stacked = session.run(both)
    except UnirtError as exc:
        return f"a batch of 2 does not run: {first_line(exc)}"
    if len(session.route) != steps:
        return f"{session.backend} cannot take a batch of 2 (run elsewhere: {session.route[-1]})"
    for name, b in stacked.items():
        if not isinstance(b, np.ndarray) or not all(isinstance(o[name], np.ndarray)
                                                    for o in alone):
            return (f"output {name!r} is a sequence or map, not a tensor: it cannot be split "
                    "back by rows")
        for i, out in enumerate(alone):
            a = out[name]
            if a.ndim == 0 or a.shape[0] != 1 or b.shape[:1] != (2,) or b.shape[1:] != a.shape[1:]:
                return (f"output {name!r} does not follow the batch axis (shape {list(a.shape)} "
                        f"at batch 1, {list(b.shape)} at batch 2)")
            if not _close(a, b[i:i + 1]):
                return (f"output {name!r} of a row differs alone and in a batch: rows are not "
                        "independent")
    return None


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    if a.dtype.kind not in "fc":
        return bool(np.array_equal(a, b))
    if not a.size:
        return True
    finite = np.isfinite(a) & np.isfinite(b)
    if not np.array_equal(finite, np.isfinite(a) | np.isfinite(b)):
        return False
    scale = float(np.max(np.abs(a[finite]))) if finite.any() else 0.0
    return bool(np.all(np.abs(a[finite] - b[finite]) <= 1e-4 + 1e-3 * scale))


def open_model(spec: ModelSpec, config: ServeConfig) -> ServedModel:
    """Load ``spec`` through :func:`unirt.load` (routing, verification, cache), then decide its
    batching and the engine calls it takes at once (measured unless ``measure`` is off)."""
    from unirt.model.info import read_model
    from unirt.runtime.router import load

    info = read_model(spec.path)
    inputs = None
    if spec.inputs is not None:
        from unirt.evidence.operating import as_input_sets

        inputs = as_input_sets(info, spec.inputs, f"model {spec.name}'s inputs")
    session = load(info, backend=spec.backend, prefer=list(spec.prefer) or None,
                   precision=spec.precision, input_shapes=dict(spec.shapes) or None,
                   inputs=inputs, verify_live=config.live(spec))
    try:
        batching = decide_batching(session, spec, config, inputs)
        if session.live is not None:  # the plan's calls were not the clients'
            session.live.rewind()
    except BaseException:
        session.close()
        raise
    logger.info("unirt serve: %s on %s, batching %s, %d engine call(s) at once%s", spec.name,
                session.backend,
                f"up to {batching.max_batch} rows, {batching.timeout_s * 1e3:g} ms"
                if batching.enabled else f"off ({batching.reason})", batching.slots,
                "" if batching.plan is None else
                " (measured)" if not batching.plan.cached else " (measured, cached)")
    return ServedModel(spec.name, session, batching)


def decide_batching(session: Session, spec: ModelSpec, config: ServeConfig,
                    inputs: InputSets | None = None) -> Batching:
    """Whether ``session`` batches, at what size, and how many calls it takes at once; on the
    rows of the user's ``inputs`` when given (the operating point), else on generated ones."""
    asked, timeout_s = config.batching(spec)
    measure = config.measures(spec)
    rows: list[dict[str, np.ndarray]] = []
    if asked <= 1:
        reason: str | None = "max_batch is 1"
    else:
        reason = batch_axis(session)
        if reason is None:
            rows = _user_rows(inputs)
            if len(rows) < 2:
                rows, reason = probe_rows(session, inputs.first_shapes if inputs is not None
                                          else spec.shapes)
            if reason is None:
                reason = _probe_batching(session, rows)
    if not measure:
        size = asked if reason is None else 1
        return Batching(reason is None, size, timeout_s, reason or "batch axis 0",
                        config.workers)
    row = rows[0] if rows else (dict(inputs.sets[0]) if inputs is not None
                                else _request(session, spec.shapes))
    plan = None
    if row is not None:
        try:
            plan = plan_for(session, row, asked if reason is None else 1, config.workers,
                            name=spec.name)
        except UnirtError as exc:  # the server still serves what runs; it is just not timed
            logger.info("unirt serve: %s not measured: %s", spec.name, first_line(exc))
    if plan is None:  # nothing to time on, or it did not run: unbatched, as configured
        return Batching(False, 1, timeout_s, reason or "not measured", config.workers)
    if reason is None and plan.max_batch == 1:
        reason = (f"every batch size up to {asked} ran more than {TOLERANCE:.0%} slower than "
                  f"batch 1 on {session.backend} ({plan.describe_batching()})")
    elif reason is None:
        return Batching(True, plan.max_batch, timeout_s,
                        f"batch axis 0; {plan.describe_batching()}", plan.slots, plan)
    return Batching(False, 1, timeout_s, reason, plan.slots, plan)
