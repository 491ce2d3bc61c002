"""The error figures are accumulated piece by piece: same figures as the plain
whole-array formulas, in memory that does not grow with the output.

The plain formulas below are the implementation before the change, kept as the oracle; the
module's piece size is made tiny so that every piece boundary (and a short last piece) is
crossed by arrays of a few dozen values.
"""

from __future__ import annotations

import math
import tracemalloc
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from unirt.evidence import agreement as metrics
from unirt.evidence.agreement import OutputDiff, diff, nonfinite_counts, tolerance, within


# -- the oracle: whole-array formulas ---------------------------------------------------------
def _plain_diff(name: str, actual: Any, reference: Any, stable: bool = False) -> OutputDiff:
    a, r = np.asarray(actual), np.asarray(reference)
    if a.size == 0:
        return OutputDiff(name, 0.0, 0.0, 0.0, None)
    af, rf = a.astype(np.float64), r.astype(np.float64)
    nan_a, nan_r = np.isnan(af), np.isnan(rf)
    problem = None
    if (nan_a != nan_r).any():
        problem = f"{int((nan_a & ~nan_r).sum())} NaN where the reference has none" if (
            nan_a & ~nan_r).any() else "finite values where the reference has NaN"
    both = ~(nan_a | nan_r)
    with np.errstate(invalid="ignore"):
        d = np.abs(af - rf)[both]
    d = np.where((af == rf)[both], 0.0, d)
    ref_abs = np.abs(rf[both])
    floor = max(float(ref_abs.max()) * 1e-3, 1e-12) if ref_abs.size else 1e-12
    big = ref_abs > floor
    cosine = None
    na, nb = float(np.linalg.norm(af[both])), float(np.linalg.norm(rf[both]))
    if na and nb and math.isfinite(na) and math.isfinite(nb):
        cosine = float(np.dot(af[both], rf[both]) / (na * nb))
    top1 = top5 = None
    if r.dtype.kind == "f" and 1 <= r.ndim <= 2 and r.shape[-1] >= 2:
        a2, r2 = af.reshape(-1, r.shape[-1]), rf.reshape(-1, r.shape[-1])
        top1 = float((a2.argmax(-1) == r2.argmax(-1)).mean())
        if r.shape[-1] >= 5:
            kind = "stable" if stable else None
            ka = np.argsort(-a2, axis=-1, kind=kind)[:, :5]
            kr = np.argsort(-r2, axis=-1, kind=kind)[:, :5]
            top5 = float(np.mean([len(set(x) & set(y)) / 5 for x, y in zip(ka, kr)]))
    return OutputDiff(name, float(d.max()) if d.size else 0.0,
                      float((d[big] / ref_abs[big]).max()) if big.any() else 0.0,
                      float(d.mean()) if d.size else 0.0, cosine, top1, top5, problem)


def _plain_within(a: np.ndarray, r: np.ndarray, atol: float, rtol: float) -> bool:
    if a.dtype.kind in "biu" and r.dtype.kind in "biu":
        return bool(np.array_equal(a, r))
    return bool(np.allclose(a.astype(np.float64), r.astype(np.float64), atol=atol, rtol=rtol,
                            equal_nan=True))


def _plain_fast_atol(r: np.ndarray) -> float:
    finite = np.abs(r[np.isfinite(r)])
    return max(2e-2, 2e-2 * float(finite.max())) if finite.size else 2e-2


def _same(x: float | None, y: float | None, rel: float = 0.0) -> bool:
    if x is None or y is None:
        return x is y
    return x == y or (math.isnan(x) and math.isnan(y)) or math.isclose(x, y, rel_tol=rel)


def _assert_same(got: OutputDiff, want: OutputDiff) -> None:
    for field in ("max_abs", "max_rel", "top1", "problem"):
        assert getattr(got, field) == getattr(want, field), (field, got, want)
    # sums of float64 in pieces (top5: of whole overlaps, then one division): equal up to the
    # order of summation
    for field in ("mean_abs", "cosine", "top5"):
        assert _same(getattr(got, field), getattr(want, field), 1e-12), (field, got, want)


# -- cases --------------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def _tiny_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics, "CHUNK", 7)


def _noisy(shape: tuple[int, ...], seed: int, dtype: Any = np.float32) -> tuple[Any, Any]:
    rng = np.random.default_rng(seed)
    r = rng.standard_normal(shape).astype(dtype)
    return (r + rng.standard_normal(shape) * 0.01).astype(dtype), r


