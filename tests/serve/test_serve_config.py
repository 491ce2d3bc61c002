"""The config file's ``[ray]`` table: read into ``ServeConfig.ray`` (a :class:`RayOptions`),
merged with the command line's ``--ray`` options and checked, all without Ray: nothing here
imports it or starts one (``test_serve_ray.py`` runs a deployment from such a table)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from unirt.errors import UnirtError
from unirt.serve.config import RayOptions, build_config

ROOT = Path(__file__).resolve().parents[2]

RAY_TOML = """
[ray]
address = "ray://head:10001"
replica_cpus = 0.5
replica_gpus = 0
max_ongoing_requests = 32
[ray.autoscaling]
min_replicas = 1
max_replicas = 8
target_ongoing_requests = 4

[[models]]
path = "m.onnx"
"""


def _toml(tmp_path: Path, text: str) -> str:
    path = tmp_path / "serve.toml"
    path.write_text(text)
    return str(path)


def test_the_ray_table_is_read_into_ray_options(tmp_path: Path) -> None:
    config = build_config(config_file=_toml(tmp_path, RAY_TOML))
    assert config.ray == RayOptions(
        address="ray://head:10001", num_cpus=0.5, num_gpus=0, max_ongoing_requests=32,
        autoscaling={"min_replicas": 1, "max_replicas": 8, "target_ongoing_requests": 4})
    as_json = tmp_path / "serve.json"
    as_json.write_text(json.dumps({"ray": {"replicas": 3}, "models": [{"path": "m.onnx"}]}))
    assert build_config(config_file=str(as_json)).ray == RayOptions(replicas=3)
    # No table and no options: nothing to say about Ray; options alone: the defaults under them.
    assert build_config(["m.onnx"]).ray is None
    assert build_config(["m.onnx"], ray={"replicas": None}).ray == RayOptions()
    assert build_config(["m.onnx"], ray={"replica_gpus": 1}).ray == RayOptions(num_gpus=1)


def test_the_command_line_wins_key_by_key(tmp_path: Path) -> None:
    path = _toml(tmp_path, RAY_TOML)
    given = build_config(config_file=path, ray={"address": "ray://other:10001",
                                                "replica_cpus": 2, "replica_gpus": None}).ray
    assert given is not None
    assert given.address == "ray://other:10001" and given.num_cpus == 2
    # Not given (None): the file's.
    assert given.num_gpus == 0 and given.max_ongoing_requests == 32
    assert given.autoscaling == {"min_replicas": 1, "max_replicas": 8,
                                 "target_ongoing_requests": 4}
    # --replicas replaces the file's autoscaling, and --autoscaling the file's replicas.
    fixed = build_config(config_file=path, ray={"replicas": 3}).ray
    assert fixed is not None and fixed.replicas == 3 and fixed.autoscaling is None
    assert fixed.num_cpus == 0.5
    path = _toml(tmp_path, "[ray]\nreplicas = 4\n[[models]]\npath = 'm.onnx'\n")
    auto = build_config(config_file=path, ray={"autoscaling": {"max_replicas": 2}}).ray
    assert auto == RayOptions(autoscaling={"max_replicas": 2})


@pytest.mark.parametrize("table, message", [
    ("replicas = '2'", "[ray] replicas: must be an integer >= 1, got '2'"),
    ("replicas = 0", "[ray] replicas: must be an integer >= 1, got 0"),
    ("replicas = true", "[ray] replicas: must be an integer >= 1, got True"),
    ("replica_cpus = -1", "[ray] replica_cpus: must be a number >= 0, got -1"),
    ("replica_gpus = -0.5", "[ray] replica_gpus: must be a number >= 0, got -0.5"),
    ("max_ongoing_requests = 1.5", "[ray] max_ongoing_requests: must be an integer >= 1"),
    ("address = ''", "[ray] address: a Ray address"),
    ("address = 10001", "[ray] address: a Ray address"),
    ("autoscaling = 4", "[ray] autoscaling: a table of Ray Serve autoscaling_config keys"),
    ("replica = 2", "[ray]: unknown key(s) replica; expected address, autoscaling"),
    ("replicas = 2\nautoscaling = { max_replicas = 4 }",
     "[ray]: give replicas or an autoscaling table, not both"),
])
def test_a_bad_ray_table_names_the_file_and_the_key(tmp_path: Path, table: str,
                                                    message: str) -> None:
    path = _toml(tmp_path, f"[ray]\n{table}\n[[models]]\npath = 'm.onnx'\n")
    with pytest.raises(UnirtError) as err:
        build_config(config_file=path)
    assert str(err.value).startswith(f"config file {path}: ")
    assert message in str(err.value)


def test_ray_must_be_a_table_and_bad_options_name_the_option(tmp_path: Path) -> None:
    path = tmp_path / "serve.json"
    path.write_text(json.dumps({"ray": [1], "models": [{"path": "m.onnx"}]}))
    with pytest.raises(UnirtError, match=r"serve\.json: \[ray\]: must be a table"):
        build_config(config_file=str(path))
    with pytest.raises(UnirtError, match="--max-ongoing-requests: must be an integer >= 1"):
        build_config(["m.onnx"], ray={"max_ongoing_requests": 0})
    with pytest.raises(UnirtError, match="give --replicas or --autoscaling, not both"):
        build_config(["m.onnx"], ray={"replicas": 2, "autoscaling": {}})
    with pytest.raises(UnirtError, match="unknown key.s. num_cpus"):
        build_config(["m.onnx"], ray={"num_cpus": 2})


def test_reading_the_ray_table_imports_no_ray(tmp_path: Path) -> None:
    path = _toml(tmp_path, RAY_TOML)
    code = ("import sys; from unirt.serve.config import build_config; "
            f"assert build_config(config_file={path!r}).ray.num_cpus == 0.5; "
            "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "plugins")])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_without_ray_the_table_is_ignored_with_one_info_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    pytest.importorskip("starlette", reason="the serve extra is not installed")
    pytest.importorskip("uvicorn", reason="the serve extra is not installed")
    pytest.importorskip("prometheus_client", reason="the serve extra is not installed")
    from click.testing import CliRunner

    from unirt.cli.main import cli
    from unirt.serve import server

    served: list[Any] = []
    monkeypatch.setattr(server, "serve", served.append)
    path = _toml(tmp_path, RAY_TOML)
    with caplog.at_level(logging.INFO, logger="unirt"):
        result = CliRunner().invoke(cli, ["serve", "--config", path])
    assert result.exit_code == 0, result.output
    assert len(served) == 1 and served[0].models[0].name == "m"
    ignored = [(r.levelno, r.getMessage()) for r in caplog.records if "[ray]" in r.getMessage()]
    assert ignored == [(logging.INFO,
                        "unirt serve: the config file's [ray] table is ignored without --ray")]
    # A bad table is refused all the same: the file is one file, with --ray or without.
    bad = _toml(tmp_path, "[ray]\nreplicas = -1\n[[models]]\npath = 'm.onnx'\n")
    result = CliRunner().invoke(cli, ["serve", "--config", bad])
    assert result.exit_code == 1 and "[ray] replicas: must be an integer >= 1" in result.output


@pytest.mark.parametrize("setting, message", [
    ("max_batch = 0", "[server] max_batch: must be an integer >= 1, got 0"),
    ("port = 70000", "[server] port: must be at most 65535"),
    ("host = ''", "[server] host: a host name or address"),
    ("measure = 'yes'", "[server] measure: must be true or false"),
])
def test_a_bad_server_setting_names_the_file_and_the_key(tmp_path: Path, setting: str,
                                                         message: str) -> None:
    path = _toml(tmp_path, f"[server]\n{setting}\n[[models]]\npath = 'm.onnx'\n")
    with pytest.raises(UnirtError) as err:
        build_config(config_file=path)
    assert str(err.value).startswith(f"config file {path}: ") and message in str(err.value)
    # the same value from the command line is named as its option
    with pytest.raises(UnirtError, match="^--max-batch: must be an integer >= 1"):
        build_config(["m.onnx"], max_batch=0)


def test_measure_is_read_per_model_over_the_server(tmp_path: Path) -> None:
    path = _toml(tmp_path, "[server]\nmeasure = false\n[[models]]\npath = 'a.onnx'\n"
                 "[[models]]\npath = 'b.onnx'\nmeasure = true\n")
    config = build_config(config_file=path)
    assert [config.measures(m) for m in config.models] == [False, True]
    assert build_config(config_file=path, measure=True).measure is True
    with pytest.raises(UnirtError, match=r"models\[0\]\.measure: must be true or false"):
        build_config(config_file=_toml(tmp_path, "[[models]]\npath = 'a.onnx'\nmeasure = 1\n"))
