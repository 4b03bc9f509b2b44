"""Pilot tests of `forge-advisor tui`: knobs re-estimate, fit state, probe, advise -> load a
row, export, train monitor, and bad input (paths, unknown models, out-of-range values, a tiny
terminal) shown inline without a crash."""

from __future__ import annotations

import json
import os

import statistics
import sys
import time

import pytest
from test_tui_fakes import fake_advisor, no_gpu_probe, rtx4090_probe, train_program

import forge_advisor
from forge_advisor.estimate import DEFAULT_HEADROOM
from forge_advisor.tui.app import ForgeApp
from forge_advisor.tui.screens.main import MainScreen
from forge_advisor.tui.widgets.knob import Knob
from forge_advisor.tui.widgets.memory_bar import MemoryBar

SIZE = (80, 24)
pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def advisor(monkeypatch: pytest.MonkeyPatch):
    calls: list[dict] = []
    mod = fake_advisor(calls)
    monkeypatch.setitem(sys.modules, "forge_advisor.advisor", mod)
    monkeypatch.setattr(forge_advisor, "advisor", mod, raising=False)
    return calls


@pytest.fixture
def no_advisor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "forge_advisor.advisor", None)  # import fails as if not written yet
    monkeypatch.delattr(forge_advisor, "advisor", raising=False)


def main(app: ForgeApp) -> MainScreen:
    assert isinstance(app.screen, MainScreen), type(app.screen)
    return app.screen


async def settle(app: ForgeApp, pilot) -> None:
    await app.workers.wait_for_complete()
    await pilot.pause()


def message(app: ForgeApp) -> str:
    return str(app.screen.query_one("#message").render())


async def test_turning_a_knob_re_estimates_and_changes_the_fit() -> None:
    app = ForgeApp(gpu="RTX 4090", preset="qlora")
    async with app.run_test(size=SIZE) as pilot:
        screen = main(app)
        before = screen.evaluation
        assert before.ok and before.verdict == "fits"
        assert app.focused is screen.query_one("#knob-preset")
        await pilot.press("down", "down")  # preset -> LoRA rank -> batch/device
        assert app.focused.id == "knob-per-device-train-batch-size"
        await pilot.press("right")  # 4 -> 8
        assert screen.overrides == {"per_device_train_batch_size": 8}
        after = screen.evaluation
        assert after.reserved > before.reserved
        await pilot.press("right", "right")  # 16, 32: far beyond 24 GiB
        assert screen.overrides["per_device_train_batch_size"] == 32
        assert screen.evaluation.verdict == "no-fit"
        bar = screen.query_one(MemoryBar)
        assert bar.has_class("-nofit") and "does not fit" in str(bar.border_subtitle)
        await pilot.press("left", "left", "left")
        assert screen.evaluation.verdict == "fits" and not bar.has_class("-nofit")
        # gradient checkpointing off: activations grow
        screen.query_one("#knob-gradient-checkpointing", Knob).focus()
        await pilot.press("space")
        assert screen.overrides["gradient_checkpointing"] is False
        assert screen.evaluation.reserved > before.reserved


async def test_typing_a_value_and_switching_presets() -> None:
    app = ForgeApp(gpu="H100 SXM")
    async with app.run_test(size=SIZE) as pilot:
        screen = main(app)
        screen.query_one("#knob-max-length", Knob).focus()
        await pilot.press("4", "0", "9", "6")
        assert screen.overrides["max_length"] == 4096
        assert screen.evaluation.result.plan.max_length == 4096
        await pilot.press("enter")
        knob = screen.query_one("#knob-preset", Knob)
        knob.focus()
        await pilot.press("right")  # lora -> qlora: the recipe restarts, the sequence length stays
        assert screen.preset == "qlora" and screen.overrides == {"max_length": 4096}
        assert screen.evaluation.result.plan.method == "qlora"
        await pilot.press("left", "left")  # -> sft: full fine-tuning has no LoRA rank
        assert screen.preset == "sft" and screen.query_one("#knob-lora-r", Knob).disabled


