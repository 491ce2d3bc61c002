"""RouteStep: one candidate backend considered while routing a model, and what happened to it.

The route is the answer to "why is this model running on that engine": every candidate in the
order tried, with its outcome and the reason. ``Session.route``, ``Session.explain()`` and
``unirt run --explain`` all show it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from unirt.words import Word


class RouteOutcome(Word):
    """What happened to one candidate. A ``str``, so JSON and comparisons see the word."""

    CHOSEN = "chosen"
    UNAVAILABLE = "unavailable"
    #: decisive static evidence: a backend rule, a node no engine of this kind runs
    UNSUPPORTED = "unsupported"
    FAILED = "failed"  # the engine refused or failed to open the model
    REJECTED = "rejected"  # verification saw it crash, hang, give wrong numbers, or not measure
    EXCLUDED = "excluded"
    NOT_TRIED = "not tried"  # a candidate after the chosen one
    SHAPE_FALLBACK = "shape fallback"  # the engine could not take an input shape at run time
    #: a background tuner found a verified backend faster by the margin and moved the session
    SWAPPED = "swapped"
    #: the model was rewritten before routing, by opt-in rewrites the caller named
    REWRITTEN = "rewritten"


CHOSEN = RouteOutcome.CHOSEN
UNAVAILABLE = RouteOutcome.UNAVAILABLE
UNSUPPORTED = RouteOutcome.UNSUPPORTED
FAILED = RouteOutcome.FAILED
REJECTED = RouteOutcome.REJECTED
EXCLUDED = RouteOutcome.EXCLUDED
NOT_TRIED = RouteOutcome.NOT_TRIED
SHAPE_FALLBACK = RouteOutcome.SHAPE_FALLBACK
SWAPPED = RouteOutcome.SWAPPED
REWRITTEN = RouteOutcome.REWRITTEN


@dataclass(frozen=True)
class RouteStep:
    backend: str
    outcome: RouteOutcome
    reason: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "outcome", RouteOutcome(self.outcome))

    def as_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "outcome": self.outcome.value, "reason": self.reason}

    def __str__(self) -> str:
        return f"{self.backend}: {self.outcome}" + (f" ({self.reason})" if self.reason else "")


def render_route(steps: tuple[RouteStep, ...] | list[RouteStep]) -> str:
    """The route as aligned text, one candidate a line."""
    if not steps:
        return "(no candidates)"
    width = max(len(s.backend) for s in steps)
    ow = max(len(s.outcome) for s in steps)
    lines = []
    for i, s in enumerate(steps, 1):
        line = f"{i}. {s.backend:<{width}}  {s.outcome:<{ow}}"
        if s.reason:
            line += f"  {s.reason}"
        lines.append(line.rstrip())
    return "\n".join(lines)
