"""DUCK amounts as integers of micro-DUCK.

DUCK has 6 decimals (like USDC); every amount in QuackMesh is an ``int`` of micro-DUCK and
never a float. This module converts between the human form (``"1.5"`` DUCK) and that int.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

DECIMALS = 6
UNIT = 1_000_000  # micro-DUCK per DUCK (10**DECIMALS)
SYMBOL = "DUCK"

__all__ = ["DECIMALS", "SYMBOL", "UNIT", "format_duck", "parse_duck"]


def parse_duck(text: str | int) -> int:
    """Parse a DUCK amount such as ``"1.5"`` or ``"0.000001"`` into micro-DUCK.

    Raises ``ValueError`` for anything that is not a non-negative decimal with at most six
    decimal places (a seventh decimal would silently lose money, so it is refused).
    """
    if isinstance(text, int):
        if text < 0:
            raise ValueError("amount must not be negative")
        return text * UNIT
    cleaned = text.strip().removesuffix(SYMBOL).strip().replace("_", "")
    try:
        value = Decimal(cleaned)
    except InvalidOperation as exc:
        raise ValueError(f"not a DUCK amount: {text!r}") from exc
    if not value.is_finite() or value < 0:
        raise ValueError(f"not a non-negative DUCK amount: {text!r}")
    micro = value * UNIT
    if micro != micro.to_integral_value():
        raise ValueError(f"DUCK has at most {DECIMALS} decimals: {text!r}")
    return int(micro)


def format_duck(micro: int, *, symbol: bool = True) -> str:
    """Format micro-DUCK as a DUCK string without trailing zeros: 1_500_000 -> '1.5 DUCK'."""
    sign = "-" if micro < 0 else ""
    whole, frac = divmod(abs(micro), UNIT)
    text = f"{sign}{whole}"
    if frac:
        text += "." + f"{frac:0{DECIMALS}d}".rstrip("0")
    return f"{text} {SYMBOL}" if symbol else text