async def test_out_of_range_values_show_the_plans_message() -> None:
    app = ForgeApp(gpu="RTX 4090")
    async with app.run_test(size=SIZE) as pilot:
        screen = main(app)
        good = screen.evaluation.reserved
        batch = screen.query_one("#knob-per-device-train-batch-size", Knob)
        batch.focus()
        await pilot.press("0")
        assert "per_device_train_batch_size=0 is out of range: allowed [1, 65536]" in message(app)
        assert batch.has_class("-invalid")
        bar = screen.query_one(MemoryBar)
        assert bar.has_class("-stale") and bar.evaluation.reserved == good  # the last valid estimate, dimmed
        await pilot.press("backspace", "2")
        assert screen.evaluation.ok and not batch.has_class("-invalid") and not bar.has_class("-stale")
        freeze = screen.query_one("#knob-freeze-ratio", Knob)
        freeze.focus()
        await pilot.press("1", ".", "5")
        assert "freeze_ratio=1.5 is out of range: allowed [0, 1)" in message(app)
        assert freeze.has_class("-invalid")
        await pilot.press("escape")  # undo the typing
        assert screen.evaluation.ok and screen.overrides["freeze_ratio"] == 0.0


async def test_estimate_is_well_under_a_frame() -> None:
    app = ForgeApp(gpu="RTX 4090")
    async with app.run_test(size=SIZE):
        screen = main(app)
        times = []
        for r in (8, 16, 32, 64, 128) * 4:
            screen.overrides["lora_r"] = r
            t0 = time.perf_counter()
            screen.refresh_estimate()
            times.append(time.perf_counter() - t0)
        assert statistics.median(times) < 0.016, times


async def test_probe_without_a_gpu_offers_the_catalog() -> None:
    app = ForgeApp(probe_fn=no_gpu_probe, probe_on_start=True)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        from forge_advisor.tui.screens.pick_gpu import GpuPickerScreen

        assert isinstance(app.screen, GpuPickerScreen)
        note = str(app.screen.query_one("#probe-note").render())
        assert "No GPU detected: no NVIDIA driver" in note
        await pilot.press(*"4090", "enter")
        screen = main(app)
        assert app.gpu is not None and app.gpu.name == "RTX 4090"
        assert screen.evaluation.report["gpu"] == "RTX 4090"


async def test_probe_finds_the_local_gpu() -> None:
    app = ForgeApp(probe_fn=rtx4090_probe)
    async with app.run_test(size=SIZE) as pilot:
        screen = main(app)
        assert screen.evaluation.verdict == "unknown"  # no GPU yet: memory only
        await pilot.press("p")
        await settle(app, pilot)
        assert app.gpu.name == "RTX 4090" and screen.evaluation.verdict in ("fits", "tight", "no-fit")  # judged against the GPU
        assert "probed: NVIDIA GeForce RTX 4090" in message(app)


async def test_bad_gpu_and_model_names_are_inline_messages() -> None:
    app = ForgeApp(model="no-such-model-xyz", gpu="RTX 9090")
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        screen = main(app)
        assert app.shape is None and app.gpu is None
        text = message(app)
        assert "no-such-model-xyz" in text and "error" in text
        await pilot.press("m")
        from forge_advisor.tui.screens.pick_model import ModelPickerScreen

        assert isinstance(app.screen, ModelPickerScreen)
        await pilot.press(*"./missing/config.json", "enter")
        await settle(app, pilot)
        assert isinstance(app.screen, ModelPickerScreen)
        assert "./missing/config.json: no such file or directory" in str(app.screen.query_one("#model-error").render())
        inp = app.screen.query_one("#query")
        inp.value = "qwen2.5 7b"
        await pilot.pause()
        await pilot.press("enter")
        await settle(app, pilot)
        assert app.screen is screen and app.shape is not None and "Qwen2.5-7B" in app.shape.name
        assert screen.evaluation.ok


async def test_a_config_json_path_loads(tmp_path) -> None:
    from forge_advisor.shapes.catalog import find_catalog_model

    cfg = tmp_path / "config.json"
    import json

    cfg.write_text(json.dumps(find_catalog_model("meta-llama/Llama-3.2-1B").config))
    app = ForgeApp(model=str(cfg), gpu="T4")
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        assert main(app).evaluation.ok and app.shape.num_parameters > 1e9


async def test_a_tiny_terminal_shows_a_notice_and_recovers() -> None:
    app = ForgeApp(gpu="RTX 4090")
    async with app.run_test(size=SIZE) as pilot:
        screen = main(app)
        await pilot.resize_terminal(40, 10)
        await pilot.pause()
        assert screen.has_class("-tiny") and screen.query_one("#too-small").display
        await pilot.press("right")  # still works underneath
        await pilot.resize_terminal(*SIZE)
        await pilot.pause()
        assert not screen.has_class("-tiny") and screen.evaluation.ok
        await pilot.press("question_mark")
        await pilot.resize_terminal(30, 8)
        await pilot.pause()
        assert app.screen.has_class("-tiny")
        await pilot.resize_terminal(*SIZE)
        await pilot.press("escape")
        assert app.screen is screen


