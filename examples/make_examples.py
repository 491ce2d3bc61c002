"""Regenerate the example model shipped in examples/ (deterministic: same bytes every time).

    python examples/make_examples.py
"""

from __future__ import annotations

from pathlib import Path

from unirt.testing import models

HERE = Path(__file__).resolve().parent

if __name__ == "__main__":
    path = models.save(models.conv_net(batch="batch", size=32), HERE / "tiny_cnn.onnx")
    print(f"wrote {path} ({path.stat().st_size} bytes)")
