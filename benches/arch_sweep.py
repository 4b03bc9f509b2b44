"""The architecture sweep: every causal-LM model type transformers ships, against the
torch-free parser.

For each ``model_type`` in ``MODEL_FOR_CAUSAL_LM_MAPPING_NAMES`` (transformers 5), the
default config (``CONFIG_MAPPING[model_type]()``) is shrunk to 2 layers, or one period of
its layer pattern (:func:`new_depth`), and small sizes (:func:`shrink`), instantiated with ``AutoModelForCausalLM.from_config`` on the meta device,
and parsed by ``forge_advisor.shapes`` without torch (the meta fallback is not used). The
result is one of:

* ``exact``: same total ``sum(p.numel())``, same per-layer counts, same ``nn.Linear``
  inventory (name, in, out, bias) in every layer, same fused expert tensors;
* ``unsupported: <reason>``: the parser refuses with the mechanism it does not model
  (forge_advisor/shapes/unsupported.py); the advisor then offers the meta fallback;
* ``mismatch: ...``: a parser bug (tests/test_arch_sweep.py fails on any);
* ``not buildable: ...``: transformers itself cannot build the shrunk default config.

    python -m benches.arch_sweep          # writes benches/results/arch_sweep.{md,json}
"""

from __future__ import annotations

import contextlib
import io
import math
import platform
import sys
import time
import warnings
from collections.abc import Iterator
from typing import Any

from benches.results_io import write_results

# fields holding a depth, and small values for the sizes (chosen so that every head and
# expert count divides what it must)
LAYER_FIELDS = (
    "num_hidden_layers", "num_layers", "n_layer", "n_layers", "num_decoder_layers", "num_encoder_layers",
    "decoder_layers", "encoder_layers",
)
SMALL = {
    "hidden_size": 64, "n_embd": 64, "d_model": 64, "intermediate_size": 96, "ffn_dim": 96, "n_inner": 96, "d_ff": 96,
    "moe_intermediate_size": 32, "shared_expert_intermediate_size": 48, "intermediate_size_mlp": 80,
    "num_attention_heads": 4, "n_head": 4, "num_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
    "num_local_experts": 4, "num_experts": 4, "n_routed_experts": 4, "num_experts_per_tok": 2, "num_experts_per_token": 2,
    "q_lora_rank": 32, "kv_lora_rank": 16, "qk_rope_head_dim": 8, "qk_nope_head_dim": 8, "v_head_dim": 16,
    "n_group": 1, "topk_group": 1, "encoder_ffn_dim": 96, "decoder_ffn_dim": 96,
    "encoder_attention_heads": 4, "decoder_attention_heads": 4, "first_k_dense_replace": 1,
    "hidden_size_per_layer_input": 16,
}
LAYERS = 2
VOCAB = 256
# Mamba-2 configs validate heads × head_dim == expand × hidden_size
# (configuration_mamba2.py / configuration_bamba.py / configuration_granitemoehybrid.py
# `validate_architecture`): shrinking hidden_size alone breaks it, so these set the head
# count that matches the shrunk sizes (2 × 64 = 2 × 64; mamba2: 8 × 16 = 2 × 64)
CONSISTENT = {
    "mamba2": {"num_heads": 8},
    # Lfm2MoeConfig's default leaves layer_types None, which Lfm2MoeDecoderLayer indexes
    # (modeling_lfm2_moe.py `config.layer_types[layer_idx]`); a published config.json lists
    # "conv" / "full_attention" per layer. One dense layer, then experts (num_dense_layers)
    # Zamba ties every hybrid layer's shared block to the first one, and its tie pattern
    # must match a second block (modeling_zamba.py `_tied_weights_keys`): three layers, two
    # invocations of one shared block around a Mamba layer
    "zamba": {"num_hidden_layers": 3, "layers_block_type": ["hybrid", "linear_attention", "hybrid"]},
    "zamba2": {"num_hidden_layers": 3, "layers_block_type": ["hybrid", "linear_attention", "hybrid"], "hybrid_layer_ids": [0, 2]},
    "lfm2_moe": {"layer_types": ["conv", "full_attention"], "num_dense_layers": 1},
    "bamba": {"mamba_n_heads": 2},
    "granitemoehybrid": {"mamba_n_heads": 2},
}