async def test_advise_runs_in_a_worker_and_loads_a_row(advisor) -> None:
    app = ForgeApp(gpu="RTX 4090")
    async with app.run_test(size=SIZE) as pilot:
        screen = main(app)
        screen.query_one("#knob-max-length", Knob).focus()
        await pilot.press("right")  # 1024 -> 2048: the advisor searches at this length
        await pilot.press("a")
        await settle(app, pilot)
        from forge_advisor.tui.screens.advise import AdviseScreen

        adv = app.screen
        assert isinstance(adv, AdviseScreen)
        assert advisor[-1]["seq_len"] == 2048 and advisor[-1]["headroom"] == DEFAULT_HEADROOM
        table = adv.query_one("#table-ranked")
        assert table.row_count == 3 and adv.query_one("#table-pareto").row_count == 2
        bar = adv.query_one("#advise-progress")
        assert bar.progress == bar.total == 3
        assert "memory_efficient" in str(adv.query_one("#advise-why").render()) or table.cursor_row == 0
        await pilot.press("down")
        assert "memory_efficient: fits" in str(adv.query_one("#advise-why").render())
        await pilot.press("enter")  # load the second row into the editor
        assert app.screen is screen
        assert screen.preset == "memory_efficient"
        assert screen.overrides == {"lora_r": 8, "max_length": 2048}  # the diff against memory_efficient
        plan = screen.evaluation.result.plan
        assert plan.optim == "paged_adamw_8bit" and plan.lora_r == 8
        assert screen.query_one("#knob-lora-r", Knob).value == 8
        assert "loaded the advisor's plan" in message(app)


async def test_advise_with_another_objective_and_a_click(advisor) -> None:
    app = ForgeApp(gpu="RTX 4090")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("a")
        await settle(app, pilot)
        adv = app.screen
        adv.query_one("#knob-objective", Knob).focus()
        await pilot.press("right", "r")
        await settle(app, pilot)
        assert advisor[-1]["objective"] == "fastest"  # the advisor's second objective
        table = adv.query_one("#table-ranked")
        table.focus()
        await pilot.press("l")  # load the highlighted (first) row
        assert main(app).preset == "qlora" and main(app).overrides["lora_r"] == 64


async def test_advise_shows_what_would_fit_when_nothing_does(monkeypatch: pytest.MonkeyPatch) -> None:
    mod = fake_advisor(nothing_fits=True)
    monkeypatch.setitem(sys.modules, "forge_advisor.advisor", mod)
    monkeypatch.setattr(forge_advisor, "advisor", mod, raising=False)
    app = ForgeApp(gpu="RTX 4090")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("a")
        await settle(app, pilot)
        adv = app.screen
        status = str(adv.query_one("#advise-status").render())
        assert "nothing fits" in status and "A100 40GB SXM" in status
        assert adv.query_one("#table-ranked").row_count == 0


async def test_advise_says_when_the_advisor_is_missing(no_advisor) -> None:
    app = ForgeApp(gpu="RTX 4090")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("a")
        await pilot.pause()
        status = str(app.screen.query_one("#advise-status").render())
        assert "advisor not available" in status
        await pilot.press("r", "escape")
        assert main(app).evaluation.ok


