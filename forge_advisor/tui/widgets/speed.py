"""`SpeedPanel`: tokens/s, time per step and per epoch, trainable parameters of the estimate.
Styling: ``speed.tcss``."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from forge_advisor.tui.state import Evaluation, fmt_duration
from forge_advisor.units import fmt_count

__all__ = ["SpeedPanel"]


class SpeedPanel(Static):
    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.border_title = "Speed"

    def show(self, ev: Evaluation, *, stale: bool = False) -> None:
        self.set_class(stale, "-stale")
        if not ev.ok or ev.report is None:
            self.update(Text("—", style="dim"))
            return
        r = ev.report
        thr, params, plan = r["throughput"], r["parameters"], r["plan"]
        t = Text(no_wrap=True, overflow="ellipsis")
        tps = thr["tokens_per_second"]
        if tps:
            seqs = plan["per_device_train_batch_size"] * plan["gradient_accumulation_steps"] * plan["num_gpus"]
            t.append(f"≈ {tps:,.0f} tokens/s", style="bold")
            t.append(f" · {thr['step_seconds']:.2f} s/step of {seqs}×{plan['max_length']}\n")
            t.append("time per epoch ")
            t.append(fmt_duration(thr["epoch_seconds"]), style="bold")
        else:
            t.append("tokens/s: choose a GPU (g) to estimate speed", style="dim")
        t.append(f"\ntrainable {fmt_count(params['trainable'])} of {fmt_count(params['total'])} parameters")
        if stale:
            t.stylize("dim")
        self.update(t)
