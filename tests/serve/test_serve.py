"""``unirt serve``: the Open Inference Protocol v2 against a client nobody here wrote.

A real server in a child process (a free port on 127.0.0.1, bounded in time, always killed),
spoken to by ``tritonclient[http]`` in both tensor forms and compared with a direct
``Session.run``; raw HTTP (``http.client``) for the requests a client library would never send.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("starlette", reason="the serve extra is not installed")
pytest.importorskip("uvicorn", reason="the serve extra is not installed")
pytest.importorskip("prometheus_client", reason="the serve extra is not installed")
httpclient = pytest.importorskip("tritonclient.http",
                                 reason="tritonclient[http] (dev extra) is not installed")

from click.testing import CliRunner  # noqa: E402

import unirt  # noqa: E402
from unirt.errors import RequestError, UnirtError  # noqa: E402
from unirt.serve import protocol  # noqa: E402
from unirt.serve.config import build_config  # noqa: E402

READY = re.compile(r"ready on http://([0-9.]+):(\d+)")
START_TIMEOUT = 60.0
W = np.arange(12, dtype=np.float32).reshape(4, 3) / 10.0
B = np.array([0.5, -1.0, 0.25], dtype=np.float32)


# -- models, built in code -----------------------------------------------------------------
def _affine(path: Path) -> Path:
    """x[N,4] -> y = x @ W + b [N,3], and idx = argmax(y) [N] (int64): a batch axis, two
    outputs of different dtypes."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["xw"]),
         helper.make_node("Add", ["xw", "B"], ["y"]),
         helper.make_node("ArgMax", ["y"], ["idx"], axis=1, keepdims=0)],
        "affine",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3]),
         helper.make_tensor_value_info("idx", TensorProto.INT64, ["N"])],
        [numpy_helper.from_array(W, "W"), numpy_helper.from_array(B, "B")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _fixed(path: Path) -> Path:
    """a[2,3] float, k[1] int32 -> twice a, k + 1: no batch axis."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "a"], ["twice"]),
         helper.make_node("Constant", [], ["one"], value_int=1),
         helper.make_node("Cast", ["one"], ["one32"], to=TensorProto.INT32),
         helper.make_node("Add", ["k", "one32"], ["k1"])],
        "fixed",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 3]),
         helper.make_tensor_value_info("k", TensorProto.INT32, [1])],
        [helper.make_tensor_value_info("twice", TensorProto.FLOAT, [2, 3]),
         helper.make_tensor_value_info("k1", TensorProto.INT32, [1])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _fragile(path: Path) -> Path:
    """x[N,K] -> Reshape to [-1, 4]: the engine fails at run time when N*K is not a multiple
    of 4 (an engine error the server must answer with a 500 and survive)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "s"], ["y"])], "fragile",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "K"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])],
        [numpy_helper.from_array(np.array([-1, 4], dtype=np.int64), "s")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


# -- the server in a child ----------------------------------------------------------------
class Server:
    """``unirt serve`` in a child process on a free port; its stderr is collected."""

    def __init__(self, args: list[str], cache: Path) -> None:
        env = {**os.environ, "UNIRT_CACHE_DIR": str(cache), "PYTHONUNBUFFERED": "1"}
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(
            [root, os.path.join(root, "plugins"), env.get("PYTHONPATH", "")])
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "unirt.cli", "serve", "--port", "0", *args],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True, env=env)
        self.lines: list[str] = []
        self._ready = threading.Event()
        self.host = self.port = None
        threading.Thread(target=self._read, daemon=True).start()
        if not self._ready.wait(START_TIMEOUT) or self.port is None:
            self.kill()
            raise AssertionError("server did not become ready:\n" + "".join(self.lines))

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            found = READY.search(line)
            if found:
                self.host, self.port = found.group(1), int(found.group(2))
                self._ready.set()
        self._ready.set()

    @property
    def url(self) -> str:
        return f"{self.host}:{self.port}"

    def client(self) -> httpclient.InferenceServerClient:
        return httpclient.InferenceServerClient(self.url, connection_timeout=30,
                                                network_timeout=30)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


