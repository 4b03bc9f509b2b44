"""`TrainScreen`: run ``forge-advisor train`` for the current plan as a subprocess (in a thread
worker) and watch it: loss, gradient norm, measured memory against the estimate, tokens/s,
the EMA state and NaN alerts.

No data path means ``--demo`` (the runtime's tiny model and shipped text, seconds on a CPU).
The run is started with ``--events -``: its stdout is the typed event stream
(:mod:`forge_advisor.train.events`), decoded by :mod:`forge_advisor.tui.train_log`; its
stderr is the human log shown below the monitor. Stop sends Ctrl-C (the runtime saves a
resumable checkpoint); a second Stop sends a second Ctrl-C (the runtime aborts at once).
Leaving the screen or quitting ends the run.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import Button, Footer, Input, Label, ProgressBar, RichLog, Static

from forge_advisor.errors import ForgeError
from forge_advisor import export as ex
from forge_advisor.tui.messages import TrainFinished, TrainOutput
from forge_advisor.tui.screens.base import ForgeScreen
from forge_advisor.train.events import End
from forge_advisor.train.resolve import resolve_preset
from forge_advisor.tui.train_log import LineSplitter, MonitorState, clean_line, error_of, event_of
from forge_advisor.tui.widgets.too_small import TooSmall
from forge_advisor.tui.widgets.train_monitor import TrainMonitor

__all__ = ["TrainScreen", "free_folder"]


def free_folder(base: str, directory: Path | None = None) -> str:
    """``base``, or ``base-2``, ``base-3``… : the first name that is not an existing folder."""
    root = directory or Path.cwd()
    name, i = base, 1
    while (root / name).exists():
        i += 1
        name = f"{base}-{i}"
    return name


class TrainScreen(ForgeScreen):
    CSS_PATH = "train.tcss"
    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("ctrl+s", "start", "Start"),
        Binding("ctrl+x", "stop", "Stop"),
    ]

    def __init__(self, context: dict[str, Any]) -> None:
        super().__init__()
        self.ctx = context
        self.state = MonitorState()
        self.proc: subprocess.Popen[bytes] | None = None
        self._stop_requests = 0

    def compose(self) -> ComposeResult:
        c = self.ctx
        yield Static(Text.assemble(("Train ", "bold"), f"{c['model']} · preset {c['preset']}"), id="train-title")
        with Horizontal(id="train-paths"):
            yield Label("data")
            yield Input("", placeholder="blank = --demo", id="data", compact=True)
            yield Label("output")
            yield Input(free_folder("forge-demo"), id="output", compact=True)
        yield Static(id="train-command")
        with Horizontal(id="train-controls"):
            yield Button("Start", id="start", compact=True, variant="success")
            yield Button("Stop", id="stop", compact=True, variant="error", disabled=True)
            yield ProgressBar(total=1, show_eta=False, id="train-progress")
        yield TrainMonitor(id="monitor")
        yield RichLog(id="train-log", max_lines=500, wrap=False, markup=False)
        yield TooSmall()
        yield Footer()

    def on_mount(self) -> None:
        self._show_command()
        self._redraw()
        self.query_one("#start", Button).focus()

    # -- the command --------------------------------------------------------------------------------
    def argv(self, program: tuple[str, ...] | None = None) -> list[str]:
        c = self.ctx
        ev = c.get("evaluation")
        peak = ev.report["memory"]["peak_reserved_bytes"] if ev is not None and ev.ok and ev.report else None
        data = self.query_one("#data", Input).value.strip() or None
        output = self.query_one("#output", Input).value.strip()
        kwargs: dict[str, Any] = {"program": program} if program else {}
        resolve_preset(c["preset"], c["overrides"], c["model"], c["gpu"])  # the plan is trainable: errors show now
        return ex.train_argv(c["model"], c["preset"], c["overrides"], gpu=c["gpu"], data=data, output=output,
                             predicted_peak_bytes=peak, demo=data is None, **kwargs)

    def _show_command(self) -> None:
        try:
            text = ex.format_command(self.argv(), 10_000)
        except ForgeError as exc:
            text = f"error: {exc}"
        self.query_one("#train-command", Static).update(Text(f"$ {text}", style="dim"))

    @on(Input.Changed)
    def _inputs_changed(self) -> None:
        self._show_command()

    def _redraw(self) -> None:
        ev = self.ctx.get("evaluation")
        est = ev.report["memory"]["peak_reserved_bytes"] if ev is not None and ev.ok and ev.report else None
        self.query_one(TrainMonitor).show(self.state, estimate_bytes=est)

    # -- start / stop -------------------------------------------------------------------------------
    @on(Button.Pressed, "#start")
    def _start_pressed(self) -> None:
        self.action_start()

    @on(Button.Pressed, "#stop")
    def _stop_pressed(self) -> None:
        self.action_stop()

    def action_start(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.notify("a run is in progress: stop it first", severity="warning")
            return
        output = self.query_one("#output", Input).value.strip()
        if not output:
            self._alert("error: name an output folder")
            return
        program = tuple(getattr(self.app, "train_program", None) or (sys.executable, "-m", "forge_advisor.cli.main"))
        try:
            argv = self.argv(program)
        except ForgeError as exc:
            self._alert(f"error: {exc}")
            return
        self.state = MonitorState(status="running", demo="--demo" in argv)
        if self.ctx.get("evaluation") is not None and self.ctx["evaluation"].ok and "--demo" not in argv:
            self.state.predicted_peak_bytes = self.ctx["evaluation"].report["memory"]["peak_reserved_bytes"]
        self._stop_requests = 0
        self.query_one("#train-log", RichLog).clear()
        self.query_one("#start", Button).disabled = True
        self.query_one("#stop", Button).disabled = False
        self.query_one("#train-progress", ProgressBar).update(total=None, progress=0)
        self._redraw()
        self._train_worker([*argv, "--events", "-"], Path(output))  # the event stream on stdout, the log on stderr

    @work(thread=True, exclusive=True, group="train")
    def _train_worker(self, argv: list[str], output: Path) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "FORCE_COLOR": "0", "NO_COLOR": "1"}
        try:
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                    env=env, start_new_session=True)
        except OSError as exc:
            text = f"error: cannot start {argv[0]}: {exc.strerror or exc}"
            self.post_message(TrainOutput(text, None))
            self.post_message(TrainFinished(127))
            return
        self.proc = proc
        checkpoints: list[str] = []
        # stdout: the event stream; stderr: the human log (and a bad input's one error line)
        streams = {proc.stdout.fileno(): (LineSplitter(), True), proc.stderr.fileno(): (LineSplitter(), False)}  # type: ignore[union-attr]
        with selectors.DefaultSelector() as sel:
            for fd in streams:
                sel.register(fd, selectors.EVENT_READ)
            while streams:
                for key, _ in sel.select():
                    splitter, events = streams[key.fd]
                    chunk = os.read(key.fd, 65536)
                    lines = splitter.feed(chunk) if chunk else splitter.flush()
                    for line in lines:
                        self._post_line(line, events, checkpoints)
                    if not chunk:
                        sel.unregister(key.fd)
                        del streams[key.fd]
        rc = proc.wait()
        self.post_message(TrainFinished(rc, tuple(checkpoints)))

    def _post_line(self, line: str, events: bool, checkpoints: list[str]) -> None:
        if not events:
            self.post_message(TrainOutput(line, None))
            return
        ev = event_of(line)
        if ev is None:
            return
        if ev.kind == "checkpoint":
            checkpoints.append(ev.path)  # type: ignore[attr-defined]
        self.post_message(TrainOutput("", ev))

    def on_train_output(self, message: TrainOutput) -> None:
        ev = message.event
        if ev is None:  # a stderr line
            if (err := error_of(message.line)) is not None:
                self.state.last_error = err
                self.state.status = "failed"
            shown = clean_line(message.line)
            if shown:
                style = "bold red" if err is not None or shown.startswith("interrupt:") else ""
                self.query_one("#train-log", RichLog).write(Text(shown, style=style))
            self._redraw()
            return
        self.state.apply(ev)
        if self.state.total_steps:
            self.query_one("#train-progress", ProgressBar).update(total=self.state.total_steps, progress=self.state.step)
        if isinstance(ev, End) and ev.status == "diverged":
            self.query_one("#train-log", RichLog).write(Text(ev.message, style="bold red"))
        self._redraw()

    def on_train_finished(self, message: TrainFinished) -> None:
        st = self.state
        if message.returncode == 0 and st.status == "running":
            st.status = "done"
        elif message.returncode == 130:
            st.status = "stopped"
            st.alerts.append("interrupted: a checkpoint was saved; train again with --resume to continue")
        elif message.returncode != 0 and st.status == "running":
            st.status = "failed"
            if message.returncode == 3:
                st.alerts.append("training diverged (NaN/Inf): see the log")
            elif not st.last_error:
                st.last_error = f"train exited with code {message.returncode}"
        bar = self.query_one("#train-progress", ProgressBar)
        if st.total_steps and st.status == "done":
            bar.update(total=st.total_steps, progress=st.total_steps)
        elif bar.total is None:
            bar.update(total=st.total_steps or 1, progress=min(st.step, st.total_steps or 0))
        self.proc = None
        self.query_one("#start", Button).disabled = False
        self.query_one("#stop", Button).disabled = True
        self.query_one("#output", Input).value = free_folder(self.query_one("#output", Input).value or "forge-demo")
        self._redraw()

    def _alert(self, text: str) -> None:
        self.state.last_error = text
        self._redraw()

    def action_stop(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        self._stop_requests += 1
        try:
            if self._stop_requests == 1:
                proc.send_signal(signal.SIGINT)  # the runtime saves a checkpoint after this step
                self.query_one("#train-log", RichLog).write(Text("stop: asked the run to save and stop (Stop again aborts it)",
                                                                 style="yellow"))
            else:
                proc.send_signal(signal.SIGINT)  # the runtime aborts at once, exit 130, one line
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            try:
                proc.kill()
            except ProcessLookupError:
                pass

    def on_unmount(self) -> None:
        self.kill()

    def action_back(self) -> None:
        self.kill()
        self.dismiss(None)
