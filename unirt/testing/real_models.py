"""The nine real exported models the onnx wheel ships (ResNet-50, Inception, SqueezeNet...).

Real models carry what toy graphs hide: IR 3 with initializers listed as inputs, hundreds of
nodes, old opsets. Their expected outputs come with the wheel; the input is the one onnx's own
backend test runner generates (``arange(n) / n`` in the input's shape).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: name -> (rtol, atol), as ``onnx.backend.test.case.model`` declares them.
LIGHT_MODELS = {
    "bvlc_alexnet": (1e-3, 1e-7), "densenet121": (2e-3, 1e-7), "inception_v1": (1e-3, 1e-7),
    "inception_v2": (1e-3, 1e-7), "resnet50": (1e-3, 1e-7), "shufflenet": (1e-3, 1e-7),
    "squeezenet": (1e-3, 1e-7), "vgg19": (1e-3, 1e-7), "zfnet512": (1e-3, 1e-7),
}


def light_dir() -> Path:
    import onnx

    return Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


def light_model(name: str) -> Path:
    """Path of ``light_<name>.onnx``."""
    return light_dir() / f"light_{name}.onnx"


def light_case(name: str) -> tuple[Path, dict[str, np.ndarray], np.ndarray]:
    """(model path, feeds, expected output 0) for one light model."""
    import onnx
    from onnx import numpy_helper

    path = light_model(name)
    proto = onnx.load(str(path))
    inits = {t.name for t in proto.graph.initializer}
    feeds = {}
    for vi in proto.graph.input:
        if vi.name in inits:
            continue
        shape = tuple(d.dim_value if d.HasField("dim_value") else 1
                      for d in vi.type.tensor_type.shape.dim)
        n = int(np.prod(shape))
        feeds[vi.name] = (np.arange(n).reshape(shape) / n).astype(np.float32)
    expected = numpy_helper.to_array(
        onnx.load_tensor(str(light_dir() / f"light_{name}_output_0.pb")))
    return path, feeds, expected
