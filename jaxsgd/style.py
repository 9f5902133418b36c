"""The one figure style of jaxsgd: column-width, small fonts, no top/right spines, PDF + PNG.

  STYLE            matplotlib rcParams of every jaxsgd figure
  use_style()      context manager applying STYLE
  figure()         a new figure that also shows itself in a notebook
  save_figure()    write a figure as PDF and PNG
  tick_at(), plain_log_labels()   plain tick labels (0.03, 256) on log axes

Figures are built on ``matplotlib.figure.Figure`` directly, never through pyplot: no GUI
backend, no global figure registry to close, safe in scripts, tests and notebooks alike. A bare
``Figure`` shows only its text repr in Jupyter unless pyplot set up the inline backend, so
``figure()`` makes a ``Figure`` that renders itself as PNG (``_repr_png_``): the last line of a
notebook cell, ``plot_sweep(result)``, displays it.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path
from typing import Iterator

import matplotlib as mpl
from matplotlib import ticker
from matplotlib.figure import Figure

COLUMN_WIDTH = 3.4  # inches: one column of a two-column paper
STYLE: dict[str, object] = {
    "figure.figsize": (COLUMN_WIDTH, 2.4),
    "figure.dpi": 150,
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 6.5,
    "legend.frameon": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.linewidth": 0.6,
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "lines.linewidth": 1.2,
    "lines.markersize": 3.5,
    "savefig.dpi": 300,
    "savefig.bbox": "tight",
    "savefig.pad_inches": 0.02,
    "pdf.fonttype": 42,  # embed TrueType: text stays editable in the PDF
    "ps.fonttype": 42,
}


class NotebookFigure(Figure):
    """A ``Figure`` that IPython displays as a PNG in the jaxsgd style."""

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        with use_style():
            self.savefig(buffer, format="png", dpi=120)
        return buffer.getvalue()


def figure(**options) -> NotebookFigure:
    """A new figure (``Figure(**options)``) in the jaxsgd style that also displays in a
    notebook; call inside ``use_style()`` so its axes take the style."""
    return NotebookFigure(**options)


@contextlib.contextmanager
def use_style() -> Iterator[None]:
    """Apply ``STYLE`` to figures created (and saved) inside the ``with`` block."""
    with mpl.rc_context(STYLE):
        yield


def save_figure(fig: Figure, path: str | os.PathLike) -> list[Path]:
    """Write ``fig`` as ``path.pdf`` and ``path.png`` (a .pdf/.png suffix on ``path`` is ignored).

    Creates the parent folder. Returns the two paths written.
    """
    base = Path(path)
    if base.suffix.lower() in (".pdf", ".png"):
        base = base.with_suffix("")
    base.parent.mkdir(parents=True, exist_ok=True)
    written = []
    with use_style():
        for suffix in (".pdf", ".png"):
            target = base.with_name(base.name + suffix)
            fig.savefig(target)
            written.append(target)
    return written


def tick_at(axis, values) -> None:
    """Major ticks at exactly ``values`` (a sequence), labelled plainly (0.03, 256)."""
    axis.set_ticks(values, [f"{v:g}" for v in values])
    axis.set_minor_locator(ticker.NullLocator())


def plain_log_labels(axis) -> None:
    """Ticks at 1, 2, 5 × 10^k labelled plainly (20, 500) instead of 2×10¹ on a log axis."""
    axis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(ticker.NullFormatter())
