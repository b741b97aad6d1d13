"""Plots of robustness reports: matplotlib figures on the Agg canvas (no pyplot, no display), saved as
``plots/<name>.png`` and ``.svg`` with reproducible metadata."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def new_figure(width: float = 6.4, height: float = 4.0) -> Figure:
    """A figure bound to the Agg canvas (safe in threads and without a display)."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, out_dir: str | Path, name: str, title: str, *, folder: str = "plots") -> dict[str, str]:
    """Save ``fig`` as ``OUT/plots/<name>.png`` and ``.svg``; returns the report's plot entry."""
    target = Path(out_dir) / folder
    target.mkdir(parents=True, exist_ok=True)
    fig.savefig(target / f"{name}.png", dpi=120, metadata={"Software": None})
    fig.savefig(target / f"{name}.svg", metadata={"Date": None, "Creator": None})
    return {"title": title, "png": f"{folder}/{name}.png", "svg": f"{folder}/{name}.svg"}


def bar_chart(values: Mapping[str, float], *, errors: Mapping[str, float] | None = None, ylabel: str,
              title: str, ylim: tuple[float, float] | None = (0.0, 1.0)) -> Figure:
    """One bar per entry of ``values`` (in order), with optional error bars and the value written on top."""
    fig = new_figure()
    ax = fig.add_subplot()
    names = list(values)
    heights = [values[n] for n in names]
    err = [errors.get(n, 0.0) for n in names] if errors else None
    bars = ax.bar(range(len(names)), heights, yerr=err, capsize=4, color="#4c72b0")
    for i, (bar, h) in enumerate(zip(bars, heights)):
        top = h + (err[i] if err else 0.0)  # above the error bar
        ax.annotate(f"{h:.3f}", (bar.get_x() + bar.get_width() / 2, top), ha="center", va="bottom",
                    xytext=(0, 3), textcoords="offset points", fontsize=8)
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if ylim is not None:
        ax.set_ylim(*ylim)
    return fig


def histograms(series: Mapping[str, Sequence[float]], *, xlabel: str, title: str, bins: int = 30,
               marker: float | None = None, marker_label: str = "budget") -> Figure:
    """Overlaid step histograms, one per entry of ``series``; ``marker`` draws a vertical line (e.g. eps)."""
    fig = new_figure()
    ax = fig.add_subplot()
    values = [v for s in series.values() for v in s]
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    if marker is not None:
        lo, hi = min(lo, marker), max(hi, marker)
    lo, hi = min(lo, 0.0), hi * 1.05 if hi > 0 else hi   # from 0: norms that all sit at eps stay readable
    if hi <= lo:
        lo, hi = lo - 0.5 * abs(lo or 1), hi + 0.5 * abs(hi or 1)
    for name, s in series.items():
        if len(s):
            ax.hist(list(s), bins=bins, range=(lo, hi), histtype="step", linewidth=1.5, label=f"{name} ({len(s)})")
    if marker is not None:
        ax.axvline(marker, color="k", linestyle="--", linewidth=1, label=marker_label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("examples")
    ax.set_title(title)
    if series or marker is not None:
        ax.legend(fontsize=8)
    return fig


__all__ = ["bar_chart", "histograms", "new_figure", "save_figure"]
