"""The ``unirt`` command line.

User errors (:class:`~unirt.errors.UnirtError`) print as ``Error: ...`` with exit status 1 and no
traceback; anything else is a bug and prints as an internal error with its traceback and exit
status 3, so the two never get confused. Every command takes ``--json``.
"""

from __future__ import annotations

import contextlib
import os
import sys
import traceback
from typing import Any

import click

from unirt.cli.options import (
    with_quiet,
)
from unirt.errors import UnirtError

EXIT_USER_ERROR = 1
EXIT_INTERNAL_ERROR = 3


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except UnirtError as exc:
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(EXIT_USER_ERROR)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except BrokenPipeError:
            # `unirt lint m.onnx | head`: the reader left; nothing more to say, and no
            # traceback when Python flushes stdout at exit.
            # (no real stdout under click's test runner: nothing to redirect)
            with contextlib.suppress(OSError, ValueError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            ctx.exit(EXIT_USER_ERROR)
        except Exception:
            click.echo("Internal error (a bug in unirt or a plugin, please report it):", err=True)
            click.echo(traceback.format_exc(), err=True)
            ctx.exit(EXIT_INTERNAL_ERROR)




@click.group(cls=_Group)
@click.version_option(package_name="unirt")
def cli() -> None:
    """Run ONNX models on whichever engine on this machine can run them, and say why."""




def _add_builtin_groups() -> None:
    """Every built-in command, one module each."""
    from unirt.cli.backends import backends, plugins
    from unirt.cli.bench import bench_cmd
    from unirt.cli.cache import cache
    from unirt.cli.capabilities import capabilities_command, probe_ops_command
    from unirt.cli.compare import compare
    from unirt.cli.info import info
    from unirt.cli.lint import lint_command
    from unirt.cli.lock import lock_command
    from unirt.cli.reduce import reduce_command
    from unirt.cli.rewrite import rewrite_command
    from unirt.cli.run import run
    from unirt.cli.serve import serve_command
    from unirt.cli.tune import tune_command

    for command in (backends, plugins, info, run, compare, bench_cmd):
        cli.add_command(command)
    cli.add_command(capabilities_command)
    cli.add_command(probe_ops_command)
    cli.add_command(cache)
    cli.add_command(tune_command)
    cli.add_command(lock_command)
    cli.add_command(rewrite_command)
    cli.add_command(lint_command)
    cli.add_command(reduce_command)
    cli.add_command(serve_command)


_add_builtin_groups()
with_quiet(cli)


def _add_plugin_commands() -> None:
    from unirt.plugin.registry import get_registry

    get_registry().call_hook_safely("register_commands", cli=cli)
    with_quiet(cli)  # plugin commands too


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    _add_plugin_commands()
    cli.main(args=argv, prog_name="unirt")


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
