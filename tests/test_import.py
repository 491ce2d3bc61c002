"""``import unirt`` stays light: no engine, no onnx, no numpy until a model is touched."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ["onnxruntime", "openvino", "cv2", "ncnn", "tensorrt", "onnx", "numpy", "rich", "torch"]


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys, json; print(json.dumps(list(sys.modules)))"],
        capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_import_unirt_imports_no_engine() -> None:
    loaded = _modules_after("import unirt")
    assert not [m for m in HEAVY if m in loaded]


def test_listing_backends_imports_no_engine_module_at_plugin_load() -> None:
    # Loading plugins (not asking availability) must not import engines either.
    loaded = _modules_after(
        "from unirt.plugin.registry import get_registry; get_registry().backends")
    assert not [m for m in HEAVY if m in loaded]


SERVING = ["starlette", "uvicorn", "prometheus_client", "anyio", "unirt.serve"]


def test_import_unirt_imports_nothing_of_serving() -> None:
    loaded = _modules_after("import unirt")
    assert not [m for m in SERVING if m in loaded]


def test_the_cli_imports_no_serving_library_until_serve_runs() -> None:
    # `unirt serve` is registered with the other commands; its libraries load when it runs.
    loaded = _modules_after("import unirt.cli.main")
    assert "unirt.cli.serve" in loaded
    assert not [m for m in SERVING[:-1] if m in loaded]


def test_public_api_names_resolve() -> None:
    import unirt

    for name in unirt.__all__:
        assert getattr(unirt, name) is not None


def test_loading_a_model_imports_no_rewrite_module() -> None:
    # The built-in rewrite plugin is loaded with every registry; its rewrites are imported
    # only when a rewrite is needed (they cost ~18 ms of every load otherwise).
    from pathlib import Path

    model = Path(__file__).resolve().parents[1] / "examples" / "tiny_cnn.onnx"
    loaded = _modules_after(f"import unirt; unirt.load({str(model)!r})")
    assert "unirt.rewrite.builtin" in loaded  # the plugin is registered ...
    assert not [m for m in loaded if m.startswith("unirt.rewrite.builtin.")]  # ... not run


def test_the_default_load_imports_only_what_its_path_uses() -> None:
    # The start-up path (benchmarks/bench_startup.py): a warm process that loads a model on the
    # reference reads no distribution metadata (the discovery cache), imports no onnx (the
    # schema classes), and none of the machinery of verification, rewrites or tuning.
    from pathlib import Path

    model = Path(__file__).resolve().parents[1] / "examples" / "tiny_cnn.onnx"
    code = (f"import unirt, numpy as np; s = unirt.load({str(model)!r}); "
            "s.run({i.name: np.zeros([d if isinstance(d, int) else 1 for d in i.shape], i.dtype) "
            "for i in s.inputs})")
    _modules_after(code)  # the first fills the discovery cache; its first answer is recorded
    loaded = _modules_after(code)
    unwanted = ["onnx", "importlib.metadata", "unirt.evidence.probe", "unirt.evidence.verify",
                "unirt.evidence.hints", "unirt.process.isolation", "unirt.capability",
                "unirt.plugin.inventory", "unirt.runtime.fit", "unirt.runtime.tuning",
                "unirt.runtime.live", "unirt.evidence.timing",
                "unirt_ncnn._pnnx", "unirt_tensorrt._build"]
    assert [m for m in unwanted if m in loaded] == []
