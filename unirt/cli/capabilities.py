"""``unirt capabilities`` and ``unirt probe-ops``: the capability matrix on the command line.

Kept apart from :mod:`unirt.cli.main` so the matrix can grow without touching the core commands; the
CLI adds these with ``cli.add_command``. Errors follow the CLI's rule: a ``UnirtError`` is one
line, exit status 1.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from unirt.cli import output as cli_output
from unirt.cli.options import model_argument, operating_point_options, writable_file
from unirt.errors import UnirtError, clean

_console = cli_output.console
_table = cli_output.table
_echo_json = cli_output.print_json


# -- unirt probe-ops ---------------------------------------------------------------------------
@click.command("probe-ops")
@click.option("--backend", "-b", required=True, help="The backend to probe.")
@click.option("--out", "-o", "out", type=click.Path(dir_okay=False), default=None,
              callback=writable_file,
              help="Where to write the table (default: "
                   "unirt/capability/optables/<backend>-<version>.json "
                   "when every op is probed; with --ops, nothing is written unless given).")
@click.option("--ops", default=None, help="Only cases using these ops, e.g. Conv,Relu.")
@click.option("--timeout", default=30.0, show_default=True, type=float,
              help="Seconds per case before it is recorded as timed out.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def probe_ops_command(backend: str, out: str | None, ops: str | None, timeout: float,
                      as_json: bool) -> None:
    """Run the ONNX node conformance tests on BACKEND and write its op-support table."""
    from unirt.capability.table import summarize_table
    from unirt.tools.probe_ops import default_table_path, probe_ops, write_table

    op_list = [o.strip() for o in ops.split(",") if o.strip()] if ops else None
    if timeout <= 0:
        raise UnirtError("--timeout must be positive")
    progress_cb = None
    prog: Any = None
    if not as_json and sys.stderr.isatty():
        from rich.progress import Progress

        prog = Progress(console=_console(stderr=True), transient=True)
        task = prog.add_task(f"probing {backend}", total=None)
        prog.start()

        def progress_cb(i: int, n: int, name: str, status: str) -> None:
            prog.update(task, completed=i, total=n, description=f"{backend}: {name}")
    try:
        table = probe_ops(backend, ops=op_list, timeout=timeout, progress=progress_cb)
    finally:
        if prog is not None:
            prog.stop()
    path = out or (None if op_list else str(default_table_path(backend, table["version"])))
    if path:
        write_table(table, path)
    summary = summarize_table(table)
    summary["written_to"] = path
    if as_json:
        _echo_json(summary)
        return
    con = _console()
    s = table["summary"]
    con.print(f"{backend} {table['version']}: {s['pass']}/{s['total']} cases pass "
              f"({summary['pass_rate']:.1%}) in {table['seconds']:.0f} s; "
              + ", ".join(f"{k} {v}" for k, v in s.items() if k not in ("pass", "total") and v))
    rows = [[op, f"{d['pass']}/{d['cases']}", d["status"], d.get("first_error") or ""]
            for op, d in summary["ops"].items() if d["status"] != "supported"]
    if rows:
        con.print(_table("Ops not fully supported", ["op", "pass", "status", "first error"],
                         rows))
    if path:
        con.print(f"table written to {path}")


# -- unirt capabilities ------------------------------------------------------------------------
def _label(reason: Any) -> str:
    if str(reason.evidence) == "table":
        word = "predicted unsupported" if reason.verdict == "UNSUPPORTED" else "doubt"
        return f"{word}: {reason}"
    if reason.verdict != "UNSUPPORTED":
        return f"doubt: {reason}"
    return f"{reason.evidence}: {reason}"

#: Doubts (reasons that decide nothing) shown per backend after the deciding ones.
_DOUBTS = 3
#: Lint findings shown per severity at the top of ``unirt capabilities``.
_LINT_LINES = 10

_STATE_MARK = {"supported": "yes", "conditional": "yes*", "unsupported": "NO", "unknown": "?",
               "unavailable": "-"}


@click.command("capabilities")
@model_argument
@click.option("--backends", "backend_list", default=None,
              help="Only these backends (comma-separated); default: every registered one.")
@click.option("--probe", is_flag=True,
              help="Also open and run the model on each available backend (in a child process), "
                   "compare with the reference and time it.")
@operating_point_options
@click.option("--timeout", default=120.0, show_default=True, type=float,
              help="Seconds per backend for --probe.")
@click.option("--no-query", is_flag=True, help="Do not ask engines about their own support.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def capabilities_command(model: str, backend_list: str | None, probe: bool,
                         shape_specs: tuple[str, ...], input_specs: tuple[str, ...],
                         load_dir: str | None, range_specs: tuple[str, ...],
                         value_specs: tuple[str, ...], timeout: float, no_query: bool,
                         as_json: bool) -> None:
    """Which backend can run MODEL, and why not: verdicts with reasons, an op x backend matrix,
    and with --probe what was measured."""
    from unirt.capability.table import CaseStatus
    from unirt.cli import inputs as cli_inputs
    from unirt.evidence.hints import graph_hints
    from unirt.evidence.inputs import fill_dynamic
    from unirt.model.info import read_model
    from unirt.tools.capability_report import capabilities

    names = [b.strip() for b in backend_list.split(",") if b.strip()] if backend_list else None
    info = read_model(model)
    shapes, ranges, inputs = cli_inputs.operating_point(info, shape_specs, input_specs, load_dir,
                                                        range_specs, value_specs)
    if (inputs is not None or ranges) and not probe:
        raise UnirtError("--input and --input-range are for --probe (they say what the model "
                         "is run on; so are --load-inputs and --input-values)")
    if probe and inputs is None:  # said out loud: a guessed size is why models "fail"
        fill_dynamic(info.inputs, shapes, sizes=graph_hints(info).sizes())
    report = capabilities(info, backends=names, probe=probe, query=not no_query,
                          shapes=shapes or None, timeout=timeout, inputs=inputs,
                          ranges=ranges or None)
    if as_json:
        _echo_json(report.as_dict())
        return
    con = _console()
    if report.lint is not None and report.lint_findings:
        from unirt.cli.lint import report_lines
        from unirt.tools.lint import LintReport

        shown = LintReport(report.lint.model, tuple(report.lint_findings))
        lines = report_lines(shown, limit=_LINT_LINES)
        # The counts are the whole report's, as `unirt lint` gives them; infos are not listed.
        hidden = "infos not shown; " if report.lint.infos else ""
        con.print(f"lint: {report.lint.summary()} ({hidden}unirt lint {model} for all "
                  "findings)", markup=False, highlight=False, soft_wrap=True)
        for line in lines[1:]:
            con.print(line, markup=False, highlight=False, soft_wrap=True)
    m = report.model
    opsets = ", ".join(f"{d or 'ai.onnx'}:{v}" for d, v in m["opsets"].items())
    con.print(f"[bold]{m['name']}[/bold]: IR {m['ir_version']}, opsets {opsets}, "
              f"{m['nodes']} nodes, {m['size_bytes'] / 1e6:.2f} MB", highlight=False)
    con.print("ops: " + ", ".join(f"{op} x{n}" for op, n in m["op_counts"].items()),
              highlight=False)
    for t in m["inputs"]:
        dyn = f"  dynamic: {', '.join(map(str, t['dynamic']))}" if t["dynamic"] else ""
        shape = "?" if t["shape"] is None else "[" + ",".join(
            "?" if d is None else str(d) for d in t["shape"]) + "]"
        con.print(f"input {t['name']}: {t['dtype']}{shape}{dyn}", highlight=False,
                  markup=False)
    if m.get("shape_inference_error"):
        con.print(f"[yellow]shape inference failed: {m['shape_inference_error']}[/yellow]")
    cols = ["backend", "verdict (decided by)", "predicted", "engine's answer", "measured",
            "reasons"]
    rows = []
    for name, v in report.verdicts.items():
        ordered = v.ordered_reasons()
        # What decided comes first and in full; doubts (UNKNOWN, predictions) after, a few.
        deciding = [r for r in ordered if r.decisive]
        doubts = [r for r in ordered if not r.decisive]
        reasons = [_label(r) for r in deciding] + [_label(r) for r in doubts[:_DOUBTS]]
        if len(doubts) > _DOUBTS:
            reasons.append(f"... and {len(doubts) - _DOUBTS} more doubts (--json for all)")
        reasons += [f"({n})" for n in v.notes]
        if v.fixable_by:
            reasons.append(f"fixable by rewrite: {', '.join(v.fixable_by)}")
        p = v.measured
        if v.status == "UNAVAILABLE":
            measured = "-"
        elif p is None:
            measured = "not measured" + ("" if probe else " (--probe)")
        else:
            measured = p["status"] + (" (cached)" if p.get("cached") else "")
            if p.get("max_abs") is not None:
                measured += f", max abs {p['max_abs']:.3g}"
            if p.get("median_ms") is not None:
                measured += f", {p['median_ms']:.3f} ms"
            if p.get("evidence"):
                measured += f", on {p['evidence']}"
            if p.get("weak"):
                measured += f"; weak evidence: {p['weak']}"
            if p.get("detail") and p["status"] != CaseStatus.PASS:
                measured += f": {p['detail']}"
        rows.append([name + (f" {v.engine_version}" if v.engine_version else ""),
                     v.status.value + ("" if v.decided_by is None else f" ({v.decided_by})"),
                     v.prediction.value, v.engine or "-", clean(measured),
                     "\n".join(clean(r) for r in reasons)])
    con.print(_table("Verdicts (SUPPORTED: seen to run right; the table only predicts)", cols,
                     rows))
    matrix = report.op_matrix
    backends_shown = list(report.verdicts)
    con.print(_table("Ops x backends (yes* = op passes only some conformance cases; this "
                     "model's nodes match passing ones)",
                     ["op", "count", *backends_shown],
                     [[op, m["op_counts"][op], *[_STATE_MARK.get(matrix[op][b], matrix[op][b])
                                                 for b in backends_shown]]
                      for op in matrix]))
