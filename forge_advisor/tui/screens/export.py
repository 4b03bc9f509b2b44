"""`ExportScreen`: the current plan as a ``forge-advisor train`` command, an ``estimate``
command, JSON, YAML and a Python ``get_preset(...)`` snippet (all from
:mod:`forge_advisor.export`). ``c`` copies the shown text (OSC 52), ``s`` saves it to a
file in the current folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Input, Label, Static, TabbedContent, TabPane, TextArea

from forge_advisor.errors import ForgeError
from forge_advisor import export as ex
from forge_advisor.tui.screens.base import ForgeModal
from forge_advisor.tui.widgets.too_small import TooSmall

__all__ = ["ExportScreen", "FILES"]

# tab id -> (title, file name for "save", TextArea language)
FILES = {
    "train": ("train", "forge-train.sh", None),
    "estimate": ("estimate", "forge-estimate.sh", None),
    "json": ("JSON", "forge-plan.json", "json"),
    "yaml": ("YAML", "forge-plan.yaml", "yaml"),
    "python": ("Python", "forge_plan.py", "python"),
}


class ExportScreen(ForgeModal):
    CSS_PATH = "export.tcss"
    BINDINGS = [
        Binding("escape", "close", "Back"),
        Binding("c", "copy", "Copy"),
        Binding("s", "save", "Save"),
    ]

    def __init__(self, context: dict[str, Any], *, directory: str | Path = ".") -> None:
        super().__init__()
        self.ctx = context
        self.directory = Path(directory)
        self.texts: dict[str, str] = {}

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="dialog") as d:
            d.border_title = "Export"
            with TabbedContent(id="tabs", initial="train"):
                for tab, (title, _, lang) in FILES.items():
                    with TabPane(title, id=tab):
                        if tab == "train":
                            with Horizontal(id="train-paths"):
                                yield Label("data")
                                yield Input("train.jsonl", id="data", compact=True)
                                yield Label("output")
                                yield Input("forge-output", id="output", compact=True)
                        yield TextArea("", read_only=True, language=None, id=f"text-{tab}",
                                       show_line_numbers=False, soft_wrap=True)
            with Horizontal(id="export-buttons"):
                yield Button("Copy", id="copy", compact=True)
                yield Button("Save", id="save", compact=True)
                yield Static(id="export-status")
            yield Label("c copy · s save · Tab/←→ switch · Esc back", classes="hint")
        yield TooSmall()

    def on_mount(self) -> None:
        self._render_all()
        self.query_one(TabbedContent).query_one("Tabs").focus()

    def _render_all(self) -> None:
        c = self.ctx
        ev = c.get("evaluation")
        report = ev.report if ev is not None and ev.ok else None
        peak = report["memory"]["peak_reserved_bytes"] if report else None
        data = self.query_one("#data", Input).value.strip() or "train.jsonl"
        output = self.query_one("#output", Input).value.strip() or "forge-output"
        # (base preset, plan): the plan the editor priced, diffed against its preset once per format
        plan = c.get("plan") or c["overrides"]
        try:
            doc = ex.plan_document(c["model"], c["preset"], plan, gpu=c["gpu"], estimate=report)
            self.texts = {
                "train": ex.format_command(ex.train_argv(c["model"], c["preset"], plan, gpu=c["gpu"],
                                                         data=data, output=output, predicted_peak_bytes=peak), 72),
                "estimate": ex.format_command(ex.estimate_argv(c["model"], c["preset"], plan, gpu=c["gpu"],
                                                               dataset_tokens=c.get("dataset_tokens")), 72),
                "json": ex.plan_json(doc),
                "yaml": ex.plan_yaml(doc),
                "python": ex.preset_snippet(c["model"], c["preset"], plan, gpu=c["gpu"], output=output),
            }
        except ForgeError as exc:
            self.texts = {k: f"# cannot export this plan: {exc}\n" for k in FILES}
        for tab, text in self.texts.items():
            self.query_one(f"#text-{tab}", TextArea).load_text(text)

    @on(Input.Changed)
    def _paths_changed(self) -> None:
        self._render_all()

    def current(self) -> str:
        return self.query_one(TabbedContent).active or "train"

    def action_copy(self) -> None:
        self.app.copy_to_clipboard(self.texts.get(self.current(), ""))
        self.query_one("#export-status", Static).update(f"copied the {FILES[self.current()][0]} text")

    def action_save(self) -> None:
        tab = self.current()
        path = self.directory / FILES[tab][1]
        text = self.texts.get(tab, "")
        script = path.suffix == ".sh"
        try:
            path.write_text(("#!/bin/sh\n" + text + "\n") if script else text, encoding="utf-8")
            if script:  # a script runs as ./forge-train.sh: owner, group and others may execute it
                path.chmod(path.stat().st_mode | 0o111)
        except OSError as exc:
            self.query_one("#export-status", Static).update(f"error: {path}: {exc.strerror or exc}")
            return
        self.query_one("#export-status", Static).update(f"saved {path}")

    @on(Button.Pressed, "#copy")
    def _copy_pressed(self) -> None:
        self.action_copy()

    @on(Button.Pressed, "#save")
    def _save_pressed(self) -> None:
        self.action_save()

    def action_close(self) -> None:
        self.dismiss(None)