@contextlib.contextmanager
def serving(args: list[str], cache: Path) -> Iterator[Server]:
    server = Server(args, cache)
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("models")
    from unirt.testing.models import batch_mixing, save, zipmap_classifier

    return {"affine": _affine(d / "affine.onnx"), "fixed": _fixed(d / "fixed.onnx"),
            "fragile": _fragile(d / "fragile.onnx"),
            "mixing": save(batch_mixing(), d / "mixing.onnx"),
            "zipmap": save(zipmap_classifier(), d / "zipmap.onnx")}


@pytest.fixture(scope="module")
def server(models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    d = tmp_path_factory.mktemp("serve")
    config = d / "serve.toml"
    config.write_text(f"""
[server]
max_request_mb = 1
max_batch = 8

[[models]]
path = "{models['affine']}"

[[models]]
path = "{models['affine']}"
name = "affine_b"
max_batch = 4
batch_timeout_ms = 400
measure = false

[[models]]
path = "{models['fixed']}"

[[models]]
path = "{models['fragile']}"

[[models]]
path = "{models['mixing']}"

[[models]]
path = "{models['zipmap']}"
""")
    with serving(["--config", str(config), "--backend", "onnxruntime"], d / "cache") as s:
        yield s


@pytest.fixture(scope="module")
def direct(models: dict[str, Path]) -> Iterator[unirt.Session]:
    with unirt.load(models["affine"], backend="onnxruntime") as sess:
        yield sess


def _x(rows: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, 4)).astype(np.float32)


