"""Figure builders shared by the tabs: numpy in, ``plotly.graph_objects.Figure`` out.

They know nothing of Gradio or MAX. Conventions:
- sequential 0..1 (probabilities, attention): Viridis, readable by colour-blind users;
- signed values (activations, embeddings): RdBu diverging with its midpoint at 0;
- token text on the axes and in every hover;
- ``-inf`` (masked cells) becomes NaN, drawn as a gap, never sent as JSON infinity;
- every figure has an explicit height (some Gradio versions draw height-less ones at 0);
- colour limits come from the bulk of the values, not from the extremes (``robust_limits``):
  the real GPT-2 has a few values 100-1,000x the rest (position 0's residual stream, dims 447
  and 138; docs in ``shared/docs/real-gpt2.md``), and a scale fitted to those shows one bright
  cell on a flat field. Clipping is written on the colour bar; the hover keeps the true value
  (Plotly clamps the colour, never ``z``). Where rows or columns are positions, the builders
  can leave position 0 out of the statistics (``leave_out_position_0``), saying so in the title;
  attention and probabilities keep their absolute 0..1 scales;
- a screenful, not a tensor: a heatmap axis longer than ``MAX_CELLS_PER_AXIS`` is averaged
  over blocks of neighbouring rows or columns (``binned_heatmap``, the title says so), values
  go as float32 arrays (Plotly sends numpy arrays as base64), and hovers are hovertemplates
  over the cell's coordinates, not one string per cell.
"""

from __future__ import annotations

import html
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import orjson
import plotly.graph_objects as go
import plotly.io as pio
from _plotly_utils.utils import is_skipped_key, to_typed_array_spec

from explorer.settings import MAX_CELLS_PER_AXIS

# Set once: naming the template on every figure costs more than drawing most of them.
pio.templates.default = "plotly_white"

SEQUENTIAL = "Viridis"
DIVERGING = "RdBu"
DEFAULT_HEIGHT = 420
FONT = dict(size=14)
# A screen shows about MAX_CELLS_PER_AXIS rows or columns of heatmap cells (a 1080-pixel-high
# plot gives each of 128 rows ~6 pixels); longer axes are averaged over blocks of neighbours.
# Colour limits come from this percentile of the drawn values (of |x| for signed values, from
# the (100 - p)th to the pth for others): 1% of the cells may lie beyond the colour range.
ROBUST_PERCENTILE = 99.0
# ... but only when they lie well beyond it: when the true extreme is within this factor of the
# percentile limit, the scale reaches the extreme (nothing is clipped). An ordinary distribution
# is then drawn whole (a Gaussian's max |x| over 1,000-10,000 cells is 1.3-1.6x its 99th
# percentile of |x|), while GPT-2's outliers (10-1,000x the bulk) are clipped.
CLIP_ONLY_BEYOND = 2.0
POSITION_0_LEFT_OUT = "position 0 left out of the colour scale"


def figure_json(fig: go.Figure) -> str:
    """The JSON of ``fig`` that ``fig.to_json()`` gives (the same values, key for key: numpy arrays
    as Plotly's base64 typed arrays, int64 narrowed as Plotly does), 5-10x faster: to_json first
    deep-copies the whole figure, template included, to convert its arrays in place, and
    cleans it; this reads the figure's own property dicts once. What the app sends for every
    gr.Plot (ExplorerBlocks): to_json was ~10% of the server's Python time while a class worked."""
    return orjson.dumps(
        {"data": [_typed_arrays(trace) for trace in fig._data], "layout": _typed_layout(fig._layout)},
        default=_plain,
        option=orjson.OPT_NON_STR_KEYS,
    ).decode()


