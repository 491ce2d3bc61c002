"""Converting ONNX to ncnn with the pnnx executable, and reading back what pnnx decided.

pnnx runs as a child process, never imported: the ``pnnx`` Python package imports torch, and the
converter itself can crash (SIGSEGV on some dynamic models) or hang, which must cost a clear
:class:`~unirt.errors.BackendError`, never the caller's process.

pnnx renames blobs ``in0..``/``out0..`` in graph order and decides per blob whether axis 0 is a
batch axis (``batch_index=0``) or an ordinary one (``233``); it writes that only into the
generated ``model_ncnn.py``, and the shape it converted each blob at only into ``model.pnnx.param``.
Both are parsed here rather than guessed.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from unirt.plugin import BackendError, ToolCrashError, clean

logger = logging.getLogger("unirt")

PNNX_ENV = "UNIRT_PNNX"
NAME = "ncnn"
PARAM = "model.ncnn.param"
BIN = "model.ncnn.bin"
BLOBS = "blobs.json"

Shape = tuple[int | None, ...]


# -- finding the executable ----------------------------------------------------------------------
def _is_executable_binary(path: Path) -> bool:
    """True for a native executable. ``pip install pnnx`` also installs a console script named
    ``pnnx`` that imports the torch-dependent package: that one must never be run."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return os.access(path, os.X_OK) and head != b"" and not head.startswith(b"#!")


def find_pnnx() -> tuple[Path | None, str]:
    """The pnnx executable and where it was found, or ``(None, why not)``."""
    override = os.environ.get(PNNX_ENV)
    if override:
        p = Path(override).expanduser()
        # An explicit choice is trusted (a wrapper script is fine), only checked to exist.
        if p.is_file() and os.access(p, os.X_OK):
            return p, f"${PNNX_ENV}"
        return None, f"${PNNX_ENV}={override} is not an executable file"
    spec = importlib.util.find_spec("pnnx")  # locates the package without importing it
    if spec is not None:
        for loc in spec.submodule_search_locations or []:
            p = Path(loc) / "pnnx"
            if p.is_file() and _is_executable_binary(p):
                return p, "package"
    which = shutil.which("pnnx")
    if which and _is_executable_binary(Path(which)):
        return Path(which), "PATH"
    return None, "the pnnx converter is not installed (no pnnx package binary, none on PATH)"


def pnnx_version(path: Path, found_in: str) -> str:
    """The converter's version: the package version for the wheel's binary; otherwise a digest of
    the binary, so a different pnnx never reuses another's conversions."""
    if found_in == "package":
        from importlib import metadata

        try:
            return metadata.version("pnnx")
        except metadata.PackageNotFoundError:
            pass
    from unirt.plugin import file_sha256

    return "sha256:" + file_sha256(path)[:16]


# -- what pnnx produced --------------------------------------------------------------------------
@dataclass(frozen=True)
class Blob:
    """One input or output blob of a converted model."""

    blob: str  # in0 / out0
    onnx_name: str
    batch_index: int  # 0: axis 0 is a batch axis ncnn does not hold; 233: no batch axis
    shape: Shape | None  # the shape pnnx converted it at (None dims: dynamic)


@dataclass(frozen=True)
class Converted:
    """A converted model in a cache entry: the param/bin files and the blob map."""

    param: Path
    bin: Path
    inputs: tuple[Blob, ...]
    outputs: tuple[Blob, ...]
    layer_types: tuple[str, ...]
    notes: tuple[str, ...]  # what pnnx said it ignored or left as todo

    @staticmethod
    def load(entry: Path) -> Converted:
        doc = json.loads((entry / BLOBS).read_text())

        def blobs(key: str) -> tuple[Blob, ...]:
            return tuple(
                Blob(b["blob"], b["onnx_name"], int(b["batch_index"]),
                     None if b["shape"] is None else tuple(b["shape"]))
                for b in doc[key])

        return Converted(entry / PARAM, entry / BIN, blobs("inputs"), blobs("outputs"),
                         tuple(doc["layer_types"]), tuple(doc["notes"]))


_SHAPE_RE = re.compile(r"#[^=\s]+=\(([^)]*)\)(\w+)")


def _parse_shape(text: str) -> Shape | None:
    m = _SHAPE_RE.search(text)
    if not m:
        return None
    dims = [d.strip() for d in m.group(1).split(",") if d.strip()]
    return tuple(None if d == "?" else int(d) for d in dims)


def _pnnx_io_shapes(pnnx_param: str) -> dict[str, Shape | None]:
    """``{"in0": (1,3,224,224), "out0": (1,1000)}`` from the pnnx.Input/pnnx.Output lines."""
    shapes: dict[str, Shape | None] = {}
    for line in pnnx_param.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] in ("pnnx.Input", "pnnx.Output"):
            shapes[parts[1]] = _parse_shape(line)
    return shapes


