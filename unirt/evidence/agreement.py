"""How far one backend's outputs are from the reference's, in the figures engineers quote.

One place for the error figures and the pass/fail rule, so that ``unirt compare``, the
verification before routing and ``unirt capabilities --probe`` all judge numbers the same way.

Outputs can be hundreds of MB; every figure is accumulated over pieces of :data:`CHUNK` elements
(cast to float64 one piece at a time), so judging one costs a few MB in the caller, not several
float64 copies of the whole output.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

#: (atol, rtol) per precision mode. ``exact`` is float32 arithmetic in another order than the
#: reference (a few ulps through a deep net); ``fast`` allows bf16/fp16 (8-11 bits of mantissa),
#: and its absolute part scales with the output's magnitude (see :func:`tolerance`).
TOLERANCES = {"exact": (1e-4, 1e-3), "fast": (2e-2, 5e-2)}

#: Elements per piece: the figures hold a few float64 buffers of this size (512 KB each), small
#: enough to stay in cache, large enough that the loop in Python costs nothing. The buffers are
#: reused from piece to piece: fresh ones would cost a page fault per 4 KB each time.
CHUNK = 1 << 16


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


#: An absolute or relative tolerance: one figure for every output, or per output name (an
#: output not named gets the mode's default).
Tolerance = float | Mapping[str, float] | None


def for_output(tol: Tolerance, name: str) -> float | None:
    """The figure ``tol`` gives output ``name``."""
    if tol is None or isinstance(tol, (int, float)):
        return tol
    return tol.get(name)


def tolerance(precision: str, reference: np.ndarray,
              atol: float | None = None, rtol: float | None = None) -> tuple[float, float]:
    """(atol, rtol) for an output: the user's figures, else the mode's defaults; in ``fast``
    mode the default absolute part is relative to the output's largest magnitude."""
    d_atol, d_rtol = TOLERANCES.get(precision, TOLERANCES["exact"])
    if atol is None:
        atol = d_atol
        if precision == "fast" and reference.size and reference.dtype.kind == "f":
            largest = _abs_max(np.asarray(reference), finite=True)
            if largest is not None:
                atol = max(d_atol, d_atol * largest)
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
    # max_rel counts only where |reference| is above a floor set by its largest magnitude: take
    # that from the reference alone first, so that one pass over both arrays does the rest.
    ref_max = _abs_max(r, finite=False) or 0.0
    s = _Sums(floor=max(ref_max * 1e-3, 1e-12))
    for fa, fr in _pieces(a, r):
        s.add(fa, fr)
    if s.ref_max != ref_max:  # NaN in ``actual`` hid the reference's largest value: recount
        s.max_rel, s.floor = 0.0, max(s.ref_max * 1e-3, 1e-12)
        for fa, fr in _pieces(a, r):
            s.add(fa, fr, rel_only=True)
    problem = None
    if s.nan_mismatch:
        problem = f"{s.extra_nan} NaN where the reference has none" if s.extra_nan else \
            "finite values where the reference has NaN"
    top1 = top5 = None
    if r.dtype.kind == "f" and r.ndim >= 1 and r.shape[-1] >= 2 and r.ndim <= 2:
        top1, top5 = _topk_agreement(a, r)
    return OutputDiff(name, s.max_abs, s.max_rel, s.sum_abs / s.count if s.count else 0.0,
                      s.cosine(), top1, top5, problem)


def within(actual: Any, reference: Any, atol: float, rtol: float) -> bool:
    """``|a - r| <= atol + rtol * |r|`` everywhere, NaNs where the reference has them."""
    a, r = np.asarray(actual), np.asarray(reference)
    if a.shape != r.shape:
        return False
    if a.dtype.kind in "OUSV" or r.dtype.kind in "OUSV":
        return bool(np.array_equal(a, r))
    if a.dtype.kind in "biu" and r.dtype.kind in "biu":  # labels, indices, masks: exact
        return all(np.array_equal(pa, pr) for pa, pr in _pieces(a, r, dtype=None))
    buf = _Buffers()
    for fa, fr in _pieces(a, r):
        # the formula of np.isclose alone first, in place; it decides when all is finite
        d, t, b = buf.take(fa.size)
        with np.errstate(invalid="ignore", over="ignore"):
            np.subtract(fa, fr, out=d)
            np.abs(d, out=d)
            np.abs(fr, out=t)
            t *= rtol
            t += atol
            if np.less_equal(d, t, out=b).all() and np.isfinite(fr, out=b).all():
                continue
        if not np.isclose(fa, fr, atol=atol, rtol=rtol, equal_nan=True).all():
            return False
    return True


