"""Wei amounts as people write them in configuration files: ``1000``, ``"20 gwei"``, ``"1.5 ether"``."""

from __future__ import annotations

import re
from typing import Annotated, Any, Final

from pydantic import BeforeValidator, Field

__all__ = ["UINT256_MAX", "WeiAmount", "parse_wei"]

UINT256_MAX: Final = 2**256 - 1
_WEI_UNITS: Final = {"wei": 0, "gwei": 9, "ether": 18, "eth": 18}
_WEI_TEXT: Final = re.compile(r"^\s*(\d+)(?:\.(\d+))?\s*([a-z]+)?\s*$", re.IGNORECASE)


def parse_wei(value: Any) -> Any:
    """Accept an int or a decimal string with an optional unit (wei, gwei, ether); refuse floats and bools.

    TOML integers stop at 2**63 - 1, so larger amounts are written as strings.

    Args:
        value: What the file or environment held.

    Returns:
        The amount in wei (an int), or ``value`` unchanged when it is neither a string nor a number (for
        pydantic to refuse).

    Raises:
        ValueError: If the value is a float, a bool, or text that is not an amount.
    """
    if isinstance(value, bool):
        raise ValueError("expected an amount in wei, got a boolean")
    if isinstance(value, float):
        raise ValueError(
            "write wei amounts as an integer or a string such as '1.5 ether' (floats lose precision)"
        )
    if isinstance(value, str):
        match = _WEI_TEXT.match(value)
        unit = (match.group(3) or "wei").lower() if match else ""
        if match is None or unit not in _WEI_UNITS:
            raise ValueError(f"{value!r} is not an amount like '1000', '20 gwei' or '1.5 ether'")
        whole, fraction, decimals = match.group(1), match.group(2) or "", _WEI_UNITS[unit]
        if fraction[decimals:].strip("0"):
            raise ValueError(f"{value!r} is not a whole number of wei")
        return int(whole) * 10**decimals + int(fraction[:decimals].ljust(decimals, "0") or "0")
    return value


WeiAmount = Annotated[int, BeforeValidator(parse_wei), Field(ge=0, le=UINT256_MAX)]
"""An amount in wei (0 .. 2**256 - 1), given as an integer or a string with an optional unit."""
