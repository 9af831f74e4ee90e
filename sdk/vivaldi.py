"""Vivaldi network coordinates (Dabek, Cox, Kaashoek, Morris, SIGCOMM 2004) with height vectors.

Every node keeps a coordinate: a point in a low-dimensional Euclidean space plus a non-negative *height* (the
access-link delay that every path to the node pays), and an estimate of its own relative error. The predicted
round-trip time between two nodes is the Euclidean distance of their points plus both heights, in seconds.
A node refines its coordinate from each RTT it measures to a peer whose coordinate it knows, moving like a
mass on a spring by an amount weighted by the two error estimates (constants ``c_c`` and ``c_e`` of the paper,
both 0.25). Nodes publish their coordinates, so anyone can predict the RTT to a node without probing it.

Everything here is deterministic: when two points coincide the direction of the push is derived from a
caller-given tie-break (the two peer ids), not from a random generator.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Final

from proxima.sdk.errors import SdkError

__all__ = [
    "CC",
    "CE",
    "DIMENSIONS",
    "MAX_COMPONENT",
    "MAX_ERROR",
    "MIN_ERROR",
    "MIN_HEIGHT",
    "MIN_RTT",
    "InvalidCoordinateError",
    "VivaldiCoordinate",
    "predict_rtt",
    "update",
]

DIMENSIONS: Final = 3
"""Dimensions of the Euclidean part used by Proxima nodes (2 or 3 are accepted)."""

CC: Final = 0.25
"""Fraction of the way a node moves towards the spring's rest position, scaled by the error weight."""

CE: Final = 0.25
"""Weight of a new sample in the moving average of the error estimate."""

MIN_ERROR: Final = 1e-3
"""Floor of the error estimate, so that a node keeps adapting when the network changes."""

MAX_ERROR: Final = 1.0
"""The error estimate of a node that knows nothing yet."""

MIN_HEIGHT: Final = 1e-4
"""Height a node starts with and never goes below (100 microseconds, less than any access link). A height of
zero would stay zero: the push on a height is proportional to the heights."""

MIN_RTT: Final = 1e-6
"""RTTs below one microsecond are measured as one microsecond (relative errors stay finite)."""

MAX_COMPONENT: Final = 60.0
"""Bound (seconds) of every vector component and of the height: no RTT on Earth comes close."""

_COINCIDENT: Final = 1e-9


class InvalidCoordinateError(SdkError, ValueError):
    """A coordinate or an RTT sample is out of range."""


@dataclass(frozen=True, slots=True)
class VivaldiCoordinate:
    """A node's network coordinate.

    Attributes:
        vector: The Euclidean part in seconds (2 or 3 components).
        height: The height in seconds, >= 0 (a node's own never drops below :data:`MIN_HEIGHT`).
        error: The node's estimate of its relative prediction error, in [MIN_ERROR, 1].
    """

    vector: tuple[float, ...]
    height: float = MIN_HEIGHT
    error: float = MAX_ERROR

    def __post_init__(self) -> None:
        if not isinstance(self.vector, tuple) or len(self.vector) not in (2, 3):
            raise InvalidCoordinateError(f"vector must be a tuple of 2 or 3 numbers, got {self.vector!r}")
        for i, value in enumerate(self.vector):
            _check_number(f"vector[{i}]", value, -MAX_COMPONENT, MAX_COMPONENT)
        _check_number("height", self.height, 0.0, MAX_COMPONENT)
        _check_number("error", self.error, MIN_ERROR, MAX_ERROR)

    @classmethod
    def origin(cls, dimensions: int = DIMENSIONS) -> VivaldiCoordinate:
        """Where every node starts: the origin, the smallest height, the largest error."""
        return cls(vector=(0.0,) * dimensions, height=MIN_HEIGHT, error=MAX_ERROR)

    @property
    def dimensions(self) -> int:
        """Components of the Euclidean part."""
        return len(self.vector)


def predict_rtt(a: VivaldiCoordinate, b: VivaldiCoordinate) -> float:
    """The RTT in seconds predicted between two coordinates: ``||a.v - b.v|| + a.h + b.h``.

    Raises:
        InvalidCoordinateError: If the coordinates have different dimensions.
    """
    _check_same_dimensions(a, b)
    return math.dist(a.vector, b.vector) + a.height + b.height


