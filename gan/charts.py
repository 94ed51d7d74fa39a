"""Charts the stages render as PNG images, so that `dvc plots show` shows them without a network.

    png = line_chart(history, "step", ["loss/D", "loss/G"], xlabel="training step", ylabel="loss", title="Loss curves")

DVC's HTML page draws its Vega-Lite charts with scripts loaded from a CDN; on a machine
without internet those charts stay blank, while images are embedded as files. Every
chart here has labelled axes and a title, and is a pure function of its rows
(deterministic PNG bytes for the same input), so the stage output it lands in stays a
function of the stage's inputs.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no display on a server or in CI
    import matplotlib.pyplot as plt

    return plt


def png_bytes(fig: Any) -> bytes:
    """The figure as PNG bytes, without the Software/date metadata that would change them run to run."""
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", metadata={"Software": None})
    pyplot().close(fig)
    return buf.getvalue()


def notice(text: str) -> bytes:
    """PNG: one line of text, for a declared plot that has nothing to show for this model (DVC expects the file either way)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 2.0), dpi=100)
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()
    return png_bytes(fig)


def _number(value: Any) -> float:
    """A CSV cell or float as a float; empty or unreadable cells are NaN (a gap in the line)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def line_chart(
    rows: Sequence[Mapping[str, Any]],
    x: str,
    ys: Sequence[str],
    *,
    xlabel: str,
    ylabel: str,
    title: str,
) -> bytes:
    """PNG: one line per column of ``ys`` against column ``x`` (rows as in train/history.csv)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    xs = [_number(row.get(x)) for row in rows]
    drawn = 0
    for column in ys:
        values = [_number(row.get(column)) for row in rows]
        if any(math.isfinite(v) for v in values):
            ax.plot(xs, values, label=column, lw=1.5)
            drawn += 1
    if not drawn:
        ax.text(0.5, 0.5, "no values logged yet", ha="center", va="center", transform=ax.transAxes)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(True, alpha=0.3)
    if drawn:
        ax.legend(loc="best", fontsize=8)
    return png_bytes(fig)
