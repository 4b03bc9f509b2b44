"""`GpuPickerScreen`: the embedded GPU catalog with search, "Probe" (NVML, in a worker) and
"no GPU (memory only)". With no GPU found, the probe's reason is shown and the catalog
stays open. Returns a :class:`~forge_advisor.tui.messages.GpuChoice` or ``None`` (Esc).
"""

from __future__ import annotations

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from forge_advisor.gpus import GPU, search_gpus
from forge_advisor.tui.messages import GpuChoice, ProbeFinished
from forge_advisor.tui.screens.base import SearchPicker
from forge_advisor.tui.widgets.too_small import TooSmall
from forge_advisor.units import fmt_bytes

__all__ = ["GpuPickerScreen"]

_NONE = "__none__"


class GpuPickerScreen(SearchPicker):
    CSS_PATH = "pick_gpu.tcss"
    BINDINGS = [
        Binding("escape", "dismiss_none", "Cancel"),
        Binding("ctrl+p", "probe", "Probe"),
        Binding("down", "to_list", "Results", show=False),
    ]

    def __init__(self, note: str | None = None) -> None:
        super().__init__()
        self.note = note
        self.probed: list[GPU] = []

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="dialog") as d:
            d.border_title = "GPU"
            with Horizontal(id="gpu-search"):
                yield Input(placeholder="search, e.g. 4090, h100 sxm, a100 80gb", id="query")
                yield Button("Probe", id="probe", compact=True, tooltip="detect this machine's GPU (ctrl+p)")
            yield Static(self.note or "", id="probe-note", classes="warning")
            yield OptionList(id="results")
            yield Label("Enter choose · ↓ list · ctrl+p probe · Esc cancel", classes="hint")
        yield TooSmall()

    def _fill(self, text: str) -> None:
        results = self._cleared_results()
        for i, g in enumerate(self.probed):
            results.add_option(Option(Text.assemble(("detected: ", "green"), (g.name, "bold"),
                                                    f"  {fmt_bytes(g.memory_bytes)}"), id=f"probe:{i}"))
        for g in search_gpus(text):
            bf16 = g.peak_tflops.get("bf16")
            speed = f" · {bf16:g} TFLOP/s bf16" if bf16 else ""
            results.add_option(Option(Text.assemble((g.name, "bold"), f"  {g.memory_label or fmt_bytes(g.memory_bytes)}{speed}"),
                                      id=f"cat:{g.name}"))
        results.add_option(Option(Text("no GPU — memory only", style="italic"), id=_NONE))
        results.highlighted = 0

    @on(Input.Changed, "#query")
    def _search(self, event: Input.Changed) -> None:
        self._fill(event.value)

    @on(Input.Submitted, "#query")
    def _submit(self, event: Input.Submitted) -> None:
        results = self.query_one("#results", OptionList)
        if results.highlighted is not None:
            self._choose(results.get_option_at_index(results.highlighted).id or "")

    @on(OptionList.OptionSelected, "#results")
    def _picked(self, event: OptionList.OptionSelected) -> None:
        self._choose(event.option.id or "")

    def _choose(self, oid: str) -> None:
        from forge_advisor.gpus import gpu_catalog

        if oid == _NONE:
            self.dismiss(GpuChoice(None, "none"))
        elif oid.startswith("probe:"):
            self.dismiss(GpuChoice(self.probed[int(oid[6:])], "probe"))
        elif oid.startswith("cat:"):
            gpu = next(g for g in gpu_catalog() if g.name == oid[4:])
            self.dismiss(GpuChoice(gpu, "catalog"))

    @on(Button.Pressed, "#probe")
    def _probe_pressed(self) -> None:
        self.action_probe()

    def action_probe(self) -> None:
        self.query_one("#probe-note", Static).update(Text("probing NVML …", style="dim"))
        self._probe_worker()

    @work(thread=True, exclusive=True, group="probe")
    def _probe_worker(self) -> None:
        self.post_message(ProbeFinished(self.app.probe_fn()))  # type: ignore[attr-defined]

    def on_probe_finished(self, message: ProbeFinished) -> None:
        message.stop()
        found = message.probe
        note = self.query_one("#probe-note", Static)
        if found.devices:
            self.probed = [d.gpu for d in found.devices]
            note.update(Text(f"detected {len(self.probed)} GPU(s): listed first", style="green"))
        else:
            self.probed = []
            note.update(f"No GPU detected: {found.reason}. Choose one from the catalog below.")
        self._fill(self.query_one("#query", Input).value)

    def action_to_list(self) -> None:
        self.query_one("#results", OptionList).focus()

    def action_dismiss_none(self) -> None:
        self.dismiss(None)
