"""`MainScreen`: model and GPU, the plan editor, the memory bar and the speed panel.

Every knob change prices the plan again at once (:func:`forge_advisor.tui.state.evaluate`,
a fraction of a millisecond) and redraws two widgets; a bad value shows the Plan's own
message and keeps the last valid estimate, dimmed. Loading a model that is not in the
catalog (a Hub id) and probing NVML run in thread workers.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Footer, Label, Static

from forge_advisor.errors import ForgeError
from forge_advisor.tui.messages import GpuChoice, KnobChanged, ProbeFinished, ShapeLoaded
from forge_advisor.tui.screens.base import ForgeScreen
from forge_advisor.tui.state import DEFAULT_DATASET_TOKENS, Evaluation, evaluate
from forge_advisor.tui.widgets.memory_bar import MemoryBar
from forge_advisor.tui.widgets.plan_editor import PlanEditor
from forge_advisor.tui.widgets.speed import SpeedPanel
from forge_advisor.tui.widgets.too_small import TooSmall
from forge_advisor.units import fmt_bytes, fmt_count

if TYPE_CHECKING:
    from forge_advisor.gpus import GPU
    from forge_advisor.shapes import ModelShape
    from forge_advisor.tui.app import ForgeApp

__all__ = ["MainScreen"]

HINT = "←/→ turn · type digits · ↑/↓ move · a advise · e export · t train · ? help"


class MainScreen(ForgeScreen):
    CSS_PATH = "main.tcss"
    BINDINGS = [
        Binding("m", "pick_model", "Model"),
        Binding("g", "pick_gpu", "GPU"),
        Binding("p", "probe", "Probe"),
        Binding("a", "advise", "Advise"),
        Binding("e", "export", "Export"),
        Binding("t", "train", "Train"),
        Binding("d", "data", "Plan from data", show=False),
        Binding("r", "reset", "Reset plan", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.preset = "lora"
        self.overrides: dict[str, Any] = {}
        self.dataset_tokens: int | None = DEFAULT_DATASET_TOKENS
        self.evaluation = Evaluation()
        self.last_good: Evaluation | None = None
        self.data_report: Any = None  # the data's LengthReport once applied (the data screen)

    @property
    def forge(self) -> ForgeApp:
        return self.app  # type: ignore[return-value]

    # -- layout ---------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        with Horizontal(id="targets"):
            yield Label("Model", classes="target-label")
            yield Button("…", id="model-button", compact=True, tooltip="choose a model (m)")
            yield Label("GPU", classes="target-label")
            yield Button("…", id="gpu-button", compact=True, tooltip="choose a GPU (g)")
            yield Button("Probe", id="probe-button", compact=True, tooltip="detect this machine's GPU via NVML (p)")
        with Horizontal(id="body"):
            yield PlanEditor(id="editor")
            with Vertical(id="results"):
                yield MemoryBar(id="memory")
                yield SpeedPanel(id="speed")
        yield Static(id="message")
        yield TooSmall()
        yield Footer()

    def on_mount(self) -> None:
        app = self.forge
        self.preset = app.initial_preset
        self.overrides = dict(app.initial_overrides)
        self.query_one(PlanEditor).knob("preset").focus()
        self._show_targets()
        for note in app.startup_notes:
            self.say(note, "warning")
        if app.shape is None and app.model_spec:
            self.load_model(app.model_spec)
        else:
            self.refresh_estimate()
        if app.probe_on_start and app.gpu is None:
            self.action_probe()
        if app.data_path:
            self.action_data()

    # -- state -> widgets -----------------------------------------------------------------------
    def say(self, text: str | Text, kind: str = "info") -> None:
        msg = self.query_one("#message", Static)
        msg.set_classes(f"-{kind}")
        msg.update(text)

    def _show_targets(self) -> None:
        app = self.forge
        shape, gpu = app.shape, app.gpu
        model = "none: press m" if shape is None else f"{shape.name} ({fmt_count(shape.num_parameters)})"
        self.query_one("#model-button", Button).label = model
        gname = "none: memory only" if gpu is None else f"{gpu.name} ({fmt_bytes(gpu.memory_bytes)})"
        self.query_one("#gpu-button", Button).label = gname

    def refresh_estimate(self) -> Evaluation:
        """Price the current plan and redraw (the one place estimates are made)."""
        app = self.forge
        editor = self.query_one(PlanEditor)
        memory, speed = self.query_one(MemoryBar), self.query_one(SpeedPanel)
        if app.shape is None:
            self.evaluation = Evaluation(error="no model: press m to search the catalog or give a path")
            self.say(self.evaluation.error or "", "warning")
            editor.show(self.preset, None, self.dataset_tokens, self.overrides)
            return self.evaluation
        ev = evaluate(app.shape, app.gpu, self.preset, self.overrides, num_gpus=app.num_gpus,
                      dataset_tokens=self.dataset_tokens, headroom=app.headroom)
        self.evaluation = ev
        if ev.ok and ev.result is not None:
            self.last_good = ev
            editor.mark_invalid(None)
            editor.show(self.preset, ev.result.plan, self.dataset_tokens)
            memory.show(ev)
            speed.show(ev)
            warnings = ev.result.warnings  # what this GPU cannot run (no bf16, no FlashAttention-2)
            if warnings:
                self.say(Text.assemble(("warning: ", "bold"), "; ".join(warnings)), "warning")
            else:
                self.say(Text(HINT, style="dim"))
        else:
            editor.mark_invalid(ev.error_field)
            editor.show(self.preset, None, self.dataset_tokens, self.overrides)
            if self.last_good is not None:
                memory.show(self.last_good, stale=True)
                speed.show(self.last_good, stale=True)
            self.say(Text.assemble(("error: ", "bold"), ev.error or ""), "error")
        return ev

    # -- knobs ----------------------------------------------------------------------------------
    def on_knob_changed(self, message: KnobChanged) -> None:
        message.stop()
        field, value = message.field, message.value
        if field == "preset":
            self.preset = str(value)
            # a preset is a whole recipe: start from it again; the sequence length is the data's
            self.overrides = {k: v for k, v in self.overrides.items() if k == "max_length"}
        elif field == "dataset_tokens":
            if isinstance(value, int) and value > 0:
                self.dataset_tokens = value
            else:
                self.say(f"error: dataset tokens {value!r} must be a positive integer (e.g. 50000000)", "error")
                return
        else:
            self.overrides[field] = value
        self.refresh_estimate()

    def load_plan(self, preset: str, overrides: dict[str, Any]) -> None:
        """Put a preset + overrides (e.g. an advisor's candidate) into the editor."""
        self.preset = preset
        self.overrides = {k: (tuple(v) if isinstance(v, list) else v) for k, v in overrides.items()}
        self.refresh_estimate()

    def action_reset(self) -> None:
        self.overrides = {}
        self.refresh_estimate()

    # -- model ----------------------------------------------------------------------------------
    def action_pick_model(self) -> None:
        from forge_advisor.tui.screens.pick_model import ModelPickerScreen

        self.app.push_screen(ModelPickerScreen(self.forge.model_spec or ""), self._model_chosen)

    def _model_chosen(self, result: tuple[str, ModelShape] | None) -> None:
        if result is None:
            return
        spec, shape = result
        self.forge.model_spec, self.forge.shape = spec, shape
        self._show_targets()
        self.refresh_estimate()

    def load_model(self, spec: str) -> None:
        """Catalog ids and local paths load at once; anything else (a Hub id) in a worker."""
        from forge_advisor.shapes.catalog import find_catalog_model

        if find_catalog_model(spec) is not None or Path(spec).expanduser().exists():
            self.on_shape_loaded(_load(spec))
        else:
            self.say(f"loading {spec} …")
            self._load_worker(spec)

    @work(thread=True, exclusive=True, group="model")
    def _load_worker(self, spec: str) -> None:
        self.post_message(_load(spec))

    def on_shape_loaded(self, message: ShapeLoaded) -> None:
        if message.shape is None:
            self.forge.shape = None
            self._show_targets()
            self.say(Text.assemble(("error: ", "bold"), message.error or ""), "error")
            return
        self.forge.model_spec, self.forge.shape = message.spec, message.shape
        self._show_targets()
        self.refresh_estimate()

    # -- GPU ------------------------------------------------------------------------------------
    def action_pick_gpu(self, note: str | None = None) -> None:
        from forge_advisor.tui.screens.pick_gpu import GpuPickerScreen

        self.app.push_screen(GpuPickerScreen(note=note), self._gpu_chosen)

    def _gpu_chosen(self, choice: GpuChoice | None) -> None:
        if choice is None:
            return
        self.set_gpu(choice.gpu)

    def set_gpu(self, gpu: GPU | None) -> None:
        self.forge.gpu = gpu
        self._show_targets()
        self.refresh_estimate()

    def action_probe(self) -> None:
        self.say("probing NVML …")
        self._probe_worker()

    @work(thread=True, exclusive=True, group="probe")
    def _probe_worker(self) -> None:
        self.post_message(ProbeFinished(self.forge.probe_fn()))

    def on_probe_finished(self, message: ProbeFinished) -> None:
        found = message.probe
        if found.devices:
            dev = found.devices[0]
            self.set_gpu(dev.gpu)
            more = f" (+{len(found.devices) - 1} more)" if len(found.devices) > 1 else ""
            cat = f", catalog entry {dev.catalog_name}" if dev.catalog_name else ", not in the catalog: memory only"
            self.say(f"probed: {dev.nvml_name}, {fmt_bytes(dev.memory_total_bytes)}{cat}{more}", "success")
        else:
            note = f"No GPU detected: {found.reason}. Choose one from the catalog to plan for it."
            self.say(note, "warning")
            if self.app.screen is self:
                self.action_pick_gpu(note)

    # -- other screens --------------------------------------------------------------------------
    def on_button_pressed(self, event: Button.Pressed) -> None:
        actions = {"model-button": self.action_pick_model, "gpu-button": self.action_pick_gpu,
                   "probe-button": self.action_probe}
        action = actions.get(event.button.id or "")
        if action is not None:
            action()

    def _need_plan(self) -> bool:
        if self.forge.shape is None:
            self.say("no model yet: press m to choose one", "warning")
            return False
        return True

    def action_advise(self) -> None:
        if not self._need_plan():
            return
        from forge_advisor.tui.screens.advise import AdviseScreen

        self.app.push_screen(AdviseScreen(self.context()), self._candidate_chosen)

    def _candidate_chosen(self, candidate: Any) -> None:
        if candidate is None:
            return
        from forge_advisor.export import plan_diff

        # the candidate is (base preset, plan): the editor's knobs are the plan's fields that differ
        try:
            changes = plan_diff(str(candidate.preset), candidate.plan, self.forge.gpu)
        except ForgeError as exc:
            self.say(f"error: {exc}", "error")
            return
        self.load_plan(str(candidate.preset), changes)
        if self.evaluation.ok:
            self.say(f"loaded the advisor's plan: {candidate.preset} {_short(changes)}", "success")

    def action_data(self) -> None:
        """The data screen (``tui --data PATH`` opens it at start): lengths, max_length, batching."""
        if not self._need_plan() or not self.evaluation.ok:
            self.say("fix the plan first: " + (self.evaluation.error or ""), "error")
            return
        from forge_advisor.tui.screens.data import DataScreen

        self.app.push_screen(DataScreen(self.context(), self.forge.data_path), self._data_applied)

    def _data_applied(self, result: dict[str, Any] | None) -> None:
        if result is None:
            return
        self.forge.data_path = result["path"]
        self.data_report = result["report"]
        self.overrides.update(result["overrides"])
        self.dataset_tokens = result["dataset_tokens"]
        self.refresh_estimate()
        if self.evaluation.ok:
            self.say(f"from {Path(result['path']).name}: {_short(result['overrides'])}, "
                     f"{self.dataset_tokens:,} tokens", "success")

    def action_export(self) -> None:
        if not self._need_plan() or not self.evaluation.ok:
            self.say("fix the plan first: " + (self.evaluation.error or ""), "error")
            return
        from forge_advisor.tui.screens.export import ExportScreen

        self.app.push_screen(ExportScreen(self.context()))

    def action_train(self) -> None:
        if not self._need_plan() or not self.evaluation.ok:
            self.say("fix the plan first: " + (self.evaluation.error or ""), "error")
            return
        from forge_advisor.tui.screens.train import TrainScreen

        self.app.push_screen(TrainScreen(self.context()))

    def context(self) -> dict[str, Any]:
        """What the advise / export / train screens need to know about the current plan."""
        app = self.forge
        return {
            "model": app.model_spec or (app.shape.name if app.shape else ""),
            "shape": app.shape,
            "gpu": app.gpu,
            "num_gpus": app.num_gpus,
            "headroom": app.headroom,
            "preset": self.preset,
            "overrides": dict(self.overrides),
            # the plan the editor priced last (None while a value is bad): with the preset, what is exported
            "plan": self.evaluation.result.plan if self.evaluation.ok and self.evaluation.result is not None else None,
            "dataset_tokens": self.dataset_tokens,
            "data_report": self.data_report,
            "evaluation": self.evaluation,
        }


def _load(spec: str) -> ShapeLoaded:
    from forge_advisor.shapes import load_shape

    try:
        return ShapeLoaded(spec, load_shape(spec))
    except ForgeError as exc:
        return ShapeLoaded(spec, None, str(exc))
    except OSError as exc:
        return ShapeLoaded(spec, None, f"{spec}: {exc.strerror or exc}")


def _short(overrides: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in overrides.items())
