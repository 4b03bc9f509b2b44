"""`DataScreen`: plan from the user's data inside the TUI — a path field, the length report
(p50/p90/p99/max and a histogram), the recommended max_length with what it truncates, and
every batching mode priced at that length (forge_advisor.dataplan.advise.data_advice, the
same answer as ``forge-advisor data``). Tokenizing runs in a thread worker that posts a
:class:`~forge_advisor.tui.messages.DataPlanned`; Enter applies the recommendation
(max_length, batching, the data's tokens) to the editor.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Input, Label, Static

from forge_advisor.errors import ForgeError
from forge_advisor.tui.messages import DataPlanned
from forge_advisor.tui.screens.base import ForgeScreen
from forge_advisor.tui.state import fmt_duration
from forge_advisor.tui.widgets.too_small import TooSmall
from forge_advisor.units import fmt_bytes

__all__ = ["DataScreen", "plan_data"]


def plan_data(path: str, ctx: dict[str, Any]) -> DataPlanned:
    """Tokenize ``path`` with the model's tokenizer (or the stated estimate) and price it for
    the editor's plan and GPU; a bad file is the ``error`` line the CLI would print."""
    from forge_advisor.dataplan.advise import data_advice
    from forge_advisor.dataplan.lengths import measure_lengths
    from forge_advisor.dataplan.tokens import check_vocab, counter_for

    plan = ctx["plan"]
    shape = ctx["shape"]
    try:
        counter = counter_for(ctx["model"])
        check_vocab(counter, shape.vocab_size, shape.name)
        report = measure_lengths(path, ctx["model"], trainer=plan.trainer, counter=counter)
        advice = data_advice(report, shape, plan, ctx["gpu"])
    except ForgeError as exc:
        return DataPlanned(path, None, str(exc))
    except OSError as exc:
        return DataPlanned(path, None, f"{path}: {exc.strerror or exc}")
    return DataPlanned(path, advice, report=report)


class DataScreen(ForgeScreen):
    CSS_PATH = "data.tcss"
    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("ctrl+a", "apply", "Apply", priority=True),
    ]

    def __init__(self, context: dict[str, Any], path: str | None = None) -> None:
        super().__init__()
        self.ctx = context
        self.path = path or ""
        self.advice: dict[str, Any] | None = None
        self.report: Any = None

    def compose(self) -> ComposeResult:
        c = self.ctx
        gpu = c["gpu"].name if c["gpu"] is not None else "no GPU (memory only)"
        yield Static(Text.assemble(("Data ", "bold"), f"{c['model']} on {gpu}"), id="data-title")
        yield Input(self.path, placeholder="path to a .jsonl or a save_to_disk folder, then Enter", id="data-path")
        yield Static(id="data-status")
        yield Static(id="data-lengths")
        yield DataTable(id="data-modes", cursor_type="row", zebra_stripes=True)
        yield Label("Enter on the path: measure · ctrl+a apply max_length and batching · Esc back", classes="hint")
        yield TooSmall()
        yield Footer()

    def on_mount(self) -> None:
        t = self.query_one("#data-modes", DataTable)
        # fixed widths (the longest value each can take: "padding_free", "1 h 40 min"): the
        # table reads the same however its rows and the first layout interleave
        for label, width in (("batching", 12), ("pad", 4), ("worst batch", 11), ("fits", 4), ("real tok/s", 10),
                             ("steps", 9), ("epoch", 12)):
            t.add_column(label, width=width)
        self.query_one("#data-path", Input).focus()
        if self.path:
            self.measure(self.path)

    @on(Input.Submitted, "#data-path")
    def _submitted(self, event: Input.Submitted) -> None:
        if event.value.strip():
            self.measure(event.value.strip())

    def measure(self, path: str) -> None:
        self.path = path
        self.advice = None
        self._status(f"tokenizing {path} …")
        self._data_worker(path, self.ctx)

    @work(thread=True, exclusive=True, group="data")
    def _data_worker(self, path: str, ctx: dict[str, Any]) -> None:
        self.post_message(plan_data(path, ctx))

    def _status(self, text: str | Text, error: bool = False) -> None:
        status = self.query_one("#data-status", Static)
        status.set_class(error, "-error")
        status.update(text)

    def on_data_planned(self, message: DataPlanned) -> None:
        table = self.query_one("#data-modes", DataTable)
        table.clear()
        if message.advice is None:
            self.query_one("#data-lengths", Static).update("")
            self._status(Text.assemble(("error: ", "bold"), message.error or ""), error=True)
            return
        self.advice = a = message.advice
        self.report = message.report
        L, ml = a["lengths"], a["max_length"]
        how = "" if L["exact"] else " (approximate token counts)"
        peak = max(h["records"] for h in L["histogram"]) or 1
        bars = "  ".join(f"{h['from']:,}–{h['to']:,} {'█' * max(1, round(8 * h['records'] / peak)) if h['records'] else '·'}"
                         for h in L["histogram"][-4:])
        self.query_one("#data-lengths", Static).update(
            f"{L['records']:,} records, {L['total_tokens']:,} tokens{how}\n"
            f"p50 {L['p50']:,} · p90 {L['p90']:,} · p99 {L['p99']:,} · max {L['max']:,}\n{bars}")
        if ml["recommended"] is None:
            self._status(Text.assemble(("nothing fits: ", "bold"), ml["reason"]), error=True)
            return
        for b in a["batching"]:
            s, w = b["simulation"], b["worst_case"]
            fits = Text("—") if w["fits"] is None else Text("yes", style="green") if w["fits"] else Text("no", style="red")
            name = Text(b["mode"], style="bold" if b["mode"] == a["recommended_batching"] else "")
            tps = b["real_tokens_per_second"]
            table.add_row(name, f"{1 - s['efficiency']:.0%}", fmt_bytes(w["peak_reserved_bytes"]), fits,
                          "—" if tps is None else f"{tps:,.0f}", f"{b['steps_per_epoch']:,}",
                          fmt_duration(b["epoch_seconds"]), key=b["mode"])
        self._status(f"max_length {ml['recommended']:,}: {ml['reason']} · batching {a['recommended_batching'] or '—'}")

    def action_apply(self) -> None:
        a = self.advice
        if a is None or a["max_length"]["recommended"] is None:
            self._status("nothing to apply yet: give a data file and press Enter", error=True)
            return
        changes: dict[str, Any] = {"max_length": a["max_length"]["recommended"]}
        if a["recommended_batching"] is not None:
            changes["batching"] = a["recommended_batching"]
        self.dismiss({"overrides": changes, "dataset_tokens": a["lengths"]["total_tokens"], "path": self.path,
                      "report": self.report})

    def action_back(self) -> None:
        self.workers.cancel_group(self, "data")
        self.dismiss(None)
