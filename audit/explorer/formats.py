"""How the explorer writes amounts, addresses, hashes and times (used as Jinja filters).

Wei amounts are shown in ETH, rounded for reading, with the exact amount (ETH to 18 decimals and wei) in the
element's ``title`` so that hovering shows full precision.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

from markupsafe import Markup

__all__ = [
    "eth_exact",
    "eth_html",
    "eth_short",
    "hex_of",
    "percent",
    "short_hex",
    "utc_time",
]

WEI_PER_ETH: Final = 10**18
DASH: Final = "\u2013"
"""What stands for a missing value (an en dash)."""


def eth_exact(wei: int) -> str:
    """The exact amount in ETH, without trailing zeros (``1500000000000000000`` -> ``"1.5"``).

    Args:
        wei: An amount in wei (may be negative).

    Returns:
        A decimal string.
    """
    sign = "-" if wei < 0 else ""
    whole, fraction = divmod(abs(wei), WEI_PER_ETH)
    if not fraction:
        return f"{sign}{whole:,}"
    return f"{sign}{whole:,}.{fraction:018d}".rstrip("0")


def eth_short(wei: int | float, digits: int = 4) -> str:
    """The amount in ETH rounded to at most ``digits`` decimals (tiny non-zero amounts say so).

    Args:
        wei: An amount in wei.
        digits: Decimals to keep.

    Returns:
        Text such as ``"1.5"``, ``"0.0001"`` or ``"<0.0001"``.
    """
    value = int(wei)
    if value == 0:
        return "0"
    unit = 10 ** (18 - digits)
    rounded = (abs(value) + unit // 2) // unit * unit
    if rounded == 0:
        return ("-" if value < 0 else "") + "<0." + "0" * (digits - 1) + "1"
    return eth_exact(-rounded if value < 0 else rounded)


def eth_html(wei: int | None) -> Markup:
    """A ``<span>`` with the rounded amount and ``ETH``, the exact ETH and wei amounts in its title.

    Args:
        wei: An amount in wei, or None (shown as a dash).

    Returns:
        Markup for a template.
    """
    if wei is None:
        return Markup('<span class="none">&ndash;</span>')
    value = int(wei)
    title = f"{eth_exact(value)} ETH = {value:,} wei"
    return Markup('<span class="wei" title="{}">{} ETH</span>').format(title, eth_short(value))


def hex_of(value: bytes | str) -> str:
    """``0x``-prefixed lower-case hex of bytes (strings are returned as given).

    Args:
        value: Bytes (a hash, a job id) or an already formatted string.

    Returns:
        The hex text.
    """
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    return str(value)


def short_hex(value: bytes | str, keep: int = 6) -> str:
    """An address or hash shortened for tables: ``0x1234…abcd``.

    Args:
        value: Bytes or hex text.
        keep: Characters kept after ``0x`` and at the end.

    Returns:
        The shortened text (the full value when already short).
    """
    text = hex_of(value)
    if len(text) <= 2 + 2 * keep + 1:
        return text
    return f"{text[: 2 + keep]}…{text[-keep:]}"


def utc_time(timestamp: int | None) -> str:
    """A Unix time as ``YYYY-MM-DD HH:MM:SS UTC`` (a dash for None or 0).

    Args:
        timestamp: Unix seconds.

    Returns:
        The text.
    """
    if not timestamp:
        return DASH
    return datetime.fromtimestamp(int(timestamp), tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def percent(value: float | None, digits: int = 1) -> str:
    """A fraction in 0..1 as a percentage (a dash for None).

    Args:
        value: The fraction.
        digits: Decimals.

    Returns:
        Text such as ``"97.5 %"``.
    """
    if value is None:
        return DASH
    return f"{100.0 * float(value):.{digits}f} %"
