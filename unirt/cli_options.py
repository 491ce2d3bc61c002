"""Arguments and options shared by several ``unirt`` commands, declared once.

The model argument takes any string: whether it names a readable model file is
:func:`unirt.model.read_model`'s to say, as the one-line ``Error: ...`` (exit 1) every command
prints for a user error, not click's usage message (exit 2) for a directory or a missing file.
"""

from __future__ import annotations

import click

model_argument = click.argument("model", metavar="MODEL")
optional_model_argument = click.argument("model", metavar="[MODEL]", required=False)
