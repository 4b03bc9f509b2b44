"""`TrainMonitor`: the live view of a run — loss and gradient-norm sparklines, measured
memory against the estimate, tokens/s, the EMA state, NaN / spike alerts. It draws a
:class:`~forge_advisor.tui.train_log.MonitorState`; parsing is not its business.
Styling: ``train_monitor.tcss``.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Sparkline, Static

from forge_advisor.tui.train_log import MonitorState
from forge_advisor.units import fmt_bytes

__all__ = ["TrainMonitor"]


class TrainMonitor(Vertical):
    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.border_title = "Monitor"

    def compose(self) -> ComposeResult:
        with Horizontal(classes="spark-row"):
            yield Static("loss", classes="spark-label", id="loss-label")
            yield Sparkline([], id="loss-spark")
        with Horizontal(classes="spark-row"):
            yield Static("grad-norm", classes="spark-label", id="grad-label")
            yield Sparkline([], id="grad-spark")
        yield Static(id="stats")
        yield Static(id="alerts")

    def show(self, st: MonitorState, *, estimate_bytes: int | None = None) -> None:
        loss = st.losses[-1] if st.losses else None
        grad = st.grad_norms[-1] if st.grad_norms else None
        self.query_one("#loss-label", Static).update(f"loss {loss:.4f}" if loss is not None else "loss —")
        self.query_one("#grad-label", Static).update(f"grad {grad:.3g}" if grad is not None else "grad —")
        self.query_one("#loss-spark", Sparkline).data = list(st.losses[-200:])
        self.query_one("#grad-spark", Sparkline).data = list(st.grad_norms[-200:])
        t = Text(no_wrap=True, overflow="ellipsis")
        total = f"/{st.total_steps}" if st.total_steps else ""
        t.append(f"step {st.step}{total}", style="bold")
        t.append(f" · {st.tokens_per_second:,.0f} tok/s" if st.tokens_per_second else " · tok/s —")
        t.append(" · status ")
        colour = {"running": "yellow", "done": "green", "stopped": "red", "failed": "red"}.get(st.status, "")
        t.append(st.status, style=f"bold {colour}".strip())
        predicted = st.predicted_peak_bytes or estimate_bytes
        t.append("\nmemory ")
        if st.demo:
            t.append(f"{fmt_bytes(st.peak_bytes)} measured" if st.peak_bytes else "not measured (CPU)",
                     style="bold" if st.peak_bytes else "dim")
            if estimate_bytes:
                t.append(f" · the {fmt_bytes(estimate_bytes)} estimate is for the real model", style="dim")
        elif st.peak_bytes:
            t.append(f"{fmt_bytes(st.peak_bytes)} measured", style="bold")
            if predicted:
                ratio = st.measured_over_predicted or st.peak_bytes / predicted
                t.append(f" / {fmt_bytes(predicted)} estimated = {ratio:.2f}")
        else:
            t.append("not measured yet (CPU runs have none)", style="dim")
            if predicted:
                t.append(f" · estimate {fmt_bytes(predicted)}")
        t.append(f"\nEMA decay {st.ema_decay:g} · {st.ema_updates} updates")
        if st.ema_checkpoint:
            t.append(f" · saved in {st.ema_checkpoint}")
        if st.top_layers:
            t.append(f"\ntop grad layers: {st.top_layers}", style="dim")
        self.query_one("#stats", Static).update(t)
        alerts = self.query_one("#alerts", Static)
        alerts.set_class(st.nan_alert or st.status in ("stopped", "failed"), "-alarm")
        if st.alerts or st.last_error:
            lines = [*st.alerts[-3:], *([st.last_error] if st.last_error else [])]
            alerts.update(Text("⚠ " + "\n⚠ ".join(lines), style="bold"))
        else:
            alerts.update(Text("no alerts (NaN/Inf, loss spikes appear here)", style="dim"))
