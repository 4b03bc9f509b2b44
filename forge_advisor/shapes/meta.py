"""Fallback for architectures without a built-in parser: instantiate the model with
transformers on the meta device (no memory, no weights) and read the inventory from
the real module tree. Needs the ``[train]`` extra; never runs remote code.

How the tree becomes a :class:`ModelShape`:

* the layer stacks are the ``nn.ModuleList``s of repeated blocks; for a decoder-only
  model the one holding the most parameters is the decoder (a vision tower's layers, if
  any, become one ``other`` tensor group); for an encoder-decoder, the lists under the
  ``encoder`` and ``decoder`` submodules;
* inside a layer every ``nn.Linear`` (or transformers' ``Conv1D``) is a :class:`Linear`
  with its real name, shape and bias; 3-D parameters (fused experts, ``[E, out, in]``)
  are ``Linear(count=E, lora_targetable=False)``; everything else is
  ``other_parameters``; identical layers share a :class:`LayerType`;
* outside the layers each parameter is a :class:`Param`, counted once:
  ``model.named_parameters()`` already drops tied duplicates (torch ``remove_duplicate``).

The result counts exactly ``sum(p.numel() for p in model.parameters())``.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator
from typing import Any

from forge_advisor.errors import ForgeError
from forge_advisor.shapes.config import ConfigReader
from forge_advisor.shapes.model import LayerType, Linear, ModelShape, Param
from forge_advisor.shapes.registry import UnsupportedArchitecture

__all__ = ["shape_from_meta", "shape_from_module"]

# Meta instantiation builds one Python module per layer: refuse depths no real model has
# before spending seconds on them (the deepest published transformer has < 200 layers).
MAX_META_LAYERS = 1024
_LAYER_FIELDS = ("num_hidden_layers", "num_layers", "n_layer", "num_decoder_layers", "num_encoder_layers", "n_layers")


def shape_from_meta(config: dict[str, Any], name: str, reason: ForgeError) -> ModelShape:
    """Count ``config`` by instantiating it on the meta device; ``reason`` is re-raised
    when torch/transformers are missing or transformers does not know the model type."""
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        raise reason from None
    model_type = config.get("model_type")
    source = reason.source if isinstance(reason, UnsupportedArchitecture) else name
    _check_sizes(config, source)
    model = _instantiate(config, str(model_type), source, reason)
    shape = shape_from_module(model, name, str(model_type), source)
    from forge_advisor.shapes.hints import hints_for  # the same activation facts as parsed shapes

    object.__setattr__(shape, "hints", hints_for(ConfigReader(config, source), str(model_type)))
    return shape


def _check_sizes(config: dict[str, Any], source: str) -> None:
    readers = [ConfigReader(config, source)]
    for sub in ("text_config", "vision_config", "audio_config", "encoder", "decoder"):
        if isinstance(config.get(sub), dict):
            readers.append(ConfigReader(config[sub], f"{source} [{sub}]"))
    for r in readers:
        for f in _LAYER_FIELDS:
            if f in r.data:
                r.int(f, minimum=0, maximum=MAX_META_LAYERS)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """No output while transformers builds the model (its loggers and warnings)."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        hf_logging.set_verbosity(level)


def _causal_or_image_text(cfg: Any) -> Any:
    """``AutoModelForCausalLM``, or for a vision-language config it does not map (Qwen2-VL,
    LLaVA, SmolVLM…) ``AutoModelForImageTextToText``: what the training runtime loads."""
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING, MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING

    if type(cfg) not in MODEL_FOR_CAUSAL_LM_MAPPING and type(cfg) in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING:
        return AutoModelForImageTextToText
    return AutoModelForCausalLM


def _instantiate(config: dict[str, Any], model_type: str, source: str, reason: ForgeError) -> Any:
    import torch
    import transformers
    from transformers import AutoConfig, AutoModelForSeq2SeqLM
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if model_type not in CONFIG_MAPPING:
        if config.get("auto_map"):
            raise ForgeError(
                f"{source}: model_type '{model_type}' exists only as remote code (auto_map in config.json), which "
                f"forge-advisor never executes, and transformers {transformers.__version__} has no built-in class for it"
            )
        raise ForgeError(
            f"{source}: model_type '{model_type}' is unknown to forge-advisor and to transformers {transformers.__version__}"
        )
    fields = {k: v for k, v in config.items() if k not in ("model_type", "auto_map")}
    try:
        with _quiet():
            cfg = AutoConfig.for_model(model_type, **fields)
            seq2seq = bool(getattr(cfg, "is_encoder_decoder", False))
            auto = AutoModelForSeq2SeqLM if seq2seq else _causal_or_image_text(cfg)
            with torch.device("meta"):
                return auto.from_config(cfg, trust_remote_code=False)
    except ForgeError:
        raise
    except Exception as exc:  # transformers' own validation: one line, no traceback
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise ForgeError(
            f"{source}: transformers {transformers.__version__} cannot build model_type '{model_type}' "
            f"from this config ({type(exc).__name__}: {first})"
        ) from None


