"""Shared pieces of the dashboard's figures: colours, layout, the dict-collecting :class:`_Plot`.

See :mod:`ctrlens.dashboard.figures` for why figures are built this way.
"""

from __future__ import annotations

import copy
import functools
from typing import Any, Sequence

import numpy as np
import plotly.graph_objects as go


SEVERITY_CODE = {"ok": 0, "info": 1, "warning": 2, "critical": 3}
SEVERITY_COLOR = {"ok": "#4caf50", "info": "#64b5f6", "warning": "#ff9800", "critical": "#e53935"}
NO_RUN_COLOR = "#eceff1"
CLICK_COLORS = {0: "#90a4ae", 1: "#ef6c00"}
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
DAY_MS = 86_400_000
MARKER_LINE = dict(color="#455a64", width=1, dash="dot")

# A small template made once: plotly's named templates ("plotly_white") are deep-copied into every
# figure, which costs ~15 ms a figure.
_AXIS = dict(gridcolor="#eceff1", zerolinecolor="#cfd8dc", linecolor="#cfd8dc", automargin=True)
TEMPLATE = go.layout.Template(layout=dict(plot_bgcolor="white", paper_bgcolor="white", xaxis=_AXIS, yaxis=_AXIS, hovermode="closest",
                                          colorway=list(PALETTE)))  # fmt: skip
# legends go under the plot: above it they collide with titles and subplot titles
LAYOUT = dict(template=TEMPLATE, margin=dict(l=60, r=20, t=50, b=50), font=dict(size=12),
              legend=dict(orientation="h", yanchor="top", y=-0.15, x=0))  # fmt: skip


def _palette(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def _title(text: str) -> dict[str, Any]:
    return dict(text=text, font=dict(size=13))


@functools.lru_cache(maxsize=32)
def _grid_layout(rows: int, cols: int, n_titles: int, **kw: Any) -> dict[str, Any]:
    """Axes and title annotations of a ``make_subplots`` grid, computed once per shape."""
    from plotly.subplots import make_subplots

    titles = tuple(f"\x00{i}" for i in range(n_titles)) or None
    lay = make_subplots(rows=rows, cols=cols, subplot_titles=titles, **kw).layout.to_plotly_json()
    lay.pop("template", None)
    return lay


class _Plot:
    """Traces, shapes and layout as plain dicts; :meth:`figure` validates them once."""

    def __init__(self, height: int, *, title: str | None = None, grid: tuple[int, int] = (1, 1), titles: Sequence[str] = (),
                 grid_kw: dict[str, Any] | None = None, **layout: Any) -> None:  # fmt: skip
        self.rows, self.cols = grid
        self.data: list[dict[str, Any]] = []
        self.shapes: list[dict[str, Any]] = []
        self.layout: dict[str, Any] = {**LAYOUT, "height": height, **layout}
        if title:
            self.layout["title"] = _title(title)
        if grid != (1, 1) or titles:
            g = copy.deepcopy(_grid_layout(self.rows, self.cols, len(titles), **(grid_kw or {})))
            for ann, text in zip(g.get("annotations", []), titles):
                ann["text"] = text
            self.layout.update(g)

    def _n(self, row: int, col: int) -> int:
        return (row - 1) * self.cols + col

    def ref(self, axis: str, row: int = 1, col: int = 1) -> str:
        """``"x"``, ``"y2"`` ... of subplot (row, col)."""
        n = self._n(row, col)
        return axis if n == 1 else f"{axis}{n}"

    def add(self, trace: dict[str, Any], row: int = 1, col: int = 1) -> None:
        if (row, col) != (1, 1):
            trace = {**trace, "xaxis": self.ref("x", row, col), "yaxis": self.ref("y", row, col)}
        self.data.append(trace)

    def axis(self, axis: str, row: int = 1, col: int = 1, **props: Any) -> None:
        key = axis + "axis" + ("" if self._n(row, col) == 1 else str(self._n(row, col)))
        self.layout[key] = {**self.layout.get(key, {}), **props}

    def all_axes(self, axis: str, **props: Any) -> None:
        for r in range(1, self.rows + 1):
            for c in range(1, self.cols + 1):
                self.axis(axis, r, c, **props)

    def vline(self, x: Any, row: int = 1, col: int = 1, line: dict[str, Any] | None = None) -> None:
        self.shapes.append(dict(type="line", x0=x, x1=x, y0=0, y1=1, xref=self.ref("x", row, col), yref=self.ref("y", row, col) + " domain",
                                line=line or MARKER_LINE))  # fmt: skip

    def hline(self, y: Any, row: int = 1, col: int = 1, line: dict[str, Any] | None = None) -> None:
        self.shapes.append(dict(type="line", y0=y, y1=y, x0=0, x1=1, yref=self.ref("y", row, col), xref=self.ref("x", row, col) + " domain",
                                line=line or MARKER_LINE))  # fmt: skip

    def row_box(self, y: float, row: int = 1, col: int = 1) -> None:
        """An outline around heat-map row ``y`` (its index on a category axis): the selected row."""
        self.shapes.append(dict(type="rect", x0=0, x1=1, y0=y - 0.5, y1=y + 0.5, xref=self.ref("x", row, col) + " domain",
                                yref=self.ref("y", row, col), line=dict(color="#ff1744", width=2), fillcolor="rgba(0,0,0,0)"))  # fmt: skip

    def day_marker(self, day: str | None) -> None:
        """A dotted line at the day looked at, in every subplot."""
        if day:
            for r in range(1, self.rows + 1):
                for c in range(1, self.cols + 1):
                    self.vline(day, r, c)

    def days(self, days: Any) -> None:
        """Day ticks (with a few days plotly would tick hours)."""
        n = len(set(days)) if days is not None else 0
        if 0 < n <= 14:
            self.all_axes("x", dtick=DAY_MS, tickformat="%b %d")

    def figure(self) -> go.Figure:
        return go.Figure(data=self.data, layout={**self.layout, "shapes": self.shapes} if self.shapes else self.layout)


def _fig(height: int = 320, **layout: Any) -> go.Figure:
    return go.Figure(layout={**LAYOUT, "height": height, **layout})


def empty(message: str, height: int = 260) -> go.Figure:
    """A blank figure that says why it is blank (no data, a bad selection)."""
    return _fig(height, xaxis=dict(visible=False), yaxis=dict(visible=False), annotations=[
        dict(text=message, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False, font=dict(size=14, color="#555"))])  # fmt: skip


def _ordered(order: Sequence[str], present: Any) -> list[str]:
    """The values of ``present`` in the given ``order``, then the others sorted."""
    have = set(present)
    return [x for x in order if x in have] + sorted(have - set(order))


def _f32(v: Any) -> np.ndarray:
    return np.asarray(v, dtype=np.float32)
