"""A traced size baked into a constant Reshape shape, freed again (opt-in).

``torch.onnx.export(..., dynamic_axes=...)`` declares a dim dynamic ('T'), but a ``view`` whose
shape was computed from Python ints during tracing is exported as a constant: Reshape(x,
[1, 16, 4]) where x is [1, 'T', 4]. The model then runs at T=16 only, on every engine.
:func:`baked_reshapes` finds such Reshapes (``unirt lint`` reports them); :class:`UnbakeReshape`
replaces the one baked entry with 0 (the dim stays in place) or -1 (it is merged with static
neighbours). It is opt-in because it changes what the model computes at sizes never traced: it
reproduces what a correct export would give, which only a human can confirm.

A Reshape counts as baked when its data has exactly one symbolic dim (one a graph input
declares), its shape is a constant with no -1 and no 0 that copies that dim, and the element
count fixes the traced size. The entry is safe to free when the entries before it split only
dims before the symbolic one and the entries after it only dims after it (so the symbolic dim
lies wholly inside it). Shapes with -1, or computed through a Shape op, are never reported.

A baked Reshape hides the next one: downstream of it the shapes are static, so a second Reshape
baking the same size looks like any other ([1, 16, 2, 4] then [1, 16, 8]). Un-baking therefore
repeats (detect, fix, infer shapes again) until nothing more is found, and :func:`all_baked`
lists the hidden ones by doing the same on a copy.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from unirt.plugin.rewrite import Change, Rewrite, RewriteContext
from unirt.rewrite.graph import (
    Dim,
    Names,
    add_constant,
    constant,
    dims_of,
    drop_unused,
    reinfer,
    shapes,
)

if TYPE_CHECKING:  # pragma: no cover - registering the built-ins imports no onnx
    import onnx

log = logging.getLogger(__name__)

#: At most this many rounds of detect-and-fix: each round frees at least one Reshape, so a
#: chain longer than this in one model is left partly baked (and said so by the next lint).
MAX_ROUNDS = 32


@dataclass(frozen=True)
class BakedDim:
    """One Reshape that pins a declared-dynamic dim to its traced size.

    ``input``/``dim``/``dim_param``: the graph input dim declared dynamic. ``node``: the
    Reshape's name; ``shape``: its constant shape input. ``index``: the entry of that constant
    holding the traced size (None when it is spread over several entries), ``value``: that
    entry (the traced size itself when ``index`` is None), ``traced``: the traced size of the
    dim. ``fix``: what un-baking writes at ``index`` (0 or -1), None when it is not safe.
    ``after``: the baked Reshapes that hid this one (it shows once they are un-baked).
    """

    input: str
    dim: int
    dim_param: str
    node: str
    shape: str
    index: int | None
    value: int
    traced: int
    fix: int | None
    after: tuple[str, ...] = ()

    def __str__(self) -> str:
        where = (f"bakes {self.value} (entry {self.index} of its shape)"
                 if self.index is not None else f"bakes {self.traced} across its shape entries")
        return (f"input '{self.input}' dim {self.dim} is declared dynamic ('{self.dim_param}') "
                f"but Reshape '{self.node}' {where}")


def _declared_symbols(graph: onnx.GraphProto) -> dict[str, tuple[str, int]]:
    """Each dim_param a graph input declares, to (input, dim) where it first appears."""
    found: dict[str, tuple[str, int]] = {}
    for vi in graph.input:
        for k, d in enumerate(dims_of(vi) or []):
            if isinstance(d, str):
                found.setdefault(d, (vi.name, k))
    return found


def _analyse(node: onnx.NodeProto, data: list[Dim], shape: list[int],
             symbols: dict[str, tuple[str, int]], shape_name: str) -> BakedDim | None:
    allowzero = any(a.name == "allowzero" and a.i for a in node.attribute)
    if -1 in shape or (allowzero and 0 in shape) or any(s < 0 for s in shape):
        return None
    dynamic = [k for k, d in enumerate(data) if not isinstance(d, int)]
    copied = {k for k, s in enumerate(shape) if s == 0}
    if any(k >= len(data) for k in copied):
        return None
    free = [k for k in dynamic if k not in copied]
    if len(free) != 1 or any(data[k] is None for k in free):
        return None
    pos = free[0]
    sym = data[pos]
    if not isinstance(sym, str) or sym not in symbols:
        return None
    if any(not isinstance(data[k], int) for k in copied if k >= pos):
        return None  # a copied dynamic dim after the free one: too tangled to say
    # Copied dims stand for themselves on both sides: count a symbolic one as 1.
    sizes = [d if isinstance(d, int) else 1 for d in data]
    eff = [sizes[k] if s == 0 else s for k, s in enumerate(shape)]
    before, after = math.prod(sizes[:pos]), math.prod(sizes[pos + 1:])
    total = math.prod(eff)
    if before * after == 0 or total % (before * after):
        return None
    traced = total // (before * after)
    if traced < 1:
        return None
    name = node.name or node.output[0]
    inp, dim = symbols[sym]
    safe = [j for j in range(len(eff)) if shape[j] != 0 and eff[j] % traced == 0
            and before % math.prod(eff[:j]) == 0 and after % math.prod(eff[j + 1:]) == 0]
    if len(safe) != 1:
        return BakedDim(inp, dim, sym, name, shape_name, None, traced, traced, None)
    j = safe[0]
    in_place = j == pos and eff[j] == traced and eff[:j] == sizes[:j]
    return BakedDim(inp, dim, sym, name, shape_name, j, shape[j], traced, 0 if in_place else -1)


def baked_reshapes(model: onnx.ModelProto) -> list[BakedDim]:
    """The Reshapes of ``model``'s top-level graph whose constant shape bakes the traced size of
    a declared-dynamic input dim, in node order."""
    graph = model.graph
    if not any(n.op_type == "Reshape" for n in graph.node):
        return []
    symbols = _declared_symbols(graph)
    if not symbols:
        return []
    dims = shapes(model)
    found: list[BakedDim] = []
    for node in graph.node:
        if node.op_type != "Reshape" or len(node.input) < 2:
            continue
        value = constant(graph, node.input[1])
        data = dims.get(node.input[0])
        if value is None or data is None or value.ndim != 1:
            continue
        baked = _analyse(node, data, [int(v) for v in value.tolist()], symbols, node.input[1])
        if baked is not None:
            found.append(baked)
    return found


def _fixable(found: list[BakedDim]) -> list[BakedDim]:
    return [b for b in found if b.fix is not None and b.index is not None]


def _unbake(model: onnx.ModelProto, todo: list[BakedDim]) -> list[Change]:
    """Free each of ``todo`` (fixable ones) in place and infer shapes again."""
    import numpy as np

    graph = model.graph
    by_name = {(n.name or n.output[0]): n for n in graph.node}
    changes: list[Change] = []
    fresh = Names(graph)
    for b in todo:
        node = by_name[b.node]
        old = constant(graph, b.shape)
        assert old is not None and b.index is not None and b.fix is not None
        new = np.array(old, np.int64).reshape(-1)
        new[b.index] = b.fix
        node.input[1] = add_constant(graph, fresh, f"{b.node}/unbaked_shape", new)
        changes.append(Change(b.node, "Reshape",
                              f"shape {old.tolist()} -> {new.tolist()}: entry {b.index} baked "
                              f"the traced size {b.traced} of '{b.input}' dim {b.dim} "
                              f"('{b.dim_param}')"))
    drop_unused(graph, [b.shape for b in todo])
    reinfer(model, relax_outputs=True)
    return changes


def unbake_all(model: onnx.ModelProto) -> tuple[list[Change], list[BakedDim]]:
    """Un-bake ``model`` in place until no fixable baked Reshape is left (at most
    :data:`MAX_ROUNDS` rounds): (the changes, every baked Reshape seen, each with the ones that
    hid it in ``after``)."""
    changes: list[Change] = []
    seen: list[BakedDim] = []
    freed: list[str] = []
    for _ in range(MAX_ROUNDS):
        known = {b.node for b in seen}
        found = [replace(b, after=tuple(freed)) for b in baked_reshapes(model)
                 if b.node not in known]
        seen += found
        todo = _fixable(found)
        if not todo:
            break
        changes += _unbake(model, todo)
        freed += [b.node for b in todo]
    return changes, seen


def all_baked(model: onnx.ModelProto) -> list[BakedDim]:
    """Every baked Reshape of ``model``, the ones a baked Reshape upstream hides included (found
    on a copy with the earlier ones un-baked; ``model`` is not touched)."""
    import onnx

    first = baked_reshapes(model)
    if not _fixable(first):
        return first
    work = onnx.ModelProto()
    work.CopyFrom(model)
    return unbake_all(work)[1]


class UnbakeReshape(Rewrite):
    name = "unbake_reshape"
    summary = "a traced size baked into a constant Reshape shape freed as 0/-1"
    ops = frozenset({"Reshape"})
    opt_in = True
    version = 2  # 2: repeats until no baked Reshape is left (one hid the next)

    def traced_sizes(self, model: onnx.ModelProto) -> dict[str, dict[int, int]]:
        sizes: dict[str, dict[int, int]] = {}
        for b in all_baked(model):
            if b.fix is not None:
                sizes.setdefault(b.input, {})[b.dim] = b.traced
        return sizes

    def apply(self, model: onnx.ModelProto, context: RewriteContext) -> list[Change]:
        return unbake_all(model)[0]
