"""`AdviseScreen`: run the advisor in a thread worker, with a progress bar, and show its
ranked recommendations and Pareto front; Enter (or a click on a highlighted row) loads that
plan into the editor.

The advisor (``forge_advisor.advisor.recommend``) is imported lazily: when it is missing the
screen says so inline and the editor keeps working.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import DataTable, Footer, Label, ProgressBar, Static, TabbedContent, TabPane
from textual.worker import get_current_worker

from forge_advisor.errors import ForgeError
from forge_advisor.tui.messages import AdviseFinished, AdviseProgress, KnobChanged
from forge_advisor.tui.screens.base import ForgeScreen
from forge_advisor.tui.state import KnobSpec, fmt_duration
from forge_advisor.tui.widgets.knob import Knob
from forge_advisor.tui.widgets.too_small import TooSmall
from forge_advisor.units import fmt_bytes

__all__ = ["AdviseScreen", "ADVISOR_MISSING", "load_advisor"]

ADVISOR_MISSING = "advisor not available: forge_advisor.advisor could not be imported"
DEFAULT_OBJECTIVES = ("balanced",)


class _Cancelled(Exception):
    pass


def load_advisor() -> Any:
    """``forge_advisor.advisor`` or ``None`` (not installed / not written yet / broken)."""
    try:
        from forge_advisor import advisor  # type: ignore[attr-defined]
    except ImportError:
        return None
    return advisor if hasattr(advisor, "recommend") else None


def _objectives(advisor: Any) -> tuple[str, ...]:
    found = getattr(advisor, "OBJECTIVES", None) if advisor is not None else None
    if isinstance(found, (list, tuple)) and found and all(isinstance(o, str) for o in found):
        return tuple(found)
    return DEFAULT_OBJECTIVES


def _changes(c: Any, width: int = 10_000) -> str:
    over = getattr(c, "overrides", {}) or {}
    short = {"per_device_train_batch_size": "batch", "gradient_accumulation_steps": "accum",
             "max_length": "seq", "gradient_checkpointing": "ckpt", "attn_implementation": "attn",
             "freeze_ratio": "freeze", "lora_r": "r", "optim": "optim", "lora_target_modules": "targets",
             "lora_alpha": "alpha"}
    text = " ".join(f"{short.get(k, k)}={v}" for k, v in over.items()) or "preset defaults"
    return text if len(text) <= width else text[: width - 1] + "…"


class AdviseScreen(ForgeScreen):
    CSS_PATH = "advise.tcss"
    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("r", "run", "Run advisor"),
        Binding("l", "load", "Load row"),
        Binding("tab", "app.focus_next", "Next", show=False),
    ]

    def __init__(self, context: dict[str, Any]) -> None:
        super().__init__()
        self.ctx = context
        self.advisor = load_advisor()
        self.objective = _objectives(self.advisor)[0]
        self.recommendation: Any = None
        self.rows: dict[str, list[Any]] = {"ranked": [], "pareto": []}

    def compose(self) -> ComposeResult:
        c = self.ctx
        gpu = c["gpu"].name if c["gpu"] is not None else "no GPU"
        yield Static(Text.assemble(("Advise ", "bold"), f"{c['model']} on {gpu}",
                                   f" · seq {c['evaluation'].result.plan.max_length if c['evaluation'].ok else '?'}",
                                   f" · headroom {c['headroom']:.0%}"), id="advise-title")
        with Horizontal(id="advise-controls"):
            yield Knob(KnobSpec("objective", "objective", "choice", choices=_objectives(self.advisor),
                                help="what the advisor optimises"), self.objective)
            yield ProgressBar(total=None, show_eta=False, id="advise-progress")
        yield Static(id="advise-status")
        with TabbedContent(id="advise-tabs", initial="ranked"):
            with TabPane("Ranked", id="ranked"):
                yield DataTable(id="table-ranked", cursor_type="row", zebra_stripes=True)
            with TabPane("Pareto", id="pareto"):
                yield DataTable(id="table-pareto", cursor_type="row", zebra_stripes=True)
        yield Static(id="advise-why")
        yield Label("r run · Enter/l load row into the editor · Esc back", classes="hint")
        yield TooSmall()
        yield Footer()

    def on_mount(self) -> None:
        for name in ("ranked", "pareto"):
            t = self.query_one(f"#table-{name}", DataTable)
            t.add_columns("#", "preset", "changes", "peak", "fit", "tok/s", "epoch")
        status = self.query_one("#advise-status", Static)
        if self.advisor is None:
            status.set_class(True, "-error")
            status.update(f"{ADVISOR_MISSING}. The editor, export and train work without it.")
        else:
            status.update("press r to search for the best plans")
            self.action_run()

    def on_knob_changed(self, message: KnobChanged) -> None:
        message.stop()
        if message.field == "objective":
            self.objective = str(message.value)

    # -- running ----------------------------------------------------------------------------------
    def action_run(self) -> None:
        if self.advisor is None:
            self.query_one("#advise-status", Static).update(f"{ADVISOR_MISSING}.")
            return
        bar = self.query_one("#advise-progress", ProgressBar)
        bar.update(total=None, progress=0)
        self.query_one("#advise-status", Static).update(f"searching ({self.objective}) …")
        self._advise_worker(self.advisor, self.objective)

    @work(thread=True, exclusive=True, group="advise")
    def _advise_worker(self, advisor: Any, objective: str) -> None:
        c = self.ctx
        worker = get_current_worker()

        def progress(done: int, total: int) -> None:
            if worker.is_cancelled:
                raise _Cancelled
            self.post_message(AdviseProgress(int(done), int(total)))

        plan = c["evaluation"].result.plan if c["evaluation"].ok else None
        extra: dict[str, Any] = {}
        if c.get("data_report") is not None and plan is not None:
            # the data screen's lengths: the advisor ranks batching modes by real tokens/s
            from forge_advisor.advisor.request import BATCHES
            from forge_advisor.dataplan.advise import real_token_fractions

            extra["real_token_fraction"] = real_token_fractions(c["data_report"], plan.trainer, plan.max_length,
                                                                BATCHES, c["num_gpus"])
        try:
            rec = advisor.recommend(
                c["shape"], c["gpu"], num_gpus=c["num_gpus"], objective=objective,
                seq_len=plan.max_length if plan is not None else 2048,
                dataset_tokens=c.get("dataset_tokens"), headroom=c["headroom"], progress=progress, **extra,
            )
        except _Cancelled:
            return
        except ForgeError as exc:
            self.post_message(AdviseFinished(error=str(exc)))
            return
        except Exception as exc:  # the advisor is young: show its failure, keep the TUI alive
            self.post_message(AdviseFinished(error=f"advisor failed: {type(exc).__name__}: {exc}"))
            return
        if not worker.is_cancelled:
            self.post_message(AdviseFinished(recommendation=rec))

    def on_advise_progress(self, message: AdviseProgress) -> None:
        self.query_one("#advise-progress", ProgressBar).update(total=max(1, message.total), progress=message.done)

    def on_advise_finished(self, message: AdviseFinished) -> None:
        status = self.query_one("#advise-status", Static)
        bar = self.query_one("#advise-progress", ProgressBar)
        if message.error is not None:
            status.set_class(True, "-error")
            status.update(Text.assemble(("error: ", "bold"), message.error))
            bar.update(total=1, progress=0)
            return
        status.set_class(False, "-error")
        rec = message.recommendation
        self.recommendation = rec
        bar.update(total=bar.total or 1, progress=bar.total or 1)
        self.rows["ranked"] = list(getattr(rec, "recommendations", []) or [])
        self.rows["pareto"] = list(getattr(rec, "pareto", []) or [])
        for name, cands in self.rows.items():
            t = self.query_one(f"#table-{name}", DataTable)
            t.clear()
            for i, c in enumerate(cands):
                t.add_row(*self._row(i, c), key=f"{name}:{i}")
        n = len(self.rows["ranked"])
        suggestion = getattr(rec, "suggestion", None)
        if n == 0:
            # nothing fits: the advisor's answer is what would (another preset, GPU, N GPUs)
            status.set_class(True, "-error")
            status.update(Text.assemble(("nothing fits: ", "bold"), str(suggestion or "try a smaller plan or a bigger GPU")))
            return
        status.update(f"{n} recommendation{'s' if n != 1 else ''}, {len(self.rows['pareto'])} on the Pareto front"
                      " · Enter loads the highlighted row")
        table = self.query_one("#table-ranked", DataTable)
        table.focus()
        self._show_why("ranked", 0)

    def _row(self, i: int, c: Any) -> tuple[Any, ...]:
        est = c.estimate
        fits = est.fits
        fit = Text("—") if fits is None else Text("yes", style="green") if fits else Text("no", style="red")
        tps = est.tokens_per_second
        return (str(i + 1), c.preset, _changes(c, 24), fmt_bytes(est.peak_reserved_bytes), fit,
                f"{tps:,.0f}" if tps else "—", fmt_duration(est.epoch_seconds))

    def _show_why(self, name: str, index: int) -> None:
        cands = self.rows.get(name, [])
        why = self.query_one("#advise-why", Static)
        if 0 <= index < len(cands):
            c = cands[index]
            why.update(Text.assemble((f"#{index + 1} {c.preset}: {_changes(c)}\n", "bold"), str(c.why)))
        else:
            why.update("")

    @on(DataTable.RowHighlighted)
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        name, _, idx = str(event.row_key.value).partition(":")
        # filling the hidden tab's table highlights its first row too, and that message can
        # arrive after the shown table's: only the active tab's table speaks for the panel
        if name != (self.query_one("#advise-tabs", TabbedContent).active or "ranked"):
            return
        self._show_why(name, int(idx or 0))

    @on(TabbedContent.TabActivated)
    def _tab(self, event: TabbedContent.TabActivated) -> None:
        name = self.query_one("#advise-tabs", TabbedContent).active or "ranked"
        self._show_why(name, self.query_one(f"#table-{name}", DataTable).cursor_row)

    @on(DataTable.RowSelected)
    def _selected(self, event: DataTable.RowSelected) -> None:
        name, _, idx = str(event.row_key.value).partition(":")
        self._load(name, int(idx or 0))

    def action_load(self) -> None:
        name = self.query_one("#advise-tabs", TabbedContent).active or "ranked"
        table = self.query_one(f"#table-{name}", DataTable)
        if table.row_count:
            self._load(name, table.cursor_row)

    def _load(self, name: str, index: int) -> None:
        cands = self.rows.get(name, [])
        if 0 <= index < len(cands):
            self.dismiss(cands[index])

    def action_back(self) -> None:
        self.workers.cancel_group(self, "advise")
        self.dismiss(None)
