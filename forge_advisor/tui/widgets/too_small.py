"""`TooSmall`: the inline notice a screen shows instead of its layout when the terminal is
smaller than :data:`MIN_SIZE` (hidden otherwise; see ``too_small.tcss``)."""

from __future__ import annotations

from textual.widgets import Static

__all__ = ["MIN_SIZE", "TooSmall"]

MIN_SIZE = (60, 18)  # columns, rows: below this the layouts would overlap


class TooSmall(Static):
    def __init__(self) -> None:
        super().__init__(
            f"The terminal is too small for forge-advisor: make it at least {MIN_SIZE[0]}×{MIN_SIZE[1]} "
            "(80×24 is comfortable). Nothing is lost; q quits.",
            id="too-small",
        )
