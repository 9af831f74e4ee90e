"""Where the demo's providers are, and the round-trip times between them and the client, from RIPE Atlas.

The client (and the gateway next to it) sits in :data:`CLIENT_COUNTRY`; each provider node in another
country. Every node runs on this machine behind a :class:`~proxima.marketplace.delayproxy.DelayProxy` that
adds the RIPE Atlas mean RTT between the client's country and the node's (the country statistics carry the
mean, ``rtt_avg``, not a median). The RTTs come from the full RIPE Atlas extract in ``../shared/data`` when
it is there, else from the extract committed under ``tests/data``, else from the figures below, copied from
that extract.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from proxima.marketplace.errors import MarketError
from proxima.marketplace.matching.latency import LatencyDataError, load_ripe_atlas_pairs

__all__ = [
    "CLIENT_COUNTRY",
    "FALLBACK_RTT_MS",
    "SITES",
    "Site",
    "SiteError",
    "load_rtts",
    "rtt_sources",
]

log = logging.getLogger(__name__)

CLIENT_COUNTRY: Final = "DE"
"""Where the demo's client and gateway are."""


class SiteError(MarketError):
    """No RTT is known between the client's country and a site's."""

    def __init__(self, client: str, country: str) -> None:
        super().__init__(f"no RIPE Atlas RTT between {client} and {country}; pick another country")


@dataclass(frozen=True)
class Site:
    """A provider node of the demo.

    Attributes:
        name: Short name shown in the output (also its data folder).
        country: ISO 3166-1 alpha-2 code.
        region: Market region it advertises.
        workloads: Workloads it serves.
        wrong_matmul_rate: Fault injection: share of matmul jobs it answers wrongly (0: honest).
    """

    name: str
    country: str
    region: str
    workloads: tuple[str, ...]
    wrong_matmul_rate: float = 0.0

    @property
    def dishonest(self) -> bool:
        """Whether the node cheats."""
        return self.wrong_matmul_rate > 0


SITES: Final = (
    Site("paris", "FR", "eu-west", ("matmul",), wrong_matmul_rate=0.5),
    Site("london", "GB", "eu-west", ("matmul", "embed")),
    Site("virginia", "US", "us-east", ("matmul", "embed")),
    Site("singapore", "SG", "ap-southeast", ("matmul",)),
    Site("sao-paulo", "BR", "sa-east", ("matmul",)),
)
"""The demo's five providers: the nearest one cheats (so it gets work and is caught); two serve embed."""

FALLBACK_RTT_MS: Final[dict[tuple[str, str], float]] = {
    ("DE", "FR"): 43.198,
    ("DE", "GB"): 57.701,
    ("DE", "US"): 113.630,
    ("DE", "SG"): 165.813,
    ("BR", "DE"): 206.740,
    ("DE", "IN"): 180.725,
    ("DE", "JP"): 173.737,
    ("AU", "DE"): 260.372,
    ("DE", "ZA"): 177.582,
}
"""Mean RTTs (ms) from the RIPE Atlas country statistics, for a checkout without the data files."""

_REPO: Final = Path(__file__).resolve().parents[2]


def rtt_sources() -> list[Path]:
    """Candidate RIPE Atlas CSV files, best first: the full extract, then the committed one."""
    return [
        _REPO.parent / "shared" / "data" / "latency_ripe_atlas_country" / "country_rtt_stat.csv",
        _REPO / "tests" / "data" / "ripe_atlas_country_rtt.csv",
    ]


def load_rtts(
    client: str, countries: Sequence[str], path: Path | None = None
) -> tuple[dict[str, float], str]:
    """RTT in seconds from ``client`` to each of ``countries``, and where the figures came from.

    Args:
        client: The client's country.
        countries: The sites' countries.
        path: A RIPE Atlas country statistics CSV; omitted: the first of :func:`rtt_sources` that exists,
            else :data:`FALLBACK_RTT_MS`.

    Raises:
        LatencyDataError: If ``path`` (or the file found) cannot be read.
        SiteError: If a pair has no figure.
    """
    candidates = [path] if path is not None else [p for p in rtt_sources() if p.is_file()]
    pairs: dict[tuple[str, str], float] = {}
    source = "built-in RIPE Atlas figures"
    for candidate in candidates:
        try:
            pairs = load_ripe_atlas_pairs(candidate)
        except LatencyDataError:
            if path is not None:
                raise
            log.warning("RIPE Atlas file unusable, trying the next", extra={"path": str(candidate)})
            continue
        source = str(candidate)
        break
    if not pairs:
        pairs = {key: ms / 1000.0 for key, ms in FALLBACK_RTT_MS.items()}
    rtts: dict[str, float] = {}
    for country in countries:
        key = (min(client, country), max(client, country))
        if key not in pairs:
            raise SiteError(client, country)
        rtts[country] = pairs[key]
    return rtts, source
