"""Peer estimator: llm-analysis (PyPI ``llm-analysis``, github.com/cli99/llm-analysis).

Runs INSIDE its own virtual environment (it pins transformers 4.31 and friends), never in
the project venv::

    python3 -m venv .venv-peers/llm-analysis
    .venv-peers/llm-analysis/bin/pip install llm-analysis
    .venv-peers/llm-analysis/bin/python benches/peers/llm_analysis_peer.py < cases.json > out.json

stdin: a JSON list of ``{"key", "config", "num_layers", "plan"}`` (``config`` = the HF
config.json dict, ``num_layers`` = layers actually built, ``plan`` = forge-advisor plan dict).
stdout: ``{key: peak_bytes | null, ..., "error": {key: why}, "notes": {key: [...]},
"breakdown": {key: {...}}}``. Logs go to stderr.

What is summed
--------------
``LLMAnalysis.training()`` returns a summary dict; the estimate is its field
``"(weight+op_state+grad+act)_memory_per_gpu"``, i.e.

    weight_memory_per_gpu + gradient_memory_per_gpu
    + optimizer_state_memory_per_gpu + activation_memory_per_gpu

where ``activation_memory_per_gpu`` already includes ``activation_memory_embedding_output_per_gpu``
(the b×s×vocab logits) and the final layernorm's input. llm-analysis has no separate
temporary / workspace / loss term, so nothing else is added.

How a case is fed to it (no Hub access: ``ModelConfig`` is built from the config dict)
----------------------------------------------------------------------------------------
* ``ModelConfig``: ``hidden_dim`` = hidden_size | n_embd | d_model; ``n_head`` =
  num_attention_heads | n_head; ``num_key_value_heads`` = num_key_value_heads (else n_head);
  ``num_layers`` = the layers built; ``vocab_size``; ``max_seq_len`` =
  max(max_position_embeddings | n_positions, seq) (it asserts seq <= max_seq_len).
  ``ffn_embed_dim``: llm-analysis counts 2 MLP matrices of hidden×ffn; for gated MLPs
  (SwiGLU/GeGLU: 3 matrices of hidden×intermediate) its own convention is the iso-param
  width ("swiglu decreases the expansion ratio by 2/3"), so ffn_embed_dim = 1.5 ×
  intermediate and ``mlp_gated_linear_units=True``; non-gated MLPs use intermediate_size |
  ffn_dim | n_inner | 4×hidden. ``expansion_ratio`` = ffn_embed_dim / hidden (passed
  explicitly, it need not be an integer). MoE: ``moe_num_experts`` / ``moe_top_k`` from
  num_local_experts | num_experts and num_experts_per_tok, expert width from
  moe_intermediate_size | intermediate_size (qwen2_moe's shared expert has no slot: ignored).
* ``GPUConfig``: its shipped ``h100-sxm-80gb`` (the GPU only bounds max batch size; the
  per-GPU memory breakdown does not depend on it).
* ``DtypeConfig`` (weight/activation/embedding bits): its ``w16a16e16`` for every mapped
  dtype; it accepts only 4/8/16-bit weights and activations (its TFLOPS lookup asserts), so
  fp32 plans are not covered (null). bf16 / fp16: pure 16-bit training.
  amp-bf16 / amp-fp16: its own mixed-precision flavour, i.e. 16-bit weights/activations
  plus fp32 master weights and fp32 gradients (``master_weights_dtype_bytes=4``) — HF amp
  actually keeps fp32 weights and no separate master copy, which it cannot express.
* optimizer: llm-analysis charges gradients at ``master_weights_dtype_bytes`` per parameter
  and optimizer states at ``master_weights_dtype_bytes + other_op_bytes`` (it always assumes
  a master copy). ``master_weights_dtype_bytes`` = 2 for bf16/fp16 (the trained parameters'
  dtype), 4 for amp; ``other_op_bytes``: AdamW (adamw_torch, _fused) = 2 moments × that
  dtype (4 for bf16, 8 for amp, its default), sgd (HF default momentum 0) = 0, adafactor
  (factored, sublinear state) = 0.
* ``activation_recomputation`` = FULL when gradient_checkpointing else NONE;
  ``flash_attn`` = True unless attn_implementation == "eager"; ZeRO 0; tp = pp = dp = 1;
  ``batch_size_per_gpu`` = per_device_train_batch_size, ``seq_len`` = max_length; other
  knobs at its defaults (layernorm activations fp32, no softmax dropout).

Not covered (null, with the reason under ``error``): method lora / qlora (llm-analysis has no
adapter support; no mapping is invented) and dtype fp32 (see above). Plan features it has
no knob for are ignored and listed under ``notes``:
freeze_ratio > 0 (it trains every parameter), trainer=dpo (no reference model, no
chosen/rejected pair), distributed != none.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

GATED_MLP = {
    "llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "gemma",
    "gemma2", "gemma3", "gemma3_text", "phi3", "olmo", "olmo2", "granite", "cohere",
    "deepseek_v2", "deepseek_v3", "starcoder2_gated",
}
ADAM = {"adamw_torch", "adamw_torch_fused", "adamw_hf", "adamw", "adam"}


def _first(cfg: dict[str, Any], *keys: str) -> Any:
    for k in keys:
        if cfg.get(k) is not None:
            return cfg[k]
    return None


def _model_config(cfg: dict[str, Any], num_layers: int | None, seq: int):
    from llm_analysis.config import ModelConfig

    model_type = cfg.get("model_type")
    hidden = int(_first(cfg, "hidden_size", "n_embd", "d_model"))
    n_head = int(_first(cfg, "num_attention_heads", "n_head", "n_heads"))
    kv = _first(cfg, "num_key_value_heads", "num_kv_heads", "n_head_kv")
    if kv is None and cfg.get("multi_query"):
        kv = 1
    layers = num_layers or _first(cfg, "num_hidden_layers", "n_layer", "num_layers", "n_layers")
    experts = _first(cfg, "num_local_experts", "num_experts", "n_routed_experts") or 1
    top_k = _first(cfg, "num_experts_per_tok", "moe_top_k") or 1
    if experts > 1:
        inter = _first(cfg, "moe_intermediate_size", "intermediate_size")
    else:
        inter = _first(cfg, "intermediate_size", "ffn_dim", "n_inner")
    if inter is None:
        inter = 4 * hidden
    gated = model_type in GATED_MLP
    ffn = int(round(1.5 * inter)) if gated else int(inter)
    max_pos = _first(cfg, "max_position_embeddings", "n_positions", "max_seq_len") or seq
    mc = ModelConfig(
        name=f"forge-{model_type}",
        num_layers=int(layers),
        n_head=n_head,
        hidden_dim=hidden,
        vocab_size=int(cfg["vocab_size"]),
        max_seq_len=max(int(max_pos), seq),
        num_key_value_heads=int(kv) if kv else None,
        ffn_embed_dim=ffn,
        expansion_ratio=ffn / hidden,
        model_type=model_type,
        moe_num_experts=int(experts),
        moe_top_k=int(top_k) if experts > 1 else 1,
    )
    return mc, gated


def estimate_case(case: dict[str, Any]) -> tuple[int | None, str | None, list[str], dict[str, Any]]:
    from llm_analysis.analysis import ActivationRecomputation, DSZeRO, LLMAnalysis
    from llm_analysis.config import DtypeConfig, ParallelismConfig, get_gpu_config_by_name

    plan = case["plan"]
    method = plan.get("method", "full")
    if method != "full":
        return None, f"method={method}: llm-analysis has no LoRA/adapter support", [], {}
    notes = []
    if (plan.get("freeze_ratio") or 0) > 0:
        notes.append(f"freeze_ratio={plan['freeze_ratio']} ignored (trains all params)")
    if plan.get("trainer", "sft") != "sft":
        notes.append(f"trainer={plan['trainer']} ignored (plain causal-LM step)")
    if plan.get("distributed", "none") != "none" or (plan.get("num_gpus") or 1) > 1:
        notes.append("distributed plan ignored (single GPU, ZeRO 0)")

    dtype = plan.get("dtype", "bf16")
    dc = DtypeConfig(name="w16a16e16", weight_bits=16, activation_bits=16, embedding_bits=16)
    if dtype in ("bf16", "fp16"):
        param_bytes = 2  # pure 16-bit: grads and optimizer states in the parameter dtype
    elif dtype in ("amp-bf16", "amp-fp16"):
        param_bytes = 4  # its mixed precision: fp32 master weights and gradients
    else:
        return None, f"dtype={dtype}: llm-analysis only models 4/8/16-bit weights and activations", notes, {}

    optim = plan.get("optim", "adamw_torch")
    if optim in ADAM or optim.startswith("adamw_torch"):
        other_op = 2 * param_bytes
    elif optim in ("sgd", "adafactor"):
        other_op = 0
    else:
        return None, f"optim={optim} not mapped", notes, {}

    seq = int(plan["max_length"])
    batch = int(plan["per_device_train_batch_size"])
    mc, gated = _model_config(case["config"], case.get("num_layers"), seq)
    gpu = get_gpu_config_by_name("h100-sxm-80gb")
    analysis = LLMAnalysis(mc, gpu, dc, ParallelismConfig(tp_size=1, pp_size=1, dp_size=1))
    s = analysis.training(
        batch_size_per_gpu=batch,
        gradient_accumulation_steps=int(plan.get("gradient_accumulation_steps") or 1),
        seq_len=seq,
        activation_recomputation=(
            ActivationRecomputation.FULL if plan.get("gradient_checkpointing") else ActivationRecomputation.NONE
        ),
        ds_zero=DSZeRO.NONE,
        master_weights_dtype_bytes=param_bytes,
        other_op_bytes=other_op,
        flash_attn=plan.get("attn_implementation", "sdpa") != "eager",
        mlp_gated_linear_units=gated,
    )
    total = s["(weight+op_state+grad+act)_memory_per_gpu"]
    parts = {k: s[k] for k in (
        "weight_memory_per_gpu", "gradient_memory_per_gpu", "optimizer_state_memory_per_gpu",
        "activation_memory_per_gpu", "activation_memory_embedding_output_per_gpu", "num_params_total",
    )}
    summed = sum(parts[k] for k in ("weight_memory_per_gpu", "gradient_memory_per_gpu",
                                     "optimizer_state_memory_per_gpu", "activation_memory_per_gpu"))
    assert abs(summed - total) <= 1e-6 * max(total, 1), (summed, total)
    return int(round(total)), None, notes, {k: int(round(v)) for k, v in parts.items()}


def main() -> int:
    logging.getLogger("__name__").setLevel(logging.ERROR)  # llm-analysis' logger (stderr)
    cases = json.load(sys.stdin)
    out: dict[str, Any] = {}
    errors: dict[str, str] = {}
    notes: dict[str, list[str]] = {}
    breakdown: dict[str, dict[str, int]] = {}
    for case in cases:
        key = case["key"]
        try:
            peak, err, nts, parts = estimate_case(case)
        except Exception as exc:  # noqa: BLE001 - report per case, keep going
            peak, err, nts, parts = None, f"{type(exc).__name__}: {exc}", [], {}
        out[key] = peak
        if err:
            errors[key] = err
        if nts:
            notes[key] = nts
        if parts:
            breakdown[key] = parts
    out["error"] = errors
    out["notes"] = notes
    out["breakdown"] = breakdown
    json.dump(out, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
