"""Figure builders shared by the tabs: numpy in, ``plotly.graph_objects.Figure`` out.

They know nothing of Gradio or MAX. Conventions:
- sequential 0..1 (probabilities, attention): Viridis, readable by colour-blind users;
- signed values (activations, embeddings): RdBu diverging with its midpoint at 0;
- token text on the axes and in every hover;
- ``-inf`` (masked cells) becomes NaN, drawn as a gap, never sent as JSON infinity;
- every figure has an explicit height (some Gradio versions draw height-less ones at 0);
- a screenful, not a tensor: a heatmap axis longer than ``MAX_CELLS_PER_AXIS`` is averaged
  over blocks of neighbouring rows or columns (``binned_heatmap``, the title says so), values
  go as float32 arrays (Plotly sends numpy arrays as base64), and hovers are hovertemplates
  over the cell's coordinates, not one string per cell.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio

# Set once: naming the template on every figure costs ~40 ms per figure.
pio.templates.default = "plotly_white"

SEQUENTIAL = "Viridis"
DIVERGING = "RdBu"
DEFAULT_HEIGHT = 420
FONT = dict(size=14)
# A screen shows about this many rows or columns of heatmap cells (a 1080-pixel-high plot
# gives each of 128 rows ~6 pixels); longer axes are averaged over blocks of neighbours.
MAX_CELLS_PER_AXIS = 128


def plot_text(text: str) -> str:
    """Token text for a Plotly label or cell: its pseudo-HTML would eat '<0xE2>' or '<|endoftext|>'."""
    return html.escape(str(text), quote=False)


def plot_texts(texts: Sequence) -> list[str]:
    return [plot_text(t) for t in texts]


def template_text(text: str) -> str:
    """Token text written into a hovertemplate itself: escaped, and a "%{" in it is not a placeholder."""
    return plot_text(text).replace("%{", "%&#123;")


def finite(values: np.ndarray) -> np.ndarray:
    """float64 copy with +-inf and NaN as NaN (Plotly shows a gap; JSON stays valid)."""
    out = np.asarray(values, dtype=np.float64).copy()
    out[~np.isfinite(out)] = np.nan
    return out


def bin_starts(n: int, bins: int = MAX_CELLS_PER_AXIS) -> np.ndarray:
    """Start indices of at most ``bins`` contiguous blocks of near-equal size covering 0..n-1
    (every index its own block when n <= bins)."""
    return np.unique(np.linspace(0, n, min(n, bins) + 1).astype(int)[:-1])


def block_means(values: np.ndarray, row_starts: np.ndarray | None = None, col_starts: np.ndarray | None = None) -> np.ndarray:
    """Means over blocks of the last two axes (rows start at ``row_starts``, columns at ``col_starts``;
    None: that axis is not binned). Only finite values count (a block of masked −inf scores and
    finite ones averages the finite ones); a block with none is NaN. float64."""
    v = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(v)
    sums = np.where(ok, v, 0.0)
    counts = ok.astype(np.float64)
    for axis, starts in ((-2, row_starts), (-1, col_starts)):
        if starts is not None and len(starts) < v.shape[axis]:
            sums = np.add.reduceat(sums, starts, axis=axis)
            counts = np.add.reduceat(counts, starts, axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1.0), np.nan)


def block_labels(labels: Sequence[str], starts: np.ndarray, short: Sequence[str] | None = None) -> list[str]:
    """One label per block: a one-row block keeps its label; a longer one reads "first–last"
    (its positions), followed by "short[first]…short[last]" when ``short`` (e.g. token texts) is given."""
    n = len(labels)
    if len(starts) == n:
        return list(labels)
    stops = np.append(starts[1:], n)
    return [
        labels[a] if b - a == 1 else f"{a}–{b - 1}" + ("" if short is None else f" {short[a]}…{short[b - 1]}")
        for a, b in zip(starts.tolist(), stops.tolist())
    ]


def block_note(n: int, starts: np.ndarray, what: str = "positions") -> str:
    """'' when nothing is binned, else "averaged over blocks of ~k positions" for a title."""
    return "" if len(starts) == n else f"averaged over blocks of ~{n / len(starts):.2g} {what}"


def layout(fig: go.Figure, title: str, height: int = DEFAULT_HEIGHT, **extra) -> go.Figure:
    fig.update_layout(
        title=dict(text=title, font=dict(size=16)),
        height=height,
        margin=dict(l=60, r=20, t=60, b=60),
        font=FONT,
        **extra,
    )
    return fig


def heatmap(
    values: np.ndarray,
    x_labels: Sequence[str],
    y_labels: Sequence[str],
    title: str,
    *,
    x_title: str = "",
    y_title: str = "",
    value_name: str = "value",
    diverging: bool = False,
    zmin: float | None = None,
    zmax: float | None = None,
    height: int = DEFAULT_HEIGHT,
    hover_text: np.ndarray | None = None,
) -> go.Figure:
    """A labelled heatmap; rows are ``y_labels`` (top to bottom), columns ``x_labels``."""
    z = finite(values).astype(np.float32)  # half the bytes of float64 on the wire; hovers show 4 digits
    kwargs = {}
    if diverging:
        bound = float(np.nanmax(np.abs(z))) if np.isfinite(z).any() else 1.0
        kwargs = dict(zmid=0.0, zmin=-bound if zmin is None else zmin, zmax=bound if zmax is None else zmax)
    else:
        if zmin is not None:
            kwargs["zmin"] = zmin
        if zmax is not None:
            kwargs["zmax"] = zmax
    hover = f"{y_title or 'row'}: %{{y}}<br>{x_title or 'column'}: %{{x}}<br>{value_name}: %{{z:.4g}}"
    if hover_text is not None:
        kwargs["text"] = hover_text
        hover += "<br>%{text}"
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=plot_texts(x_labels),
            y=plot_texts(y_labels),
            colorscale=DIVERGING if diverging else SEQUENTIAL,
            hovertemplate=hover + "<extra></extra>",
            hoverongaps=False,
            **kwargs,
        )
    )
    layout(fig, title, height)
    fig.update_xaxes(title=x_title, type="category", tickangle=-45)
    fig.update_yaxes(title=y_title, type="category", autorange="reversed")
    return fig


def binned_heatmap(
    values: np.ndarray,
    x_labels: Sequence[str],
    y_labels: Sequence[str],
    title: str,
    *,
    x_short: Sequence[str] | None = None,
    y_short: Sequence[str] | None = None,
    bin_x: bool = True,
    bin_y: bool = True,
    max_cells: int | None = None,
    what: str = "positions",
    value_name: str = "value",
    mean_name: str | None = None,
    subtitle: str = "",
    **kwargs,
) -> go.Figure:
    """``heatmap`` of [R, C] ``values`` with at most ``max_cells`` (default ``MAX_CELLS_PER_AXIS``)
    rows and columns: a longer axis (where ``bin_x`` / ``bin_y``) is averaged over blocks of
    neighbours (``block_means``), labelled by ``block_labels`` (with ``x_short`` / ``y_short``,
    e.g. token texts), and a second title line says so (after ``subtitle``, if any).
    ``mean_name`` names a binned cell's value (default "mean " + ``value_name``)."""
    R, C = values.shape[-2:]
    cap = MAX_CELLS_PER_AXIS if max_cells is None else max_cells  # read per call: tests lower it
    rows = bin_starts(R, cap) if bin_y else np.arange(R)
    cols = bin_starts(C, cap) if bin_x else np.arange(C)
    notes = [subtitle] if subtitle else []
    if len(rows) < R or len(cols) < C:
        values = block_means(values, rows, cols)
        x_labels = block_labels(x_labels, cols, x_short)
        y_labels = block_labels(y_labels, rows, y_short)
        value_name = mean_name or f"mean {value_name}"
        notes += sorted({block_note(R, rows, what), block_note(C, cols, what)} - {""})
    if notes:
        title = f"{title}<br><sup>{'; '.join(notes)}</sup>"
    fig = heatmap(values, x_labels, y_labels, title, value_name=value_name, **kwargs)
    if notes:
        fig.update_layout(margin=dict(t=90))  # room for the second title line
    return fig


