"""Turning the shared input options (:mod:`unirt.cli.options`) into what the library takes.

One reading of ``--input``, ``--load-inputs``, ``--input-range``, ``--input-values`` and
per-output ``--atol`` / ``--rtol`` for every command, so that they mean the same in ``run``,
``compare``, ``bench``, ``capabilities --probe`` and ``tune``, and are all checked before anything
is loaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from unirt.errors import UnirtError

if TYPE_CHECKING:  # pragma: no cover
    from unirt.evidence.operating import InputSets
    from unirt.model.info import ModelInfo


def _input_files(info: ModelInfo, input_specs: Sequence[str]) -> dict[str, str]:
    """``--input NAME=FILE.npy`` (or ``FILE`` alone for a single-input model): name -> file."""
    from unirt.evidence.inputs import parse_assignments

    names = [t.name for t in info.inputs]
    files: dict[str, str] = {}
    for spec in input_specs:
        if "=" not in spec and len(names) == 1:
            files[names[0]] = spec
        else:
            files.update(parse_assignments([spec], "--input"))
    return files


def given_inputs(info: ModelInfo, input_specs: Sequence[str], load_dir: str | None = None
                 ) -> tuple[dict[str, Any], dict[str, str]]:
    """(arrays, where each came from) for ``--input`` and ``--load-inputs``; ``--input``
    wins for an input both give. A name that is no input of the model is an error naming
    the inputs."""
    from unirt.evidence.input_files import load_inputs, load_npy

    names = [t.name for t in info.inputs]
    files = _input_files(info, input_specs)
    loaded = load_inputs(load_dir) if load_dir else {}
    unknown = (set(files) | set(loaded)) - set(names)
    if unknown:
        flag = "--input" if set(files) & unknown else "--load-inputs"
        raise UnirtError(f"{flag} names unknown input(s) {', '.join(sorted(unknown))}; "
                         f"inputs: {', '.join(names)}")
    sources = {n: f"{load_dir} (saved)" for n in loaded}
    sources.update(files)
    arrays = {**loaded, **{name: load_npy(path, name) for name, path in files.items()}}
    return arrays, sources


def input_sets(info: ModelInfo, input_specs: Sequence[str], load_dir: str | None = None,
               shapes: dict[str, Any] | None = None,
               ranges: dict[str, Any] | None = None) -> InputSets | None:
    """The user's input sets from ``-i NAME=FILE.npy`` and ``--load-inputs DIR`` (every set a
    folder holds), as the library takes them (:class:`unirt.evidence.operating.InputSets`), or None
    when neither is given. Inputs a set does not give are filled with seeded generated values (at
    ``--shape``, in ``--input-range``), the same every run, so the digest is stable."""
    from unirt.evidence.hints import hinted_feeds
    from unirt.evidence.input_files import load_input_sets, load_npy
    from unirt.evidence.operating import as_input_sets

    if not input_specs and not load_dir:
        return None
    names = [t.name for t in info.inputs]
    files = _input_files(info, input_specs)
    unknown = set(files) - set(names)
    if unknown:
        raise UnirtError(f"--input names unknown input(s) {', '.join(sorted(unknown))}; "
                         f"inputs: {', '.join(names)}")
    arrays = {name: load_npy(path, name) for name, path in files.items()}
    sets = load_input_sets(load_dir) if load_dir else [{}]
    for i, s in enumerate(sets):
        extra = set(s) - set(names)
        if extra:
            raise UnirtError(f"--load-inputs {load_dir} names unknown input(s) "
                             f"{', '.join(sorted(extra))}; inputs: {', '.join(names)}")
        s.update(arrays)
        if len(s) < len(names):
            sets[i] = hinted_feeds(info, s, shapes, i, ranges)
    origin = " and ".join(([f"--load-inputs {load_dir}"] if load_dir else [])
                          + (["--input"] if files else []))
    return as_input_sets(info, sets, origin)


def ranges(info: ModelInfo, specs: Sequence[str], value_specs: Sequence[str] = ()
           ) -> dict[str, Any]:
    """``--input-range NAME=LO,HI`` and ``--input-values NAME=V1,V2`` together, checked
    against the model's inputs: one mapping, which goes wherever ranges go. An input given both
    is an error naming it (which of the two would win is not the user's guess to make)."""
    from unirt.evidence.inputs import parse_assignments
    from unirt.evidence.values import check_ranges, parse_range, parse_values

    parsed: dict[str, Any] = {name: parse_range(value, name)
                              for name, value in parse_assignments(specs, "--input-range").items()}
    sets = {name: parse_values(value, name)
            for name, value in parse_assignments(value_specs, "--input-values").items()}
    both = sorted(set(parsed) & set(sets))
    if both:
        raise UnirtError(f"input {both[0]!r} is given both --input-range and --input-values; "
                         "give one")
    checked = check_ranges(info.inputs, parsed, "--input-range")
    checked.update(check_ranges(info.inputs, sets, "--input-values"))
    return checked


def tolerances(info: ModelInfo, specs: Sequence[str], what: str
               ) -> float | dict[str, float] | None:
    """``--atol X`` (every output) and ``--atol NAME=X`` (one output), together: a number,
    or output name -> number (outputs not named by NAME=X get X when it was given too)."""
    from unirt.tools.compare import check_tolerance

    overall: float | None = None
    per_output: dict[str, float] = {}
    for spec in specs:
        name, sep, value = spec.rpartition("=")
        try:
            number = float(value)
        except ValueError:
            raise UnirtError(f"bad --{what} {spec!r}: write a number, or OUTPUT=NUMBER") \
                from None
        if sep:
            per_output[name] = number
        else:
            overall = number
    if not per_output:
        return check_tolerance(info, overall, what)  # type: ignore[return-value]
    full = {t.name: overall for t in info.outputs if overall is not None}
    full.update(per_output)
    return check_tolerance(info, full, what)  # type: ignore[return-value]


def operating_point(info: ModelInfo, shape_specs: Sequence[str], input_specs: Sequence[str],
                    load_dir: str | None, range_specs: Sequence[str],
                    value_specs: Sequence[str]
                    ) -> tuple[dict[str, tuple[int, ...]], dict[str, Any], InputSets | None]:
    """(shapes, value ranges and sets, the user's input sets or None) from the options of
    :func:`unirt.cli.options.operating_point_options`, each checked against the model."""
    from unirt.evidence.inputs import check_shapes, parse_assignments, parse_shape

    shapes = {k: parse_shape(v) for k, v in parse_assignments(shape_specs, "--shape").items()}
    check_shapes(info, shapes, "--shape")
    checked = ranges(info, range_specs, value_specs)
    return shapes, checked, input_sets(info, input_specs, load_dir, shapes, checked)