def _ncnn_io(ncnn_param: str) -> tuple[list[str], list[str], list[str]]:
    """(input blob names, output blob names, layer types) from an ncnn .param file."""
    lines = [ln for ln in ncnn_param.splitlines() if ln.strip()]
    inputs: list[str] = []
    produced: list[str] = []
    consumed: set[str] = set()
    types: list[str] = []
    for ln in lines[2:]:
        parts = ln.split()
        if len(parts) < 4:
            continue
        ltype, _name, nin, nout = parts[0], parts[1], int(parts[2]), int(parts[3])
        bottoms = parts[4:4 + nin]
        tops = parts[4 + nin:4 + nin + nout]
        types.append(ltype)
        consumed.update(bottoms)
        produced.extend(tops)
        if ltype == "Input":
            inputs.extend(tops)
    outputs = [b for b in produced if re.fullmatch(r"out\d+", b)]
    return inputs, sorted(outputs, key=lambda b: int(b[3:])), types


def _batch_indices(ncnn_py: str) -> dict[str, int]:
    """Per blob, the batch_index pnnx's generated script feeds or reads it with."""
    found: dict[str, int] = {}
    for m in re.finditer(r'ex\.input\(\s*"(\w+)"\s*,[^\n]*?batch_index\s*=\s*(\d+)', ncnn_py):
        found[m.group(1)] = int(m.group(2))
    for m in re.finditer(r'\b(out\d+)\.numpy\(([^)]*)\)', ncnn_py):
        bi = re.search(r"batch_index\s*=\s*(\d+)", m.group(2))
        found[m.group(1)] = int(bi.group(1)) if bi else 233
    return found


def _shape_arg(shapes: Sequence[Shape]) -> str:
    return ",".join("[" + ",".join(str(d) for d in s) + "]f32" for s in shapes)


def _summarise_failure(output: str) -> str:
    """The lines of pnnx's output that say what went wrong (it prints pages of progress)."""
    lines = [clean(ln) for ln in output.splitlines()]
    keep = [ln for ln in lines
            if re.search(r"error|fail|not supported|unsupported|todo|unknown|abort|what\(\)",
                         ln, re.IGNORECASE) and "Unknown CPU vendor" not in ln]
    if not keep:
        keep = [ln for ln in lines if ln][-3:]
    return "; ".join(dict.fromkeys(keep))[:600] or "no output"


def _notes(output: str) -> list[str]:
    return list(dict.fromkeys(
        ln.strip() for ln in output.splitlines() if ln.startswith(("todo ", "ignore "))))


def _run_pnnx(exe: Path, args: list[str], cwd: Path, timeout: float, what: str) -> str:
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            [str(exe), *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, timeout=timeout, check=False)
        # pnnx stays in our process group: when a verification child is killed (timeout, its
        # parent gone), the group kill takes a pnnx still converting with it.
    except subprocess.TimeoutExpired as exc:
        raise BackendError(f"{NAME}: pnnx did not finish converting {what} within {timeout:g} s "
                           "(killed; raise the ncnn option 'timeout' if the model is large)"
                           ) from exc
    except OSError as exc:
        raise BackendError(f"{NAME}: cannot run pnnx ({exe}): {exc.strerror or exc}") from exc
    output = proc.stdout.decode("utf-8", "replace")
    logger.debug("pnnx %s -> rc %s in %.2fs", " ".join(args), proc.returncode,
                 time.perf_counter() - start)
    for line in clean(output).splitlines():  # pnnx's own pages of output: the debug log only
        if line.strip():
            logger.debug("pnnx: %s", line.rstrip())
    if proc.returncode < 0:
        try:
            sig = signal.Signals(-proc.returncode).name
        except ValueError:
            sig = f"signal {-proc.returncode}"
        raise ToolCrashError(f"{NAME}: pnnx crashed ({sig}) converting {what}: "
                         f"{_summarise_failure(output)}")
    if proc.returncode != 0:
        raise BackendError(f"{NAME}: pnnx failed converting {what} (exit {proc.returncode}): "
                           f"{_summarise_failure(output)}")
    return output





