"""`ForgeApp`: the Textual application behind ``forge-advisor tui``.

It holds what every screen shares — the model, the GPU, the probe function — and opens on
:class:`~forge_advisor.tui.screens.main.MainScreen`. Widgets' styles come from the
``.tcss`` files next to their modules; each screen loads its own.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TYPE_CHECKING

from textual.app import App
from textual.binding import Binding

from forge_advisor.errors import ForgeError
from forge_advisor.tui.screens.main import MainScreen
from forge_advisor.tui.state import DEFAULT_HEADROOM

if TYPE_CHECKING:
    from forge_advisor.gpus import GPU, Probe
    from forge_advisor.shapes import ModelShape

__all__ = ["ForgeApp", "DEFAULT_MODEL"]

DEFAULT_MODEL = "meta-llama/Llama-3.1-8B"
_HERE = Path(__file__).parent
_WIDGET_CSS = ("knob", "plan_editor", "memory_bar", "speed", "train_monitor", "too_small")


class ForgeApp(App[int]):
    TITLE = "forge-advisor"
    CSS_PATH = [_HERE / "app.tcss", *(_HERE / "widgets" / f"{n}.tcss" for n in _WIDGET_CSS)]
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("question_mark,f1", "help", "Help", key_display="?"),
    ]
    ENABLE_COMMAND_PALETTE = False
    MODES = {"main": MainScreen}  # a mode (not get_default_screen) so the screen's .tcss is loaded
    DEFAULT_MODE = "main"

    def __init__(
        self,
        model: str | None = None,
        gpu: str | GPU | None = None,
        *,
        preset: str = "lora",
        num_gpus: int = 1,
        headroom: float = DEFAULT_HEADROOM,
        probe_on_start: bool = False,
        probe_fn: Callable[[], Probe] | None = None,
        train_program: tuple[str, ...] | None = None,
        overrides: dict[str, Any] | None = None,
        data: str | None = None,
    ) -> None:
        super().__init__()
        from forge_advisor.gpus import probe as nvml_probe

        self.model_spec: str = model or DEFAULT_MODEL
        self.shape: ModelShape | None = None
        self.gpu: GPU | None = None
        self.num_gpus = num_gpus
        self.headroom = headroom
        self.initial_preset = preset
        self.initial_overrides = dict(overrides or {})  # Plan fields given on the command line
        self.data_path = data  # the user's data (tui --data PATH): the data screen opens with it
        self.probe_on_start = probe_on_start
        self.probe_fn: Callable[[], Probe] = probe_fn or nvml_probe
        self.train_program = train_program  # argv prefix that runs `forge-advisor` (tests swap it)
        self.startup_notes: list[str] = []
        if isinstance(gpu, str):
            from forge_advisor.gpus import resolve_gpu

            try:
                self.gpu = resolve_gpu(gpu, self.probe_fn)
            except ForgeError as exc:
                self.startup_notes.append(f"--gpu: {exc}")
        else:
            self.gpu = gpu

    def action_help(self) -> None:
        from forge_advisor.tui.screens.help import HelpScreen

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())
