"""The backend test-kit: contract tests every backend plugin, built-in or third-party, must pass.

Use it from a plugin's own tests by subclassing and naming the backend with a fixture::

    import pytest
    from unirt.testing.contract import BackendContract

    class TestMyBackend(BackendContract):
        @pytest.fixture
        def backend_name(self):
            return "mybackend"

unirt's own ``tests/test_contract.py`` parametrises ``backend_name`` over every registered
backend. A backend that is not available here is skipped with its reason. A backend may refuse a
model it cannot run, but only with a :class:`~unirt.errors.UnirtError` that names it, at open
time; once it opens a model it must return the reference's numbers (onnx's own
``ReferenceEvaluator``), in the model's output names, order, shapes and dtypes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import unirt
from unirt.errors import (
    BackendError,
    InputError,
    OutputError,
    SessionClosedError,
    UnirtError,
)
from unirt.evidence.inputs import make_inputs
from unirt.plugin.registry import get_registry
from unirt.testing import models as M
from unirt.testing import run_in_threads

#: Absolute / relative tolerance against the reference in ``precision="exact"``.
ATOL = 1e-4
RTOL = 1e-3


def assert_close(actual: dict[str, Any], expected: dict[str, Any]) -> None:
    """Same names in the same order, same shapes and dtypes, values within tolerance."""
    assert list(actual) == list(expected)
    for name, want in expected.items():
        got = actual[name]
        assert isinstance(got, np.ndarray), f"{name}: got {type(got).__name__}, not an array"
        assert got.shape == want.shape, f"{name}: shape {got.shape} != {want.shape}"
        assert got.dtype == want.dtype, f"{name}: dtype {got.dtype} != {want.dtype}"
        np.testing.assert_allclose(got, want, atol=ATOL, rtol=RTOL, err_msg=name)


class BackendContract:
    """Contract tests; provide a ``backend_name`` fixture."""

    @pytest.fixture
    def backend_name(self) -> str:  # pragma: no cover - overridden by users of the kit
        raise NotImplementedError("override the backend_name fixture")

    @pytest.fixture
    def open_model(self, backend_name: str, tmp_path: Path
                   ) -> Iterator[Callable[..., unirt.Session]]:
        """``open_model(proto)`` saves the model and opens it on the backend under test.
        ``verify="never"`` for the tests of mechanics (feeds, lifetime, threads), where a
        verification child per test (seconds apiece) would check numbers nobody asked about;
        the tests of numbers keep the default, so what ``load`` does is what they measure."""
        status = get_registry().backend(backend_name).available()
        if not status.available:
            pytest.skip(f"{backend_name} not available: {status.reason}")
        opened: list[unirt.Session] = []

        def _open(proto: Any, name: str = "model", verify: str = "auto") -> unirt.Session:
            path = M.save(proto, tmp_path / f"{name}.onnx")
            sess = unirt.load(path, backend=backend_name, verify=verify)
            opened.append(sess)
            return sess

        yield _open
        for s in opened:
            s.close()

    @staticmethod
    def open_or_refuse(open_model: Callable[..., unirt.Session], proto: Any,
                       backend_name: str) -> unirt.Session | None:
        """Open, or accept a clear refusal (a UnirtError naming the backend) and return None."""
        try:
            return open_model(proto)
        except UnirtError as exc:
            assert backend_name in str(exc), f"refusal does not name the backend: {exc}"
            return None

    # -- availability --------------------------------------------------------------------------
    def test_availability_is_described(self, backend_name: str) -> None:
        status = get_registry().backend(backend_name).available()
        if status.available:
            assert status.version, "an available backend reports its engine version"
            assert status.devices, "an available backend reports its devices"
        else:
            assert status.reason, "an unavailable backend says why"

    # -- metadata ------------------------------------------------------------------------------
    def test_metadata_comes_from_the_model(self, open_model: Callable, backend_name: str) -> None:
        sess = open_model(M.multi_io(), verify="never")
        assert sess.backend == backend_name
        assert [(t.name, t.shape, t.dtype) for t in sess.inputs] == [
            ("a", (1, 3, 4, 4), np.dtype("float32")), ("b", (1, 3), np.dtype("float32"))]
        assert [(t.name, t.shape, t.dtype) for t in sess.outputs] == [
            ("sum", (1, 3, 4, 4), np.dtype("float32")), ("pooled", (1, 3), np.dtype("float32")),
            ("argmax", (1,), np.dtype("int64"))]

    # -- numbers -------------------------------------------------------------------------------
    @pytest.mark.parametrize("builder", [M.add, M.conv_net, M.multi_io], ids=lambda b: b.__name__)
    def test_run_matches_reference(self, open_model: Callable, backend_name: str,
                                   builder: Callable) -> None:
        proto = builder()
        sess = self.open_or_refuse(open_model, proto, backend_name)
        if sess is None:
            pytest.skip(f"{backend_name} refuses {builder.__name__}")
        feeds = make_inputs(sess.inputs, seed=3)
        assert_close(sess.run(feeds), M.reference(proto, feeds))

    def test_output_subset_in_requested_order(self, open_model: Callable,
                                              backend_name: str) -> None:
        proto = M.multi_io()
        sess = self.open_or_refuse(open_model, proto, backend_name)
        if sess is None:
            pytest.skip(f"{backend_name} refuses multi_io")
        feeds = make_inputs(sess.inputs, seed=4)
        ref = M.reference(proto, feeds)
        got = sess.run(feeds, outputs=["pooled", "sum"])
        assert_close(got, {"pooled": ref["pooled"], "sum": ref["sum"]})
        with pytest.raises(OutputError, match="nope"):
            sess.run(feeds, outputs=["nope"])

    @pytest.mark.parametrize("batch", [1, 3])
    def test_dynamic_batch(self, open_model: Callable, backend_name: str, batch: int) -> None:
        proto = M.dynamic_batch()
        sess = self.open_or_refuse(open_model, proto, backend_name)
        if sess is None:
            pytest.skip(f"{backend_name} refuses dynamic shapes")
        assert sess.inputs[0].shape == ("batch", 8)
        feeds = make_inputs(sess.inputs, {"x": (batch, 8)}, seed=5)
        try:
            out = sess.run(feeds)
        except BackendError as exc:  # a refusal must name the backend, never a wrong answer
            assert backend_name in str(exc)
            return
        assert_close(out, M.reference(proto, feeds))

    def test_a_refused_call_leaves_the_session_right(self, open_model: Callable,
                                                     backend_name: str) -> None:
        """An engine error must not poison the session: OpenVINO 2026.4 returned NaN, or refused
        good shapes, after a call it refused. Good, refused, good, good: right every time."""
        proto = M.baked_reshape()
        sess = self.open_or_refuse(open_model, proto, backend_name)
        if sess is None:
            pytest.skip(f"{backend_name} refuses the model")
        good = make_inputs(sess.inputs, {"x": (1, 32)}, seed=3)
        want = M.reference(proto, good)
        assert_close(sess.run(good), want)
        with pytest.raises(UnirtError) as refused:
            sess.run(make_inputs(sess.inputs, {"x": (1, 64)}, seed=4))
        assert backend_name in str(refused.value)
        for _ in range(2):
            assert_close(sess.run(good), want)

    def test_integer_and_scalar_inputs(self, open_model: Callable, backend_name: str) -> None:
        proto = M.int_inputs()
        sess = self.open_or_refuse(open_model, proto, backend_name)
        if sess is None:
            pytest.skip(f"{backend_name} refuses int64 inputs")
        feeds: dict[str, np.ndarray] = {"ids": np.array([[1, 2, 3]], np.int64),
                                        "scale": np.array(0.5, np.float32)}
        try:
            out = sess.run(feeds)
        except BackendError as exc:
            assert backend_name in str(exc)
            return
        assert_close(out, M.reference(proto, feeds))

    # -- feeds ---------------------------------------------------------------------------------
    def test_lists_and_non_contiguous_arrays_are_accepted(self, open_model: Callable) -> None:
        proto = M.add()
        sess = open_model(proto, verify="never")
        x = np.arange(6, dtype=np.float32).reshape(3, 2).T  # a non-contiguous view
        assert not x.flags.c_contiguous
        y = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
        out = sess.run({"x": x, "y": y})
        np.testing.assert_allclose(out["z"], x + np.array(y, np.float32))

    @pytest.mark.parametrize("feeds, match", [
        ({"x": np.zeros((2, 3), np.float64), "y": np.zeros((2, 3), np.float32)},
         r"input 'x': expected dtype float32, got float64"),
        ({"x": np.zeros((2, 3, 1), np.float32), "y": np.zeros((2, 3), np.float32)},
         r"input 'x': expected rank 2"),
        ({"x": np.zeros((2, 4), np.float32), "y": np.zeros((2, 3), np.float32)},
         r"input 'x': dimension 1 must be 3"),
        ({"x": np.zeros((2, 3), np.float32)}, r"missing input 'y'"),
        ({"x": np.zeros((2, 3), np.float32), "y": np.zeros((2, 3), np.float32),
          "w": np.zeros(1, np.float32)}, r"'w' is not an input"),
        ({"x": "text", "y": np.zeros((2, 3), np.float32)}, r"input 'x'"),
        ({"x": [[1, 2], [3]], "y": np.zeros((2, 3), np.float32)}, r"input 'x'"),
    ], ids=["dtype", "rank", "static-dim", "missing", "unknown", "string", "ragged"])
    def test_bad_feeds_raise_input_error(self, open_model: Callable, feeds: dict,
                                         match: str) -> None:
        sess = open_model(M.add(), verify="never")
        with pytest.raises(InputError, match=match):
            sess.run(feeds)

    def test_single_input_call(self, open_model: Callable) -> None:
        proto = M.tiny()
        sess = open_model(proto, verify="never")
        x = np.array([[-1.0, 0.5, 2.0, -3.0]], np.float32)
        np.testing.assert_allclose(sess(x), np.maximum(x, 0) * 2)
        with pytest.raises(InputError, match="has 2 inputs"):
            open_model(M.add(), name="add", verify="never")(x)

    # -- concurrency and lifetime --------------------------------------------------------------
    def test_concurrent_runs_give_the_same_answers(self, open_model: Callable) -> None:
        proto = M.conv_net()
        sess = open_model(proto, verify="never")
        feeds = [make_inputs(sess.inputs, seed=s) for s in range(4)]
        expected = [sess.run(f)["probs"] for f in feeds]

        def worker(i: int) -> None:
            for _ in range(15):
                np.testing.assert_allclose(sess.run(feeds[i])["probs"], expected[i],
                                           atol=1e-6)

        run_in_threads(worker)

    def test_close(self, open_model: Callable) -> None:
        sess = open_model(M.tiny(), verify="never")
        with sess as s:
            assert s.run({"x": np.zeros((1, 4), np.float32)})["y"].shape == (1, 4)
        assert sess.closed
        sess.close()  # idempotent
        with pytest.raises(SessionClosedError):
            sess.run({"x": np.zeros((1, 4), np.float32)})
