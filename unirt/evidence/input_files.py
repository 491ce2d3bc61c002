"""Input sets on disk: one ``.npy`` per input and an ``inputs.json`` index, written by
``--save-inputs`` and :func:`save_input_sets`, read by ``--load-inputs`` and ``load(inputs=DIR)``.

File names come from the index and must name files in the folder itself: a folder of inputs
never makes unirt read outside it. Arrays are read without pickles.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unirt.errors import InputError, UnirtError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np


def load_npy(path: str | Path, name: str) -> np.ndarray:
    """Read one input from a .npy file (pickles refused), naming the input on failure."""
    import numpy as np

    p = Path(path)
    if not p.is_file():
        raise InputError(f"input {name!r}: file not found: {path}")
    try:
        return np.load(p, allow_pickle=False)
    except Exception as exc:
        raise InputError(f"input {name!r}: {path} is not a readable .npy file ({exc})") from exc


#: The index :func:`save_inputs` writes next to the arrays: input name -> file name.
INPUTS_INDEX = "inputs.json"


def save_inputs(directory: str | Path, feeds: Mapping[str, np.ndarray]) -> dict[str, str]:
    """Write each input as ``NAME.npy`` in ``directory`` (a name made safe for a file name,
    numbered when two collide) and an index, ``inputs.json``, mapping input names to files, so
    that :func:`load_inputs` gives back exactly these arrays. Returns name -> path."""
    files = _write_sets(Path(directory), [feeds], "")
    return {name: str(Path(directory) / file) for name, file in files[0].items()}


def save_input_sets(directory: str | Path, sets: Sequence[Mapping[str, np.ndarray]]
                    ) -> list[dict[str, str]]:
    """Write several input sets (what ``load(inputs=[...])`` takes) into ``directory``: one
    set is written as :func:`save_inputs` writes it; several as ``set<i>.NAME.npy`` with an
    index ``{"sets": [{name: file}, ...]}``. :func:`load_input_sets` reads either back."""
    if not sets:
        raise UnirtError(f"--save-inputs {directory}: no input sets to write")
    return _write_sets(Path(directory), list(sets), "set" if len(sets) > 1 else "")


def _write_sets(target: Path, sets: list[Mapping[str, np.ndarray]], prefix: str
                ) -> list[dict[str, str]]:
    import io
    import json
    import re

    import numpy as np

    from unirt.store.files import write_atomic

    if target.exists() and not target.is_dir():
        raise UnirtError(f"--save-inputs {target}: not a directory")
    indexes: list[dict[str, str]] = []
    used: set[str] = set()
    for i, feeds in enumerate(sets):
        index: dict[str, str] = {}
        for name, array in feeds.items():
            stem = (f"{prefix}{i}." if prefix else "") + (
                re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "input")
            file, n = f"{stem}.npy", 1
            while file in used or file == INPUTS_INDEX:
                n += 1
                file = f"{stem}.{n}.npy"
            used.add(file)
            buf = io.BytesIO()
            np.save(buf, np.asarray(array), allow_pickle=False)
            write_atomic(target / file, buf.getvalue())
            index[name] = file
        indexes.append(index)
    doc: dict[str, Any] = {"sets": indexes} if prefix else {"inputs": indexes[0]}
    write_atomic(target / INPUTS_INDEX, json.dumps(doc, indent=1))
    return indexes


def load_inputs(directory: str | Path) -> dict[str, np.ndarray]:
    """The arrays :func:`save_inputs` wrote in ``directory``, by input name (the first set of
    a folder holding several)."""
    return load_input_sets(directory)[0]


def load_input_sets(directory: str | Path, what: str = "--load-inputs"
                    ) -> list[dict[str, np.ndarray]]:
    """Every input set :func:`save_inputs` or :func:`save_input_sets` wrote in ``directory``.
    File names come from the index and must name files in ``directory`` itself. ``what``: how
    errors name the folder's option (``inputs=`` for the Python API)."""
    import json

    base = Path(directory)
    index_path = base / INPUTS_INDEX
    writer = ("--save-inputs" if what.startswith("--")
              else "unirt.evidence.input_files.save_input_sets")
    if not base.is_dir():
        raise InputError(f"{what} {directory}: no such directory")
    if not index_path.is_file():
        raise InputError(f"{what} {directory}: no {INPUTS_INDEX} there (write one with "
                         f"{writer})")
    try:
        doc = json.loads(index_path.read_text())
        indexes = doc["sets"] if isinstance(doc, dict) and "sets" in doc else [doc["inputs"]]
        if not isinstance(indexes, list) or not indexes or \
                not all(isinstance(i, dict) for i in indexes):
            raise TypeError("inputs is not an object")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{what} {directory}: {INPUTS_INDEX} is not an index "
                         f"{writer} wrote ({exc})") from exc
    out: list[dict[str, np.ndarray]] = []
    for index in indexes:
        feeds = {}
        for name, file in index.items():
            if not isinstance(file, str) or Path(file).name != file or file in ("", ".", ".."):
                raise InputError(f"{what} {directory}: bad file name {file!r} for "
                                 f"{name!r}")
            feeds[str(name)] = load_npy(base / file, str(name))
        out.append(feeds)
    return out
