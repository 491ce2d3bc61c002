"""The rewrite contract: one class per repair, found through the ``register_rewrites`` hook.

Deployment write-ups are lists of hand edits that made a model fit an engine (a pooling node of
the wrong kernel rank wrapped in Unsqueeze/Squeeze, ReLU6 as a plain Clip, YOLOv5's strided
"Focus" slices as Reshape/Transpose). A :class:`Rewrite` is one such edit, written once. It only
transforms; whether the result is right is never its own claim: unirt runs the rewritten model in
a child process and compares it with the reference on the original before anything uses it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:  # pragma: no cover
    import onnx


#: ``Change.node`` for an edit of the graph as a whole (folding, opset conversion).
GRAPH = "graph"


@dataclass(frozen=True)
class Change:
    """One edit, as the user reads it: ``node`` (its name, or :data:`GRAPH`), its ``op`` type
    and ``what`` was done ("kernel [2,2,2] on a rank-4 input: wrapped in
    Unsqueeze/MaxPool/Squeeze"). A graph-wide ``what`` reads alone ("2 initializers -> 1"): it
    prints as ``2 initializers -> 1 (graph)``, ``op`` being only the kind of thing counted."""

    node: str
    op: str
    what: str

    def __str__(self) -> str:
        if self.node == GRAPH:
            return f"{self.what} ({GRAPH})"
        return f"{self.op} '{self.node}': {self.what}"


@dataclass(frozen=True)
class RewriteContext:
    """What a rewrite may need to know beyond the graph.

    ``backend``: the engine the model is being fitted to (None: any engine).
    ``input_shapes``: the sizes the user gave for dynamic dims (``load(input_shapes=)``,
    ``--shape``); a rewrite that needs fixed shapes (pinning dims, constant Resize scales)
    applies only when every dim it depends on is known.
    ``opset``: the highest default-domain opset the target engine loads, when known.
    ``options``: per-rewrite settings from the user, by rewrite name.
    """

    backend: str | None = None
    input_shapes: Mapping[str, Sequence[int]] = field(default_factory=dict)
    opset: int | None = None
    options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


class Rewrite(ABC):
    """One repair. Subclasses set the class attributes and implement :meth:`apply`.

    ``name``: short id used in ``load(rewrite=[...])`` and on the route ("pool_rank").
    ``summary``: one line for ``unirt rewrite --list`` and docs/rewrites.md.
    ``ops``: op types whose problems it addresses; a backend refusing (or predicted to refuse)
    one of these makes the rewrite a candidate. Empty: it addresses the graph as a whole
    (folding, opset conversion).
    ``backends``: the backends it is meant for; None: any.
    ``opt_in``: applied only when named explicitly (it changes what the model means for inputs
    the exporter never traced, as un-baking a traced Reshape size does).
    ``version``: bumped when what :meth:`apply` writes changes, so that a rewritten model cached
    by an older version is not reused.
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    ops: ClassVar[frozenset[str]] = frozenset()
    backends: ClassVar[frozenset[str] | None] = None
    opt_in: ClassVar[bool] = False
    version: ClassVar[int] = 1

    def traced_sizes(self, model: onnx.ModelProto) -> Mapping[str, Mapping[int, int]]:
        """Input dims at which the *original* model is known to run (input -> dim -> size), for
        a rewrite that changes what the model accepts (un-baking a traced size): its verification
        must compare where the original runs, not at sizes only the rewritten model takes.
        Empty (the default): any size will do."""
        return {}

    @abstractmethod
    def apply(self, model: onnx.ModelProto, context: RewriteContext) -> list[Change]:
        """Edit ``model`` in place; return the changes made, ``[]`` when nothing applied (the
        model must then be left untouched). Raise nothing for a model it does not fit; a bug
        that raises is reported as this rewrite failing, never as the model's problem."""
