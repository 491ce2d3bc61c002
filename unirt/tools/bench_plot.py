"""``unirt bench --plot``: latency against the swept size, one line per backend.

The x axis is the dimension the sweep varies, named as the model names it (``x[0] (batch)``),
not a count of input elements that no one asked about; each line is the median with a p10-p90
band, and the caption says what machine, threads and engine versions made the numbers, since a
plot travels without its report. The figures are computed apart from the drawing
(:func:`plot_data`) so that they can be tested without looking at pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from unirt.process.isolation import OutcomeStatus
from unirt.tools.bench import BenchReport


@dataclass
class Series:
    backend: str
    x: list[float] = field(default_factory=list)
    p50_ms: list[float] = field(default_factory=list)
    p10_ms: list[float] = field(default_factory=list)
    p90_ms: list[float] = field(default_factory=list)
    shapes: list[str] = field(default_factory=list)


@dataclass
class PlotData:
    x_label: str
    series: list[Series]
    caption: str
    title: str
    #: True when x is a position among the shapes (nothing varies alone, or one shape).
    categorical: bool = False


def parse_label(label: str) -> dict[str, tuple[int, ...]]:
    """``x=1x8,y=scalar`` -> ``{"x": (1, 8), "y": ()}`` (the inverse of ``shape_label``)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for part in label.split(","):
        if "=" not in part:
            continue
        name, dims = part.split("=", 1)
        dims = dims.split(" ", 1)[0]
        shapes[name] = () if dims == "scalar" else tuple(int(d) for d in dims.split("x"))
    return shapes


def _swept(labels: list[str]) -> list[tuple[str, int]]:
    """The (input, axis) pairs whose size differs between the sweep's shapes."""
    parsed = [parse_label(lb) for lb in labels]
    if len(parsed) < 2:
        return []
    varying = []
    for name, dims in parsed[0].items():
        for axis in range(len(dims)):
            values = {p.get(name, ())[axis] if axis < len(p.get(name, ())) else None
                      for p in parsed}
            if len(values) > 1:
                varying.append((name, axis))
    return varying


def _axis_name(report: BenchReport, name: str, axis: int) -> str:
    declared = report.declared.get(name) or []
    dim = declared[axis] if axis < len(declared) else None
    return f"{name}[{axis}]" + (f" ({dim})" if isinstance(dim, str) and dim else "")


def caption(report: BenchReport) -> str:
    m = report.machine
    threads = m.get("threads")
    engines = ", ".join(f"{k} {v}" for k, v in (m.get("engines") or {}).items())
    mode = m.get("mode", "latency")
    flight = {r.requests for r in report.results if r.status == OutcomeStatus.OK}
    in_flight = f", {'/'.join(map(str, sorted(flight)))} in flight" if mode == "throughput" \
        and flight else ""
    return (f"{m.get('cpu') or 'unknown CPU'}, {m.get('cores')} cores, threads: "
            f"{threads if threads is not None else 'engine default'}; {mode}{in_flight}; "
            f"{engines}")


def plot_data(report: BenchReport) -> PlotData:
    """What :func:`plot` draws: per backend, x (the swept size) and p10/p50/p90 latency."""
    labels = list(dict.fromkeys(r.shape for r in report.results if r.median_ms is not None))
    varying = _swept(labels)
    parsed = {lb: parse_label(lb) for lb in labels}
    categorical = False
    if not varying:
        x_of = {lb: float(i) for i, lb in enumerate(labels)}
        x_label, categorical = "input shape", True
    elif len(varying) == 1 or all(
            len({p[n][a] for n, a in varying}) == 1 for p in parsed.values()):
        # One dim, or several that move together (H and W of a square image): x is its size.
        name, axis = varying[0]
        x_of = {lb: float(parsed[lb][name][axis]) for lb in labels}
        x_label = " = ".join(_axis_name(report, n, a) for n, a in varying)
    else:  # several dims varying apart: their product
        x_of = {}
        for lb in labels:
            product = 1
            for n, a in varying:
                product *= parsed[lb][n][a]
            x_of[lb] = float(product)
        x_label = " x ".join(_axis_name(report, n, a) for n, a in varying)
    series: dict[str, Series] = {}
    for r in report.results:
        if r.median_ms is None or r.p10_ms is None or r.p90_ms is None:
            continue
        s = series.setdefault(r.backend, Series(r.backend))
        s.x.append(x_of[r.shape])
        s.p50_ms.append(r.median_ms)
        s.p10_ms.append(r.p10_ms)
        s.p90_ms.append(r.p90_ms)
        s.shapes.append(r.shape)
    for s in series.values():
        order = sorted(range(len(s.x)), key=lambda i: s.x[i])
        for attr in ("x", "p50_ms", "p10_ms", "p90_ms", "shapes"):
            values = getattr(s, attr)
            setattr(s, attr, [values[i] for i in order])
    return PlotData(x_label, list(series.values()), caption(report), report.model, categorical)


def plot(report: BenchReport, path: Path) -> PlotData:
    """Draw :func:`plot_data` to ``path`` (PNG, SVG, PDF: by its suffix). Needs matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = plot_data(report)
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for s in data.series:
        (line,) = ax.plot(s.x, s.p50_ms, marker="o", label=s.backend)
        ax.fill_between(s.x, s.p10_ms, s.p90_ms, color=line.get_color(), alpha=0.2,
                        linewidth=0)
    if data.categorical:
        labels = list(dict.fromkeys(sh for s in data.series for sh in s.shapes))
        ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right", fontsize=8)
    else:
        xs = sorted({x for s in data.series for x in s.x})
        if len(xs) > 1 and xs[0] > 0 and xs[-1] / xs[0] >= 8:
            ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [f"{x:g}" for x in xs])
    ax.set_xlabel(data.x_label)
    ax.set_ylabel("latency (ms): median, p10-p90 band")
    ax.set_title(data.title)
    ax.grid(True, which="both", alpha=0.3)
    if data.series:
        ax.legend()
    fig.text(0.01, 0.01, data.caption, fontsize=7, wrap=True, ha="left", va="bottom")
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    from unirt.store.files import write_with

    try:
        write_with(path, lambda f: fig.savefig(f, format=path.suffix.lstrip(".").lower() or None))
    finally:
        plt.close(fig)
    return data
