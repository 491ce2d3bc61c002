"""Arguments and options shared by several ``unirt`` commands, declared once.

The model argument takes any string: whether it names a readable model file is
:func:`unirt.model.info.read_model`'s to say, as the one-line ``Error: ...`` (exit 1) every command
prints for a user error, not click's usage message (exit 2) for a directory or a missing file.

``--quiet`` is on every command: long steps (verification children, rankings, conversions)
report progress on stderr (:mod:`unirt.cli.progress`) unless it is given.
"""

from __future__ import annotations

from typing import Any

import click

model_argument = click.argument("model", metavar="MODEL")
optional_model_argument = click.argument("model", metavar="[MODEL]", required=False)


def _writable(directory: bool) -> Any:
    def check(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        from unirt.store.files import check_writable

        if value:
            check_writable(value, max(param.opts, key=len), directory=directory)
        return value

    return check


#: ``callback=`` for an option naming a file or a folder to write: checked while the command
#: line is parsed, before any work (:func:`unirt.store.files.check_writable`; a ``UnirtError``).
writable_file = _writable(directory=False)
writable_dir = _writable(directory=True)


def _show_progress(ctx: click.Context, _param: click.Parameter, quiet: bool) -> None:
    from unirt.cli.progress import shown

    ctx.with_resource(shown(quiet))


quiet_option = click.option(
    "--quiet", "-q", is_flag=True, expose_value=False, callback=_show_progress,
    help="No progress lines on stderr for long steps.")


def with_quiet(command: Any) -> Any:
    """``command`` (a click command or group, with its subcommands) given ``--quiet``."""
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            with_quiet(sub)
        return command
    if not any(p.name == "quiet" for p in command.params):
        quiet_option(command)
    return command


input_option = click.option(
    "--input", "-i", "input_specs", multiple=True, metavar="NAME=FILE.npy",
    help="An input from a .npy file (repeatable; FILE alone for a single-input model).")
input_range_option = click.option(
    "--input-range", "range_specs", multiple=True, metavar="NAME=LO,HI",
    help="Values of a generated input: integers LO..HI, floats in [LO, HI) (repeatable).")
input_values_option = click.option(
    "--input-values", "value_specs", multiple=True, metavar="NAME=V1,V2,...",
    help="The values a generated input takes, e.g. sr=16000,8000 (a scalar gets the first; "
         "repeatable; not with --input-range for the same input).")
save_inputs_option = click.option(
    "--save-inputs", "save_dir", default=None, metavar="DIR", callback=writable_dir,
    help="Write the inputs used (NAME.npy and inputs.json) to DIR, to replay with "
         "--load-inputs.")
load_inputs_option = click.option(
    "--load-inputs", "load_dir", default=None, metavar="DIR",
    help="Use the inputs a --save-inputs wrote to DIR (exactly those arrays).")
shape_option = click.option(
    "--shape", "-s", "shape_specs", multiple=True, metavar="NAME=1x3x224x224",
    help="The shape of an input: sets its dynamic dims (repeatable).")


def operating_point_options(command: Any) -> Any:
    """``command`` given the options that say where it measures, the same on every command
    that verifies or times a model: ``--shape``, ``--input``, ``--load-inputs``,
    ``--input-range`` and ``--input-values`` (read with :func:`unirt.cli.inputs.
    operating_point`)."""
    for option in (input_values_option, input_range_option, load_inputs_option, input_option,
                   shape_option):
        command = option(command)
    return command
