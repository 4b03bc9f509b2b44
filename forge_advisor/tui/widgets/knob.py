"""`Knob`: one plan field on one line — ``LoRA rank     ◀     16 ▶``.

Turn it with ←/→ (or -/+, the mouse wheel, a click on ◀/▶); type digits to enter a value
(each keystroke re-estimates; Enter or leaving the knob ends the edit, Esc undoes it); Space
or Enter toggles on/off and cycles choices. Letters are left alone, so the screen's
single-key bindings work while a knob has focus. Styling: ``knob.tcss``.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.widget import Widget

from forge_advisor.errors import ForgeError
from forge_advisor.tui.messages import KnobChanged
from forge_advisor.tui.state import KnobSpec, format_value, parse_value, step_value

__all__ = ["Knob"]

LABEL_W = 14
VALUE_W = 11
LEFT_X = LABEL_W  # column of ◀
RIGHT_X = LABEL_W + VALUE_W + 3  # column of ▶


class Knob(Widget, can_focus=True):
    BINDINGS = [
        Binding("left,minus", "step(-1)", "−", show=False),
        Binding("right,plus,equals_sign", "step(1)", "+", show=False),
    ]

    def __init__(self, spec: KnobSpec, value: Any = None, *, id: str | None = None) -> None:
        super().__init__(id=id or f"knob-{spec.field.replace('_', '-')}")
        self.spec = spec
        self.value = value
        self.buffer: str | None = None  # text being typed
        self._before_edit: Any = None
        self.tooltip = spec.help or None

    # -- API for screens ------------------------------------------------------------------------
    def set_value(self, value: Any) -> None:
        """Show ``value`` (from the resolved plan); posts nothing."""
        if self.buffer is None and value != self.value:
            self.value = value
            self.refresh()

    def set_invalid(self, invalid: bool) -> None:
        self.set_class(invalid, "-invalid")

    # -- rendering ------------------------------------------------------------------------------
    def render(self) -> Text:
        if self.disabled:
            shown = "—"
        elif self.buffer is not None:
            shown = self.buffer + "▏"
        else:
            shown = format_value(self.spec, self.value)
        if len(shown) > VALUE_W:
            shown = shown[: VALUE_W - 1] + "…"
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(f"{self.spec.label:<{LABEL_W}}")
        text.append("◀", style="bold" if not self.disabled else "dim")
        text.append(f" {shown:>{VALUE_W}} ", style="bold" if self.has_focus else "")
        text.append("▶", style="bold" if not self.disabled else "dim")
        return text

    # -- changes --------------------------------------------------------------------------------
    def _emit(self, value: Any) -> None:
        self.value = value
        self.refresh()
        self.post_message(KnobChanged(self, self.spec.field, value))

    def action_step(self, direction: int) -> None:
        if self.disabled:
            return
        if self.buffer is not None:
            self._finish_edit()
        self._emit(step_value(self.spec, self.value, direction))

    def _parsed(self, text: str) -> Any:
        try:
            return parse_value(self.spec, text)
        except ForgeError:
            return text

    def _finish_edit(self) -> None:
        if self.buffer is None:
            return
        text, self.buffer = self.buffer, None
        if not text.strip():  # emptied and left: back to the value before editing
            self._emit(self._before_edit)
            return
        self.refresh()

    async def on_key(self, event: events.Key) -> None:
        numeric = self.spec.kind in ("int", "float", "tokens")
        key = event.key
        char = event.character or ""
        if numeric and (char.isdigit() or (char == "." and self.spec.kind == "float")):
            if self.buffer is None:
                self._before_edit, self.buffer = self.value, ""
            self.buffer += char
            self._emit_typed()
        elif numeric and key == "backspace" and self.buffer is not None:
            self.buffer = self.buffer[:-1]
            self._emit_typed()
        elif key == "enter":
            if self.buffer is not None:
                self._finish_edit()
            elif self.spec.kind in ("bool", "choice"):
                self.action_step(1)
            else:
                return
        elif key == "space" and self.spec.kind in ("bool", "choice"):
            self.action_step(1)
        elif key == "escape" and self.buffer is not None:
            self.buffer = None
            self._emit(self._before_edit)
        else:
            return
        event.stop()
        event.prevent_default()

    def _emit_typed(self) -> None:
        assert self.buffer is not None
        self.refresh()
        if self.buffer.strip():
            value = self._parsed(self.buffer)
            self.value = value
            self.post_message(KnobChanged(self, self.spec.field, value))

    def _on_blur(self, event: events.Blur) -> None:
        self._finish_edit()
        self.refresh()

    def _on_focus(self, event: events.Focus) -> None:
        self.refresh()

    def _on_click(self, event: events.Click) -> None:
        if self.disabled:
            return
        x = event.x - self.styles.gutter.left
        if LEFT_X - 1 <= x <= LEFT_X + 1:
            self.action_step(-1)
        elif RIGHT_X - 1 <= x <= RIGHT_X + 1:
            self.action_step(1)
        elif self.spec.kind in ("bool", "choice") and x > LEFT_X:
            self.action_step(1)

    def _on_mouse_scroll_up(self, event: events.MouseScrollUp) -> None:
        if self.has_focus:
            self.action_step(1)
            event.stop()

    def _on_mouse_scroll_down(self, event: events.MouseScrollDown) -> None:
        if self.has_focus:
            self.action_step(-1)
            event.stop()