# -- the protocol through tritonclient ----------------------------------------------------
def test_health_and_metadata(server: Server) -> None:
    c = server.client()
    assert c.is_server_live() and c.is_server_ready()
    assert c.is_model_ready("affine") and c.is_model_ready("affine", "1")
    assert not c.is_model_ready("nope")
    meta = c.get_server_metadata()
    assert meta["name"] == "unirt" and "binary_tensor_data" in meta["extensions"]
    m = c.get_model_metadata("affine")
    assert m["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    assert m["outputs"] == [{"name": "y", "datatype": "FP32", "shape": [-1, 3]},
                            {"name": "idx", "datatype": "INT64", "shape": [-1]}]
    params = m["parameters"]
    assert params["backend"] == "onnxruntime"
    assert [s["outcome"] for s in params["route"]] == ["chosen"]
    batching = params["batching"]
    # measured at load: every size up to max_batch timed, the one served among them
    assert batching["enabled"] is True and batching["measured"]["cached"] is False
    measured = {(r["batch"], r["slots"]) for r in batching["measured"]["rates"]}
    assert {(b, 1) for b in (1, 2, 4, 8)} <= measured
    assert batching["max_batch"] in (2, 4, 8) and "measured rows/s 1: " in batching["reason"]
    assert batching["slots"] in (1, 2) and batching["slots"] == batching["measured"]["slots"]
    given = c.get_model_metadata("affine_b")["parameters"]["batching"]  # measure = false
    assert given["max_batch"] == 4 and given["measured"] is None and given["slots"] >= 2
    fixed = c.get_model_metadata("fixed", "1")
    assert fixed["inputs"][0]["shape"] == [2, 3]
    assert fixed["parameters"]["batching"]["enabled"] is False
    assert "fixed first dimension" in fixed["parameters"]["batching"]["reason"]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_infer_matches_a_direct_run(server: Server, direct: unirt.Session, binary: bool) -> None:
    c = server.client()
    x = _x(3, seed=1)
    inp = httpclient.InferInput("x", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    outs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in ("y", "idx")]
    result = c.infer("affine", [inp], outputs=outs, request_id="r-1")
    want = direct.run({"x": x})
    np.testing.assert_allclose(result.as_numpy("y"), want["y"], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(result.as_numpy("idx"), want["idx"])
    assert result.as_numpy("idx").dtype == np.int64
    response = result.get_response()
    assert response["parameters"]["backend"] == "onnxruntime"
    assert response["id"] == "r-1" and response["model_name"] == "affine"
    assert all(("data" in o) != binary for o in response["outputs"])


def test_infer_default_outputs_and_a_subset(server: Server, direct: unirt.Session) -> None:
    c = server.client()
    x = _x(2, seed=2)
    inp = httpclient.InferInput("x", [2, 4], "FP32")
    inp.set_data_from_numpy(x)
    everything = c.infer("affine", [inp])  # no outputs named: all, in binary
    assert [o["name"] for o in everything.get_response()["outputs"]] == ["y", "idx"]
    np.testing.assert_allclose(everything.as_numpy("y"), direct.run({"x": x})["y"], atol=1e-6)
    only = c.infer("affine", [inp], outputs=[httpclient.InferRequestedOutput("idx")])
    assert [o["name"] for o in only.get_response()["outputs"]] == ["idx"]


def test_model_without_batch_axis(server: Server) -> None:
    c = server.client()
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    k = np.array([41], dtype=np.int32)
    inputs = [httpclient.InferInput("a", [2, 3], "FP32"), httpclient.InferInput("k", [1], "INT32")]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(k, binary_data=False)  # one binary, one JSON, one request
    result = c.infer("fixed", inputs)
    np.testing.assert_array_equal(result.as_numpy("twice"), a * 2)
    np.testing.assert_array_equal(result.as_numpy("k1"), [42])


def test_a_model_whose_rows_mix_is_served_unbatched(server: Server) -> None:
    c = server.client()
    batching = c.get_model_metadata("mixing")["parameters"]["batching"]
    assert batching["enabled"] is False and "not independent" in batching["reason"]
    x = np.array([[1, 2, 3, 4], [3, 2, 1, 0]], dtype=np.float32)
    inp = httpclient.InferInput("x", [2, 4], "FP32")
    inp.set_data_from_numpy(x)
    np.testing.assert_allclose(c.infer("mixing", [inp]).as_numpy("y"), x - x.mean(0))


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_a_sequence_of_maps_output_comes_back_as_json_texts(server: Server, models: dict[str, Path],
                                                            binary: bool) -> None:
    # skl2onnx's ZipMap: batching off (the server inherits max_batch = 8 and must still start),
    # each row's map one JSON text of the BYTES output
    c = server.client()
    batching = c.get_model_metadata("zipmap")["parameters"]["batching"]
    assert batching["enabled"] is False and "not a tensor" in batching["reason"]
    x = np.array([[1.0, 2.0], [3.0, 1.0]], dtype=np.float32)
    inp = httpclient.InferInput("x", [2, 2], "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    outs = [httpclient.InferRequestedOutput(n, binary_data=binary)
            for n in ("label", "probabilities")]
    result = c.infer("zipmap", [inp], outputs=outs)
    with unirt.load(models["zipmap"], backend="onnxruntime") as sess:
        want = sess.run({"x": x})
    np.testing.assert_array_equal(result.as_numpy("label"), want["label"])
    got = [json.loads(t.decode() if isinstance(t, bytes) else t)
           for t in result.as_numpy("probabilities")]
    assert [sorted(row) for row in got] == [["0", "1"], ["0", "1"]]
    for row, expected in zip(got, want["probabilities"]):
        for k, p in expected.items():
            assert abs(row[str(k)] - p) < 1e-6


def test_a_bad_input_is_a_client_exception_not_a_crash(server: Server) -> None:
    from tritonclient.utils import InferenceServerException

    c = server.client()
    inp = httpclient.InferInput("x", [1, 5], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 5), np.float32))
    with pytest.raises(InferenceServerException) as err:
        c.infer("affine", [inp])
    assert err.value.status() == "400"
    assert "dimension 1 must be 4" in err.value.message()


