"""The providers' region map: an inline SVG world map in the equirectangular projection.

There are no country shapes: the background is a graticule plus a faint dot at each country's representative
point (``static/country_centroids.json``, derived from Google DSPL's canonical countries, BSD-3-Clause; see
``static/country_centroids.SOURCE.txt``), which is enough to read the continents. Each country with providers
gets a dot whose *area* is proportional to its providers' total stake, a ``<title>`` (shown on hover) naming
them, and a link. Locations are what providers claim in their signed offers; the page says so.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Final

from markupsafe import Markup, escape

__all__ = ["Centroid", "MapSpot", "centroid", "centroids", "project", "world_map"]

WIDTH: Final = 720
NORTH: Final = 84.0
SOUTH: Final = -58.0
HEIGHT: Final = round(WIDTH * (NORTH - SOUTH) / 360.0)
_MIN_R: Final = 4.0
_MAX_R: Final = 18.0


@dataclass(frozen=True)
class Centroid:
    """A country's representative point.

    Attributes:
        code: ISO 3166-1 alpha-2 code.
        lat: Latitude in degrees.
        lon: Longitude in degrees.
        name: English name.
    """

    code: str
    lat: float
    lon: float
    name: str


@dataclass(frozen=True)
class MapSpot:
    """A dot on the map.

    Attributes:
        country: ISO 3166-1 alpha-2 code (must have a centroid).
        weight: What the dot's area shows (total stake in wei); non-negative.
        title: Hover text (escaped when drawn).
        href: Where the dot links to.
    """

    country: str
    weight: int
    title: str
    href: str


@cache
def centroids() -> dict[str, Centroid]:
    """Every country's representative point, by ISO-2 code (read once from the package data).

    Returns:
        Centroids keyed by upper-case ISO-2 code.
    """
    path = resources.files("proxima.audit.explorer").joinpath("static/country_centroids.json")
    text = path.read_text("utf-8")
    raw = json.loads(text)["countries"]
    return {code: Centroid(code, float(lat), float(lon), str(name)) for code, (lat, lon, name) in raw.items()}


def centroid(code: str) -> Centroid | None:
    """The representative point of ``code`` (ISO-2, any case), or None when the table has no such country.

    Args:
        code: An ISO 3166-1 alpha-2 code.

    Returns:
        Its centroid or None.
    """
    return centroids().get(code.upper())


def project(lat: float, lon: float) -> tuple[float, float]:
    """Equirectangular projection onto the map's ``WIDTH x HEIGHT`` box (north up, 180° W on the left).

    Args:
        lat: Latitude in degrees (clamped to the map's band).
        lon: Longitude in degrees.

    Returns:
        ``(x, y)`` in SVG user units.
    """
    scale = WIDTH / 360.0
    lat = min(max(lat, SOUTH), NORTH)
    return (lon + 180.0) * scale, (NORTH - lat) * scale


def _radius(weight: int, largest: int) -> float:
    if largest <= 0:
        return _MIN_R
    return _MIN_R + (_MAX_R - _MIN_R) * math.sqrt(max(weight, 0) / largest)


def world_map(spots: Sequence[MapSpot], *, label: str = "Providers by country") -> Markup:
    """Draw the map with one linked dot per spot, largest first (so small dots stay clickable on top).

    Args:
        spots: The dots; each country at most once.
        label: The map's accessible name.

    Returns:
        The ``<svg>`` element as markup.

    Raises:
        ValueError: If a spot's country has no centroid or appears twice.
    """
    seen: set[str] = set()
    for spot in spots:
        if centroid(spot.country) is None:
            raise ValueError(f"no centroid for country {spot.country!r}")
        if spot.country in seen:
            raise ValueError(f"country {spot.country!r} appears twice on the map")
        seen.add(spot.country)
    parts = [
        f'<svg class="map" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(label)}" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{escape(label)}</title>'
        f'<rect class="sea" x="0" y="0" width="{WIDTH}" height="{HEIGHT}"/>'
    ]
    for lon in range(-150, 180, 30):
        x, _ = project(0.0, float(lon))
        parts.append(f'<line class="graticule" x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="{HEIGHT}"/>')
    for lat in range(-30, 90, 30):
        _, y = project(float(lat), 0.0)
        cls = "equator" if lat == 0 else "graticule"
        parts.append(f'<line class="{cls}" x1="0" y1="{y:.1f}" x2="{WIDTH}" y2="{y:.1f}"/>')
    for place in sorted(centroids().values(), key=lambda c: c.code):
        x, y = project(place.lat, place.lon)
        parts.append(
            f'<circle class="land" cx="{x:.1f}" cy="{y:.1f}" r="2.2">'
            f"<title>{escape(place.name)}</title></circle>"
        )
    largest = max((spot.weight for spot in spots), default=0)
    for spot in sorted(spots, key=lambda s: (-s.weight, s.country)):
        place = centroids()[spot.country.upper()]
        x, y = project(place.lat, place.lon)
        r = _radius(spot.weight, largest)
        parts.append(
            f'<a class="spot" href="{escape(spot.href)}" data-country="{escape(place.code)}">'
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r:.1f}"><title>{escape(spot.title)}</title></circle>'
            f'<text x="{x:.1f}" y="{y - r - 3:.1f}" text-anchor="middle">{escape(place.code)}</text></a>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 (built from numbers and escaped text only)
