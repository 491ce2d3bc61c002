"""How far one backend's outputs are from the reference's, in the figures engineers quote.

One place for the error figures and the pass/fail rule, so that ``unirt compare``, the
verification before routing and ``unirt capabilities --probe`` all judge numbers the same way.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

#: (atol, rtol) per precision mode. ``exact`` is float32 arithmetic in another order than the
#: reference (a few ulps through a deep net); ``fast`` allows bf16/fp16 (8-11 bits of mantissa),
#: and its absolute part scales with the output's magnitude (see :func:`tolerance`).
TOLERANCES = {"exact": (1e-4, 1e-3), "fast": (2e-2, 5e-2)}


@dataclass(frozen=True)
class OutputDiff:
    """Differences of one output: ``max_abs``, ``max_rel`` (relative to ``|reference|``,
    where it is not tiny), ``mean_abs``, ``cosine`` similarity, and for class-score outputs
    (float, last axis >= 2) the top-1 / top-5 agreement over rows. ``problem`` is set when the
    output cannot be compared at all (shape or dtype mismatch, NaN where the reference has none)."""

    name: str
    max_abs: float
    max_rel: float
    mean_abs: float
    cosine: float | None
    top1: float | None = None
    top5: float | None = None
    problem: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def tolerance(precision: str, reference: np.ndarray,
              atol: float | None = None, rtol: float | None = None) -> tuple[float, float]:
    """(atol, rtol) for an output: the user's figures, else the mode's defaults; in ``fast``
    mode the default absolute part is relative to the output's largest magnitude."""
    d_atol, d_rtol = TOLERANCES.get(precision, TOLERANCES["exact"])
    if atol is None:
        atol = d_atol
        if precision == "fast" and reference.size and reference.dtype.kind == "f":
            finite = np.abs(reference[np.isfinite(reference)])
            if finite.size:
                atol = max(d_atol, d_atol * float(finite.max()))
    return atol, d_rtol if rtol is None else rtol


def diff(name: str, actual: Any, reference: Any) -> OutputDiff:
    """Compare one output with the reference."""
    a = np.asarray(actual)
    r = np.asarray(reference)
    if a.shape != r.shape:
        return OutputDiff(name, float("inf"), float("inf"), float("inf"), None,
                          problem=f"shape {list(a.shape)} != reference {list(r.shape)}")
    if a.dtype.kind in "OUSV" or r.dtype.kind in "OUSV":
        equal = bool(np.array_equal(a, r))
        err = 0.0 if equal else float("inf")
        return OutputDiff(name, err, err, err, None,
                          problem=None if equal else "non-numeric values differ")
    if a.size == 0:
        return OutputDiff(name, 0.0, 0.0, 0.0, None)
    af = a.astype(np.float64)
    rf = r.astype(np.float64)
    nan_a, nan_r = np.isnan(af), np.isnan(rf)
    problem = None
    if (nan_a != nan_r).any():
        problem = f"{int((nan_a & ~nan_r).sum())} NaN where the reference has none" if (
            nan_a & ~nan_r).any() else "finite values where the reference has NaN"
    both = ~(nan_a | nan_r)
    d = np.abs(af - rf)[both]
    same_inf = (af == rf)[both]  # inf - inf is nan; equal infinities are no error
    d = np.where(same_inf, 0.0, d)
    max_abs = float(d.max()) if d.size else 0.0
    mean_abs = float(d.mean()) if d.size else 0.0
    ref_abs = np.abs(rf[both])
    floor = max(float(ref_abs.max()) * 1e-3, 1e-12) if ref_abs.size else 1e-12
    big = ref_abs > floor
    max_rel = float((d[big] / ref_abs[big]).max()) if big.any() else 0.0
    cosine = _cosine(af[both], rf[both])
    top1 = top5 = None
    if r.dtype.kind == "f" and r.ndim >= 1 and r.shape[-1] >= 2 and r.ndim <= 2:
        top1, top5 = _topk_agreement(af.reshape(-1, r.shape[-1]), rf.reshape(-1, r.shape[-1]))
    return OutputDiff(name, max_abs, max_rel, mean_abs, cosine, top1, top5, problem)


def _cosine(a: np.ndarray, b: np.ndarray) -> float | None:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 or nb == 0.0 or not np.isfinite(na) or not np.isfinite(nb):
        return None
    return float(np.dot(a.ravel(), b.ravel()) / (na * nb))


def _topk_agreement(a: np.ndarray, r: np.ndarray) -> tuple[float, float | None]:
    top1 = float((a.argmax(-1) == r.argmax(-1)).mean())
    if r.shape[-1] < 5:
        return top1, None
    ka = np.argsort(-a, axis=-1)[:, :5]
    kr = np.argsort(-r, axis=-1)[:, :5]
    overlap = [len(set(x) & set(y)) / 5 for x, y in zip(ka, kr)]
    return top1, float(np.mean(overlap))


def within(actual: Any, reference: Any, atol: float, rtol: float) -> bool:
    """``|a - r| <= atol + rtol * |r|`` everywhere, NaNs where the reference has them."""
    a, r = np.asarray(actual), np.asarray(reference)
    if a.shape != r.shape:
        return False
    if a.dtype.kind in "OUSV" or r.dtype.kind in "OUSV":
        return bool(np.array_equal(a, r))
    if a.dtype.kind in "biu" and r.dtype.kind in "biu":  # labels, indices, masks: exact
        return bool(np.array_equal(a, r))
    return bool(np.allclose(a.astype(np.float64), r.astype(np.float64), atol=atol, rtol=rtol,
                            equal_nan=True))