def convert(
    exe: Path,
    onnx_file: Path,
    dest: Path,
    *,
    input_names: Sequence[str],
    output_names: Sequence[str],
    shapes: Sequence[Shape],
    shapes2: Sequence[Shape] | None = None,
    fp16: bool,
    optlevel: int,
    timeout: float,
    label: str,
) -> dict[str, Any]:
    """Convert ``onnx_file`` at ``shapes`` into ``dest`` (``model.ncnn.param/.bin`` and the blob
    map). Returns metadata for the cache manifest; raises BackendError saying why not.

    The conversion is static at ``shapes`` (what the model is run at); ``shapes2`` (the dynamic
    dims changed) is given to pnnx as ``inputshape2`` only when it crashed without one.
    """
    what = f"{label} at {_shape_arg(shapes)}"
    with tempfile.TemporaryDirectory(prefix="unirt-pnnx-") as scratch_name:
        scratch = Path(scratch_name)
        src = scratch / "model.onnx"
        try:
            os.link(onnx_file, src)
        except OSError:
            shutil.copyfile(onnx_file, src)
        base = [
            "model.onnx", f"inputshape={_shape_arg(shapes)}", f"fp16={int(fp16)}",
            f"optlevel={optlevel}", "device=cpu",
            "pnnxparam=model.pnnx.param", "pnnxbin=model.pnnx.bin", "pnnxpy=model_pnnx.py",
            "pnnxonnx=model.pnnx.onnx", "ncnnparam=model.ncnn.param",
            "ncnnbin=model.ncnn.bin", "ncnnpy=model_ncnn.py",
        ]
        used2 = None
        try:
            output = _run_pnnx(exe, base, scratch, timeout, what)
        except ToolCrashError:  # pnnx died on a signal: worth one retry
            # pnnx crashes on some models with dynamic dims unless it is shown a second shape.
            if not shapes2:
                raise
            logger.info("pnnx crashed on %s; retrying with inputshape2=%s", label,
                        _shape_arg(shapes2))
            output = _run_pnnx(exe, [*base, f"inputshape2={_shape_arg(shapes2)}"], scratch,
                               timeout, what)
            used2 = shapes2
        param_file = scratch / "model.ncnn.param"
        if not param_file.is_file() or not (scratch / "model.ncnn.bin").is_file():
            raise BackendError(f"{NAME}: pnnx wrote no ncnn model for {what}: "
                               f"{_summarise_failure(output)}")
        ncnn_param = param_file.read_text()
        ncnn_py = (scratch / "model_ncnn.py").read_text() if (
            scratch / "model_ncnn.py").is_file() else ""
        pnnx_param = (scratch / "model.pnnx.param").read_text() if (
            scratch / "model.pnnx.param").is_file() else ""
        in_blobs, out_blobs, types = _ncnn_io(ncnn_param)
        if input_names and not in_blobs:
            raise BackendError(
                f"{NAME}: pnnx folded the whole graph of {label} to constants (no input blob "
                "left): ncnn would return the same outputs whatever the inputs")
        if len(in_blobs) != len(input_names) or in_blobs != [f"in{i}" for i in
                                                               range(len(in_blobs))]:
            raise BackendError(
                f"{NAME}: pnnx kept {len(in_blobs)} input blob(s) ({', '.join(in_blobs)}) for the "
                f"{len(input_names)} inputs of {label} ({', '.join(input_names)}): an input was "
                "folded away or merged, so feeds cannot be mapped safely")
        if out_blobs != [f"out{i}" for i in range(len(output_names))]:
            raise BackendError(
                f"{NAME}: pnnx produced output blobs {', '.join(out_blobs) or 'none'} for the "
                f"{len(output_names)} outputs of {label} ({', '.join(output_names)}): an output "
                "was folded to a constant or merged, so outputs cannot be mapped safely")
        bidx = _batch_indices(ncnn_py)
        pshapes = _pnnx_io_shapes(pnnx_param)
        inputs = [Blob(f"in{i}", n, bidx.get(f"in{i}", 233), pshapes.get(f"in{i}"))
                  for i, n in enumerate(input_names)]
        outputs = [Blob(f"out{i}", n, bidx.get(f"out{i}", 233), pshapes.get(f"out{i}"))
                   for i, n in enumerate(output_names)]
        for blob, given in zip(inputs, shapes):
            if blob.shape is not None and not _compatible(blob.shape, given):
                raise BackendError(
                    f"{NAME}: pnnx's {blob.blob} has shape {blob.shape}, but input "
                    f"{blob.onnx_name!r} was converted at {given}: blob order is not the "
                    "model's, refusing to guess")
        shutil.copyfile(param_file, dest / PARAM)
        shutil.copyfile(scratch / "model.ncnn.bin", dest / BIN)
        notes = _notes(output)
        (dest / BLOBS).write_text(json.dumps({
            "inputs": [asdict(b) for b in inputs], "outputs": [asdict(b) for b in outputs],
            "layer_types": sorted(set(types)), "notes": notes,
        }, indent=1))
        return {"inputshape": _shape_arg(shapes),
                "inputshape2": _shape_arg(used2) if used2 else None}


def _compatible(a: Shape, b: Shape) -> bool:
    return len(a) == len(b) and all(x is None or y is None or x == y for x, y in zip(a, b))