@dataclass(frozen=True)
class NonfiniteCounts:
    """Where ``actual`` and ``reference`` differ in NaN/inf, counted element by element:
    ``hidden_nan`` / ``hidden_inf`` (finite where the reference has NaN / inf) of
    ``ref_nonfinite``; ``made`` (NaN or inf where the reference is finite); ``wrong_sign``
    (inf of the other sign); ``bad`` (finite in both, out of tolerance)."""

    hidden_nan: int
    hidden_inf: int
    ref_nonfinite: int
    made: int
    wrong_sign: int
    bad: int


def nonfinite_counts(actual: Any, reference: Any, atol: float, rtol: float) -> NonfiniteCounts:
    """Counts for an output computed on inputs with NaN/inf planted (same shape, numeric)."""
    a, r = np.asarray(actual), np.asarray(reference)
    # complex keeps NaN/inf in either part; the closeness of values is judged on the real part,
    # as in ``within``
    work = np.complex128 if "c" in (a.dtype.kind, r.dtype.kind) else np.float64
    n = dict.fromkeys(("hidden_nan", "hidden_inf", "ref_nonfinite", "made", "wrong_sign",
                       "bad"), 0)
    for pa, pr in _pieces(a, r, dtype=work):
        ref_nan, ref_inf = np.isnan(pr), np.isinf(pr)
        fin_a, fin_r = np.isfinite(pa), np.isfinite(pr)
        n["hidden_nan"] += int(np.count_nonzero(ref_nan & fin_a))
        n["hidden_inf"] += int(np.count_nonzero(ref_inf & fin_a))
        n["ref_nonfinite"] += int(np.count_nonzero(~fin_r))
        n["made"] += int(np.count_nonzero(fin_r & ~fin_a))
        n["wrong_sign"] += int(np.count_nonzero(ref_inf & np.isinf(pa) & (pa != pr)))
        keep = fin_a & fin_r
        ka, kr = pa[keep].real, pr[keep].real
        n["bad"] += int(np.count_nonzero(~np.isclose(ka, kr, atol=atol, rtol=rtol)))
    return NonfiniteCounts(**n)


# -- pieces -------------------------------------------------------------------------------------
def _pieces(*arrays: np.ndarray, dtype: Any = np.float64) -> Iterator[tuple[np.ndarray, ...]]:
    """Matching 1-D pieces of same-shape arrays, at most :data:`CHUNK` elements, cast to
    ``dtype`` (``None``: each its own) one piece at a time. The order is memory order (an
    elementwise figure needs no index), so a view, transposed or strided array is read in place;
    the pieces are read-only and overwritten by the next step."""
    it = np.nditer(arrays, flags=["external_loop", "buffered", "zerosize_ok"],
                   op_flags=[["readonly"]] * len(arrays),
                   op_dtypes=None if dtype is None else [dtype] * len(arrays),
                   casting="unsafe", buffersize=CHUNK, order="K")
    with it:
        for piece in it:
            p: Any = piece  # one array for one operand, else a tuple of them
            yield (p,) if len(arrays) == 1 else tuple(p)