def bars(
    labels: Sequence[str],
    values: Sequence[float],
    title: str,
    *,
    value_name: str = "value",
    horizontal: bool = True,
    height: int = DEFAULT_HEIGHT,
    hover_extra: Sequence[str] | None = None,
) -> go.Figure:
    """Bars, most important first (top when horizontal)."""
    hover = f"%{{{'y' if horizontal else 'x'}}}<br>{value_name}: %{{{'x' if horizontal else 'y'}:.4g}}"
    kwargs = {}
    if hover_extra is not None:
        kwargs["text"] = list(hover_extra)
        kwargs["textposition"] = "none"
        hover += "<br>%{text}"
    trace = go.Bar(
        x=list(values) if horizontal else plot_texts(labels),
        y=plot_texts(labels) if horizontal else list(values),
        orientation="h" if horizontal else "v",
        marker_color="#3b6fb6",
        hovertemplate=hover + "<extra></extra>",
        **kwargs,
    )
    fig = go.Figure(trace)
    layout(fig, title, height)
    if horizontal:
        fig.update_yaxes(type="category", autorange="reversed")
        fig.update_xaxes(title=value_name)
    else:
        fig.update_xaxes(type="category", tickangle=-45)
        fig.update_yaxes(title=value_name)
    return fig


def lines(
    x: Sequence,
    series: dict[str, Sequence[float]],
    title: str,
    *,
    x_title: str = "",
    y_title: str = "",
    height: int = DEFAULT_HEIGHT,
    hover_text: dict[str, Sequence[str]] | None = None,
) -> go.Figure:
    """One line per series over shared x values."""
    fig = go.Figure()
    for name, ys in series.items():
        extra = {}
        hover = f"{name}<br>{x_title or 'x'}: %{{x}}<br>{y_title or 'y'}: %{{y:.4g}}"
        if hover_text and name in hover_text:
            extra["text"] = list(hover_text[name])
            hover += "<br>%{text}"
        fig.add_trace(go.Scatter(x=plot_texts(x), y=list(ys), mode="lines+markers", name=name, hovertemplate=hover + "<extra></extra>", **extra))
    layout(fig, title, height)
    fig.update_xaxes(title=x_title)
    fig.update_yaxes(title=y_title)
    return fig


def message_figure(text: str, height: int = 200) -> go.Figure:
    """A blank figure that says why there is nothing to plot yet."""
    fig = go.Figure()
    fig.add_annotation(text=text, showarrow=False, font=dict(size=16), xref="paper", yref="paper", x=0.5, y=0.5)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return layout(fig, "", height)
