"""`PlanEditor`: the preset and the plan's knobs, one :class:`Knob` per line.

↑/↓ move between knobs. It shows the resolved plan it is given and forwards the knobs'
:class:`~forge_advisor.tui.messages.KnobChanged` messages to the screen, which re-estimates.
Styling: ``plan_editor.tcss``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical

from forge_advisor.tui.state import KNOBS, PRESET_KNOB, TOKENS_KNOB
from forge_advisor.tui.widgets.knob import Knob

if TYPE_CHECKING:
    from forge_advisor.plan import Plan

__all__ = ["PlanEditor"]


class PlanEditor(Vertical):
    BINDINGS = [
        Binding("up", "move(-1)", "Previous knob", show=False),
        Binding("down", "move(1)", "Next knob", show=False),
    ]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.border_title = "Plan"
        self._pending: Knob | None = None  # focus() lands later: keys typed fast count from here

    def compose(self) -> ComposeResult:
        yield Knob(PRESET_KNOB)
        for spec in KNOBS:
            yield Knob(spec)
        yield Knob(TOKENS_KNOB)

    @property
    def knobs(self) -> list[Knob]:
        return list(self.query(Knob))

    def knob(self, field: str) -> Knob:
        return self.query_one(f"#knob-{field.replace('_', '-')}", Knob)

    def action_move(self, delta: int) -> None:
        knobs = [k for k in self.knobs if k.focusable]
        if not knobs:
            return
        focused = self._pending if self._pending in knobs else self.screen.focused
        i = knobs.index(focused) if focused in knobs else (-1 if delta > 0 else 0)  # type: ignore[arg-type]
        self._pending = knobs[(i + delta) % len(knobs)]
        self._pending.focus()

    def on_descendant_focus(self) -> None:
        if self._pending is not None and self.screen.focused is self._pending:
            self._pending = None

    def show(self, preset: str, plan: Plan | None, dataset_tokens: int | None, raw: dict[str, Any] | None = None) -> None:
        """Put the resolved ``plan`` on the knobs; ``raw`` values (invalid overrides) win."""
        raw = raw or {}
        self.knob("preset").set_value(preset)
        for spec in KNOBS:
            k = self.knob(spec.field)
            if spec.field in raw:
                k.set_value(raw[spec.field])
            elif plan is not None:
                k.set_value(getattr(plan, spec.field))
        if plan is not None:
            self.knob("lora_r").disabled = not plan.uses_lora
        self.knob("dataset_tokens").set_value(dataset_tokens)

    def mark_invalid(self, field: str | None) -> None:
        for k in self.knobs:
            k.set_invalid(k.spec.field == field)
