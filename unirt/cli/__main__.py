"""``python -m unirt.cli``: the same command as the ``unirt`` script."""

from unirt.cli.main import main

main()