# -- the module tree walk ---------------------------------------------------------------


def _is_linear(module: Any) -> tuple[int, int, bool] | None:
    import torch.nn as nn

    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features, module.bias is not None
    if type(module).__name__ == "Conv1D" and hasattr(module, "nf"):  # transformers.pytorch_utils.Conv1D
        w = module.weight
        return int(w.shape[0]), int(w.shape[1]), module.bias is not None
    return None


def _role(name: str) -> str:
    low = name.lower()
    if low.endswith("shared_expert_gate"):
        return "router"
    if "shared_expert" in low:
        return "shared_expert"
    if "experts" in low:
        return "expert"
    if "router" in low or low.endswith("shared_expert_gate") or low.endswith("mlp.gate") or low.endswith("moe.gate"):
        return "router"
    if "attn" in low or "attention" in low or "encdec" in low:
        return "attention"
    return "mlp"


def _layer_inventory(layer: Any) -> tuple[tuple[Linear, ...], int, bool]:
    linears: list[Linear] = []
    covered: set[int] = set()
    rms = False
    for mname, mod in layer.named_modules():
        if "rms" in type(mod).__name__.lower() or type(mod).__name__.endswith("T5LayerNorm"):  # (M)T5LayerNorm is an RMS norm
            rms = True
        shape = _is_linear(mod)
        if shape is not None and mname:
            linears.append(Linear(mname, shape[0], shape[1], shape[2], _role(mname)))  # type: ignore[arg-type]
            covered.update(id(p) for p in mod.parameters(recurse=False))
        elif "router" in type(mod).__name__.lower() and getattr(getattr(mod, "weight", None), "dim", lambda: 0)() == 2:
            # transformers 5 MoE routers (MixtralTopKRouter...): weight [E, H], not an nn.Linear
            w = mod.weight
            bias = getattr(mod, "bias", None)
            has_bias = bias is not None and getattr(bias, "dim", lambda: 0)() == 1
            linears.append(Linear(mname, int(w.shape[1]), int(w.shape[0]), has_bias, "router", lora_targetable=False))
            covered.update(id(p) for p in ((w, bias) if has_bias else (w,)))
    other = 0
    for pname, p in layer.named_parameters():
        if id(p) in covered:
            continue
        if p.dim() == 3:  # fused experts [E, out, in]
            linears.append(
                Linear(pname, int(p.shape[2]), int(p.shape[1]), False, "expert", count=int(p.shape[0]), lora_targetable=False)
            )
        else:
            other += p.numel()
    return tuple(linears), other, rms


def language_model_of(model: Any) -> Any:
    """A vision-language model's language model (transformers' ``get_decoder()``), whose layers
    are the decoder stack (a vision tower's block list may hold more parameters); else the model."""
    get_encoder = getattr(model, "get_encoder", None)
    get_decoder = getattr(model, "get_decoder", None)
    if get_encoder is None or get_decoder is None:
        return model
    try:
        tower = get_encoder(modality="image")
    except (TypeError, ValueError):
        return model
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if tower is model or tower is base or getattr(base, "base_model", None) is tower:
        return model
    decoder = get_decoder()
    return decoder if decoder is not None and decoder is not base and decoder is not model else model


def _stacks(model: Any) -> list[tuple[str, Any]]:
    """Top-level ``ModuleList``s of at least one block that holds parameters."""
    import torch.nn as nn

    found: list[tuple[str, Any]] = []
    for mname, mod in model.named_modules():
        if not isinstance(mod, nn.ModuleList) or len(mod) == 0:
            continue
        if any(mname.startswith(f + ".") for f, _ in found):
            continue
        if sum(p.numel() for p in mod.parameters()) == 0:
            continue
        found.append((mname, mod))
    return found