async def test_export_shows_and_saves_the_plan(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    app = ForgeApp(gpu="RTX 4090", preset="qlora")
    async with app.run_test(size=SIZE) as pilot:
        screen = main(app)
        screen.query_one("#knob-lora-r", Knob).focus()
        await pilot.press("right")  # r 16 -> 32
        await pilot.press("e")
        from forge_advisor.tui.screens.export import ExportScreen

        exp = app.screen
        assert isinstance(exp, ExportScreen)
        train = exp.texts["train"]
        assert train.startswith("forge-advisor train") and "--lora-r 32" in train and "--preset qlora" in train
        assert "--data train.jsonl" in train and "--predicted-peak-gib" in train
        assert '"lora_r": 32' in exp.texts["json"] and "lora_r: 32" in exp.texts["yaml"]
        assert "get_preset('qlora', lora_r=32)" in exp.texts["python"]
        assert "--lora-r 32" in exp.texts["estimate"]
        exp.query_one("#data").value = "my data.jsonl"
        await pilot.pause()
        assert "--data 'my data.jsonl'" in exp.texts["train"]
        exp.query_one("Tabs").focus()
        await pilot.press("s")
        script = tmp_path / "forge-train.sh"
        assert script.read_text().startswith("#!/bin/sh\nforge-advisor train")
        assert os.access(script, os.X_OK)  # runs as ./forge-train.sh
        await pilot.press("right", "right", "s")  # -> the JSON tab
        doc = json.loads((tmp_path / "forge-plan.json").read_text())
        assert doc["preset"] == "qlora" and doc["config"]["lora_r"] == 32
        # train --preset-file reads it back as exactly the exported plan
        from forge_advisor.presets import load_preset

        assert load_preset(tmp_path / "forge-plan.json").to_plan(precision="bf16").to_dict() == doc["plan"]
        await pilot.press("escape")
        assert app.screen is screen


async def test_train_runs_a_subprocess_and_monitors_it(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    program, record = train_program(tmp_path)
    app = ForgeApp(gpu="RTX 4090", train_program=program)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("t")
        from forge_advisor.tui.screens.train import TrainScreen

        tr = app.screen
        assert isinstance(tr, TrainScreen)
        assert "--demo" in str(tr.query_one("#train-command").render())
        await pilot.click("#start")
        await settle(app, pilot)
        await pilot.pause()
        argv = record.read_text().split("\n")
        assert argv[:4] == ["train", "--preset", "lora", "--demo"] and "forge-demo" in argv
        st = tr.state
        assert st.status == "done" and st.losses == [5.5, 5.0] and st.step == 10 and st.total_steps == 10
        assert st.nan_alert and st.measured_over_predicted == 0.5 and st.ema_updates == 10
        assert tr.query_one("#alerts").has_class("-alarm")
        stats = str(tr.query_one("#stats").render())
        assert "1,234 tok/s" in stats and "EMA decay 0.999 · 10 updates" in stats
        assert tr.query_one("#output").value == "forge-demo"  # nothing was written by the fake: name still free
        await pilot.press("escape")
        assert isinstance(app.screen, MainScreen)


async def test_train_failure_is_shown(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    script = tmp_path / "fail.py"
    script.write_text("import sys\nprint('error: --data x.jsonl: no such file', file=sys.stderr)\nsys.exit(2)\n")
    app = ForgeApp(gpu="RTX 4090", train_program=(sys.executable, str(script)))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("t")
        tr = app.screen
        await pilot.press("ctrl+s")
        await settle(app, pilot)
        await pilot.pause()
        assert tr.state.status == "failed" and "no such file" in (tr.state.last_error or "")
        assert not tr.query_one("#start").disabled


async def test_help_lists_every_binding() -> None:
    from forge_advisor.tui.screens.help import all_bindings

    sections = dict(all_bindings())
    assert ("a", "Advise") in sections["Plan editor"] and ("?", "Help") in sections["Everywhere"]
    assert any(k.startswith("Esc") for k, _ in sections["Advise"])
    app = ForgeApp(gpu="RTX 4090")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("question_mark")
        from forge_advisor.tui.screens.help import HelpScreen

        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert isinstance(app.screen, MainScreen)


async def test_mouse_turns_knobs_and_opens_pickers() -> None:
    app = ForgeApp(gpu="RTX 4090")
    async with app.run_test(size=SIZE) as pilot:
        screen = main(app)
        from forge_advisor.tui.widgets.knob import RIGHT_X

        await pilot.click("#knob-lora-r", offset=(RIGHT_X + 1, 0))  # ▶ (after the knob's 1-cell padding)
        assert screen.overrides == {"lora_r": 32}
        await pilot.click("#gpu-button")
        from forge_advisor.tui.screens.pick_gpu import GpuPickerScreen

        assert isinstance(app.screen, GpuPickerScreen)
        await pilot.press("escape")
        assert app.screen is screen


async def test_advise_with_the_real_advisor_loads_its_plan() -> None:
    """The colleague's ``forge_advisor.advisor.recommend``: its first row, loaded, is its plan."""
    from forge_advisor.advisor import OBJECTIVES

    app = ForgeApp(gpu="RTX 4090")
    async with app.run_test(size=SIZE) as pilot:
        screen = main(app)
        await pilot.press("a")
        await settle(app, pilot)
        adv = app.screen
        assert adv.query_one("#knob-objective", Knob).spec.choices == tuple(OBJECTIVES)
        first = adv.rows["ranked"][0]
        assert adv.query_one("#table-ranked").row_count == len(adv.rows["ranked"]) >= 1
        assert adv.query_one("#table-pareto").row_count == len(adv.rows["pareto"])
        bar = adv.query_one("#advise-progress")
        assert bar.total and bar.progress == bar.total
        # the panel explains the highlighted row of the shown table: the ranked #1, not the
        # hidden Pareto table's first row (which fills at the same time)
        from forge_advisor.tui.screens.advise import _changes

        await pilot.pause()
        assert str(adv.query_one("#advise-why").render()).startswith(f"#1 {first.preset}: {_changes(first)}")
        assert str(first.why) in str(adv.query_one("#advise-why").render())
        await pilot.press("enter")
        assert app.screen is screen and screen.preset == first.preset
        assert screen.evaluation.result.plan == first.plan
        assert screen.evaluation.reserved == first.estimate.peak_reserved_bytes
        assert screen.evaluation.verdict in ("fits", "tight")


def _data_file(path) -> str:
    import random

    rng = random.Random(11)
    path.write_text("".join(json.dumps({"text": "w " * int(rng.lognormvariate(5, 0.8))}) + "\n" for _ in range(300)))
    return str(path)


async def test_data_screen_plans_from_the_data_in_a_worker_and_applies(tmp_path, capsys) -> None:
    """``tui --data PATH``: the data screen opens, measures in a worker, shows what the ``data``
    command answers for the same plan and GPU, and ctrl+a puts max_length, batching and the
    data's tokens into the editor."""
    from forge_advisor.cli.main import main as cli
    from forge_advisor.tui.screens.data import DataScreen

    data = _data_file(tmp_path / "d.jsonl")
    assert cli(["data", "--model", "meta-llama/Llama-3.1-8B", "--gpu", "RTX 4090", "--data", data, "--json"]) == 0
    want = json.loads(capsys.readouterr().out)
    want_rec = json.loads(_recommend_json(data, want["max_length"]["recommended"], capsys))
    app = ForgeApp(gpu="RTX 4090", data=data)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        ds = app.screen
        assert isinstance(ds, DataScreen) and ds.advice is not None
        length, mode = want["max_length"]["recommended"], want["recommended_batching"]
        assert (ds.advice["max_length"]["recommended"], ds.advice["recommended_batching"]) == (length, mode)
        table = ds.query_one("#data-modes")
        assert table.row_count == len(want["batching"]) == 4
        status = str(ds.query_one("#data-status").render())
        assert f"max_length {length:,}" in status and f"batching {mode}" in status
        assert f"p99 {want['lengths']['p99']:,}" in str(ds.query_one("#data-lengths").render())
        await pilot.press("ctrl+a")
        screen = main(app)
        plan = screen.evaluation.result.plan
        assert (plan.max_length, plan.batching) == (length, mode)
        assert screen.dataset_tokens == want["lengths"]["total_tokens"]
        from forge_advisor.estimate import estimate

        assert screen.evaluation.reserved == estimate(app.shape, plan, app.gpu).peak_reserved_bytes
        assert "from d.jsonl" in message(app)
        # the advisor (the real one) then ranks batching modes on the data's padding
        await pilot.press("a")
        await settle(app, pilot)
        rows = app.screen.rows["ranked"]
        assert rows and {r.plan.max_length for r in rows} == {length}
        assert rows[0].plan.to_dict() == want_rec["recommendations"][0]["estimate"]["plan"]
        await pilot.press("escape")
        await pilot.press("d")  # back to the data screen with the same file
        await settle(app, pilot)
        assert isinstance(app.screen, DataScreen) and app.screen.path == data


def _recommend_json(data: str, length: int, capsys) -> str:
    """What ``recommend --data`` answers on the same file, GPU and length."""
    from forge_advisor.cli.main import main as cli

    capsys.readouterr()
    assert cli(["recommend", "--model", "meta-llama/Llama-3.1-8B", "--gpu", "RTX 4090", "--data", data,
                "--max-length", str(length), "--json"]) == 0
    return capsys.readouterr().out


async def test_data_screen_bad_file_is_one_line_and_keeps_the_plan(tmp_path) -> None:
    from forge_advisor.tui.screens.data import DataScreen

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a"}\nnot json\n')
    app = ForgeApp(gpu="RTX 4090")
    async with app.run_test(size=SIZE) as pilot:
        screen = main(app)
        before = screen.evaluation.result.plan
        await pilot.press("d")
        ds = app.screen
        assert isinstance(ds, DataScreen)
        for path, want in ((str(tmp_path / "missing.jsonl"), "missing.jsonl"), (str(bad), "bad.jsonl:2: not JSON")):
            ds.query_one("#data-path").value = path
            await pilot.press("enter")
            await settle(app, pilot)
            status = str(ds.query_one("#data-status").render())
            assert status.startswith("error: ") and want in status and "\n" not in status.strip()
            assert ds.query_one("#data-modes").row_count == 0
        await pilot.press("ctrl+a")  # nothing to apply: said inline, the screen stays
        assert app.screen is ds and "nothing to apply" in str(ds.query_one("#data-status").render())
        await pilot.press("escape")
        assert app.screen is screen and screen.evaluation.result.plan == before
