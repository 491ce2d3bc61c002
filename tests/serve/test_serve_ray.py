"""``unirt.serve.ray``: the Open Inference Protocol v2 through Ray Serve's HTTP proxy.

A local Ray (2 CPUs, no dashboard) is started by the module's fixture, bounded in time and shut
down after; ``tritonclient[http]`` speaks to the deployment in both tensor forms and the outputs
are compared with a direct ``Session.run``, as ``test_serve.py`` does against ``unirt serve``.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("starlette", reason="the serve extra is not installed")
pytest.importorskip("uvicorn", reason="the serve extra is not installed")
pytest.importorskip("prometheus_client", reason="the serve extra is not installed")
httpclient = pytest.importorskip("tritonclient.http",
                                 reason="tritonclient[http] (dev extra) is not installed")
pytest.importorskip("ray.serve", reason="the ray extra (Ray Serve) is not installed: "
                                        'pip install "unirt[ray]"')

from click.testing import CliRunner  # noqa: E402

import unirt  # noqa: E402
from tests.serve.test_serve import _affine, _fixed, _x  # noqa: E402
from unirt.errors import UnirtError  # noqa: E402
from unirt.serve import ray as on_ray  # noqa: E402
from unirt.serve.config import build_config  # noqa: E402

#: Ray's start, Serve's proxy and one replica took ~8 s here (2 shared cores); far more means
#: something is stuck, and the test says so rather than hang.
START_TIMEOUT = 90.0


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("models")
    return {"affine": _affine(d / "affine.onnx"), "fixed": _fixed(d / "fixed.onnx")}


def _config(models: dict[str, Path], tmp: Path) -> Path:
    config = tmp / "serve.toml"
    config.write_text(f"""
[server]
max_batch = 8
port = 0

[[models]]
path = "{models['affine']}"

[[models]]
path = "{models['affine']}"
name = "affine_b"
max_batch = 4
batch_timeout_ms = 400

[[models]]
path = "{models['fixed']}"

[ray]
replica_cpus = 0.5