def update(
    local: VivaldiCoordinate,
    remote: VivaldiCoordinate,
    rtt: float,
    *,
    tiebreak: bytes = b"",
    cc: float = CC,
    ce: float = CE,
) -> VivaldiCoordinate:
    """The local coordinate after one RTT sample to a remote node (the paper's Figure 3, with heights).

    The spring between the two nodes is stretched or compressed by ``rtt - predicted``. The local node moves
    by ``cc * w`` of that along the unit vector from the remote to itself, where ``w = e_local / (e_local +
    e_remote)`` trusts confident nodes more. In height-vector space the difference of two coordinates is
    ``[x_local - x_remote, h_local + h_remote]``, whose norm is
    ``||x_local - x_remote|| + h_local + h_remote``,
    so a push apart also raises the local height and a pull together lowers it (never below
    :data:`MIN_HEIGHT`). When the two points coincide the push goes along a direction derived from
    ``tiebreak`` and leaves the height alone.

    Args:
        local: This node's coordinate.
        remote: The peer's coordinate (from its offer).
        rtt: The measured round-trip time in seconds.
        tiebreak: Bytes that choose the push direction when the two points coincide (for example
            the local and remote peer ids), keeping the result deterministic.
        cc: Movement constant.
        ce: Error smoothing constant.

    Returns:
        The new local coordinate.

    Raises:
        InvalidCoordinateError: If ``rtt`` is not a positive finite number or the dimensions differ.
    """
    _check_same_dimensions(local, remote)
    if isinstance(rtt, bool) or not isinstance(rtt, int | float) or not math.isfinite(rtt) or rtt <= 0:
        raise InvalidCoordinateError(f"rtt must be a positive number of seconds, got {rtt!r}")
    rtt = max(float(rtt), MIN_RTT)

    diff = [x - y for x, y in zip(local.vector, remote.vector, strict=True)]
    spread = math.hypot(*diff)
    heights = local.height + remote.height
    predicted = spread + heights

    weight = local.error / (local.error + remote.error)
    sample_error = abs(predicted - rtt) / rtt
    error = ce * weight * sample_error + local.error * (1.0 - ce * weight)
    force = cc * weight * (rtt - predicted)

    if spread > _COINCIDENT:
        # Unit vector of [x_local - x_remote, h_local + h_remote] in height-vector space.
        direction = [d / predicted for d in diff]
        height_share = heights / predicted
    else:
        # Same point: push apart in a direction fixed by the tie-break, heights untouched. (Following the
        # height-vector rule here would put the whole force into the heights of nodes that start together.)
        direction = _tiebreak_direction(tiebreak, local.dimensions)
        height_share = 0.0
    vector = tuple(
        _clamp(x + force * d, -MAX_COMPONENT, MAX_COMPONENT)
        for x, d in zip(local.vector, direction, strict=True)
    )
    height = _clamp(local.height + force * height_share, MIN_HEIGHT, MAX_COMPONENT)
    return VivaldiCoordinate(vector=vector, height=height, error=_clamp(error, MIN_ERROR, MAX_ERROR))


def _tiebreak_direction(seed: bytes, dimensions: int) -> list[float]:
    digest = hashlib.sha256(b"proxima-vivaldi" + seed).digest()
    raw = [int.from_bytes(digest[8 * i : 8 * i + 8], "big") / 2**63 - 1.0 for i in range(dimensions)]
    norm = math.hypot(*raw)
    if norm < 1e-12:  # all components 0: practically impossible, but stay total
        return [1.0] + [0.0] * (dimensions - 1)
    return [r / norm for r in raw]


def _check_same_dimensions(a: VivaldiCoordinate, b: VivaldiCoordinate) -> None:
    if a.dimensions != b.dimensions:
        raise InvalidCoordinateError(
            f"coordinates of {a.dimensions} and {b.dimensions} dimensions do not mix"
        )


def _check_number(name: str, value: object, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidCoordinateError(f"{name} must be a number, got {value!r}")
    if not (math.isfinite(value) and low <= value <= high):
        raise InvalidCoordinateError(f"{name} must be finite and in [{low}, {high}], got {value!r}")


def _clamp(value: float, low: float, high: float) -> float:
    return min(max(value, low), high)
