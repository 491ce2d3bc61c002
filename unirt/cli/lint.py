"""``unirt lint``: what is wrong with a model, node by node, before any engine runs it.

Kept apart from :mod:`unirt.cli.main` (the core adds it with ``cli.add_command(lint_command)``).
Exit status 1 when there are errors, so a CI step can gate on it; a model that cannot be read at
all is the CLI's usual one-line ``UnirtError``, exit status 1 too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from unirt.cli import output as cli_output
from unirt.cli.options import model_argument

if TYPE_CHECKING:  # pragma: no cover
    from unirt.tools.lint import Finding, LintReport


@click.command("lint")
@model_argument
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def lint_command(model: str, as_json: bool) -> None:
    """Check MODEL: the ONNX checker and strict shape inference (each problem tied to a node),
    pooling/convolution attributes against input ranks, declared-dynamic dims that a constant
    pins to the traced size, unused initializers, and opset/IR versions the installed engines
    cannot load. Exit status 1 when there are errors."""
    from unirt.tools.lint import lint

    report = lint(model)
    if as_json:
        cli_output.print_json(report.as_dict())
    else:
        for line in report_lines(report):
            click.echo(line)
    if not report.ok:
        click.get_current_context().exit(1)


def finding_line(f: Finding) -> str:
    """One finding on one line: severity, code, message (a message never spans lines)."""
    message = " ".join(f.message.split())
    return f"{f.severity:<7} {f.code:<18} {message}"


def report_lines(report: LintReport, limit: int | None = None) -> list[str]:
    """The summary line, then each finding, errors first. ``limit``: at most that many
    findings per severity (the rest counted on one line)."""
    lines = [f"{report.model}: {report.summary()}"]
    for severity in dict.fromkeys(f.severity for f in report.findings):
        group = report.of(severity)
        shown = group if limit is None else group[:limit]
        lines += [finding_line(f) for f in shown]
        if len(group) > len(shown):
            lines.append(f"{'':<7} ... and {len(group) - len(shown)} more {severity}s "
                         "(unirt lint for all)")
    return lines
