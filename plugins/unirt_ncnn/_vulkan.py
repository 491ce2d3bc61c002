"""Vulkan devices as ncnn sees them, and whether a Vulkan driver is installed at all.

``ncnn-vulkan`` is asked on every first load (GPU backends come first): a stat of the folders
where the Vulkan loader looks for driver manifests answers there without importing ncnn. A
CPU-backed Vulkan driver (Mesa's lavapipe) is a device to ncnn, yet not a GPU to route to, so
each device says whether it is the CPU.
"""

from __future__ import annotations

import os
from pathlib import Path

NAME = "ncnn"


def gpu_count() -> int:
    import ncnn

    from unirt.plugin import captured

    # ncnn prints 'dlopen failed libvulkan.so.1' from C when probing for a GPU: expected on a
    # machine without Vulkan, a debug line rather than the user's terminal.
    with captured(NAME):
        return int(ncnn.get_gpu_count())


#: Where the Vulkan loader looks for driver manifests (ICDs), besides the environment.
ICD_DIRS = ("/usr/share/vulkan/icd.d", "/usr/local/share/vulkan/icd.d", "/etc/vulkan/icd.d",
            "/usr/local/etc/vulkan/icd.d", "~/.local/share/vulkan/icd.d")


def has_manifest() -> bool:
    """Whether a Vulkan driver manifest exists where the loader looks (a stat per folder)."""
    if os.environ.get("VK_ICD_FILENAMES") or os.environ.get("VK_DRIVER_FILES"):
        return True
    for d in ICD_DIRS:
        try:
            if any(p.suffix == ".json" for p in Path(d).expanduser().iterdir()):
                return True
        except OSError:
            continue
    return False


#: ``GpuInfo.type()`` of a Vulkan device that is really the CPU (Mesa's lavapipe, "llvmpipe").
CPU_TYPE = 3


def devices() -> list[tuple[int, str, bool]]:
    """(index, name, is_cpu) for every Vulkan device ncnn finds."""
    import ncnn

    from unirt.plugin import captured

    out = []
    with captured(NAME):
        for i in range(int(ncnn.get_gpu_count())):
            info = ncnn.get_gpu_info(i)
            out.append((i, str(info.device_name()), int(info.type()) == CPU_TYPE))
    return out