[ray.autoscaling]
min_replicas = 1
initial_replicas = 1
max_replicas = 2
""")
    return config


@pytest.fixture(scope="module")
def url(models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    import ray
    from ray import serve

    d = tmp_path_factory.mktemp("ray")
    root = str(Path(__file__).resolve().parents[2])
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "UNIRT_CACHE_DIR")}
    # The replicas are Ray workers: they inherit this environment (unirt importable, a cache
    # of the test's own).
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [root, os.path.join(root, "plugins"), os.environ.get("PYTHONPATH", "")])
    os.environ["UNIRT_CACHE_DIR"] = str(d / "cache")
    # The placement is the config file's [ray] table: run() takes it from config.ray.
    config = build_config(config_file=str(_config(models, d)), backend="onnxruntime")
    found: dict[str, object] = {}

    def start_serve() -> None:
        try:
            found["url"] = on_ray.run(config, block=False)
        except BaseException as exc:  # reported by the test's thread
            found["error"] = exc

    # ray.init in this (the main) thread: Ray's GCS and raylet are started with a parent-death
    # signal bound to the thread that starts them, so a helper thread's exit would kill them.
    # SIGALRM bounds it instead; Serve's start, all actors, may run in a thread.
    def too_slow(signum: int, frame: object) -> None:
        raise TimeoutError(f"ray.init took over {START_TIMEOUT:g} s")

    try:
        previous = signal.signal(signal.SIGALRM, too_slow)
        signal.alarm(int(START_TIMEOUT))
        t0 = time.perf_counter()
        try:
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
        ray_s = time.perf_counter() - t0
        thread = threading.Thread(target=start_serve, daemon=True)
        thread.start()
        thread.join(START_TIMEOUT)
        serve_s = time.perf_counter() - t0 - ray_s
        if thread.is_alive():
            pytest.fail(f"Ray Serve did not start within {START_TIMEOUT:g} s")
        if "error" in found:
            raise found["error"]  # type: ignore[misc]
        print(f"ray.init {ray_s:.1f} s, Serve and the replica ready {serve_s:.1f} s")
        yield str(found["url"])
    finally:
        try:
            if ray.is_initialized():
                serve.shutdown()
        finally:
            ray.shutdown()
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

@pytest.fixture(scope="module")
def direct(models: dict[str, Path]) -> Iterator[unirt.Session]:
    with unirt.load(models["affine"], backend="onnxruntime") as sess:
        yield sess


def _client(url: str) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(url.split("://", 1)[1], connection_timeout=30,
                                            network_timeout=30)


def _get(url: str, path: str) -> bytes:
    with urllib.request.urlopen(url + path, timeout=30) as r:
        body: bytes = r.read()
        return body


def _metric(url: str, name: str, model: str) -> float:
    for line in _get(url, "/metrics").decode().splitlines():
        if line.startswith(name + "{") and f'model="{model}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


# -- the protocol through Serve's proxy, by tritonclient ------------------------------------
def test_health_and_metadata(url: str) -> None:
    c = _client(url)
    assert c.is_server_live() and c.is_server_ready()
    assert c.is_model_ready("affine") and not c.is_model_ready("nope")
    assert c.get_server_metadata()["name"] == "unirt"
    m = c.get_model_metadata("affine")
    assert m["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    assert m["parameters"]["backend"] == "onnxruntime"
    assert m["parameters"]["batching"]["enabled"] is True
    assert c.get_model_metadata("fixed")["parameters"]["batching"]["enabled"] is False


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_infer_matches_a_direct_run(url: str, direct: unirt.Session, binary: bool) -> None:
    c = _client(url)
    x = _x(3, seed=1)
    inp = httpclient.InferInput("x", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    outs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in ("y", "idx")]
    result = c.infer("affine", [inp], outputs=outs, request_id="r-1")
    want = direct.run({"x": x})
    np.testing.assert_allclose(result.as_numpy("y"), want["y"], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(result.as_numpy("idx"), want["idx"])
    response = result.get_response()
    assert response["parameters"]["backend"] == "onnxruntime"
    assert response["id"] == "r-1" and response["model_name"] == "affine"
    assert all(("data" in o) != binary for o in response["outputs"])


def test_model_without_batch_axis(url: str) -> None:
    c = _client(url)
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    inputs = [httpclient.InferInput("a", [2, 3], "FP32"), httpclient.InferInput("k", [1], "INT32")]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(np.array([41], dtype=np.int32), binary_data=False)
    result = c.infer("fixed", inputs)
    np.testing.assert_array_equal(result.as_numpy("twice"), a * 2)
    np.testing.assert_array_equal(result.as_numpy("k1"), [42])


def test_a_bad_input_is_a_400_through_serve(url: str) -> None:
    from tritonclient.utils import InferenceServerException

    c = _client(url)
    inp = httpclient.InferInput("x", [1, 5], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 5), np.float32))
    with pytest.raises(InferenceServerException) as err:
        c.infer("affine", [inp])
    assert err.value.status() == "400"
    assert "dimension 1 must be 4" in err.value.message()
    with pytest.raises(InferenceServerException) as err:
        c.infer("nope", [inp])
    assert err.value.status() == "404"


def test_serve_batch_stacks_concurrent_requests(url: str, direct: unirt.Session) -> None:
    """affine_b: @serve.batch of up to 4 rows, waiting 400 ms: three requests of 1, 1 and 2
    rows sent at once run as fewer engine calls than requests, each gets its own rows back."""
    rows = [1, 1, 2]
    xs = [_x(r, seed=10 + i) for i, r in enumerate(rows)]
    calls_before = _metric(url, "unirt_batch_size_count", "affine_b")
    rows_before = _metric(url, "unirt_batch_size_sum", "affine_b")

    def one(x: np.ndarray) -> dict[str, np.ndarray]:
        inp = httpclient.InferInput("x", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        r = _client(url).infer("affine_b", [inp])
        return {"y": r.as_numpy("y"), "idx": r.as_numpy("idx")}

    with ThreadPoolExecutor(len(xs)) as pool:
        results = list(pool.map(one, xs))
    for x, got in zip(xs, results):
        want = direct.run({"x": x})
        np.testing.assert_allclose(got["y"], want["y"], rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(got["idx"], want["idx"])
    calls = _metric(url, "unirt_batch_size_count", "affine_b") - calls_before
    assert _metric(url, "unirt_batch_size_sum", "affine_b") - rows_before == sum(rows)
    assert calls < len(rows), f"{len(rows)} requests ran as {calls} engine calls"
    # A request of more rows than max_batch runs alone, right.
    big = one(_x(6, seed=20))
    np.testing.assert_allclose(big["y"], direct.run({"x": _x(6, seed=20)})["y"], atol=1e-6)


def test_the_deployment_runs_with_the_options_given(url: str) -> None:
    from ray import serve

    status = serve.status().applications[on_ray.APP_NAME]
    assert str(status.status).endswith("RUNNING")
    assert on_ray.DEPLOYMENT_NAME in status.deployments
    # As the config file's [ray] table asked (Serve's own account, a private API of Ray's).
    from ray.serve.context import _get_global_client

    details = _get_global_client().get_serve_details()
    deployed = details["applications"][on_ray.APP_NAME]["deployments"][on_ray.DEPLOYMENT_NAME]
    auto = deployed["deployment_config"]["autoscaling_config"]
    assert (auto["min_replicas"], auto["initial_replicas"], auto["max_replicas"]) == (1, 1, 2)
    assert deployed["deployment_config"]["ray_actor_options"]["num_cpus"] == 0.5


# -- options, without Ray ------------------------------------------------------------------
def test_deployment_options_pass_autoscaling_and_resources_through(
        models: dict[str, Path]) -> None:
    config = build_config([str(models["affine"])], backend="onnxruntime", max_batch=40)
    auto = {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 3}
    opts = on_ray.deployment_options(config, on_ray.RayOptions(num_cpus=2, autoscaling=auto))
    assert opts["autoscaling_config"] == auto and "num_replicas" not in opts
    assert opts["ray_actor_options"] == {"num_cpus": 2, "num_gpus": 0.0}
    assert opts["max_ongoing_requests"] == 80  # twice max_batch, over the default of 64
    assert opts["logging_config"] == {"enable_access_log": False}  # no line per request
    fixed = on_ray.deployment_options(config, on_ray.RayOptions(replicas=3, num_gpus=1))
    assert fixed["num_replicas"] == 3 and fixed["ray_actor_options"]["num_gpus"] == 1
    small = build_config([str(models["affine"])], backend="onnxruntime")
    assert on_ray.deployment_options(small, on_ray.RayOptions())["max_ongoing_requests"] == 64


def test_a_gpu_backend_asks_for_a_gpu_per_replica(models: dict[str, Path]) -> None:
    from unirt.plugin.registry import get_registry

    gpu = [b.name for b in get_registry().backends.values() if b.device_class == "gpu"]
    if not gpu:
        pytest.skip("no GPU-class backend is registered")
    config = build_config([str(models["affine"])], backend=gpu[0])
    assert on_ray.gpus_needed(config) == 1.0
    assert on_ray.gpus_needed(build_config([str(models["affine"])])) == 0.0


@pytest.mark.parametrize("options, message", [
    (on_ray.RayOptions(replicas=0), "--replicas must be at least 1"),
    (on_ray.RayOptions(num_cpus=-1), "--replica-cpus must be >= 0"),
    (on_ray.RayOptions(autoscaling={"min_replicas": 3, "max_replicas": 1}),
     "not a Ray Serve autoscaling config"),
    (on_ray.RayOptions(autoscaling={"max_replica": 2}), "config key: max_replica"),
])
def test_bad_options_are_unirt_errors(models: dict[str, Path], options: on_ray.RayOptions,
                                      message: str) -> None:
    config = build_config([str(models["affine"])])
    with pytest.raises(UnirtError, match=message):
        on_ray.deployment_options(config, options)


def test_parse_autoscaling(tmp_path: Path) -> None:
    assert on_ray.parse_autoscaling('{"max_replicas": 2}') == {"max_replicas": 2}
    f = tmp_path / "auto.json"
    f.write_text(json.dumps({"min_replicas": 2}))
    assert on_ray.parse_autoscaling(str(f)) == {"min_replicas": 2}
    with pytest.raises(UnirtError, match="not valid JSON"):
        on_ray.parse_autoscaling("{max_replicas: 2}")
    with pytest.raises(UnirtError, match="must be a JSON object"):
        on_ray.parse_autoscaling("[1]")
    with pytest.raises(UnirtError, match="cannot read"):
        on_ray.parse_autoscaling(str(tmp_path / "missing.json"))


@pytest.mark.parametrize("args, message", [
    (["--replicas", "2"], "only apply with --ray"),
    (["--ray", "--replicas", "2", "--autoscaling", "{}"], "--replicas or --autoscaling"),
    (["--ray", "--autoscaling", "nope{"], "--autoscaling"),
    (["--ray", "--autoscaling", '{"min_replicas": 5, "max_replicas": 2}'],
     "not a Ray Serve autoscaling config"),
])
def test_cli_refuses_bad_ray_options_before_starting_ray(models: dict[str, Path],
                                                         args: list[str], message: str) -> None:
    from unirt.cli.main import cli

    result = CliRunner().invoke(cli, ["serve", str(models["affine"]), *args])
    assert result.exit_code != 0
    assert message in result.output


def test_cli_takes_the_ray_table_under_its_own_options(
        models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--ray reads [ray]; an option given wins over its key, --replicas over the whole
    autoscaling table; a key Ray Serve does not know is refused before Ray starts."""
    from unirt.cli.main import cli

    runs: list[on_ray.RayOptions] = []
    monkeypatch.setattr(on_ray, "run", lambda config, options: runs.append(options))
    config = tmp_path / "serve.toml"
    config.write_text(f"""
[ray]
replica_cpus = 0.5
max_ongoing_requests = 16
[ray.autoscaling]
min_replicas = 1
max_replicas = 3
[[models]]
path = "{models['affine']}"
""")
    args = ["serve", "--ray", "--config", str(config)]
    assert CliRunner().invoke(cli, args).exit_code == 0
    assert CliRunner().invoke(cli, [*args, "--replicas", "2", "--max-ongoing-requests",
                                    "8"]).exit_code == 0
    assert runs == [on_ray.RayOptions(num_cpus=0.5, max_ongoing_requests=16,
                                      autoscaling={"min_replicas": 1, "max_replicas": 3}),
                    on_ray.RayOptions(num_cpus=0.5, max_ongoing_requests=8, replicas=2)]
    config.write_text(config.read_text().replace("max_replicas", "max_replica"))
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1 and len(runs) == 2
    assert "[ray.autoscaling]): not a Ray Serve autoscaling config key: max_replica" in (
        result.output)


def test_without_ray_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.startswith("ray") else real(name, *a))
    with pytest.raises(UnirtError, match=r'needs the ray extra .*pip install "unirt\[ray\]"'):
        on_ray.require_ray()
