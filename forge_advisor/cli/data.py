"""``forge-advisor data --model X --data PATH [--gpu G]``: plan from your own data.

The length report (p50/p90/p99/max, total tokens, histogram), the recommended max_length
(truncation against memory and time), the batching modes compared (worst-case memory,
expected speed, steps, time and cost per epoch) and, with ``--rent``, GPU type x count x
mode ranked by cost and by time. No torch.
"""

from __future__ import annotations

import argparse
from typing import Any

from forge_advisor.cli.output import console, emit_json
from forge_advisor.units import fmt_bytes


def add_parser(sub: Any) -> None:
    from forge_advisor.dataplan.batching import MODES
    from forge_advisor.plan import ATTENTION

    p = sub.add_parser("data", help="token lengths of your data, the max_length and batching to use, time and cost",
                       allow_abbrev=False)
    p.add_argument("--model", required=True, help="catalog id, local model directory, or Hub id")
    p.add_argument("--data", required=True, metavar="PATH", help=".jsonl (text / messages / prompt,chosen,rejected) or a save_to_disk folder")
    p.add_argument("--gpu", help="GPU to plan for (catalog name or 'auto'); without it: memory only, and --rent ranks all priced GPUs")
    p.add_argument("--preset", default="lora", help="starting preset (default lora)")
    p.add_argument("--tokenizer", metavar="PATH", help="a folder with tokenizer.json, if not the model's own")
    p.add_argument("--max-length", type=int, metavar="T", help="fix max_length instead of choosing it")
    p.add_argument("--batching", choices=MODES, help="the mode the length choice and rent use (default: the fastest that fits)")
    p.add_argument("--batch-size", type=int, metavar="N", help="per-device train batch size")
    p.add_argument("--grad-accum", type=int, metavar="N", help="gradient accumulation steps")
    p.add_argument("--num-gpus", type=int, default=1, metavar="N")
    p.add_argument("--attn", choices=ATTENTION, help="attention implementation (flash_attention_2 for efficient packing/padding-free)")
    p.add_argument("--sample", type=int, default=None, metavar="N",
                   help="tokenize at most N records (uniform sample plus the longest lines) of a larger .jsonl (default 200000)")
    p.add_argument("--rent", action="store_true", help="rank GPU type x count x batching by cost per epoch and by time")
    p.add_argument("--price", action="append", default=[], metavar="GPU=USD", help="your own $/GPU-hour, e.g. 'H100 SXM=2.49'")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    p.set_defaults(run=run)


def _plan(args: argparse.Namespace, gpu: Any) -> Any:
    from forge_advisor.estimate import resolve_plan

    over = {k: v for k, v in (("per_device_train_batch_size", args.batch_size),
                              ("gradient_accumulation_steps", args.grad_accum),
                              ("attn_implementation", args.attn), ("num_gpus", args.num_gpus)) if v is not None}
    return resolve_plan(args.preset, gpu, **over)


def compute(args: argparse.Namespace) -> dict[str, Any]:
    from forge_advisor.dataplan.advise import data_advice, rent
    from forge_advisor.dataplan.lengths import DEFAULT_SAMPLE_LIMIT, measure_lengths
    from forge_advisor.dataplan.prices import gpu_prices, parse_price_overrides
    from forge_advisor.dataplan.tokens import check_vocab, counter_for
    from forge_advisor.gpus import resolve_gpu
    from forge_advisor.shapes import load_shape

    prices = gpu_prices(parse_price_overrides(args.price))
    shape = load_shape(args.model)
    gpu = resolve_gpu(args.gpu) if args.gpu else None
    plan = _plan(args, gpu)
    counter = counter_for(args.model, args.tokenizer)
    check_vocab(counter, shape.vocab_size, shape.name)
    report = measure_lengths(args.data, args.model, trainer="dpo" if plan.trainer == "dpo" else "sft", counter=counter,
                             sample_limit=args.sample or DEFAULT_SAMPLE_LIMIT, progress=not args.json)
    price = prices.get(gpu.name).usd_per_hour if gpu is not None and gpu.name in prices else None
    advice = data_advice(report, shape, plan, gpu, mode=args.batching, fixed=args.max_length, usd_per_gpu_hour=price)
    out: dict[str, Any] = {"model": shape.name, "gpu": None if gpu is None else gpu.name, "plan": plan.to_dict(),
                           **advice, "rent": None}
    length = advice["max_length"]["recommended"]
    if length is None:
        return out
    if args.rent:
        chosen_modes = (args.batching,) if args.batching else None
        table = {k: v for k, v in prices.items() if gpu is None or k == gpu.name}
        out["rent"] = rent(report, shape, plan, length, modes=chosen_modes, prices=table).to_dict()
    return out