# -- batching ------------------------------------------------------------------------------
def _metric(server: Server, name: str, model: str) -> float:
    text = _get(server, "/metrics")[2].decode()
    for line in text.splitlines():
        if line.startswith(name + "{") and f'model="{model}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_concurrent_requests_are_batched_and_split_back(server: Server,
                                                        direct: unirt.Session) -> None:
    rows = [1, 1, 2]  # 4 rows: max_batch of affine_b
    xs = [_x(r, seed=10 + i) for i, r in enumerate(rows)]
    calls_before = _metric(server, "unirt_batch_size_count", "affine_b")
    rows_before = _metric(server, "unirt_batch_size_sum", "affine_b")

    def one(x: np.ndarray) -> dict[str, np.ndarray]:
        c = server.client()
        inp = httpclient.InferInput("x", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        r = c.infer("affine_b", [inp])
        return {"y": r.as_numpy("y"), "idx": r.as_numpy("idx")}

    with ThreadPoolExecutor(len(xs)) as pool:
        results = list(pool.map(one, xs))
    for x, got in zip(xs, results):
        want = direct.run({"x": x})
        assert got["y"].shape == (x.shape[0], 3)
        np.testing.assert_allclose(got["y"], want["y"], rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(got["idx"], want["idx"])
    calls = _metric(server, "unirt_batch_size_count", "affine_b") - calls_before
    assert _metric(server, "unirt_batch_size_sum", "affine_b") - rows_before == sum(rows)
    assert calls < len(rows), f"{len(rows)} requests ran as {calls} engine calls"
    assert _metric(server, "unirt_requests_total", "affine_b") >= len(rows)


def test_requests_that_cannot_stack_are_not_mixed(server: Server, direct: unirt.Session) -> None:
    # A request larger than max_batch runs alone; results stay right.
    x = _x(6, seed=20)
    c = server.client()
    inp = httpclient.InferInput("x", [6, 4], "FP32")
    inp.set_data_from_numpy(x)
    np.testing.assert_allclose(c.infer("affine_b", [inp]).as_numpy("y"),
                               direct.run({"x": x})["y"], atol=1e-6)


# -- bad input over raw HTTP ---------------------------------------------------------------
def _request(server: Server, method: str, path: str, body: bytes = b"",
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def _get(server: Server, path: str) -> tuple[int, dict[str, str], bytes]:
    return _request(server, "GET", path)


def _infer_json(name: str = "x", datatype: str = "FP32", shape: list | None = None,
                data: object = None) -> bytes:
    shape = [1, 4] if shape is None else shape
    data = [0.0] * 4 if data is None else data
    return json.dumps({"inputs": [{"name": name, "datatype": datatype, "shape": shape,
                                   "data": data}]}).encode()


def _binary_body(header: dict, raw: bytes) -> tuple[bytes, dict[str, str]]:
    head = json.dumps(header).encode()
    return head + raw, {"Inference-Header-Content-Length": str(len(head))}


_X1 = np.zeros((1, 4), np.float32).tobytes()
_BIN_INPUT = {"name": "x", "datatype": "FP32", "shape": [1, 4],
              "parameters": {"binary_data_size": 16}}

BAD = {
    "malformed JSON": ("affine", b'{"inputs": [', {}, 400, "not valid JSON"),
    "not an object": ("affine", b"[1, 2]", {}, 400, "JSON object"),
    "no inputs": ("affine", b'{"inputs": []}', {}, 400, "'inputs'"),
    "unknown datatype": ("affine", _infer_json(datatype="FP8"), {}, 400, "unknown datatype"),
    "shape and data disagree": ("affine", _infer_json(data=[1.0]), {}, 400, "needs 4 values"),
    "ragged data": ("affine", _infer_json(data=[[1.0, 2.0], [3.0]]), {}, 400, "regular array"),
    "strings for FP32": ("affine", _infer_json(data=["a"] * 4), {}, 400, "cannot be FP32"),
    # never wrapped or saturated silently (2**40 as INT32 would read as 0)
    "FP32 overflow": ("affine", _infer_json(data=[1e40, 0.0, 0.0, 0.0]), {}, 400,
                      "out of the range of FP32"),
    "INT32 overflow": ("affine", _infer_json(datatype="INT32", data=[2**40, 1, 2, 3]), {}, 400,
                       "out of the range of INT32"),
    "beyond int64": ("affine", _infer_json(datatype="INT64", data=[2**70, 1, 2, 3]), {}, 400,
                     "out of the range of INT64"),
    "header length past the body": ("affine", b"{}", {"Inference-Header-Content-Length": "99"},
                                    400, "outside the body"),
    "header length not a number": ("affine", b"{}", {"Inference-Header-Content-Length": "x"},
                                   400, "must be an integer"),
    "binary size past the body": ("affine", *_binary_body({"inputs": [_BIN_INPUT]}, _X1[:8]),
                                  400, "runs past the body"),
    "bytes no input claims": ("affine", *_binary_body({"inputs": [_BIN_INPUT]}, _X1 + b"xx"),
                              400, "no input's binary_data_size"),
    "wrong input name": ("affine", _infer_json(name="images"), {}, 400,
                         "'images' is not an input of affine;"),
    # named as the client knows the model (affine_b is served from affine.onnx)
    "wrong input name, served name": ("affine_b", _infer_json(name="images"), {}, 400,
                                      "'images' is not an input of affine_b;"),
    "wrong dtype": ("affine", _infer_json(datatype="INT32", data=[1, 2, 3, 4]), {}, 400,
                    "expected dtype float32, got int32"),
    "wrong rank": ("affine", _infer_json(shape=[4]), {}, 400, "expected rank 2"),
    "missing input": ("fixed", _infer_json(name="a", shape=[2, 3], data=[0.0] * 6), {}, 400,
                      "missing input 'k' for fixed;"),
    "unknown output": ("affine", json.dumps({
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [0] * 4}],
        "outputs": [{"name": "logits"}]}).encode(), {}, 400, "'logits' is not an output"),
    "unknown model": ("resnet", _infer_json(), {}, 404, "unknown model 'resnet'"),
    "binary without its header": ("affine", b'{"inputs":[]}\xea\x01', {}, 400,
                                  "needs the Inference-Header-Content-Length header"),
    "unsupported encoding": ("affine", _infer_json(), {"Content-Encoding": "br"}, 415,
                             "not supported"),
    "engine error": ("fragile", _infer_json(shape=[1, 3], data=[1.0, 2.0, 3.0]), {}, 500,
                     "onnxruntime failed running fragile"),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_requests_get_a_status_and_one_line(server: Server, case: str) -> None:
    model, body, headers, status, words = BAD[case]
    got, _hdrs, content = _request(server, "POST", f"/v2/models/{model}/infer", body, headers)
    assert got == status, content
    message = json.loads(content)["error"]
    assert words in message
    assert "Traceback" not in message and "\n" not in message
    # ... and the server keeps serving
    assert _request(server, "POST", "/v2/models/affine/infer", _infer_json())[0] == 200


def test_unknown_routes_and_versions_are_404(server: Server) -> None:
    for path in ("/v2/models/affine/versions/7", "/v2/models/affine/versions/7/ready",
                 "/v2/models/nope", "/v2/nothing"):
        status, _, body = _get(server, path)
        assert status == 404, path
        assert "error" in json.loads(body)
    status, _, _ = _request(server, "POST", "/v2/models/affine/versions/2/infer", _infer_json())
    assert status == 404
    assert _request(server, "POST", "/v2/models/affine/versions/1/infer", _infer_json())[0] == 200


def test_gzip_request_body(server: Server) -> None:
    import gzip

    status, _, body = _request(server, "POST", "/v2/models/affine/infer",
                               gzip.compress(_infer_json()), {"Content-Encoding": "gzip"})
    assert status == 200 and json.loads(body)["outputs"][0]["name"] == "y"


def test_oversized_body_is_refused_before_it_is_read(server: Server) -> None:
    # Content-Length says 50 MB (the limit is 1 MB); only the headers are ever sent.
    with socket.create_connection((server.host, server.port), timeout=30) as s:
        s.sendall(b"POST /v2/models/affine/infer HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Type: application/json\r\nContent-Length: 52428800\r\n\r\n")
        reply = ""
        while "over the limit" not in reply:
            chunk = s.recv(65536).decode("latin-1")
            if not chunk:
                break
            reply += chunk
    assert reply.startswith("HTTP/1.1 413"), reply
    assert "over the limit of 1 MB" in reply


def test_oversized_chunked_body_is_refused_while_reading(server: Server) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(40):  # 2.5 MB, well past the 1 MB limit
            yield b"0" * 65536

    conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
    try:
        # the server may answer and close before the client is done sending
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            conn.request("POST", "/v2/models/affine/infer", body=chunks(),
                         encode_chunked=True, headers={"Transfer-Encoding": "chunked"})
        r = conn.getresponse()
        assert r.status == 413
    finally:
        conn.close()
    assert _request(server, "POST", "/v2/models/affine/infer", _infer_json())[0] == 200


def test_metrics_exposition(server: Server) -> None:
    _request(server, "POST", "/v2/models/affine/infer", _infer_json())
    status, headers, body = _get(server, "/metrics")
    text = body.decode()
    assert status == 200 and headers["content-type"].startswith("text/plain")
    assert re.search(r'unirt_requests_total\{backend="onnxruntime",code="200",model="affine"\}'
                     r" [1-9]", text)
    assert 'unirt_request_duration_seconds_bucket{backend="onnxruntime",le="0.001",' \
           'model="affine"}' in text
    assert 'unirt_queue_depth{backend="onnxruntime",model="affine"} 0.0' in text


# -- shutdown ------------------------------------------------------------------------------
def _sigterm_while_queued(s: Server, call: Callable[[], None]) -> float:
    """Run ``call`` (one request to affine) on a thread, SIGTERM the server once the request is
    queued, wait for both; the server must exit 0. When the signal was sent."""
    t = threading.Thread(target=call)
    t.start()
    deadline = time.monotonic() + 10
    while _metric(s, "unirt_queue_depth", "affine") < 1:
        assert time.monotonic() < deadline, "the request never reached the queue"
        time.sleep(0.05)
    sent = time.monotonic()
    s.proc.send_signal(signal.SIGTERM)
    t.join(30)
    assert s.proc.wait(30) == 0, "".join(s.lines)
    return sent


def test_sigterm_drains_requests_in_flight_and_exits_0(models: dict[str, Path],
                                                       tmp_path: Path) -> None:
    # A 2 s batch window holds the request in the server while SIGTERM arrives.
    with serving([str(models["affine"]), "--max-batch", "4", "--batch-timeout-ms", "2000"],
                 tmp_path) as s:
        x = _x(1, seed=5)
        box: dict[str, object] = {}

        def call() -> None:
            try:
                inp = httpclient.InferInput("x", [1, 4], "FP32")
                inp.set_data_from_numpy(x)
                box["y"] = s.client().infer("affine", [inp]).as_numpy("y")
            except Exception as exc:
                box["error"] = exc

        _sigterm_while_queued(s, call)
        assert "error" not in box, box.get("error")
        np.testing.assert_allclose(box["y"], x @ W + B, rtol=1e-5, atol=1e-5)
        assert not any("Traceback" in line for line in s.lines), "".join(s.lines)


def test_requests_left_when_the_drain_time_is_over_get_a_503(models: dict[str, Path],
                                                             tmp_path: Path) -> None:
    # A 5 s batch window holds the request past a 0.5 s drain: it is answered with a JSON 503
    # (not uvicorn's plain-text 500 and a traceback), and the server exits 0.
    with serving([str(models["affine"]), "--max-batch", "4", "--batch-timeout-ms", "5000",
                  "--drain-timeout", "0.5"], tmp_path) as s:
        box: dict[str, object] = {}

        def call() -> None:
            box["answer"] = _request(s, "POST", "/v2/models/affine/infer", _infer_json())

        sent = _sigterm_while_queued(s, call)
        status, _, body = box["answer"]  # type: ignore[misc]
        assert status == 503 and "shutting down" in json.loads(body)["error"]
        assert time.monotonic() - sent < 4.5, "answered by the batch window, not the drain"
        assert not any("Traceback" in line for line in s.lines), "".join(s.lines)


def test_a_client_that_leaves_mid_body_is_not_a_server_error(server: Server) -> None:
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(b"POST /v2/models/affine/infer HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"in")
        sock.shutdown(socket.SHUT_WR)
        sock.recv(100)
    def counted(code: str) -> bool:
        return any(line.startswith("unirt_requests_total") and f'code="{code}"' in line
                   and 'model="affine"' in line
                   for line in _get(server, "/metrics")[2].decode().splitlines())

    deadline = time.monotonic() + 10
    while not counted("499"):
        assert time.monotonic() < deadline, "the request was not counted as 499"
        time.sleep(0.05)
    assert not counted("500")
    assert not any("internal error" in line for line in server.lines)


# -- the command line, before any server runs ----------------------------------------------
def _cli(args: list[str]) -> tuple[int, str]:
    from unirt.cli.main import cli

    r = CliRunner().invoke(cli, ["serve", *args])
    return r.exit_code, r.output


def test_cli_refuses_bad_setups_with_one_line(models: dict[str, Path], tmp_path: Path) -> None:
    code, out = _cli([])
    assert code == 1 and "nothing to serve" in out
    code, out = _cli([str(models["affine"]), str(models["affine"])])
    assert code == 1 and "two models are named 'affine'" in out
    code, out = _cli([str(models["affine"]), str(models["fixed"]), "--name", "m"])
    assert code == 1 and "--name names one model" in out
    code, out = _cli([str(models["affine"]), "--max-batch", "0"])
    assert code == 1 and "--max-batch" in out
    bad = tmp_path / "bad.toml"
    bad.write_text("[[models]]\npath = 'a.onnx'\nbatchsize = 3\n")
    code, out = _cli(["--config", str(bad)])
    assert code == 1 and "unknown key(s) batchsize" in out
    code, out = _cli(["--config", str(tmp_path / "missing.toml")])
    assert code == 1 and "cannot read the config file" in out
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        code, out = _cli([str(models["affine"]), "--port", str(busy.getsockname()[1])])
    assert code == 1 and "cannot listen on 127.0.0.1" in out
    code, out = _cli([str(tmp_path / "nothing.onnx"), "--port", "0"])
    assert code == 1 and "Error:" in out and "Traceback" not in out


def test_config_file_and_command_line_merge(tmp_path: Path) -> None:
    cfg = tmp_path / "s.json"
    cfg.write_text(json.dumps({"server": {"port": 9000, "max_batch": 16},
                               "models": [{"path": "m/det.onnx", "prefer": "openvino",
                                           "shape": {"images": "1x3x64x64"},
                                           "batch_timeout_ms": 5}]}))
    c = build_config(["cls.onnx"], name="classifier", config_file=str(cfg), port=9100,
                     max_batch=None, precision="fast")
    assert c.port == 9100 and c.max_batch == 16
    det, cls = c.models
    assert det.name == "det" and det.prefer == ("openvino",) and det.path == str(tmp_path / "m"
                                                                                  / "det.onnx")
    assert det.shapes == {"images": (1, 3, 64, 64)} and c.batching(det) == (16, 0.005)
    assert cls.name == "classifier" and cls.precision == "fast" and c.batching(cls) == (16, 0.0)
    plain = build_config(["m.onnx"])
    assert plain.max_batch == 1 and plain.host == "127.0.0.1" and plain.port == 8000
    with pytest.raises(UnirtError, match="letters, digits"):
        build_config(["a b.onnx"])


# -- the codecs, in process ----------------------------------------------------------------
def test_bytes_tensors_round_trip_in_both_forms() -> None:
    words = np.array([["héllo", ""], ["a", "bc"]], dtype=object)
    raw = protocol._to_bytes(words)
    body, headers = _binary_body({"inputs": [{"name": "s", "datatype": "BYTES", "shape": [2, 2],
                                              "parameters": {"binary_data_size": len(raw)}}]},
                                 raw)
    req = protocol.parse_infer_request(body, headers["Inference-Header-Content-Length"])
    np.testing.assert_array_equal(req.inputs["s"], words)
    doc = json.dumps({"inputs": [{"name": "s", "datatype": "BYTES", "shape": [2, 2],
                                  "data": words.reshape(-1).tolist()}]}).encode()
    np.testing.assert_array_equal(protocol.parse_infer_request(doc, None).inputs["s"], words)
    content, hdrs = protocol.encode_infer_response("m", "1", None, {"s": words}, [True], {})
    n = int(hdrs["inference-header-content-length"])
    result = httpclient.InferResult.from_response_body(content, header_length=n)
    assert result.as_numpy("s").tolist() == [[w.encode() for w in row] for row in words]


def test_binary_inputs_at_odd_offsets_are_aligned() -> None:
    x = np.arange(8, dtype=np.float64).reshape(2, 4)
    body, headers = _binary_body({"id": "z", "inputs": [
        {"name": "x", "datatype": "FP64", "shape": [2, 4],
         "parameters": {"binary_data_size": x.nbytes}}]}, x.tobytes())
    got = protocol.parse_infer_request(body, headers["Inference-Header-Content-Length"])
    assert got.inputs["x"].flags.aligned and got.id == "z"
    np.testing.assert_array_equal(got.inputs["x"], x)
    with pytest.raises(RequestError, match="negative values cannot be UINT8"):
        protocol.parse_infer_request(_infer_json(datatype="UINT8", data=[-1, 0, 0, 0]), None)