def shape_from_module(model: Any, name: str, model_type: str, source: str = "") -> ModelShape:
    """Build a :class:`ModelShape` from an instantiated (meta-device) model."""
    cfg = model.config
    text = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    seq2seq = bool(getattr(cfg, "is_encoder_decoder", False))
    stacks = _stacks(language_model_of(model))
    if not stacks:
        raise ForgeError(f"{source or name}: found no repeated layers in the {type(model).__name__} module tree")
    size = lambda mod: sum(p.numel() for p in mod.parameters())  # noqa: E731
    chosen: list[tuple[str, str, Any]] = []
    if seq2seq:
        for stack in ("encoder", "decoder"):
            cands = [(n, m) for n, m in stacks if stack in n.split(".")]
            if cands:
                n, m = max(cands, key=lambda nm: size(nm[1]))
                chosen.append((stack, n, m))
    if not any(s == "decoder" for s, _, _ in chosen):
        n, m = max(stacks, key=lambda nm: size(nm[1]))
        chosen = [c for c in chosen if c[1] != n] + [("decoder", n, m)]
        chosen.sort(key=lambda c: c[0] != "encoder")

    layer_types: list[LayerType] = []
    layers: list[int] = []
    in_layers: set[int] = set()
    rms = False
    for stack, _, mlist in chosen:
        for block in mlist:
            linears, other, is_rms = _layer_inventory(block)
            rms = rms or is_rms
            cross = stack == "decoder" and seq2seq and any(
                k in lin.name.lower() for lin in linears for k in ("encdec", "cross", "encoder_attn")
            )
            lt = LayerType(stack, linears, other_parameters=other, moe=any(lin.role == "expert" for lin in linears), cross_attention=cross)  # type: ignore[arg-type]
            if lt not in layer_types:
                layer_types.append(lt)
            layers.append(layer_types.index(lt))
            in_layers.update(id(p) for p in block.parameters())

    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    emb_w = getattr(emb, "weight", None)
    out_w = getattr(out, "weight", None)
    params: list[Param] = []
    for pname, p in model.named_parameters():  # tied tensors appear once
        if id(p) in in_layers:
            continue
        low = pname.lower()
        if emb_w is not None and p is emb_w:
            role = "embedding"
        elif out_w is not None and p is out_w or low.startswith("lm_head"):
            role = "lm_head"
        elif "position" in low or low.endswith("wpe.weight"):
            role = "position"
        elif "norm" in low or ".ln_" in low or low.startswith("ln_"):
            role = "norm"
        else:
            role = "other"
        params.append(Param(pname, p.numel(), role))  # type: ignore[arg-type]

    def cfg_int(*names: str, default: int) -> int:
        for n in names:
            v = getattr(text, n, None)
            if isinstance(v, int) and not isinstance(v, bool) and v > 0:
                return v
        return default

    dec_linears = [lin for lt in layer_types if lt.stack == "decoder" for lin in lt.linears]
    hidden = cfg_int("hidden_size", "d_model", "n_embd", default=int(emb_w.shape[-1]) if emb_w is not None else 1)
    heads = cfg_int("num_attention_heads", "num_heads", "n_head", default=1)
    kv = cfg_int("num_key_value_heads", "num_kv_heads", default=heads)
    if heads % kv:
        kv = heads
    mlp = [lin for lin in dec_linears if lin.role in ("mlp", "shared_expert")]
    inter = cfg_int("intermediate_size", "ffn_dim", "d_ff", "n_inner", default=max((lin.out_features for lin in mlp), default=4 * hidden))
    n_experts = cfg_int("num_experts", "num_local_experts", "n_routed_experts", default=0) if any(lt.moe for lt in layer_types) else 0
    top_k = min(cfg_int("num_experts_per_tok", "top_k", default=0), n_experts)
    names = {lin.leaf for lin in dec_linears}
    n_dec = sum(1 for i in layers if layer_types[i].stack == "decoder")
    n_enc = len(layers) - n_dec
    act = getattr(text, "hidden_act", None) or getattr(text, "hidden_activation", None) or getattr(text, "activation_function", None)
    return ModelShape(
        name=name,
        model_type=model_type,
        hidden_size=hidden,
        num_hidden_layers=n_dec,
        num_encoder_layers=n_enc,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        head_dim=cfg_int("head_dim", "d_kv", default=max(hidden // heads, 1)),
        intermediate_size=inter,
        vocab_size=cfg_int("vocab_size", default=int(emb_w.shape[0]) if emb_w is not None else 1),
        tie_word_embeddings=emb_w is not None and out_w is not None and emb_w is out_w,
        norm="rms_norm" if rms else "layer_norm",
        gated_mlp=bool(names & {"gate_proj", "gate_up_proj", "wi_0", "w1", "w3", "fc1_g"}),
        layer_types=tuple(layer_types),
        layers=tuple(layers),
        params=tuple(params),
        num_experts=n_experts,
        num_experts_per_tok=top_k,
        moe_intermediate_size=cfg_int("moe_intermediate_size", default=0) if n_experts else 0,
        is_encoder_decoder=seq2seq,
        parallel_attn=bool(getattr(text, "parallel_attn", False) or getattr(text, "use_parallel_residual", False)),
        hidden_act=str(act) if act else "silu",
        # T5-style relative position buckets have no position table: no hard length limit
        # (their config's n_positions is only the pre-training length)
        max_position_embeddings=None if getattr(text, "relative_attention_num_buckets", None)
        else cfg_int("max_position_embeddings", "n_positions", default=0) or None,
        torch_dtype=str(getattr(cfg, "dtype", "") or "").replace("torch.", "") or None,
        architectures=tuple(getattr(cfg, "architectures", None) or ()),
    )