def _hms(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _usd(v: float | None) -> str:
    if v is None:
        return "—"
    return f"${v:,.2f}" if v >= 0.01 else f"${v:.4f}"


def render(r: dict[str, Any]) -> None:
    from rich.table import Table

    con = console()
    L = r["lengths"]
    exact = "the model's tokenizer" if L["exact"] else f"[yellow]{L['tokenizer']}[/]"
    sampled = f" [yellow](sampled: {L['sample_size']:,} of {L['records']:,} records, plus the longest lines)[/]" if L["sampled"] else ""
    con.print(f"[bold]{L['data']}[/]: {L['records']:,} {L['kind']} records, {L['total_tokens']:,} tokens ({exact}){sampled}")
    con.print(f"tokens per record: p50 {L['p50']:,} · p90 {L['p90']:,} · p99 {L['p99']:,} · max {L['max']:,} ({L['longest_at']})")
    if "images_per_sample" in L:
        im = L["images_per_sample"]
        con.print(f"images per sample: max {im['max']:,} · typical (p50) {im['p50']:,} · {im['total']:,} in all "
                  "(the token counts are text only: image tokens depend on the processor and max_pixels)")
    if "videos_per_sample" in L:
        vd = L["videos_per_sample"]
        con.print(f"videos per sample: max {vd['max']:,} · typical (p50) {vd['p50']:,} · {vd['total']:,} in all · at most "
                  f"{vd['max_frames']:,} frames per video (text only above: video tokens depend on the processor, "
                  "num_frames and video_max_pixels)")
    peak = max(h["records"] for h in L["histogram"]) or 1
    for h in L["histogram"]:
        bar = "█" * round(30 * h["records"] / peak)
        con.print(f"  {h['from']:>8,}–{h['to']:<8,} {bar:<30} {h['records']:,}")
    ml = r["max_length"]
    t = Table(title=f"max_length for {r['model']}" + (f" on {r['gpu']}" if r["gpu"] else ""))
    for col in ("max_length", "records cut", "tokens cut", "worst batch", "fits", "epoch"):
        t.add_column(col, justify="right")
    for c in ml["candidates"]:
        mark = "[bold]→ [/]" if c["max_length"] == ml["recommended"] else ""
        fits = {True: "[green]yes[/]", False: "[red]no[/]", None: "—"}[c["worst_case"]["fits"]]
        t.add_row(f"{mark}{c['max_length']:,}", f"{c['truncated_records']:.1%}", f"{c['truncated_tokens']:.1%}",
                  fmt_bytes(c["worst_case"]["peak_reserved_bytes"]), fits, _hms(c["epoch_seconds"]))
    con.print(t)
    con.print(f"max_length {ml['recommended']}: {ml['reason']}")
    if r["batching"]:
        t = Table(title=f"batching at max_length {ml['recommended']}")
        for col in ("mode", "pad", "worst batch", "fits", "real tok/s", "steps", "epoch", "$/epoch"):
            t.add_column(col, justify="right", no_wrap=True)
        for b in r["batching"]:
            s = b["simulation"]
            fits = {True: "[green]yes[/]", False: "[red]no[/]", None: "—"}[b["worst_case"]["fits"]]
            name = ("[bold]" + b["mode"] + "[/]") if b["mode"] == r.get("recommended_batching") else b["mode"]
            t.add_row(name, f"{1 - s['efficiency']:.0%}", fmt_bytes(b["worst_case"]["peak_reserved_bytes"]), fits,
                      "—" if b["real_tokens_per_second"] is None else f"{b['real_tokens_per_second']:,.0f}",
                      f"{b['steps_per_epoch']:,}", _hms(b["epoch_seconds"]), _usd(b["usd_per_epoch"]))
        con.print(t)
        for b in r["batching"]:
            if b["note"]:
                con.print(f"[dim]{b['mode']}: {b['note']}[/]")
        if r["gpu"] is None:
            con.print("No --gpu: memory only. Add --gpu NAME for fit, time and cost, or --rent to compare GPUs.")
    if r["rent"]:
        _render_rent(con, r["rent"])


def _render_rent(con: Any, rent: dict[str, Any]) -> None:
    from rich.table import Table

    if not rent["options"]:
        con.print("[red]No priced GPU fits this plan.[/]")
        return
    t = Table(title="rent: cheapest epochs first")
    for col in ("GPU", "×", "mode", "epoch", "$/epoch", "$/GPU-h"):
        t.add_column(col, justify="right")
    for o in rent["options"][:10]:
        t.add_row(o["gpu"], str(o["num_gpus"]), o["mode"], _hms(o["epoch_seconds"]), _usd(o["usd_per_epoch"]),
                  _usd(o["usd_per_gpu_hour"]))
    con.print(t)
    c, f = rent["cheapest"], rent["fastest"]
    con.print(f"cheapest: {c['num_gpus']}× {c['gpu']} ({c['mode']}) {_usd(c['usd_per_epoch'])}, {_hms(c['epoch_seconds'])} per epoch")
    con.print(f"fastest:  {f['num_gpus']}× {f['gpu']} ({f['mode']}) {_hms(f['epoch_seconds'])}, {_usd(f['usd_per_epoch'])} per epoch")
    if rent["nothing_fits"]:
        con.print(f"[dim]nothing fits on: {', '.join(rent['nothing_fits'])}[/]")


def run(args: argparse.Namespace) -> int:
    report = compute(args)
    if args.json:
        emit_json(report)
    else:
        render(report)
    return 0
