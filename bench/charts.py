"""The sidebar benchmark's charts (matplotlib, written as PNG without a display)."""

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

# One panel: (x, p50 latency in ms) points by label. A label ending in ", API" is drawn solid,
# one ending in ", raw SQL" dotted, in the colour of what comes before (the request kind).
Series = dict[str, list[tuple[float, float]]]

_COLOURS = ["tab:blue", "tab:red", "tab:green", "tab:purple", "tab:orange", "tab:brown"]
_FIXED = {"offset": "tab:red", "cursor": "tab:blue"}


def _kind(label: str) -> tuple[str, bool]:
    """(request kind, is the raw-SQL floor)."""
    for suffix, raw in ((", raw SQL", True), (", API", False)):
        if label.endswith(suffix):
            return label[: -len(suffix)], raw
    return label, False


def _short(value: float) -> str:
    for size, unit in ((1_000_000, "M"), (1_000, "k")):
        if value >= size:
            return f"{value / size:g}{unit}"
    return f"{value:g}"


def _plot(axes: Axes, series: Series, *, depth: bool) -> None:
    colours: dict[str, str] = {}
    for label, points in series.items():
        if not points:
            continue
        kind, raw = _kind(label)
        colour = colours.setdefault(kind, _FIXED.get(kind, _COLOURS[len(colours) % len(_COLOURS)]))
        axes.plot(
            [x for x, _ in points],
            [y for _, y in points],
            color=colour,
            linestyle=":" if raw else "-",
            marker="x" if raw else "o",
            label=label,
        )
    largest = max((x for points in series.values() for x, _ in points), default=1.0)
    if depth:
        # Depth 0 (the first page) on a log-like axis: linear up to 1,000, log above.
        axes.set_xscale("symlog", linthresh=1000, linscale=0.5)
        ticks = [0.0] + [10.0**e for e in range(3, 8) if 10.0**e <= largest * 1.5]
        axes.xaxis.set_major_locator(FixedLocator(ticks))
    else:
        axes.set_xscale("log")
    axes.xaxis.set_major_formatter(FuncFormatter(lambda x, _: _short(x)))
    axes.xaxis.set_minor_formatter(NullFormatter())
    axes.set_yscale("log")
    # Plain numbers (0.1, 1, 10) instead of powers of ten.
    axes.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}"))
    axes.yaxis.set_minor_formatter(NullFormatter())
    axes.grid(True, which="both", alpha=0.3)


def _grid(count: int, columns: int, width: float, height: float) -> tuple[Any, list[Axes]]:
    columns = min(columns, count)
    rows = -(-count // columns)
    figure, grid = plt.subplots(
        rows, columns, figsize=(width * columns, height * rows), squeeze=False
    )
    cells = [axes for row in grid for axes in row]
    for unused in cells[count:]:
        unused.set_visible(False)
    return figure, cells[:count]


def depth_chart(path: Path, panels: dict[str, Series], subtitle: str) -> None:
    """Latency against page depth: one panel per (database, list), offset vs cursor."""
    figure, cells = _grid(len(panels), 2, 5.6, 4.2)
    for axes, (title, series) in zip(cells, panels.items(), strict=True):
        _plot(axes, series, depth=True)
        axes.set_title(title, fontsize=10)
        axes.set_xlabel("page depth (sessions before the page)")
        axes.set_ylabel("p50 latency (ms), one client")
        axes.legend(fontsize=8, loc="best")
    figure.suptitle(f"Sidebar page latency against depth: {subtitle}", fontsize=11)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def size_chart(path: Path, panels: dict[str, Series], subtitle: str) -> None:
    """Latency against data size (sessions in the database), one panel per database; the
    legend (request kinds; solid: API, dotted: raw SQL) below the panels."""
    figure, cells = _grid(len(panels), 2, 5.6, 4.4)
    for axes, (title, series) in zip(cells, panels.items(), strict=True):
        _plot(axes, series, depth=False)
        axes.set_title(title, fontsize=10)
        axes.set_xlabel("sessions in the database")
        axes.set_ylabel("p50 latency (ms), one client")
    handles, labels = cells[0].get_legend_handles_labels()
    # The legend's own room below the panels, grown to fit (one column under a single panel).
    columns = 2 if len(panels) > 1 else 1
    legend_inches = 0.2 * -(-len(labels) // columns) + 0.3
    width, height = figure.get_size_inches()
    figure.set_size_inches(width, height + legend_inches)
    figure.legend(handles, labels, loc="lower center", ncol=columns, fontsize=8, frameon=False)
    figure.suptitle(f"Latency against data size: {subtitle}", fontsize=11)
    figure.tight_layout(rect=(0, legend_inches / (height + legend_inches), 1, 1))
    figure.savefig(path, dpi=110)
    plt.close(figure)