def new_depth(config: dict[str, Any], depth: int | None, cover: bool = True) -> int:
    """The shrunk depth: ``LAYERS``, or as many as the first layer of every kind in
    ``layer_types`` needs (one period of the pattern: Gemma 3/4's 5 sliding + 1 full
    layers), doubled where the last ``num_kv_shared_layers`` reuse an earlier layer's K/V
    (Gemma 3n/4: ``kv_sharing_modes`` requires a producer of every kind before the
    consumers); never deeper than the default."""
    n = LAYERS
    types = config.get("layer_types")
    if cover and isinstance(types, list) and types and all(isinstance(t, str) for t in types):
        first = max(types.index(t) for t in set(types)) + 1
        # the pattern's period where it has one within twice that (Dory's released layout
        # lists attention and MLP blocks in pairs: 8 = s, mlp, s, mlp, s, mlp, full, mlp)
        period = next((p for p in range(first, 2 * first + 1) if all(t == types[i % p] for i, t in enumerate(types))), first)
        n = max(n, period)
    if isinstance(config.get("num_kv_shared_layers"), int) and config["num_kv_shared_layers"] > 0:
        n *= 2
    return min(n, depth) if depth else n


def _overrides(over: dict[str, Any], base: dict[str, Any], small: dict[str, Any]) -> dict[str, Any]:
    """One layer's ``per_layer_config`` overrides at the shrunk sizes, in the default's ratio
    to the base value (Gemma 4's full-attention head_dim 512 over 256: 32 over 16)."""
    out = {}
    for k, v in over.items():
        b, s = base.get(k), small.get(k)
        if k == "num_key_value_heads" and v == over.get("num_attention_heads") and "num_attention_heads" in small:
            out[k] = _overrides({"num_attention_heads": v}, base, small)["num_attention_heads"]  # MLA: equal, as above
        elif k in SMALL and all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in (v, b, s)):
            out[k] = max(1, s * v // b)
        else:
            out[k] = v
    # MLA's head width is its no-rope plus rope parts (dots3_note validates "SWA head_dim must
    # equal qk_nope_head_dim + qk_rope_head_dim"): kept so where the default has it
    dims = ("head_dim", "qk_nope_head_dim", "qk_rope_head_dim")
    full, shrunk = {**base, **over}, {**small, **out}
    if all(isinstance(full.get(k), int) and isinstance(shrunk.get(k), int) for k in dims) and "qk_nope_head_dim" in out:
        if full["head_dim"] == full["qk_nope_head_dim"] + full["qk_rope_head_dim"]:
            out["qk_nope_head_dim"] = shrunk["head_dim"] - shrunk["qk_rope_head_dim"]
    return out


def shrink(config: dict[str, Any], cover: bool = True) -> dict[str, Any]:
    """A small version of a config dict: ``LAYERS`` layers (or one period of the layer
    pattern, :func:`new_depth`), ``SMALL`` sizes (never larger than the default), per-layer
    lists and ``per_layer_config`` cut to the new depth, nested ``*_config`` shrunk."""
    depth = next((config[k] for k in LAYER_FIELDS if isinstance(config.get(k), int)), None)
    layers = new_depth(config, depth, cover)
    out = dict(config)
    for k, v in config.items():
        if k == "per_layer_config" and isinstance(v, dict):
            continue  # after the sizes it scales with
        if isinstance(v, dict) and k.endswith("config"):
            out[k] = shrink(v, cover)
        elif k in LAYER_FIELDS and isinstance(v, int):
            out[k] = min(v, layers)
        elif k in SMALL and isinstance(v, int) and not isinstance(v, bool):
            out[k] = min(v, SMALL[k]) if v > 0 else v
        elif k in ("vocab_size", "vocab_size_per_layer_input") and isinstance(v, int):
            out[k] = min(v, VOCAB)
        elif isinstance(v, list) and depth and len(v) == depth:
            out[k] = cut_layers(v, layers) if cover else v[:layers]
        elif isinstance(v, dict) and v and all(str(x).isdigit() for x in v):
            out[k] = {x: y for x, y in v.items() if int(x) < layers}
    if isinstance(config.get("per_layer_config"), dict):
        # (transformers: "`per_layer_config` keys must be integer layer indices in the range [0, depth)")
        out["per_layer_config"] = {x: _overrides(y, config, out) for x, y in config["per_layer_config"].items()
                                   if str(x).isdigit() and int(x) < layers and isinstance(y, dict)}
    if "kv_lora_rank" in config and config.get("num_key_value_heads") == config.get("num_attention_heads"):
        # multi-head latent attention has no key/value heads of its own: configs that
        # validate it (dots3_note: "num_key_value_heads must match num_attention_heads") keep them equal
        out["num_key_value_heads"] = out.get("num_attention_heads")
    parts = [k for k, v in config.items() if k.startswith("n_") and k.endswith("_layers") and isinstance(v, int)]
    if depth and len(parts) > 1 and sum(config[k] for k in parts) == depth:
        # a depth split into stages that must sum to it (Dory: n_input + n_recurrent + n_output
        # layers = num_hidden_layers): each stage its share, the remainder to the largest
        unit = math.gcd(2, depth, *(config[k] for k in parts))  # 2: a layout of paired blocks stays paired
        for k in parts:
            out[k] = max(unit, layers * config[k] // depth // unit * unit)
        out[max(parts, key=config.__getitem__)] += layers - sum(out[k] for k in parts)
    if isinstance(config.get("num_kv_shared_layers"), int) and config["num_kv_shared_layers"] > 0:
        # the second half of the layers reuses the first half's K/V (see new_depth)
        out["num_kv_shared_layers"] = layers // 2
    # transformers 5's default configs of ministral, hunyuan_v1_* and nemotron leave
    # head_dim / num_key_value_heads as None, which their own modeling code cannot read
    # (modeling_ministral.py: `getattr(config, "head_dim", hidden // heads)` returns the None;
    # modeling_nemotron.py: `heads // num_key_value_heads`); a published config.json sets
    # them, so the sweep fills in what the modeling falls back to
    heads = out.get("num_attention_heads")
    if isinstance(heads, int) and isinstance(out.get("hidden_size"), int):
        if "head_dim" in out and out["head_dim"] is None:
            out["head_dim"] = out["hidden_size"] // heads
        if "num_key_value_heads" in out and out["num_key_value_heads"] is None:
            out["num_key_value_heads"] = heads
    # dbrx's default attn_config lacks the rope_theta its modeling reads (DBRX's published
    # config.json has attn_config.rope_theta); cohere_compass_text's default rope_parameters
    # is {} where its modeling reads one entry per layer type
    if isinstance(out.get("attn_config"), dict) and "kv_n_heads" in out["attn_config"]:
        out["attn_config"] = {"rope_theta": 10000.0, **out["attn_config"]}
    if out.get("rope_parameters") == {} and isinstance(out.get("layer_types"), list):
        out["rope_parameters"] = {t: {"rope_type": "default", "rope_theta": 10000.0} for t in dict.fromkeys(out["layer_types"])}
    for k, v in list(out.items()):
        if k.endswith("_token_id") and isinstance(v, int) and v >= out.get("vocab_size", 1 << 62):
            out[k] = 1
    return out


def cut_layers(kinds: list[Any], n: int = LAYERS) -> list[Any]:
    """A per-layer list cut to ``n`` entries. A list of layer kinds keeps every kind it
    names: the first layers, their tail replaced by the first layer of each kind they lack
    (OLMo-Hybrid's and Zamba's defaults begin with linear-attention / Mamba layers, and
    configuration_olmo_hybrid.py `validate_architecture` refuses a stack without attention)."""
    head = kinds[:n]
    if not all(isinstance(k, str) for k in kinds):
        return head
    missing = [k for k in dict.fromkeys(kinds) if k not in head][: n - 1]
    return head[: n - len(missing)] + missing


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    import transformers

    level = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        transformers.logging.set_verbosity(level)


def causal_lm_types() -> list[str]:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return sorted(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)


def small_config(model_type: str, cover: bool = True) -> dict[str, Any]:
    """The shrunk default config of ``model_type`` as a plain config.json dict (``cover``:
    one layer of every kind in ``layer_types``, else ``LAYERS``)."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    with quiet():
        raw = CONFIG_MAPPING[model_type]().to_dict()
    cfg = shrink(raw, cover)
    for k in ("transformers_version", "architectures", "_name_or_path"):
        cfg.pop(k, None)
    cfg["model_type"] = model_type
    cfg.update(CONSISTENT.get(model_type, {}))
    if cfg.get("is_encoder_decoder"):
        # the causal LM of a seq2seq type is its decoder alone: <Type>ForCausalLM sets
        # `config.is_encoder_decoder = False` itself (modeling_bart.py BartForCausalLM)
        cfg["is_encoder_decoder"] = False
    return cfg


def meta_model(config: dict[str, Any]) -> Any:
    import torch
    import transformers

    fields = {k: v for k, v in config.items() if k != "model_type"}
    with quiet():
        cfg = transformers.AutoConfig.for_model(config["model_type"], **fields)
        with torch.device("meta"):
            return transformers.AutoModelForCausalLM.from_config(cfg)


def _layer_stack(model: Any, depth: int) -> Any:
    """The ``ModuleList`` of ``depth`` blocks holding the most parameters; where a model keeps
    no block modules but parallel lists (XLM: ``attentions``, ``layer_norm1``, ``ffns``,
    ``layer_norm2``, one entry per layer), layer i is the i-th entry of every such list,
    its modules named ``<list>.<module>``."""
    import torch

    lists = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList) and len(m) == depth]
    if not lists:
        # stacks that together make the depth, in module order (HRM's L_module.layers and
        # H_module.layers, depth/2 each)
        halves = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList) and 2 * len(m) == depth]
        return [*halves[0], *halves[1]] if len(halves) == 2 else None
    # the decoder's, not a vision tower's of the same size (GIT's CLIP image_encoder)
    towers = {id(m) for n, m in model.named_modules() if "image_encoder" in n or "vision" in n}
    largest = max(lists, key=lambda m: (sum(p.numel() for p in m.parameters()), id(m) not in towers))
    parent = next(p for p in model.modules() if any(c is largest for c in p.children()))
    flat = {k: m for k, m in parent.named_children() if isinstance(m, torch.nn.ModuleList) and len(m) == depth}
    if len(flat) > 1:
        return [torch.nn.ModuleDict({k: m[i] for k, m in flat.items()}) for i in range(depth)]
    return largest


def _real_block(block: Any) -> tuple[set[tuple[str, int, int, bool]], set[tuple[str, int]], dict[str, int]]:
    import torch

    linears = set()
    for name, mod in block.named_modules():
        if isinstance(mod, torch.nn.Linear):
            linears.add((name, mod.in_features, mod.out_features, mod.bias is not None))
        elif type(mod).__name__ == "Conv1D":
            linears.add((name, mod.weight.shape[0], mod.weight.shape[1], mod.bias is not None))
    # fused expert tensors are the 3-d parameters outside convolutions (a depthwise
    # nn.Conv1d weight is [channels, 1, kernel]: a mixer's, counted as another parameter)
    convs = {f"{n}.weight" if n else "weight" for n, m in block.named_modules() if isinstance(m, torch.nn.Conv1d)}
    # (a [1, 1, H] parameter is a broadcast vector: RWKV's time_mix_*)
    experts = {(n, p.numel()) for n, p in block.named_parameters() if p.dim() == 3 and n not in convs and p.shape[:2] != (1, 1)}
    return linears, experts, {n: p.numel() for n, p in block.named_parameters()}


def owned_counts(stack: Any) -> list[int]:
    """Per-layer parameter counts, each tensor counted in the first layer that holds it:
    a block tied across layers (Zamba's shared transformer, `_tied_weights_keys`) is one
    set of tensors, as ``model.parameters()`` yields it once; later layers own only
    their own tensors (the sum of the counts is then the layers' share of the total)."""
    seen: set[int] = set()
    counts = []
    for block in stack:
        own = [p for p in block.parameters() if id(p) not in seen]
        seen.update(id(p) for p in own)
        counts.append(sum(p.numel() for p in own))
    return counts


def compare(shape: Any, model: Any) -> str | None:
    """``None`` when the parsed shape is the model exactly, else what differs."""
    golden = sum(p.numel() for p in model.parameters())
    if shape.num_parameters != golden:
        return f"{shape.num_parameters:,} parameters, transformers has {golden:,}"
    stack = _layer_stack(model, shape.num_hidden_layers)
    if stack is None:
        return f"no ModuleList of {shape.num_hidden_layers} layers in the model"
    counts = owned_counts(stack)
    if shape.layer_parameters != counts:
        return f"per-layer counts {shape.layer_parameters} != {counts}"
    for i, block in enumerate(stack):
        lt = shape.layer_types[shape.layers[i]]
        linears, experts, named = _real_block(block)
        ours = {(lin.name, lin.in_features, lin.out_features, lin.bias) for lin in lt.linears if lin.lora_targetable}
        if ours != linears:
            return f"layer {i} linears: ours-only {sorted(ours - linears)}, real-only {sorted(linears - ours)}"
        ours_e = {(lin.name, lin.count * lin.in_features * lin.out_features) for lin in lt.linears if lin.role == "expert"}
        # every 3-d tensor must be one of ours; an expert tensor of ours stored 2-D (DBRX's
        # w1 [E · ffn, H]) must exist under that name with that many elements
        flat = {e for e in ours_e if named.get(e[0]) == e[1]} - experts
        # a 3-d tensor of per-head blocks (RecurrentGemma's RG-LRU gates [heads, w, w]; Inkling's
        # shared experts [S, m, H], S ≥ 1) that we count as `heads` linears of w × w, under its name
        # (Zamba's per-head Mamba `x_proj_weight` [heads, R + 2N, I / heads], one head or more);
        # and Mamba's state matrix `A_log` kept per head ([heads, I / heads, N], Zamba) is no expert
        blocks = {(lin.name, lin.count * lin.in_features * lin.out_features) for lin in lt.linears
                  if lin.role not in ("expert", "router") and not lin.lora_targetable}
        experts = {e for e in experts if not e[0].endswith("A_log")}
        if ours_e != (experts - blocks) | flat:
            return f"layer {i} expert tensors {sorted(ours_e)} != {sorted(experts)}"
    return None


def sweep_one(model_type: str) -> dict[str, Any]:
    from forge_advisor.errors import ForgeError
    from forge_advisor.shapes.registry import UnsupportedArchitecture, build_shape

    t0 = time.perf_counter()
    row: dict[str, Any] = {"model_type": model_type}
    note = ""
    try:
        try:
            config = small_config(model_type)
            model = meta_model(config)
        except Exception as exc:
            # a layer kind the default config cannot build (qwen4_exp's indexed attention:
            # `token_budget` None): the first LAYERS layers, as far as they build
            if small_config(model_type, cover=False) == config:
                raise
            config = small_config(model_type, cover=False)
            model = meta_model(config)
            note = f"{LAYERS} layers: every layer kind does not build ({type(exc).__name__}: {str(exc).strip()[:80]})"
    except Exception as exc:  # transformers cannot build it: outside the sweep's scope
        # (strict configs name the failed validator on the first line and the reason on the next)
        first = " ".join(line.strip() for line in str(exc).strip().splitlines()[:2])[:160]
        row.update(status="not buildable", detail=f"{type(exc).__name__}: {first}")
        return row
    row["parameters"] = sum(p.numel() for p in model.parameters())
    try:
        shape = build_shape(config, model_type)
    except UnsupportedArchitecture as exc:
        row.update(status="unsupported", detail=exc.reason)
    except ForgeError as exc:
        row.update(status="mismatch", detail=f"parser error: {exc}")
    else:
        if shape.vision is not None and type(model).__name__.endswith("ForCausalLM"):
            # the type's causal-LM class is its language model alone (MllamaForCausalLM
            # builds `config.get_text_config()`): compare that part of the shape
            shape = shape.text_only()
        diff = compare(shape, model)
        row.update(status="exact" if diff is None else "mismatch", detail=diff or note)
    row["seconds"] = round(time.perf_counter() - t0, 3)
    return row


def run() -> dict[str, Any]:
    t0 = time.perf_counter()
    rows = [sweep_one(mt) for mt in causal_lm_types()]
    import transformers

    buildable = [r for r in rows if r["status"] != "not buildable"]
    exact = [r for r in buildable if r["status"] == "exact"]
    return {
        "transformers": transformers.__version__,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "python": sys.version.split()[0],
        "seconds": round(time.perf_counter() - t0, 1),
        "types": len(rows),
        "buildable": len(buildable),
        "exact": len(exact),
        "unsupported": sum(r["status"] == "unsupported" for r in rows),
        "mismatch": sum(r["status"] == "mismatch" for r in rows),
        "rows": rows,
    }


def markdown(report: dict[str, Any]) -> str:
    b, e = report["buildable"], report["exact"]
    lines = [
        f"Causal-LM model types in transformers {report['transformers']}: {report['types']}; "
        f"buildable from their shrunk default config: {b}; "
        f"**exact without torch: {e} ({100 * e / max(b, 1):.0f}%)**, unsupported with a reason: {report['unsupported']}, "
        f"mismatches: {report['mismatch']}. Sweep time {report['seconds']} s (`python -m benches.arch_sweep`).",
        "",
        "| model_type | result | parameters (shrunk) | detail |",
        "|---|---|---:|---|",
    ]
    for r in report["rows"]:
        params = f"{r['parameters']:,}" if "parameters" in r else ""
        detail = str(r.get("detail", "")).replace("|", "\\|")
        lines.append(f"| `{r['model_type']}` | {r['status']} | {params} | {detail} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    report = run()
    write_results("arch_sweep", report, markdown(report))


if __name__ == "__main__":
    main()
