"""Verdicts and the evidence behind them: one vocabulary for routing, ``capabilities`` and plugins.

A verdict says whether a backend can run a model *and which evidence decided it*. Evidence comes
in kinds of different strength (:class:`Evidence`): the op-support table's prediction explains and
orders but never decides; a backend rule, the engine's own answer on this model, or a measured run
of this model decide. Plugins build :class:`Reason` objects for their rules, so this module stays
free of heavy imports.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from unirt.errors import clean
from unirt.words import Word


class Status(Word):
    """Whether a backend can run a model. A ``str`` so that JSON and older callers see the word."""

    SUPPORTED = "SUPPORTED"
    UNSUPPORTED = "UNSUPPORTED"
    UNKNOWN = "UNKNOWN"  # nothing decisive known: to be measured
    UNAVAILABLE = "UNAVAILABLE"  # the backend is not installed or cannot run here


class Evidence(Word):
    """What a reason, or a verdict, rests on; later members are stronger."""

    #: The op-support table (single-node conformance cases): a prediction, never a veto.
    TABLE = "table"
    #: A backend rule or a fact no engine can get past (ncnn takes float32 inputs only; a custom
    #: domain the engine implements nothing of; a node that is not an ONNX operator).
    RULE = "rule"
    #: The engine's own answer on this model: creating the session, ``query_model``, the pnnx
    #: conversion, reading the net.
    ENGINE = "engine"
    #: A run of this model in a child process, compared with the reference.
    MEASURED = "measured"
    #: Whether the backend is installed and usable here at all.
    AVAILABILITY = "availability"


SUPPORTED = Status.SUPPORTED
UNSUPPORTED = Status.UNSUPPORTED
UNKNOWN = Status.UNKNOWN
UNAVAILABLE = Status.UNAVAILABLE


@dataclass(frozen=True)
class Reason:
    """One reason a backend cannot (UNSUPPORTED) or may not (UNKNOWN) run a model.

    ``kind`` says what about the model: ``attribute``, ``rank``, ``dtype``, ``input``, ``all_fail``
    (no conformance case of the op passes), ``unseen`` (op never in the table), ``no_table``,
    ``opset``, ``ir``, ``domain``, ``op_unknown``, ``engine`` (the engine's own answer),
    ``measured``, ``diverges`` (first diverging node of a wrong run), ``unavailable`` or a
    backend rule's own word. ``evidence`` says what it rests on: plugins' rules are
    :attr:`Evidence.RULE` (the default); the table's reasons are predictions.
    """

    message: str
    kind: str = "rule"
    node: str | None = None
    op: str | None = None
    verdict: Status = UNSUPPORTED
    evidence: Evidence = Evidence.RULE

    def __post_init__(self) -> None:
        # Plugins may pass the words; keep the enums inside.
        object.__setattr__(self, "verdict", Status(self.verdict))
        object.__setattr__(self, "evidence", Evidence(self.evidence))
        # Engine text arrives with colour codes and other libraries' log lines (pnnx's ONNX
        # Runtime warnings): a reason is clean text wherever it is shown.
        object.__setattr__(self, "message", clean(str(self.message)))

    @property
    def decisive(self) -> bool:
        """Whether this reason refuses the backend on its own (a prediction never does)."""
        return self.verdict == UNSUPPORTED and self.evidence != Evidence.TABLE

    def as_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict.value, "evidence": self.evidence.value, "kind": self.kind,
                "node": self.node, "op": self.op, "message": self.message}

    def __str__(self) -> str:
        where = ""
        if self.node is not None or self.op is not None:
            where = f"node {self.node!r} ({self.op}): " if self.node else f"{self.op}: "
        return where + self.message


@dataclass
class Verdict:
    """Whether ``backend`` can run a model, which evidence decided it, and every reason.

    ``status`` is the final word: UNSUPPORTED only on decisive evidence (a rule, the engine's own
    answer, a measured run), SUPPORTED only when the engine was seen to run the model right (or,
    for the reference, when the engine itself accepts it), else UNKNOWN. ``prediction`` is what
    the op-support table alone says; ``decided_by`` the evidence behind ``status`` (``None`` when
    nothing decided). ``engine`` is the engine's own answer in one line, ``measured`` the
    measured outcome (see :func:`unirt.tools.capability_report.probe_summary`), when there are any.
    """

    backend: str
    status: Status
    reasons: list[Reason] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    engine_version: str | None = None
    table: str | None = None
    #: op key -> "supported" | "conditional" | "unsupported" | "unknown": the table's view of
    #: this model's ops.
    ops: dict[str, str] = field(default_factory=dict)
    prediction: Status = UNKNOWN
    decided_by: Evidence | None = None
    engine: str | None = None
    measured: dict[str, Any] | None = None
    #: The rewrites that address an op named by what refused the backend (see
    #: :func:`unirt.tools.capability_report.fixable_by`): what ``load`` tries on it.
    fixable_by: list[str] = field(default_factory=list)

    @property
    def supported(self) -> bool:
        return self.status == SUPPORTED

    @property
    def decisive(self) -> list[Reason]:
        """The reasons that refuse the backend on their own."""
        return [r for r in self.reasons if r.decisive]

    @property
    def predicted(self) -> list[Reason]:
        """The table's reasons (predictions): shown, measured, never a veto."""
        return [r for r in self.reasons if r.evidence == Evidence.TABLE]

    def as_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "status": self.status.value,
                "decided_by": None if self.decided_by is None else self.decided_by.value,
                "prediction": self.prediction.value, "engine": self.engine,
                "measured": self.measured, "engine_version": self.engine_version,
                "table": self.table, "reasons": [r.as_dict() for r in self.reasons],
                "notes": list(self.notes), "ops": dict(self.ops),
                "fixable_by": list(self.fixable_by)}

    def ordered_reasons(self) -> list[Reason]:
        """The deciding reasons first (strongest evidence first), then UNSUPPORTED predictions,
        then the rest: the reason that decided is never buried under doubts."""
        strength = {Evidence.MEASURED: 0, Evidence.ENGINE: 1, Evidence.RULE: 2,
                    Evidence.AVAILABILITY: 2, Evidence.TABLE: 3}

        def key(r: Reason) -> tuple[int, int, int]:
            return (0 if r.decisive else 1, 0 if r.verdict == UNSUPPORTED else 1,
                    strength[r.evidence])

        return sorted(self.reasons, key=key)

    def summary(self, most: int = 3) -> str:
        """The reasons on one line (the first ``most``, deciding ones first), as the route
        shows them."""
        ordered = self.ordered_reasons()
        shown = [_labelled(r) for r in ordered[:most]]
        more = len(ordered) - len(shown)
        return "; ".join(shown) + (f"; and {more} more (unirt capabilities)" if more > 0 else "")

    def __str__(self) -> str:
        how = f" (decided by {self.decided_by})" if self.decided_by else ""
        lines = [f"{self.backend}: {self.status}{how}; predicted {self.prediction}"]
        lines += [f"  - {_labelled(r)}" for r in self.ordered_reasons()]
        lines += [f"  ({n})" for n in self.notes]
        if self.fixable_by:
            lines.append(f"  fixable by rewrite: {', '.join(self.fixable_by)}")
        return "\n".join(lines)


def _labelled(r: Reason) -> str:
    """A reason with the evidence it rests on: ``predicted unsupported: ...`` for the table's."""
    if r.evidence == Evidence.TABLE:
        word = "predicted unsupported" if r.verdict == UNSUPPORTED else "doubt"
        return f"{word}: {r}"
    return str(r)


def combine(reasons: Iterable[Reason]) -> Status:
    """The table's prediction from its reasons: any UNSUPPORTED reason predicts UNSUPPORTED, else
    any UNKNOWN predicts UNKNOWN, else SUPPORTED."""
    verdicts = {r.verdict for r in reasons}
    if UNSUPPORTED in verdicts:
        return UNSUPPORTED
    if UNKNOWN in verdicts:
        return UNKNOWN
    return SUPPORTED
