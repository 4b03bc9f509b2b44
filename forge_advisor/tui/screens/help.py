"""`HelpScreen`: every key binding of the app, its screens and widgets, gathered from their
``BINDINGS`` (so the list cannot drift from the code), plus the mouse."""

from __future__ import annotations

from importlib import import_module

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import Label, Static

from forge_advisor.tui.screens.base import ForgeModal
from forge_advisor.tui.widgets.too_small import TooSmall

__all__ = ["HelpScreen", "all_bindings"]

# (title, module, class) in the order the help lists them
SOURCES = (
    ("Everywhere", "forge_advisor.tui.app", "ForgeApp"),
    ("Plan editor", "forge_advisor.tui.screens.main", "MainScreen"),
    ("Knobs", "forge_advisor.tui.widgets.knob", "Knob"),
    ("Knob list", "forge_advisor.tui.widgets.plan_editor", "PlanEditor"),
    ("Model picker", "forge_advisor.tui.screens.pick_model", "ModelPickerScreen"),
    ("GPU picker", "forge_advisor.tui.screens.pick_gpu", "GpuPickerScreen"),
    ("Advise", "forge_advisor.tui.screens.advise", "AdviseScreen"),
    ("Data", "forge_advisor.tui.screens.data", "DataScreen"),
    ("Export", "forge_advisor.tui.screens.export", "ExportScreen"),
    ("Train", "forge_advisor.tui.screens.train", "TrainScreen"),
)
EXTRA = {
    "Knobs": [("0-9 .", "type a value (re-estimates as you type)"), ("Enter", "end typing / toggle / next choice"),
              ("Esc", "undo the typing"), ("Space", "toggle / next choice"), ("wheel", "turn the focused knob")],
    "Everywhere": [("Tab / Shift+Tab", "next / previous control"), ("click", "focus, press, pick a row; ◀ ▶ turn a knob"),
                   ("ctrl+q", "quit at once")],
}


def _key_text(b: Binding) -> str:
    if b.key_display:
        return b.key_display
    names = {"question_mark": "?", "minus": "-", "plus": "+", "equals_sign": "=", "escape": "Esc",
             "enter": "Enter", "up": "↑", "down": "↓", "left": "←", "right": "→"}
    return " / ".join(names.get(k.strip(), k.strip()) for k in b.key.split(","))


def all_bindings() -> list[tuple[str, list[tuple[str, str]]]]:
    """``[(section, [(keys, description), ...]), ...]`` for every screen and widget."""
    out = []
    for title, module, cls_name in SOURCES:
        cls = getattr(import_module(module), cls_name)
        rows: list[tuple[str, str]] = []
        for b in cls.BINDINGS:
            b = b if isinstance(b, Binding) else Binding(*b)
            desc = b.description or b.action.replace("_", " ")
            rows.append((_key_text(b), desc))
        rows += EXTRA.get(title, [])
        out.append((title, rows))
    return out


class HelpScreen(ForgeModal):
    CSS_PATH = "help.tcss"
    BINDINGS = [Binding("escape,question_mark,f1", "dismiss_help", "Close", key_display="Esc")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="dialog", classes="dialog") as d:
            d.border_title = "Keys"
            table = Table(box=None, show_header=False, pad_edge=False, expand=True)
            table.add_column("keys", style="bold", no_wrap=True, width=16)
            table.add_column("what")
            for title, rows in all_bindings():
                table.add_row(Text(title, style="underline"), "")
                for keys, desc in rows:
                    table.add_row(keys, desc)
            yield Static(table, id="help-table")
            yield Label("Esc close · ↑/↓ scroll", classes="hint")
        yield TooSmall()

    def action_dismiss_help(self) -> None:
        self.dismiss(None)