def _typed_arrays(value):
    """``value`` with its numpy arrays as Plotly's typed-array dicts (copies of the containers on
    the way down; arrays under the keys Plotly skips, e.g. ``range``, stay arrays)."""
    if isinstance(value, dict):
        return {
            key: item
            if is_skipped_key(key)
            else _typed_array(item)
            if isinstance(item, np.ndarray)
            else _typed_arrays(item)
            for key, item in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [_typed_arrays(item) for item in value]
    return value


def _typed_layout(layout: dict) -> dict:
    # The template (~7 kB of nested dicts, Plotly's own: no arrays) goes as it is: walking it
    # was most of a small figure's time here.
    return {key: value if key == "template" else _typed_arrays(value) for key, value in layout.items()}


def _typed_array(array: np.ndarray):
    spec = to_typed_array_spec(array)
    return spec if isinstance(spec, dict) else array  # an array Plotly leaves as is: _plain lists it


def _plain(value):
    """orjson's fallback: numpy arrays left untyped (strings, objects, int64 beyond int32) and numpy scalars."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


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


def bin_starts(n: int, bins: int = MAX_CELLS_PER_AXIS, first_alone: bool = False) -> np.ndarray:
    """Start indices of at most ``bins`` contiguous blocks of near-equal size covering 0..n-1
    (every index its own block when n <= bins). ``first_alone``: index 0 is a block of its own and
    1..n-1 share the other bins - 1 (position 0 of a query x key view: the sink most heads of the
    real GPT-2 park their attention on, which a block would blur into its neighbours)."""
    if first_alone and n > bins > 1:
        return np.concatenate([[0], 1 + bin_starts(n - 1, bins - 1)])
    return np.unique(np.linspace(0, n, min(n, bins) + 1).astype(int)[:-1])


def block_means(
    values: np.ndarray, row_starts: np.ndarray | None = None, col_starts: np.ndarray | None = None
) -> np.ndarray:
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


def block_note(
    n: int, starts: np.ndarray, what: str = "positions", how: str = "averaged", first_alone: bool = False
) -> str:
    """'' when nothing is binned, else "averaged over blocks of ~k positions" for a title (``how``
    says what a block's cell is; ``first_alone``: the starts of ``bin_starts(first_alone=True)``)."""
    if len(starts) == n:
        return ""
    if first_alone:
        return f"{how} over blocks of ~{(n - 1) / (len(starts) - 1):.2g} {what} (0 alone)"
    return f"{how} over blocks of ~{n / len(starts):.2g} {what}"


def attention_blocks(pattern: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """[..., T, T] attention weights (rows = queries, each summing to 1) -> [..., G, G] for blocks
    of positions starting at ``starts`` (on both axes): the weight a query puts on each block of
    keys (summed over the block), averaged over the queries of each block. Every row still sums to
    1, and a key block of one position keeps that position's mean share exactly (position 0 with
    ``bin_starts(first_alone=True)``). Averaging over keys instead divides each cell by its block's
    size: a head with 95% on one key read 0.05 in blocks of 20. float64."""
    p = np.asarray(pattern, dtype=np.float64)
    if len(starts) < p.shape[-1]:
        p = np.add.reduceat(p, starts, axis=-1)  # [..., T, G] weight per block of keys
    return block_means(p, starts, None)


@dataclass(frozen=True)
class ColourLimits:
    """A heatmap's colour range (``zmin``..``zmax``) and the true range of its finite values."""

    zmin: float
    zmax: float
    low: float  # the smallest finite value drawn (NaN when there is none)
    high: float  # the largest
    diverging: bool

    @property
    def clipped(self) -> bool:
        """True when some drawn value lies outside the colour range (it takes the end colour)."""
        return bool(self.low < self.zmin or self.high > self.zmax)

    def clip_note(self) -> str:
        """The colour bar's title: "" when nothing is clipped, else the colour range and the true extreme."""
        if not self.clipped:
            return ""
        if self.diverging:
            return f"clipped to ±{self.zmax:.3g} (max |x| {max(-self.low, self.high):.3g})"
        return f"clipped to {self.zmin:.3g}…{self.zmax:.3g} (true {self.low:.3g}…{self.high:.3g})"


def robust_limits(values: np.ndarray, *, diverging: bool, counted: np.ndarray | None = None) -> ColourLimits:
    """Colour limits from the bulk of the finite ``values`` (masked −inf and NaN are ignored).

    Signed values (``diverging``): ±the ROBUST_PERCENTILE of |x|; others: the (100 − p)th to
    the pth percentile. ``counted`` (a bool array of ``values``' shape) picks the cells the
    percentiles are taken over (e.g. all but position 0's row); every finite cell is drawn
    and counts for the true range. Where the true extreme lies within CLIP_ONLY_BEYOND of a
    limit, that limit is the extreme itself.
    """
    z = finite(values)
    ok = np.isfinite(z)
    if not ok.any():
        return ColourLimits(-1.0 if diverging else 0.0, 1.0, float("nan"), float("nan"), diverging)
    sample = z[ok & counted] if counted is not None and (ok & counted).any() else z[ok]
    low, high = float(z[ok].min()), float(z[ok].max())
    if diverging:
        extreme = max(-low, high)
        bound = float(np.percentile(np.abs(sample), ROBUST_PERCENTILE))
        if bound <= 0.0 or extreme <= CLIP_ONLY_BEYOND * bound:
            bound = extreme
        bound = bound if bound > 0.0 else 1.0  # all zeros: any symmetric range will do
        return ColourLimits(-bound, bound, low, high, True)
    zmin, zmax = (float(v) for v in np.percentile(sample, [100.0 - ROBUST_PERCENTILE, ROBUST_PERCENTILE]))
    span = zmax - zmin
    if span <= 0.0:  # (nearly) constant bulk: the true range, if it has one
        zmin, zmax = low, high if high > low else low + 1.0
        return ColourLimits(zmin, zmax, low, high, False)
    if high - zmin <= CLIP_ONLY_BEYOND * span:
        zmax = high
    if zmax - low <= CLIP_ONLY_BEYOND * span:
        zmin = low
    return ColourLimits(zmin, zmax, low, high, False)


def log_ticks(low: float, high: float, most: int = 8) -> dict:
    """Ticks of a log axis over ``low``..``high`` (> 0): 1, 2, 5 times each power of ten, or only
    the powers of ten (every one, every second…, at most ``most``) when those would be more,
    each labelled with its full value ("0.05", "2e-05", "500"). Plotly's own labels the steps
    between powers of ten with bare mantissas ("1, 2, 5, 10, 2, 5": the last 5 is 50)."""
    first, last = int(np.floor(np.log10(low))), int(np.ceil(np.log10(high)))
    shown = [m * 10.0**k for k in range(first, last + 1) for m in (1, 2, 5) if low <= m * 10.0**k <= high]
    if len(shown) > most:
        powers = [10.0**k for k in range(first, last + 1) if low <= 10.0**k <= high]
        shown = powers[::-1][:: -(-len(powers) // most)][::-1]  # counted down from the top
    return dict(tickmode="array", tickvals=shown, ticktext=[f"{v:g}" for v in shown])


def log_axis(values, title: str, **extra) -> dict:
    """A log value axis for the positive finite ``values`` (zeros and NaN are not drawn on it):
    at least a decade wide, so that values close together still get two or more ticks, with
    ``log_ticks`` labels; the title says "(log scale)". ``extra``: other axis properties."""
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v) & (v > 0)]
    axis = dict(type="log", title=dict(text=f"{title} (log scale)"), **extra)
    if v.size == 0:
        return axis
    low, high = float(np.log10(v.min())), float(np.log10(v.max()))
    widen = max(0.05 * (high - low), (1.0 - (high - low)) / 2)  # 5% room, or up to one decade
    low, high = low - widen, high + widen
    return {**axis, "range": [low, high], **log_ticks(10.0**low, 10.0**high)}


def value_marks(
    categories: Sequence[str],
    values,
    *,
    horizontal: bool = True,
    log: bool = False,
    colour="#3b6fb6",
    pattern: str = "",
    symbol: str = "circle",
    **extra,
) -> dict:
    """One series of values over categories, as a trace dict: bars on a linear axis, where a
    bar's length from 0 is its value; points on a log axis, which has no 0: a bar there starts
    at the axis' lower edge, wherever the data put it, and its length means nothing (120µ and
    170µ drew as 1 : 10). ``pattern`` fills the bars ("/"), ``symbol`` shapes the points, so
    two series differ without their colours; ``colour`` may be one per category. ``extra``:
    other trace properties (name, hovertemplate, text). Two series side by side per category
    need the layout's ``barmode`` / ``scattermode`` "group" (``GROUPED``)."""
    placed = (
        dict(x=list(values), y=list(categories), orientation="h")
        if horizontal
        else dict(x=list(categories), y=list(values))
    )
    outline = dict(color="#333333", width=0.5)
    if log:
        placed.pop("orientation", None)
        extra.pop("textposition", None)  # a bar's "none"; points in "markers" mode draw no text anyway
        return dict(
            type="scatter",
            mode="markers",
            marker=dict(color=colour, symbol=symbol, size=11, line=outline),
            **placed,
            **extra,
        )
    fill = dict(pattern=dict(shape=pattern)) if pattern else {}
    return dict(type="bar", marker=dict(color=colour, line=outline, **fill), **placed, **extra)


# Layout properties placing two series of ``value_marks`` side by side in each category.
GROUPED = dict(barmode="group", scattermode="group")


def position_0_cells(shape: tuple[int, int], position_axes: str) -> np.ndarray:
    """[R, C] bool: True for the cells outside position 0's row (``"y"`` in ``position_axes``:
    rows are positions) and column (``"x"``: columns are positions)."""
    counted = np.ones(shape, dtype=bool)
    if "y" in position_axes and shape[0] > 1:
        counted[0, :] = False
    if "x" in position_axes and shape[1] > 1:
        counted[:, 0] = False
    return counted


def counted_positions(n_positions: int, leave_out_position_0: bool) -> slice:
    """The positions a norm or a mean over positions counts: 1..T-1 when position 0 is left out
    (and there are others), else all."""
    return slice(1, None) if leave_out_position_0 and n_positions > 1 else slice(None)


def decade_ticks(zmin: float, zmax: float, most: int = 4) -> dict:
    """Colour-bar ticks for log10 values: powers of ten in zmin..zmax (every one, or every
    second, third… so that at most ``most`` remain, counted down from the top), labelled
    1, 0.1, 0.001, …: a short colour bar has room for a few labels only."""
    powers = list(range(int(np.floor(zmax)), int(np.ceil(zmin)) - 1, -1))
    step = -(-len(powers) // most)  # ceil
    powers = powers[::step][::-1]
    return dict(tickvals=powers, ticktext=[f"{10.0**k:g}" for k in powers])


# Legends and colour bars sit under the plot, across it (``LEGEND_BELOW``, ``colour_bar``): at
# the right, Plotly's default, a legend took ~150 px and a colour bar ~90 px of a phone's 324-px
# plot, leaving the data 70-120 px; above the plot a legend that wrapped to three rows covered
# the title. Placed against the figure's bottom edge (``yref="container"``), Plotly reserves
# the rows they need below the axes, however many a narrow screen wraps them into.
LEGEND_BELOW = dict(orientation="h", yref="container", y=0.0, yanchor="bottom", x=0.0, xanchor="left")
LEGEND_ROW_PX = 26  # one row of legend: the height a figure with a legend is given for it
COLOUR_BAR_PX = 64  # a colour bar under the plot with its ticks and a one-line title
# Titles are wrapped to lines that fit a phone's plot (~300 px for the text: 40 characters at
# the title's 16 px, 56 at the notes' smaller size); a longer line was cut at the plot's edge,
# on a phone and in the Mask tab's three side by side.
TITLE_LINE_CHARS = 40
NOTE_LINE_CHARS = 56
TITLE_PAD_PX = 36  # above the title's first line: clear of the label Gradio draws over a plot's corner
LINE_PX = 21  # the room each line of the title takes after the first (notes included)
TOP_PX = 60  # the top margin a caller's height counts on: a one-line title's (TITLE_PAD_PX + its line)
# gr.Plot raises a titled figure's top margin to at least this (its label sits over the corner):
# a figure given 60 lost 40 px of its plot, a one-row token grid all but 20 of its 60.
GRADIO_TOP_PX = 100


# Category labels (tokens, positions) lie level when they fit, else at 60°, which Plotly picks
# only where labels are far enough apart for it, else upright (with tickangle left at its
# default, "auto"): a fixed 45° ran labels into each other on a phone, where Plotly keeps one
# label per ~17 px (and drops the others: it thins the ticks itself).
LABEL_ANGLES = dict(autotickangles=[0, -60, -90])


def wrap_lines(text: str, width: int) -> list[str]:
    """``text`` (Plotly's pseudo-HTML, lines split at "<br>") in lines of at most ``width``
    characters, broken at spaces only (a token's text or an entity such as "&lt;" stays whole)."""
    return [
        line
        for part in str(text).split("<br>")
        for line in textwrap.wrap(part, width, break_long_words=False, break_on_hyphens=False) or [""]
    ]


def thinned_ticks(values: Sequence, texts: Sequence[str], most: int) -> dict:
    """Axis properties labelling every k-th of ``values`` (from the first) with its ``texts``, at
    most ``most`` labels: for an axis whose every label is given (``tickmode="array"``, which
    Plotly never thins), e.g. twelve heads across a third of a phone."""
    step = max(1, -(-len(values) // most))
    return dict(tickmode="array", tickvals=list(values)[::step], ticktext=list(texts)[::step])


def colour_bar(title: str = "", **extra) -> dict:
    """A colour bar under the plot, as wide as it (see ``LEGEND_BELOW``); ``title`` under its tick
    labels (above the bar Plotly drew it over the bar); ``extra``: other colour-bar properties (ticks)."""
    return dict(
        orientation="h",
        yref="container",
        y=0.0,
        yanchor="bottom",
        ypad=8,
        x=0.5,
        xanchor="center",
        len=1.0,
        thickness=12,
        **({"title": dict(text=title, side="bottom", font=dict(size=12))} if title else {}),
        **extra,
    )


def layout_properties(title: str, height: int = DEFAULT_HEIGHT, notes: Sequence[str] = (), **extra) -> dict:
    """Title, height, margins, font and legend of every figure (and any other layout properties),
    as the dict a layout is built from. The title is wrapped to ``TITLE_LINE_CHARS`` a line;
    ``notes`` become smaller lines under it, each wrapped to ``NOTE_LINE_CHARS``. ``height`` counts
    a top margin of ``TOP_PX`` (or the caller's ``margin`` top, room for a one-line title and what
    lies above the plot): the title's further lines, and what ``GRADIO_TOP_PX`` adds, are added to
    it, so the plot keeps the height it was given."""
    lines = wrap_lines(title, TITLE_LINE_CHARS)
    note_lines = [line for note in notes if note for line in wrap_lines(note, NOTE_LINE_CHARS)]
    text = "<br>".join(lines) + "".join(f"<br><sup>{line}</sup>" for line in note_lines)
    more = LINE_PX * (len(lines) - 1 + len(note_lines))
    margin = {"l": 60, "r": 20, "t": TOP_PX, "b": 60, **extra.pop("margin", {})}
    asked = margin["t"]
    margin["t"] = max(GRADIO_TOP_PX, asked + more + 12)  # 12: a gap between the title and the plot
    return {
        # From the top down (Plotly centres a title in the top margin by default, so a line more
        # moved it down into what the margin holds below it, e.g. the all-heads grid's top axis).
        "title": dict(text=text, font=dict(size=16), yref="container", y=1.0, yanchor="top", pad=dict(t=TITLE_PAD_PX)),
        "height": height + margin["t"] - asked,
        "margin": margin,
        "font": FONT,
        "legend": LEGEND_BELOW,
        **extra,
    }


def layout(fig: go.Figure, title: str, height: int = DEFAULT_HEIGHT, notes: Sequence[str] = (), **extra) -> go.Figure:
    """Applies ``layout_properties`` to a figure that exists already."""
    fig.update_layout(**layout_properties(title, height + legend_px(fig.data), notes, **extra))
    return fig


def figure(
    data: Sequence[dict], title: str, height: int = DEFAULT_HEIGHT, notes: Sequence[str] = (), **extra
) -> go.Figure:
    """A figure made in one validated construction from trace dicts (each with its ``type``) and
    ``layout_properties``: several times faster than adding traces and then calling update_layout
    and update_xaxes one at a time (the same JSON), which matters where a class's 30 generations
    each redraw a chart every second."""
    return go.Figure(data=list(data), layout=layout_properties(title, height + legend_px(data), notes, **extra))


def legend_px(data: Sequence) -> int:
    """The room a figure's legend row takes below its axes: a row when two or more traces are in
    the legend (Plotly shows none for a single trace), else none."""
    shown = [
        trace
        for trace in data
        if trace["type"] != "heatmap" and (trace["showlegend"] if "showlegend" in trace else None) is not False
    ]
    return LEGEND_ROW_PX if len(shown) > 1 else 0


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
    limits: ColourLimits | None = None,
    position_axes: str = "",
    leave_out_position_0: bool = False,
    notes: Sequence[str] = (),
    height: int = DEFAULT_HEIGHT,
    hover_text: np.ndarray | None = None,
) -> go.Figure:
    """A labelled heatmap; rows are ``y_labels`` (top to bottom), columns ``x_labels``.

    Colour range: ``zmin`` and ``zmax`` when both are given (absolute scales: attention,
    probabilities, cosines), else ``limits`` when given (the caller's ``robust_limits``, e.g.
    one scale for two figures), else ``robust_limits`` of ``values``. ``position_axes`` ("y",
    "x" or "xy") names the axes that run over positions; with ``leave_out_position_0`` position
    0's row / column (its block, when binned) does not count for the robust limits, and the
    title says so. ``notes`` become a second title line.
    """
    z = finite(values).astype(np.float32)  # half the bytes of float64 on the wire; hovers show 4 digits
    notes = list(notes)
    leave_out = leave_out_position_0 and bool(position_axes)
    if zmin is not None and zmax is not None:
        limits = ColourLimits(zmin, zmax, zmin, zmax, diverging)  # fixed: nothing to clip or say
        leave_out = False
    elif limits is None:
        counted = position_0_cells(z.shape, position_axes) if leave_out else None
        limits = robust_limits(z, diverging=diverging, counted=counted)
    if leave_out:
        notes.append(POSITION_0_LEFT_OUT)
    kwargs = dict(zmin=limits.zmin, zmax=limits.zmax, colorbar=colour_bar(limits.clip_note()))
    if diverging:
        kwargs["zmid"] = 0.0
    hover = f"{y_title or 'row'}: %{{y}}<br>{x_title or 'column'}: %{{x}}<br>{value_name}: %{{z:.4g}}"
    if hover_text is not None:
        kwargs["text"] = hover_text
        hover += "<br>%{text}"
    trace = dict(
        type="heatmap",
        z=z,
        x=plot_texts(x_labels),
        y=plot_texts(y_labels),
        colorscale=DIVERGING if diverging else SEQUENTIAL,
        hovertemplate=hover + "<extra></extra>",
        hoverongaps=False,
        **kwargs,
    )
    return figure(
        [trace],
        title,
        height + COLOUR_BAR_PX,
        notes,
        xaxis=dict(title=x_title, type="category", **LABEL_ANGLES),
        yaxis=dict(title=y_title, type="category", autorange="reversed"),
    )


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
    first_alone: bool = False,
    attention: bool = False,
    **kwargs,
) -> go.Figure:
    """``heatmap`` of [R, C] ``values`` with at most ``max_cells`` (default ``MAX_CELLS_PER_AXIS``)
    rows and columns: a longer axis (where ``bin_x`` / ``bin_y``) is averaged over blocks of
    neighbours (``block_means``), labelled by ``block_labels`` (with ``x_short`` / ``y_short``,
    e.g. token texts), and a second title line says so (after ``subtitle``, if any). Colour
    limits as in ``heatmap``, from the drawn (binned) cells. ``mean_name`` names a binned cell's value (default "mean " + ``value_name``).

    ``first_alone``: position 0 is a block of its own on both axes (query x key views, so that
    a score heatmap's blocks line up with its pattern's). ``attention``: ``values`` are attention
    weights [queries, keys], binned by ``attention_blocks`` (keys summed, queries averaged: rows
    still sum to 1) with position 0 alone."""
    R, C = values.shape[-2:]
    cap = MAX_CELLS_PER_AXIS if max_cells is None else max_cells  # read per call: tests lower it
    first_alone = first_alone or attention
    rows = bin_starts(R, cap, first_alone) if bin_y else np.arange(R)
    cols = bin_starts(C, cap, first_alone) if bin_x else np.arange(C)
    notes = [subtitle] if subtitle else []
    if len(rows) < R or len(cols) < C:
        if attention:
            values = attention_blocks(values, rows)
            how = "queries averaged, keys summed"
        else:
            values = block_means(values, rows, cols)
            how = "averaged"
        x_labels = block_labels(x_labels, cols, x_short)
        y_labels = block_labels(y_labels, rows, y_short)
        value_name = mean_name or f"mean {value_name}"
        notes += sorted(
            {block_note(R, rows, what, how, first_alone), block_note(C, cols, what, how, first_alone)} - {""}
        )
    return heatmap(values, x_labels, y_labels, title, value_name=value_name, notes=notes, **kwargs)


def bars(
    labels: Sequence[str],
    values: Sequence[float],
    title: str,
    *,
    value_name: str = "value",
    horizontal: bool = True,
    height: int = DEFAULT_HEIGHT,
    hover_extra: Sequence[str] | None = None,
    log_scale: bool = False,
) -> go.Figure:
    """Bars, most important first (top when horizontal); ``log_scale``: a log value axis, for
    values that span decades (probabilities: 0.9 beside 0.001), with the values drawn as points
    (``value_marks``: a bar on a log axis has no base)."""
    hover = f"%{{{'y' if horizontal else 'x'}}}<br>{value_name}: %{{{'x' if horizontal else 'y'}:.4g}}"
    kwargs = {}
    if hover_extra is not None:
        kwargs["text"] = list(hover_extra)
        kwargs["textposition"] = "none"
        hover += "<br>%{text}"
    trace = value_marks(
        plot_texts(labels),
        values,
        horizontal=horizontal,
        log=log_scale,
        hovertemplate=hover + "<extra></extra>",
        **kwargs,
    )
    value_axis = log_axis(values, value_name) if log_scale else dict(title=value_name, type="linear")
    if horizontal:
        axes = dict(yaxis=dict(type="category", autorange="reversed"), xaxis=value_axis)
    else:
        axes = dict(xaxis=dict(type="category", **LABEL_ANGLES), yaxis=value_axis)
    return figure([trace], title, height, **axes)


def lines(
    x: Sequence,
    series: dict[str, Sequence[float]],
    title: str,
    *,
    x_title: str = "",
    y_title: str = "",
    height: int = DEFAULT_HEIGHT,
    hover_text: dict[str, Sequence[str]] | None = None,
    log_y: bool = False,
    leave_out_position_0: bool = False,
    notes: Sequence[str] = (),
) -> go.Figure:
    """One line per series over shared x values; ``notes``: a second title line.

    ``log_y``: a log y axis, for values that span decades (norms, probabilities).
    ``leave_out_position_0`` (x runs over positions): the first point of every series is not
    drawn, and the title gives its values, so one huge position 0 does not flatten the rest."""
    x = list(x)
    notes = list(notes)
    if leave_out_position_0 and len(x) > 1:
        values = ", ".join(f"{name} {float(ys[0]):.4g}" for name, ys in series.items())
        notes.append(f"position 0 ({plot_text(x[0])}) left out: {values}")
        x = x[1:]
        series = {name: ys[1:] for name, ys in series.items()}
        hover_text = {name: texts[1:] for name, texts in (hover_text or {}).items()}
    traces = []
    for name, ys in series.items():
        extra = {}
        hover = f"{name}<br>{x_title or 'x'}: %{{x}}<br>{y_title or 'y'}: %{{y:.4g}}"
        if hover_text and name in hover_text:
            extra["text"] = list(hover_text[name])
            hover += "<br>%{text}"
        traces.append(
            dict(
                type="scatter",
                x=plot_texts(x),
                y=list(ys),
                mode="lines+markers",
                name=name,
                hovertemplate=hover + "<extra></extra>",
                **extra,
            )
        )
    return figure(
        traces,
        title,
        height,
        notes,
        xaxis=dict(title=x_title, **LABEL_ANGLES),
        yaxis=log_axis([y for ys in series.values() for y in ys], y_title)
        if log_y
        else dict(title=y_title, type="linear"),
    )


def attention_pattern(
    pattern: np.ndarray,
    labels: Sequence[str],
    short: Sequence[str],
    title: str,
    *,
    height: int,
    x_title: str = "key (read from)",
    y_title: str = "query (reading)",
) -> go.Figure:
    """A [T, T] attention pattern (queries × keys) on the fixed 0..1 scale (a weight's meaning is
    absolute), with bars beside it: each query row's share on position 0.

    Most heads of the real GPT-2 park most of their attention on position 0 (a "sink"), so the
    bars and the title's mean share say how much of each row that is; what is left is the
    pattern's real reading. Longer inputs are drawn in blocks of positions (``binned_heatmap``
    with ``attention``: a cell is a query block's mean weight on a key block, position 0 alone)."""
    pattern = np.asarray(pattern, dtype=np.float64)
    T = pattern.shape[0]
    rows = bin_starts(T, MAX_CELLS_PER_AXIS, first_alone=True)  # binned_heatmap's blocks
    share = block_means(pattern[:, :1], rows, None)[:, 0]  # [G] each (block of) query row's weight on key 0
    # Query 0 can read only position 0 (its share is 1 under the causal mask): the mean is over the others.
    mean_share = float(pattern[1:, 0].mean()) if T > 1 else float(pattern[0, 0])
    note = f"mean share on position 0 over queries 1–{T - 1}: {mean_share:.0%} (bars, right)" if T > 1 else ""
    fig = binned_heatmap(
        pattern,
        labels,
        labels,
        title,
        x_short=short,
        y_short=short,
        subtitle=note,
        x_title=x_title,
        y_title=y_title,
        value_name="attention weight",
        mean_name="weight on the key block, mean over the query block",
        attention=True,
        zmin=0.0,
        zmax=1.0,
        height=height,
    )
    binned = len(rows) < T
    fig.add_trace(
        go.Bar(
            x=share.astype(np.float32),
            y=fig.data[0].y,
            orientation="h",
            xaxis="x2",
            yaxis="y",
            marker_color="#3b6fb6",
            showlegend=False,
            hovertemplate=f"query %{{y}}<br>{'mean ' if binned else ''}share of its attention on position 0: %{{x:.1%}}<extra></extra>",
        )
    )
    fig.update_layout(
        xaxis=dict(domain=[0.0, 0.8]),
        # Two ticks: beside a narrow pattern (the Mask tab's three in a row) more would overlap.
        xaxis2=dict(
            domain=[0.84, 1.0],
            range=[0.0, 1.0],
            tickvals=[0.0, 1.0],
            ticktext=["0", "100%"],
            # Two short lines: one line was wider than the bars' column on a phone and ran off the figure.
            title=dict(text="share on<br>position 0", font=dict(size=12)),
            tickangle=0,
        ),
    )
    return fig


def tiled_heatmap(
    tiles: np.ndarray,
    row_titles: Sequence[str],
    col_titles: Sequence[str],
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    *,
    hovertemplate: str,
    customdata: np.ndarray | None = None,
    row_ticks: Sequence[str] | None = None,
    col_ticks: Sequence[str] | None = None,
    x_title: str = "",
    y_title: str = "",
    layout_extra: dict,
) -> go.Figure:
    """A grid of R x C heatmaps, ``tiles`` [R, C, G, K], drawn as one heatmap of R(G+1)-1 x C(K+1)-1
    cells with a row and a column of gaps between the tiles (one trace on one pair of axes:
    144 subplots of their own axes cost ~45 ms to build, most of an Attention render, and
    draw slowly in the browser). Tile (r, c) is titled by ``row_titles[r]`` and ``col_titles[c]``
    (the axes' ticks); its rows by ``row_labels`` and columns by ``col_labels``. A cell's hover
    names its tile and its row and column (``%{y}`` is "row title · row label", ``%{x}`` the
    same for columns); ``customdata`` [R, C] is a number per tile for ``%{customdata}``
    (unsigned 8-bit: 1 byte per cell on the wire). ``row_ticks`` / ``col_ticks``: shorter tick
    labels than the titles, under the axis titles ``y_title`` / ``x_title`` ("0".."11" under
    "head": twelve "head h" labels overlapped across a phone). ``layout_extra``: the other layout
    properties (e.g. ``layout_properties``); the trace takes ``coloraxis``."""
    R, C, G, K = tiles.shape

    def laid_out(per_tile: np.ndarray, fill, dtype) -> np.ndarray:
        """[R, C, G, K] -> [R(G+1)-1, C(K+1)-1]: tile (r, c) at rows r(G+1).., columns c(K+1)..,
        ``fill`` in the gap row and column after each tile."""
        padded = np.full((R, C, G + 1, K + 1), fill, dtype=dtype)
        padded[:, :, :G, :K] = per_tile
        return np.ascontiguousarray(padded.transpose(0, 2, 1, 3).reshape(R * (G + 1), C * (K + 1))[:-1, :-1])

    z = laid_out(tiles, np.nan, np.float32)

    def axis_labels(titles: Sequence[str], labels: Sequence[str]) -> list[str]:
        # Category labels must be unique: a gap is named after the tile before it (never hovered).
        out: list[str] = []
        for t, title in enumerate(titles):
            out += [f"{title} · {label}" for label in labels]
            if t < len(titles) - 1:
                out.append(f"{title} ·")
        return out

    trace = dict(
        type="heatmap",
        z=z,
        x=axis_labels(col_titles, col_labels),
        y=axis_labels(row_titles, row_labels),
        coloraxis="coloraxis",
        hoverongaps=False,
        xgap=0,
        ygap=0,
        hovertemplate=hovertemplate,
    )
    if customdata is not None:
        trace["customdata"] = laid_out(np.asarray(customdata)[:, :, None, None], 0, np.uint8)

    def ticks(count: int, size: int, texts: Sequence[str], title: str) -> dict:
        # Category axes take tick positions as indices: each tile's middle.
        return dict(
            tickmode="array",
            tickvals=[t * (size + 1) + (size - 1) / 2 for t in range(count)],
            ticktext=list(texts),
            title=dict(text=title),
            type="category",
            showgrid=False,
            zeroline=False,
        )

    axes = dict(
        xaxis=dict(ticks(C, K, col_titles if col_ticks is None else col_ticks, x_title), side="top", tickangle=0),
        yaxis=dict(ticks(R, G, row_titles if row_ticks is None else row_ticks, y_title), autorange="reversed"),
    )
    return go.Figure(data=[trace], layout={**axes, **layout_extra})


def brief(text: str) -> str:
    """What a figure or a second mention says of ``text``: a ``Reason``'s brief form, else the text."""
    return getattr(text, "brief", text)


# Characters per line of a message figure: ~350 px at its 14 px font, inside a phone's plot.
MESSAGE_LINE_CHARS = 50


def message_figure(text: str, height: int = 200) -> go.Figure:
    """A blank figure that says why there is nothing to plot yet: a ``Reason``'s brief form, in
    lines that fit a phone's plot (one long line was cut at both edges)."""
    text = brief(text)
    lines_ = [plot_text(line) for line in textwrap.wrap(str(text), MESSAGE_LINE_CHARS, break_long_words=False)]
    fig = go.Figure()
    fig.add_annotation(
        text="<br>".join(lines_), showarrow=False, font=dict(size=14), xref="paper", yref="paper", x=0.5, y=0.5
    )
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return layout(fig, "", height)
