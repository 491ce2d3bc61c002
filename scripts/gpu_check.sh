#!/usr/bin/env bash
# What to run on a lent NVIDIA GPU machine (issue 19), in one or two device calls; not run in CI.
#
#   1. nvidia-smi: the GPU, driver, memory, compute capability.
#   2. ncnn on Vulkan through the NVIDIA ICD: ncnn's Vulkan devices, the contract kit on
#      ncnn-vulkan, and error/latency vs the CPU reference (scripts/gpu_check.py).
#   3. onnxruntime-cuda, when onnxruntime-gpu is importable: the contract kit, the IO-binding
#      tests, and the same figures. onnxruntime-gpu is never installed over the image's own
#      onnxruntime: put it in a folder of its own (pip install --no-deps --target .cache/ort-gpu
#      onnxruntime_gpu-*.whl, the wheel carried in <= 60 MiB parts and joined with cat) and it
#      goes first on PYTHONPATH for this script only.
#
# Environment: PYTHON (default python3), ORT_GPU_DIR (default .cache/ort-gpu), VK_ICD_FILENAMES
# (default: the NVIDIA ICD manifest found on the machine, or one written for libGLX_nvidia.so.0).
# Without a system libvulkan.so.1 the loader unpacked by scripts/lavapipe.sh (carry .cache/lavapipe)
# is used. Output goes to stdout and, when $OUT is set (the device tool), to $OUT/gpu_check.log.
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
ORT_GPU_DIR="${ORT_GPU_DIR:-$PWD/.cache/ort-gpu}"
LOG="${OUT:-/tmp}/gpu_check.log"
exec > >(tee "$LOG") 2>&1
export PYTHONPATH="$PWD:$PWD/plugins${PYTHONPATH:+:$PYTHONPATH}"
step() { echo; echo "== $* ($(date +%T))"; }

step "1. nvidia-smi"
nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv || nvidia-smi

step "2. ncnn on Vulkan (NVIDIA ICD)"
if [ -z "${VK_ICD_FILENAMES:-}" ]; then
    for f in /usr/share/vulkan/icd.d/nvidia_icd*.json /etc/vulkan/icd.d/nvidia_icd*.json; do
        [ -f "$f" ] && VK_ICD_FILENAMES="$f" && break
    done
fi
if [ -z "${VK_ICD_FILENAMES:-}" ]; then  # containers often mount the driver but not its manifest
    glx="$(ldconfig -p | awk '/libGLX_nvidia.so.0/ {print $NF; exit}')"
    if [ -n "$glx" ]; then
        mkdir -p .cache
        printf '{"file_format_version": "1.0.0", "ICD": {"library_path": "%s", "api_version": "1.3.0"}}\n' \
            "$glx" >.cache/nvidia_icd.json
        VK_ICD_FILENAMES="$PWD/.cache/nvidia_icd.json"
    fi
fi
export VK_ICD_FILENAMES="${VK_ICD_FILENAMES:-}"
echo "VK_ICD_FILENAMES=$VK_ICD_FILENAMES"
if ! ldconfig -p | grep -q libvulkan.so.1 && [ -f .cache/lavapipe/env ]; then
    export LD_LIBRARY_PATH="$(. .cache/lavapipe/env && echo "$LD_LIBRARY_PATH")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    echo "loader from .cache/lavapipe: $LD_LIBRARY_PATH"
fi
"$PY" -c "
import ncnn, unirt_ncnn
print('ncnn', ncnn.__version__, 'vulkan devices (index, name, is_cpu):', unirt_ncnn._vulkan_devices())
" || echo "ncnn: not importable here"
timeout 300 "$PY" -m pytest -q -x tests/plugin/test_contract.py -k "ncnn-vulkan" -rs | tail -n 15
timeout 300 "$PY" scripts/gpu_check.py ncnn-vulkan

step "3. onnxruntime-cuda"
if [ -d "$ORT_GPU_DIR" ]; then export PYTHONPATH="$ORT_GPU_DIR:$PYTHONPATH"; fi
if "$PY" -c "import onnxruntime as o, sys; print(o.__version__, o.__file__, o.get_available_providers()); sys.exit('CUDAExecutionProvider' not in o.get_available_providers())"; then
    timeout 300 "$PY" -m pytest -q tests/plugin/test_contract.py -k "onnxruntime-cuda" -rs | tail -n 15
    timeout 120 "$PY" -m pytest -q tests/plugins/test_ort_binding.py | tail -n 3
    timeout 300 "$PY" scripts/gpu_check.py onnxruntime-cuda
else
    echo "onnxruntime-gpu not importable (looked in $ORT_GPU_DIR first): skipped"
fi
step "done"