def _with_nonfinite(a: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, r = a.copy(), r.copy()
    a.flat[0] = np.nan                      # NaN where the reference has none
    r.flat[1] = np.nan                      # a number where the reference has NaN
    a.flat[2] = r.flat[2] = np.inf          # equal infinities: no error
    a.flat[3], r.flat[3] = np.inf, -np.inf  # opposite infinities
    a.flat[9] = r.flat[9] = np.nan          # NaN in both
    r.flat[12] = 50.0                       # the reference's largest, finite in both
    return a, r


def _cases() -> Iterator[tuple[str, Any, Any]]:
    for shape in [(), (1,), (5,), (7,), (8,), (3, 11), (13, 6), (9, 3), (2, 3, 5), (1, 40)]:
        a, r = _noisy(shape, len(shape) + sum(shape))
        yield f"{shape}", a, r
        yield f"{shape} int", np.rint(a * 3).astype(np.int32), np.rint(r * 3).astype(np.int64)
        yield f"{shape} bool/float", a > 0, r
        yield f"{shape} float/bool", a, r > 0
        if a.size >= 13:
            na, nr = _with_nonfinite(a, r)
            yield f"{shape} NaN/inf", na, nr
            yield f"{shape} NaN/inf swapped", nr, na
            hide = na.copy()
            hide.flat[12] = np.nan  # NaN in the actual hides the reference's largest value
            yield f"{shape} NaN hides max", hide, nr
            only_ref = a.copy()
            only_ref.flat[1] = 3.0
            yield f"{shape} finite where ref NaN", only_ref, np.where(
                np.arange(r.size).reshape(r.shape) == 1, np.float32(np.nan), r)
    a, r = _noisy((6, 8, 5), 3, np.float64)
    yield "strided", a[:, ::3, ::-1], r[:, ::3, ::-1]
    yield "transposed", a.T, r.T
    yield "mixed layouts", np.asfortranarray(a), r
    yield "float16", a.astype(np.float16), r.astype(np.float16)
    yield "column of a matrix", a[:, 2, :], r[:, 2, :]  # 2-D class scores, not contiguous
    yield "all NaN", np.full((3, 4), np.nan), np.full((3, 4), np.nan)
    yield "actual all NaN", np.full((3, 4), np.nan), r[:3, :4, 0]
    yield "zeros", np.zeros((4, 5)), np.zeros((4, 5))
    yield "only infinities", np.full(9, np.inf), np.full(9, np.inf)
    yield "empty", np.zeros((0, 4), np.float32), np.zeros((0, 4), np.float32)
    yield "empty rows", np.zeros((4, 0), np.float32), np.zeros((4, 0), np.float32)


CASES = list(_cases())


@pytest.mark.parametrize("label,a,r", CASES, ids=[c[0] for c in CASES])
def test_pieces_give_the_whole_array_figures(label: str, a: Any, r: Any) -> None:
    # rows longer than a piece break ties by the lower index, as a stable sort does; rows of
    # random floats have no ties, but bools and ints do
    stable = np.ndim(r) >= 1 and np.shape(r)[-1] > metrics.CHUNK
    _assert_same(diff("y", a, r), _plain_diff("y", a, r, stable=stable))
    for tol in ((0.0, 0.0), (1e-4, 1e-3), (2e-2, 5e-2), (1.0, 0.0)):
        assert within(a, r, *tol) == _plain_within(np.asarray(a), np.asarray(r), *tol), tol
    r = np.asarray(r)
    if r.dtype.kind == "f" and r.size:
        assert tolerance("fast", r) == (_plain_fast_atol(r), 5e-2)
    assert tolerance("exact", r) == (1e-4, 1e-3)


def test_long_rows_break_ties_by_the_lower_index() -> None:
    # rows of 23 > 7 values: top-1 / top-5 gathered piece by piece
    rng = np.random.default_rng(5)
    r = rng.integers(0, 4, (6, 23)).astype(np.float32)  # many ties
    a = rng.integers(0, 4, (6, 23)).astype(np.float32)
    a[0, 3] = a[1, 20] = r[2, 8] = np.nan  # argmax takes the first NaN; top-5 puts NaN last
    for x, y in ((a, r), (r, r), (a[:, ::-1], r[:, ::-1]), (a[0], r[1])):
        got, want = diff("y", x, y), _plain_diff("y", x, y, stable=True)
        assert (got.top1, got.top5) == (want.top1, want.top5)
    few = np.full(23, np.nan, np.float32)
    few[[4, 17]] = [1.0, 2.0]  # fewer than 5 numbers: the numbers, then the first NaNs
    got, want = diff("y", few, few[::-1].copy()), _plain_diff("y", few, few[::-1], stable=True)
    assert (got.top1, got.top5) == (want.top1, want.top5)


def test_rows_that_fit_keep_the_sort_of_the_whole_array() -> None:
    # a row fits a piece: the same argsort as before, ties included
    a = np.array([[1.0, 1.0, 1.0, 0.0, 1.0, 1.0]] * 5, np.float32)
    r = np.array([[1.0, 0.0, 1.0, 1.0, 1.0, 1.0]] * 5, np.float32)
    _assert_same(diff("y", a, r), _plain_diff("y", a, r))


def test_the_strings_and_shapes_that_cannot_be_compared() -> None:
    s = np.array(["a", "b"])
    assert diff("y", s, s).problem is None and within(s, s, 0, 0)
    assert diff("y", s, np.array(["a", "c"])).problem == "non-numeric values differ"
    assert not within(np.zeros(3), np.zeros(4), 1, 1)
    assert diff("y", np.zeros(3), np.zeros(4)).problem == "shape [3] != reference [4]"


def test_nonfinite_counts_match_the_masks() -> None:
    rng = np.random.default_rng(2)
    r = rng.standard_normal((5, 9))
    a = r + rng.standard_normal((5, 9)) * 1e-6
    r[0, :3] = [np.nan, np.inf, -np.inf]
    a[0, :3] = [0.0, 1.0, -np.inf]      # hides a NaN and an inf, keeps one inf
    r[1, 0], a[1, 0] = np.inf, -np.inf  # the other sign
    a[2, 2], a[3, 3] = np.nan, np.inf   # made
    a[4, 4] += 1.0                      # out of tolerance
    for x, y in ((a, r), (a.T, r.T), (a.astype(np.float32), r), (a[:, ::2], r[:, ::2])):
        n = nonfinite_counts(x, y, 1e-4, 1e-3)
        fa, fr = np.isfinite(x), np.isfinite(y)
        keep = fa & fr
        assert n.hidden_nan == int((np.isnan(y) & fa).sum())
        assert n.hidden_inf == int((np.isinf(y) & fa).sum())
        assert n.ref_nonfinite == int((~fr).sum())
        assert n.made == int((fr & ~fa).sum())
        assert n.wrong_sign == int((np.isinf(y) & np.isinf(x) & (x != y)).sum())
        assert n.bad == int((~np.isclose(x[keep], y[keep], atol=1e-4, rtol=1e-3)).sum())
    n = nonfinite_counts(a, r, 1e-4, 1e-3)
    assert (n.hidden_nan, n.hidden_inf, n.ref_nonfinite, n.made, n.wrong_sign, n.bad) == (
        1, 1, 4, 2, 1, 1)
    ints = nonfinite_counts(np.array([1, 2, 3]), np.array([1.0, np.nan, 3.5]), 0.1, 0.0)
    assert (ints.hidden_nan, ints.bad) == (1, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", np.exceptions.ComplexWarning)
        c = nonfinite_counts(np.array([1 + 1j, np.nan]), np.array([1.0, complex(1, np.inf)]),
                             0.1, 0.0)
    assert (c.hidden_inf, c.made, c.bad) == (0, 0, 0)  # imaginary parts count for NaN/inf


# -- memory ---------------------------------------------------------------------------------------
def _peak(fn: Any) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_judging_a_large_output_takes_bounded_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics, "CHUNK", 1 << 16)  # the module's own piece size
    rng = np.random.default_rng(0)
    r = rng.standard_normal((50, 1 << 18), dtype=np.float32)  # 52 MB, 50 rows of class scores
    a = r + np.float32(1e-5)
    a[7, 9] = r[7, 9] + 1.0
    limit = r.nbytes // 8  # before the change: 2x (tolerance) to 15x (diff) one output
    got: dict[str, Any] = {}
    assert _peak(lambda: got.update(d=diff("y", a, r))) < limit
    assert _peak(lambda: got.update(w=within(a, r, 1e-4, 1e-3))) < limit
    assert _peak(lambda: got.update(t=tolerance("fast", r))) < limit
    strided = a[:, ::2]  # not contiguous: read in place, not copied
    assert _peak(lambda: got.update(s=diff("y", strided, r[:, ::2]))) < limit
    d = got["d"]
    assert d.max_abs == pytest.approx(1.0, rel=1e-5) and d.problem is None
    assert d.top1 >= 0.98 and d.top5 >= 0.98 and d.cosine == pytest.approx(1.0, abs=1e-6)
    assert got["w"] is False and got["t"][0] == _plain_fast_atol(r)
