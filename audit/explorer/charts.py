"""Charts as inline SVG, drawn on the server: no JavaScript, no web fonts, nothing fetched.

Each chart is a self-contained ``<svg>`` element with a ``viewBox`` (it scales with the page), axes with
"nice" ticks, labels, and a ``<title>`` on every bar and point holding its exact value (browsers show it on
hover). Every piece of text goes through :func:`markupsafe.escape`. Values are plain numbers (ints stay
exact in the titles); the caller passes a ``fmt`` that turns a value into label text (wei to ETH, counts).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from markupsafe import Markup, escape

__all__ = ["ChartSeries", "bar_chart", "line_chart", "nice_ticks", "time_label"]

WIDTH: Final = 640
HEIGHT: Final = 220
_LEFT: Final = 64
_RIGHT: Final = 16
_TOP: Final = 28
_BOTTOM: Final = 34
_PALETTE: Final = ("#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed")

Number = int | float
Formatter = Callable[[Number], str]


@dataclass(frozen=True)
class ChartSeries:
    """One line (or set of bars) of a chart.

    Attributes:
        name: Legend text.
        values: One value per x position (same length as the chart's ``x`` values).
    """

    name: str
    values: Sequence[Number]


def _plain(value: Number) -> str:
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.4g}"


def nice_ticks(low: float, high: float, count: int = 5, *, integer: bool = False) -> list[float]:
    """Round tick positions (1, 2, 2.5 or 5 times a power of ten) covering ``low .. high``.

    Args:
        low: Smallest value to cover.
        high: Largest value to cover.
        count: About how many ticks.
        integer: Keep ticks whole (for counts): the step is at least 1.

    Returns:
        Increasing tick values; the first is <= ``low`` and the last >= ``high``.
    """
    if not math.isfinite(low) or not math.isfinite(high):
        return [0.0, 1.0]
    if high < low:
        low, high = high, low
    if high == low:
        high = low + (abs(low) if low else 1.0)
    raw = (high - low) / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    if integer:
        step = max(1.0, float(math.ceil(step)))
    start = math.floor(low / step) * step
    ticks = []
    for index in range(4 * count + 8):  # bounded: about ``count`` steps cover the range
        value = start + index * step
        ticks.append(round(value, 12))
        if value >= high:
            break
    return ticks


def time_label(timestamp: int, span_s: int) -> str:
    """A short UTC label for ``timestamp``, precise enough for a chart spanning ``span_s`` seconds.

    Args:
        timestamp: Unix seconds.
        span_s: The chart's time span.

    Returns:
        ``HH:MM`` under two days, ``Mon DD`` under a year, else ``YYYY-MM``.
    """
    moment = datetime.fromtimestamp(timestamp, tz=UTC)
    if span_s < 2 * 86_400:
        return moment.strftime("%H:%M")
    if span_s < 365 * 86_400:
        return moment.strftime("%b %d")
    return moment.strftime("%Y-%m")


def _full_time(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


class _Frame:
    """Axes, ticks and scales shared by the chart kinds."""

    def __init__(
        self, xs: Sequence[int], top_value: float, fmt: Formatter, *, bars: bool, integer: bool = False
    ) -> None:
        self.xs = list(xs)
        self.ticks = nice_ticks(0.0, max(top_value, 0.0), integer=integer)
        self.y_max = self.ticks[-1] or 1.0
        self.fmt = fmt
        self.plot_w = WIDTH - _LEFT - _RIGHT
        self.plot_h = HEIGHT - _TOP - _BOTTOM
        n = max(len(self.xs), 1)
        self.slot = self.plot_w / n if bars else self.plot_w / max(n - 1, 1)
        self.bars = bars

    def x(self, index: int) -> float:
        if self.bars:
            return _LEFT + self.slot * (index + 0.5)
        if len(self.xs) == 1:
            return _LEFT + self.plot_w / 2
        return _LEFT + self.slot * index

    def y(self, value: float) -> float:
        return _TOP + self.plot_h * (1 - max(value, 0.0) / self.y_max)

    def axes(self) -> list[str]:
        parts = []
        for tick in self.ticks:
            y = self.y(tick)
            label = self.fmt(int(tick) if float(tick).is_integer() else tick)
            parts.append(
                f'<line class="grid" x1="{_LEFT}" y1="{y:.1f}" x2="{WIDTH - _RIGHT}" y2="{y:.1f}"/>'
                f'<text class="tick" x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{escape(label)}</text>'
            )
        parts.append(
            f'<line class="axis" x1="{_LEFT}" y1="{_TOP + self.plot_h}" x2="{WIDTH - _RIGHT}" '
            f'y2="{_TOP + self.plot_h}"/>'
        )
        if self.xs:
            span = self.xs[-1] - self.xs[0]
            every = max(1, math.ceil(len(self.xs) / 6))
            for index in range(0, len(self.xs), every):
                parts.append(
                    f'<text class="tick" x="{self.x(index):.1f}" y="{HEIGHT - _BOTTOM + 16}" '
                    f'text-anchor="middle">{escape(time_label(self.xs[index], span))}</text>'
                )
        return parts


def _trusted(svg: str) -> Markup:
    """Mark SVG built here as safe: every piece of outside text in it went through ``escape``."""
    return Markup(svg)  # noqa: S704 (built from numbers and escaped text only)


def _svg(title: str, body: list[str], legend: Sequence[str]) -> Markup:
    label = escape(title)
    keys = []
    offset = _LEFT
    if len(legend) > 1:
        for index, name in enumerate(legend):
            colour = _PALETTE[index % len(_PALETTE)]
            keys.append(
                f'<rect x="{offset}" y="{_TOP - 14}" width="10" height="10" fill="{colour}"/>'
                f'<text class="legend" x="{offset + 14}" y="{_TOP - 5}">{escape(name)}</text>'
            )
            offset += 24 + 7 * len(name)
    head = (
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{label}" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{label}</title>'
    )
    return _trusted(head + "".join(body) + "".join(keys) + "</svg>")


def _empty(title: str) -> Markup:
    label = escape(title)
    return _trusted(
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{label}" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{label}</title>'
        f'<text class="empty" x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle">no data yet</text></svg>'
    )


def bar_chart(
    title: str,
    xs: Sequence[int],
    values: Sequence[Number],
    *,
    fmt: Formatter = _plain,
    full: Formatter = _plain,
    integer: bool = False,
) -> Markup:
    """A bar per time bucket.

    Args:
        title: The chart's accessible name (also its SVG ``<title>``).
        xs: Bucket start times (Unix seconds), increasing.
        values: One non-negative value per bucket.
        fmt: Turns a value into axis label text.
        full: Turns a value into the exact text shown on hover.
        integer: Whole-number ticks (counts).

    Returns:
        The ``<svg>`` element as markup.

    Raises:
        ValueError: If ``xs`` and ``values`` differ in length.
    """
    if len(xs) != len(values):
        raise ValueError(f"bar chart {title!r}: {len(xs)} x values but {len(values)} values")
    if not xs:
        return _empty(title)
    frame = _Frame(xs, float(max(values)), fmt, bars=True, integer=integer)
    body = frame.axes()
    width = max(frame.slot * 0.7, 1.0)
    base = frame.y(0)
    for index, value in enumerate(values):
        top = frame.y(float(value))
        tip = f"{_full_time(xs[index])}: {full(value)}"
        body.append(
            f'<rect class="bar" x="{frame.x(index) - width / 2:.1f}" y="{top:.1f}" width="{width:.1f}" '
            f'height="{max(base - top, 0.0):.1f}" fill="{_PALETTE[0]}"><title>{escape(tip)}</title></rect>'
        )
    return _svg(title, body, [])


def line_chart(
    title: str,
    xs: Sequence[int],
    series: Sequence[ChartSeries],
    *,
    fmt: Formatter = _plain,
    full: Formatter = _plain,
) -> Markup:
    """One or more lines over time, with a dot (and its exact value on hover) at each bucket.

    Args:
        title: The chart's accessible name.
        xs: Bucket times (Unix seconds), increasing.
        series: The lines; each has one value per x.
        fmt: Turns a value into axis label text.
        full: Turns a value into the exact text shown on hover.

    Returns:
        The ``<svg>`` element as markup.

    Raises:
        ValueError: If a series' length differs from ``xs``.
    """
    for line in series:
        if len(line.values) != len(xs):
            raise ValueError(
                f"line chart {title!r}: series {line.name!r} has {len(line.values)} values, not {len(xs)}"
            )
    if not xs or not series:
        return _empty(title)
    top = max(float(v) for line in series for v in line.values)
    frame = _Frame(xs, top, fmt, bars=False)
    body = frame.axes()
    for number, line in enumerate(series):
        colour = _PALETTE[number % len(_PALETTE)]
        points = [(frame.x(i), frame.y(float(v))) for i, v in enumerate(line.values)]
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        body.append(f'<polyline class="line" points="{path}" fill="none" stroke="{colour}"/>')
        for index, (x, y) in enumerate(points):
            tip = f"{line.name}, {_full_time(xs[index])}: {full(line.values[index])}"
            body.append(
                f'<circle class="point" cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}">'
                f"<title>{escape(tip)}</title></circle>"
            )
    return _svg(title, body, [line.name for line in series])
