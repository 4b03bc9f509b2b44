"""`ModelPickerScreen`: search the embedded catalog, or type a path / Hub id.

Enter on the search box takes the highlighted catalog entry, or — when nothing matches —
loads what was typed (a ``config.json``, a model folder, a Hub id) in a thread worker. A bad
path or an unknown model shows the ForgeError's message under the box; nothing closes.
Returns ``(spec, ModelShape)`` or ``None`` (Esc).
"""

from __future__ import annotations

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from forge_advisor.errors import ForgeError
from forge_advisor.shapes.catalog import search_catalog
from forge_advisor.tui.messages import ShapeLoaded
from forge_advisor.tui.screens.base import SearchPicker
from forge_advisor.tui.widgets.too_small import TooSmall

__all__ = ["ModelPickerScreen"]


class ModelPickerScreen(SearchPicker):
    CSS_PATH = "pick_model.tcss"
    BINDINGS = [
        Binding("escape", "dismiss_none", "Cancel"),
        Binding("down", "to_list", "Results", show=False),
    ]

    def __init__(self, current: str = "") -> None:
        super().__init__()
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="dialog") as d:
            d.border_title = "Model"
            yield Label("Search the catalog, or type a config.json path, a model folder or a Hub id:")
            yield Input(placeholder="e.g. qwen 7b, ./my-model/, org/name", id="query")
            yield OptionList(id="results")
            yield Static(id="model-error", classes="error")
            yield Label("Enter choose · ↓ list · Esc cancel", classes="hint")
        yield TooSmall()

    def _fill(self, text: str) -> None:
        results = self._cleared_results()
        found = search_catalog(text)
        for m in found:
            label = Text.assemble((m.id, "bold"), f"  {m.family} · {m.published_parameters}")
            results.add_option(Option(label, id=m.id))
        if found:
            results.highlighted = 0

    @on(Input.Changed, "#query")
    def _search(self, event: Input.Changed) -> None:
        self.query_one("#model-error", Static).update("")
        self._fill(event.value)

    @on(Input.Submitted, "#query")
    def _submit(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        results = self.query_one("#results", OptionList)
        if results.option_count and results.highlighted is not None and (not text or len(search_catalog(text)) > 0):
            option = results.get_option_at_index(results.highlighted)
            self._load(option.id or "")
        else:
            self._load(text)

    @on(OptionList.OptionSelected, "#results")
    def _picked(self, event: OptionList.OptionSelected) -> None:
        self._load(event.option.id or "")

    def _load(self, spec: str) -> None:
        if not spec:
            self.query_one("#model-error", Static).update("type a model id or a path")
            return
        self.query_one("#model-error", Static).update(Text(f"loading {spec} …", style="dim"))
        self._load_worker(spec)

    @work(thread=True, exclusive=True, group="load-model")
    def _load_worker(self, spec: str) -> None:
        from forge_advisor.shapes import load_shape

        try:
            self.post_message(ShapeLoaded(spec, load_shape(spec)))
        except ForgeError as exc:
            self.post_message(ShapeLoaded(spec, None, str(exc)))
        except OSError as exc:
            self.post_message(ShapeLoaded(spec, None, f"{spec}: {exc.strerror or exc}"))

    def on_shape_loaded(self, message: ShapeLoaded) -> None:
        message.stop()
        if message.shape is None:
            self.query_one("#model-error", Static).update(Text.assemble(("error: ", "bold"), message.error or ""))
            return
        self.dismiss((message.spec, message.shape))

    def action_to_list(self) -> None:
        self.query_one("#results", OptionList).focus()

    def action_dismiss_none(self) -> None:
        self.dismiss(None)
