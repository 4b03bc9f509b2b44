"""`MemoryBar`: the estimate's peak reserved memory as a stacked bar against the GPU.

Segments: weights, gradients, optimizer, activations, logits + loss, overhead (the groups of
:func:`forge_advisor.tui.state.group_memory`, which add up to peak reserved). ``┃`` marks the
headroom line (the GPU less 8 %), the right end is the GPU's capacity; what does not fit is
drawn red and the panel turns red (class ``-nofit``). It only draws what it is given.
Styling: ``memory_bar.tcss``.
"""

from __future__ import annotations

from rich.console import Group
from rich.text import Text
from textual.widget import Widget

from forge_advisor.tui.state import Evaluation
from forge_advisor.units import fmt_bytes

__all__ = ["MemoryBar", "SEGMENT_COLOURS"]

SEGMENT_COLOURS = {
    "weights": "#4f8fd6",
    "gradients": "#d6a24f",
    "optimizer": "#b36bd6",
    "activations": "#4fc48a",
    "logits": "#d6d04f",
    "overhead": "#8a8a8a",
}
VERDICT = {
    "fits": ("fits", "bold green"),
    "tight": ("tight: fits, inside the headroom", "bold yellow"),
    "no-fit": ("does not fit", "bold red"),
    "unknown": ("no GPU: memory only", "bold"),
}


def short_bytes(n: int) -> str:
    """``15.0 GiB``, ``104 MiB``: at most 9 characters, for the legend."""
    if n >= 1 << 30:
        return f"{n / (1 << 30):.1f} GiB"
    if n >= 1 << 20:
        return f"{n / (1 << 20):.0f} MiB"
    if n > 0:
        return f"{n / 1024:.0f} KiB"
    return "0"


def _cells(values: list[int], scale: float, width: int) -> list[int]:
    """Cell counts per value with cumulative rounding, so the bar's length is exact."""
    out, acc, used = [], 0, 0
    for v in values:
        acc += v
        end = round(acc / scale * width) if scale else 0
        out.append(max(0, end - used))
        used = end
    return out


class MemoryBar(Widget):
    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.evaluation: Evaluation | None = None
        self.stale = False  # showing the last valid estimate while the plan is invalid
        self.border_title = "Memory"

    def show(self, evaluation: Evaluation, *, stale: bool = False) -> None:
        self.evaluation, self.stale = evaluation, stale
        verdict = evaluation.verdict
        self.set_class(verdict == "no-fit", "-nofit")
        self.set_class(verdict == "tight", "-tight")
        self.set_class(stale, "-stale")
        self.border_subtitle = VERDICT[verdict][0] if not stale else "plan invalid: last valid estimate"
        self.refresh(layout=True)

    @staticmethod
    def _ruler(ev: Evaluation, width: int, scale: float, cap_x: int | None, head_x: int | None) -> Text:
        """``0 ……… 22.08 GiB −8% ┘  ┘``: the headroom line's value under its ``┃``, the GPU at the end."""
        cells = [" "] * width
        styles: list[str] = [""] * width

        def put(s: str, end: int, style: str = "dim", *, start: int | None = None) -> bool:
            if start is not None:
                end = start + len(s) - 1
            start = end - len(s) + 1
            if start < 2 or end >= width or any(c != " " for c in cells[start : end + 1]):
                return False
            for i, ch in enumerate(s):
                cells[start + i], styles[start + i] = ch, style
            return True

        cells[0] = "0"
        cap = ev.capacity
        if cap is None:
            put(f"{fmt_bytes(ev.reserved)} (no GPU: the plan is the scale) ┘", width - 1)
        elif ev.reserved > cap and cap_x is not None:
            label = f"GPU {short_bytes(cap)}"
            if not put(f"{label} ┘", max(0, cap_x - 1), "bold red"):
                put(f"┘ {label}", 0, "bold red", start=max(2, cap_x - 1))
        else:
            put("┘", width - 1)
            if head_x is not None and not put(f"−{ev.headroom:.0%} headroom ┘", head_x):
                put("┘", head_x)
        text = Text(no_wrap=True)
        for ch, st in zip(cells, styles):
            text.append(ch, style=st)
        return text

    def render(self) -> Group | Text:
        ev = self.evaluation
        width = max(10, self.content_size.width)
        if ev is None or not ev.ok:
            return Text("no estimate yet", style="dim")
        reserved, cap = ev.reserved, ev.capacity
        scale = float(max(reserved, cap or 0)) or 1.0
        groups = ev.groups
        counts = _cells([g.bytes for g in groups], scale, width)
        cap_x = None if cap is None else min(width, round(cap / scale * width))
        head_x = None if cap is None else min(width - 1, round(cap * (1 - ev.headroom) / scale * width))
        if cap is not None and reserved > cap and cap_x is not None:
            head_x = max(0, cap_x - 1)  # not fitting at all: mark the GPU's end, not the headroom
        bar = Text(no_wrap=True)
        x = 0
        for g, n in zip(groups, counts):
            for _ in range(n):
                over = cap_x is not None and x >= cap_x
                bar.append("▓" if over else "█", style="bold red" if over else SEGMENT_COLOURS[g.key])
                x += 1
        while x < width:
            bar.append("░", style="dim")
            x += 1
        if head_x is not None and 0 <= head_x < width:
            bar = bar[:head_x] + Text("┃", style="bold white") + bar[head_x + 1 :]
        ruler = self._ruler(ev, width, scale, cap_x, head_x)
        legend = Text(no_wrap=True)
        col = max(20, width // 2)
        for i, g in enumerate(groups):
            cell = Text()
            cell.append("█ ", style=SEGMENT_COLOURS[g.key])
            cell.append(f"{g.label:<10}")
            cell.append(f"{short_bytes(g.bytes):>8} ")
            cell.truncate(col, pad=True)
            legend.append_text(cell)
            if i % 2 == 1 and i < len(groups) - 1:
                legend.append("\n")
        words, style = VERDICT[ev.verdict]
        total = Text(no_wrap=True, overflow="ellipsis")
        total.append(f"peak {short_bytes(reserved)}", style=style)
        if cap is not None:
            head = cap - reserved
            total.append(f" / {short_bytes(cap)} · {short_bytes(abs(head))} {'free' if head >= 0 else 'over'}")
        else:
            total.append(" · ")
            total.append(words, style=style)
        if self.stale:
            total.stylize("dim")
            bar.stylize("dim")
        return Group(bar, ruler, legend, total)
