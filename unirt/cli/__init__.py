"""The ``unirt`` command: the click group (:mod:`unirt.cli.main`), shared options, one module per
command."""