class _Buffers:
    """Two float64 buffers and a flag buffer of one piece's size, reused for every piece."""

    def __init__(self) -> None:
        self.d, self.t = np.empty(CHUNK), np.empty(CHUNK)
        self.b = np.empty(CHUNK, bool)

    def take(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.d[:n], self.t[:n], self.b[:n]


def _abs_max(x: np.ndarray, finite: bool) -> float | None:
    """Largest ``|x|`` (as float64) over values not NaN (``finite``: not NaN nor inf); None when
    there is none. Floats are read in their own type (max and min are exact), others as
    float64, as the figures see them."""
    best: float | None = None
    for (p,) in _pieces(x, dtype=x.dtype if x.dtype.kind == "f" else np.float64):
        ok = np.isfinite(p) if finite else ~np.isnan(p)
        if not ok.all():
            p = p[ok]
        if p.size:
            m = max(float(p.max()), -float(p.min()))
            best = m if best is None else max(best, m)
    return best


class _Sums:
    """Running figures of :func:`diff` over float64 pieces of both arrays."""

    def __init__(self, floor: float) -> None:
        self.floor = floor  # max_rel counts where |reference| > floor
        self.max_abs = self.max_rel = self.sum_abs = self.ref_max = 0.0
        self.dot = self.aa = self.rr = 0.0
        self.count = self.extra_nan = 0
        self.nan_mismatch = False
        self.buf = _Buffers()

    def add(self, fa: np.ndarray, fr: np.ndarray, rel_only: bool = False) -> None:
        d, ref_abs, b = self.buf.take(fa.size)
        with np.errstate(invalid="ignore"):
            np.subtract(fa, fr, out=d)
        np.abs(d, out=d)
        if np.isnan(d, out=b).any():  # a NaN in either, or inf - inf
            fa, fr, d = self._both(fa, fr, d, b, note=not rel_only)
            ref_abs, b = ref_abs[:d.size], b[:d.size]
        if not d.size:
            return
        np.abs(fr, out=ref_abs)
        if not rel_only:
            self.count += d.size
            self.max_abs = max(self.max_abs, float(d.max()))
            self.sum_abs += float(d.sum())
            self.ref_max = max(self.ref_max, float(ref_abs.max()))
            with np.errstate(invalid="ignore", over="ignore"):
                self.dot += float(np.dot(fa, fr))
                self.aa += float(np.dot(fa, fa))
                self.rr += float(np.dot(fr, fr))
        # relative error where |reference| > floor; the rest count as 0, below any real figure
        np.greater(ref_abs, self.floor, out=b)
        if b.any():
            np.divide(d, ref_abs, out=d, where=b)
            np.copyto(d, 0.0, where=np.logical_not(b, out=b))
            self.max_rel = max(self.max_rel, float(d.max()))

    def _both(self, fa: np.ndarray, fr: np.ndarray, d: np.ndarray, odd: np.ndarray,
              note: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The values where neither is NaN, and ``|fa - fr|`` there (equal infinities: 0)."""
        nan_a, nan_r = np.isnan(fa), np.isnan(fr)
        if note:
            extra = int(np.count_nonzero(nan_a & ~nan_r))
            self.extra_nan += extra
            self.nan_mismatch |= bool(extra) or bool((nan_r & ~nan_a).any())
        both = ~(nan_a | nan_r)
        d[odd & both] = 0.0  # inf - inf: equal infinities are no error
        return fa[both], fr[both], d[both]

    def cosine(self) -> float | None:
        na, nb = float(np.sqrt(self.aa)), float(np.sqrt(self.rr))
        if na == 0.0 or nb == 0.0 or not np.isfinite(na) or not np.isfinite(nb):
            return None
        return float(self.dot / (na * nb))


# -- class scores -------------------------------------------------------------------------------
def _topk_agreement(a: np.ndarray, r: np.ndarray) -> tuple[float, float | None]:
    """Share of rows (of a 1-D or 2-D output) whose top-1 class agrees, and the mean share of
    the top 5 in common; rows are cast to float64 a few at a time."""
    a2, r2 = (a[np.newaxis], r[np.newaxis]) if r.ndim == 1 else (a, r)
    rows, cols = r2.shape
    five = cols >= 5
    hits1 = hits5 = 0
    if cols <= CHUNK:
        step = max(1, CHUNK // cols)
        for i in range(0, rows, step):
            fa, fr = a2[i:i + step].astype(np.float64), r2[i:i + step].astype(np.float64)
            hits1 += int(np.count_nonzero(fa.argmax(-1) == fr.argmax(-1)))
            if five:
                ka = np.argsort(-fa, axis=-1)[:, :5]
                kr = np.argsort(-fr, axis=-1)[:, :5]
                hits5 += int(np.count_nonzero(ka[:, :, None] == kr[:, None, :]))
    else:  # rows longer than a piece: each row's leaders, gathered piece by piece
        for i in range(rows):
            la, lr = _Leaders(), _Leaders()
            for c in range(0, cols, CHUNK):
                la.add(a2[i, c:c + CHUNK].astype(np.float64), c)
                lr.add(r2[i, c:c + CHUNK].astype(np.float64), c)
            hits1 += int(la.first == lr.first)
            hits5 += len(set(la.top) & set(lr.top))
    return hits1 / rows, hits5 / (5 * rows) if five else None


class _Leaders:
    """Index of the largest value (NaN first, as ``argmax``) and of the 5 largest (NaN last, as
    ``argsort(-x)``; ties to the lower index) of a row seen in pieces."""

    def __init__(self) -> None:
        self.first = -1
        self._best = 0.0
        self._top: list[tuple[bool, float, int]] = []  # (is NaN, -value, index), best first

    @property
    def top(self) -> list[int]:
        return [i for _, _, i in self._top]

    def add(self, x: np.ndarray, offset: int) -> None:
        j = int(x.argmax())
        v = float(x[j])
        if self.first < 0 or (not np.isnan(self._best) and (np.isnan(v) or v > self._best)):
            self.first, self._best = offset + j, v
        key = -x
        k = min(5, key.size)
        kth = np.partition(key, k - 1)[k - 1]
        if np.isnan(kth):  # fewer than k numbers: all of them, then the first NaNs
            nan = np.isnan(key)
            idx = np.concatenate([np.flatnonzero(~nan), np.flatnonzero(nan)])[:k]
        else:
            less = np.flatnonzero(key < kth)
            idx = np.concatenate([less, np.flatnonzero(key == kth)[:k - less.size]])
        cand = [(bool(np.isnan(key[j])), 0.0 if np.isnan(key[j]) else float(key[j]), offset + j)
                for j in idx.tolist()]
        self._top = sorted(self._top + cand)[:5]


# -- how much a comparison could see --------------------------------------------------------------
#: A value this close to the end of its activation's range (0/1 of a sigmoid, -1/1 of a tanh)
#: counts as saturated.
SATURATION_MARGIN = 0.05
#: The share of saturated values from which an output is called saturated.
SATURATED_SHARE = 0.99
#: Rows whose argmax is kept per output (a class-score output): enough to see that every input
#: got the same top class, bounded for a segmentation map of a million rows.
ARGMAX_ROWS = 4096


class _Spread:
    """Running figures of one output over the sets a verification ran."""

    __slots__ = ("count", "hi", "lo", "near01", "near_pm1", "probabilities", "rows", "tops")

    def __init__(self) -> None:
        self.count = 0
        self.lo, self.hi = np.inf, -np.inf
        self.near01 = self.near_pm1 = 0
        self.probabilities = True  # every row sums to 1 (a softmax): 0s are not saturation
        self.tops: set[int] = set()
        self.rows = 0


class OutputSpread:
    """What the reference's outputs looked like over the inputs a verification ran.

    Why: a comparison proves only what its inputs can show. Generated N(0,1) values drive a
    quantized model's sigmoid to 0.98 on every engine, so two engines 29% apart on real audio
    agree on them. When every value of an output sits at an end of a sigmoid or tanh, when an
    output is the same number everywhere, or when a classifier gives every input the same top
    class, "it matched" says little, and the verdict must say so (:meth:`degenerate`). Figures
    are accumulated piece by piece (:data:`CHUNK`), so a big output costs no copy."""

    def __init__(self) -> None:
        self._seen: dict[str, _Spread] = {}

    def add(self, name: str, value: Any) -> None:
        a = np.asarray(value)
        if a.dtype.kind != "f" or a.size == 0:
            return
        s = self._seen.setdefault(name, _Spread())
        s.count += int(a.size)
        for (p,) in _pieces(a):
            finite = p[np.isfinite(p)]
            if not finite.size:
                continue
            s.lo, s.hi = min(s.lo, float(finite.min())), max(s.hi, float(finite.max()))
            s.near01 += int(np.count_nonzero((finite <= SATURATION_MARGIN)
                                             | (finite >= 1 - SATURATION_MARGIN)))
            s.near_pm1 += int(np.count_nonzero(np.abs(finite) >= 1 - SATURATION_MARGIN))
        if a.ndim >= 2 and a.shape[-1] >= 2:
            rows = a.reshape(-1, a.shape[-1])[:ARGMAX_ROWS]
            s.rows += len(rows)
            if s.probabilities:
                sums = rows.astype(np.float64).sum(axis=-1)
                s.probabilities = bool(np.all(np.abs(sums - 1) < 1e-3)) and rows.min() >= 0
            s.tops.update(int(t) for t in np.unique(np.argmax(rows, axis=-1)))
        else:
            s.probabilities = False
            s.tops.add(-1)  # not a class-score output: never "the same top class"

    def degenerate(self) -> str:
        """``outputs saturated (y: 100% of values within 0.05 of 0 or 1)``, one clause per
        output whose figures could not show a difference; empty when every output varied."""
        notes: list[str] = []
        for name, s in self._seen.items():
            if not s.count or s.lo > s.hi:
                continue
            if s.lo == s.hi and s.count >= 2:
                notes.append(f"{name} is {s.lo:.4g} everywhere")
            elif s.lo >= 0 and s.hi <= 1 and not s.probabilities and \
                    s.near01 >= SATURATED_SHARE * s.count:
                notes.append(f"{name} saturated ({100 * s.near01 / s.count:.0f}% of values within "
                             f"{SATURATION_MARGIN} of 0 or 1)")
            elif -1 <= s.lo < 0 and s.hi <= 1 and s.near_pm1 >= SATURATED_SHARE * s.count:
                notes.append(f"{name} saturated ({100 * s.near_pm1 / s.count:.0f}% of values "
                             f"within {SATURATION_MARGIN} of -1 or 1)")
            elif len(s.tops) == 1 and -1 not in s.tops and s.rows >= 2:
                notes.append(f"{name} gives every input the same top class ({next(iter(s.tops))})")
        return "; ".join(notes)
