"""Architecture facts that change activation memory but not parameter counts
(the Rust ``Hints`` in rust/src/shape.rs). Filled for every family in one place."""

from __future__ import annotations

from typing import Any

from forge_advisor.shapes.config import ConfigReader

__all__ = ["hints_for"]

# Per-head RMSNorm on q and k before rotary (modeling_qwen3.py `q_norm`/`k_norm`, Gemma 3, OLMo 2)
_QK_NORM = {"qwen3", "qwen3_moe", "gemma3", "gemma3_text", "olmo2"}
# transformers 5 runs these with eager attention whatever is asked (Gemma 2 soft-caps scores)
_EAGER_ONLY = {"gemma2"}
# routers whose top-k weights reach the experts in fp32 in a half model, so the experts'
# combine (integrations/moe.py `proj_out * sample_weights_g`) runs in fp32: Mixtral
# (`softmax(router_logits.float())`), DeepSeek-V2 (`softmax(dim=-1, dtype=torch.float32)`),
# AfMoE (`self.gate(hidden_states).to(torch.float32)`), GLM-4-MoE (fp32 gate); Gemma 4 sets it
# in its own parser. Qwen2/3-MoE, OLMoE, gpt-oss and LFM2-MoE cast them back to half
# (tests/test_moe_combine.py checks each on the real modules)
_FP32_ROUTING_WEIGHTS = {"mixtral", "deepseek_v2", "afmoe", "glm4_moe"}
# config fields holding dropout probabilities, by what they drop
_HIDDEN_DROPOUT = ("resid_pdrop", "hidden_dropout", "dropout", "dropout_rate", "hidden_dropout_prob", "residual_dropout")
_ATTN_DROPOUT = ("attention_dropout", "attn_pdrop", "attention_probs_dropout_prob")


def _prob(c: ConfigReader, names: tuple[str, ...]) -> float:
    for name in names:
        value = c.data.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value < 1.0:
            return float(value)
    return 0.0


def hints_for(c: ConfigReader, model_type: str) -> dict[str, Any]:
    hints: dict[str, Any] = {
        "hidden_dropout": _prob(c, _HIDDEN_DROPOUT),
        "attention_dropout": _prob(c, _ATTN_DROPOUT),
    }
    if model_type in _QK_NORM:
        hints["qk_norm"] = True
    if model_type.startswith("gemma"):
        hints["norm_fp32_weight"] = True  # GemmaRMSNorm: x.float() * (1 + w.float())
    if c.data.get("final_logit_softcapping"):
        hints["final_logit_softcapping"] = True
    if c.data.get("attn_logit_softcapping"):
        hints["attn_logit_softcapping"] = True
    if model_type in _EAGER_ONLY:
        hints["eager_only"] = True
    if c.data.get("output_router_logits") is True:
        # the MoE forward records every router's logits for the load-balancing loss
        # (OutputRecorder(…TopKRouter, index=0)): kept until the loss, their grads until backward
        hints["router_logits_kept"] = True
    if model_type in _FP32_ROUTING_WEIGHTS:
        hints["moe_fp32_combine"] = True
    return hints
