"""Snapshots of the TUI's main screens at 80×24 (pytest-textual-snapshot). Rendering is
deterministic: catalog model and GPU (no probe), no blinking cursor, a fixed working folder.
Update after an intended change with ``pytest tests/test_tui_snapshots.py --snapshot-update``."""

from __future__ import annotations

import sys

import pytest
from test_tui_fakes import fake_advisor

import forge_advisor
from forge_advisor.tui.app import ForgeApp

SIZE = (80, 24)


@pytest.fixture(autouse=True)
def _stable(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the train screen proposes a free output folder name
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    mod = fake_advisor()
    monkeypatch.setitem(sys.modules, "forge_advisor.advisor", mod)
    monkeypatch.setattr(forge_advisor, "advisor", mod, raising=False)


def keys(*pressed: str):
    """run_before: press keys, then wait for workers (snap_compare's own presses come after
    run_before, too late to wait for a worker they start)."""

    async def run_before(pilot) -> None:
        await pilot.press(*pressed)
        await _no_blink(pilot)

    return run_before


async def _no_blink(pilot) -> None:
    from textual.widgets import Input

    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    for w in pilot.app.screen.query(Input):
        w.cursor_blink = False
    await pilot.pause()


def test_main_screen(snap_compare) -> None:
    assert snap_compare(ForgeApp(gpu="RTX 4090"), terminal_size=SIZE, run_before=_no_blink)


def test_main_screen_does_not_fit(snap_compare) -> None:
    assert snap_compare(ForgeApp(gpu="RTX 4090", preset="sft"), terminal_size=SIZE, run_before=_no_blink)


def test_main_screen_invalid_value(snap_compare) -> None:
    async def run_before(pilot) -> None:
        pilot.app.screen.query_one("#knob-freeze-ratio").focus()
        await pilot.press("1", ".", "5")
        await _no_blink(pilot)

    assert snap_compare(ForgeApp(gpu="RTX 4090", preset="qlora"), terminal_size=SIZE, run_before=run_before)


def test_advise_screen(snap_compare) -> None:
    assert snap_compare(ForgeApp(gpu="RTX 4090"), terminal_size=SIZE, run_before=keys("a"))


def test_export_screen(snap_compare) -> None:
    assert snap_compare(ForgeApp(gpu="RTX 4090", preset="qlora"), terminal_size=SIZE,
                        run_before=keys("e"))


def test_train_screen(snap_compare) -> None:
    assert snap_compare(ForgeApp(gpu="RTX 4090"), terminal_size=SIZE, run_before=keys("t"))


def test_help_screen(snap_compare) -> None:
    assert snap_compare(ForgeApp(gpu="RTX 4090"), terminal_size=SIZE, run_before=keys("question_mark"))


def test_too_small(snap_compare) -> None:
    assert snap_compare(ForgeApp(gpu="RTX 4090"), terminal_size=(40, 10), run_before=_no_blink)


def test_data_screen(snap_compare, tmp_path) -> None:
    """``tui --data d.jsonl``: the length report, the max_length and the batching modes."""
    import json
    import random

    rng = random.Random(11)
    (tmp_path / "d.jsonl").write_text(
        "".join(json.dumps({"text": "w " * int(rng.lognormvariate(5, 0.8))}) + "\n" for _ in range(300)))
    assert snap_compare(ForgeApp(gpu="RTX 4090", data="d.jsonl"), terminal_size=SIZE, run_before=_no_blink)
