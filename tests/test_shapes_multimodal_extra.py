"""The decoders added for the last refused causal-LM types of the architecture sweep
(shapes/families/inkling.py, fuyu.py, hrm.py) with every layer kind present: the sweep's
2-layer default configs see only the first kinds of each pattern (Inkling's full-attention
layer is every 6th, its loop layers start at 6). Golden: the meta-device model transformers
builds from the same config (benches/arch_sweep.py `compare`: total, per-layer counts, the
nn.Linear inventory and the fused expert tensors)."""

from __future__ import annotations

from typing import Any

import pytest

from benches.arch_sweep import compare, meta_model
from forge_advisor.shapes import shape_from_config, supported_model_types

INK = dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=2, head_dim=8, swa_num_attention_heads=2,
           swa_num_key_value_heads=1, swa_head_dim=16, sliding_window_size=16, rel_extent=24, d_rel=4, vocab_size=96,
           moe_intermediate_size=16, n_routed_experts=4, num_experts_per_tok=2, conv_kernel_size=3, bos_token_id=1,
           eos_token_id=2)

CASES: dict[str, dict[str, Any]] = {
    # layer 5 is the full ("hybrid") layer; two dense MLPs first, then the sparse block
    "inkling-full-and-sliding-dense-first": dict(INK, model_type="inkling_text", num_hidden_layers=6, intermediate_size=40,
                                                 n_shared_experts=2, mlp_layer_types=["dense", "dense"] + ["sparse"] * 4),
    "inkling-listed-local-ids": dict(INK, model_type="inkling_text", num_hidden_layers=3, intermediate_size=40,
                                     n_shared_experts=1, local_layer_ids=[1],
                                     layer_types=["hybrid", "hybrid_sliding", "hybrid"]),
    # full layers at 2 and 5 (dynamic k/v convolutions, three block-residual queries)
    "inkling2-blocks-of-3": dict(INK, model_type="inkling2_text", num_hidden_layers=6, n_layers_per_attn_res_block=3,
                                 unpadded_vocab_size=90, layer_types=["hybrid_sliding", "hybrid_sliding", "hybrid"] * 2),
    # loop layers 2..3 (message gates) of 6, both kinds inside and outside the loop
    "inkling2_loop-core": dict(INK, model_type="inkling2_loop_text", num_hidden_layers=6, n_layers_per_attn_res_block=2,
                               unpadded_vocab_size=90, loop_layer_index_start=2, loop_layer_index_end=4, loop_gate_rank=8,
                               layer_types=["hybrid_sliding", "hybrid", "hybrid_sliding", "hybrid"] + ["hybrid_sliding"] * 2),
    # a flat Hub config (text fields at the top level, popped into text_config), tied head
    "fuyu-flat-tied": dict(model_type="fuyu", hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                           vocab_size=128, patch_size=4, num_channels=3, tie_word_embeddings=True),
    "fuyu-text-config-no-qk-norm": dict(model_type="fuyu", patch_size=6, num_channels=1,
                                        text_config=dict(model_type="persimmon", hidden_size=48, intermediate_size=80,
                                                         num_hidden_layers=3, num_attention_heads=4, vocab_size=96,
                                                         qk_layernorm=False)),
    # per-stack depth in num_hidden_layers (no num_layers_per_stack), biases, tied head
    "hrm-per-stack-depth-biased-tied": dict(model_type="hrm_text", hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                                            num_attention_heads=4, head_dim=16, vocab_size=128, attention_bias=True,
                                            mlp_bias=True, tie_word_embeddings=True),
    # a CLIP tower of its own depth and width, temporal embeddings, tied output weight
    "git-tower-frames-tied": dict(model_type="git", hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                                  num_attention_heads=4, vocab_size=128, max_position_embeddings=64, num_image_with_embedding=2,
                                  tie_word_embeddings=True,
                                  vision_config=dict(hidden_size=48, intermediate_size=80, num_hidden_layers=2,
                                                     num_attention_heads=4, image_size=32, patch_size=8)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_layer_kind_matches_meta(name: str) -> None:
    config = dict(CASES[name])
    shape = shape_from_config(dict(config), name)
    assert shape.model_type in supported_model_types()  # parsed, not the meta fallback
    diff = compare(shape, meta_model(config))
    assert diff is None, diff
    if shape.model_type.startswith("inkling"):
        assert len(set(shape.layers)) >= 2  # more than one layer kind was checked


@pytest.mark.parametrize("cycles", [{}, {"H_cycles": 3, "L_cycles": 2, "L_bp_cycles": [5]}, {"H_cycles": 2, "L_cycles": 4, "L_bp_cycles": [3, 0, 2]}])
def test_hrm_passes_are_the_runs_that_record_autograd(cycles: dict[str, Any]) -> None:
    # golden: the real model's forward on CPU, counting each stack's first layer's calls made
    # with autograd on (modeling_hrm_text.py runs early L cycles under torch.no_grad())
    import torch
    import transformers

    config = dict(model_type="hrm_text", hidden_size=32, intermediate_size=48, num_hidden_layers=1, num_attention_heads=2,
                  head_dim=16, vocab_size=64, **cycles)
    shape = shape_from_config(dict(config), "hrm")
    model = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model(**config))
    calls = {"L": 0, "H": 0}
    for stack in calls:
        layer = getattr(model.model, f"{stack}_module").layers[0]
        layer.register_forward_hook(lambda *a, stack=stack: calls.__setitem__(stack, calls[stack] + torch.is_grad_enabled()))
    model(input_ids=torch.randint(0, 64, (1, 8)))
    l_type, h_type = (shape.layer_types[shape.layers[0]], shape.layer_types[shape.layers[-1]])
    assert (l_type.passes, h_type.passes) == (calls["L"], calls["H"])
    assert calls["L"] >= 1 and calls["H"] >= 2


def test_git_is_priced_with_the_attention_its_modeling_offers() -> None:
    # transformers builds GIT's text self-attention only as "eager"
    from transformers.models.git.modeling_git import GIT_SELF_ATTENTION_CLASSES

    shape = shape_from_config(dict(CASES["git-tower-frames-tied"]), "git")
    assert shape.hints["eager_only"] is (set(GIT_SELF_ATTENTION_CLASSES) == {"eager"})


def test_truth_harness_recasts_fake_parameters_a_model_casts_while_it_builds() -> None:
    # modeling_inkling.py casts its short convolutions `.to(dtype=torch.float32)` in __init__;
    # on fake tensors `_apply` would swap them and fail. The harness re-makes them in the new
    # dtype, a tied parameter staying one parameter.
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    from benches.truth.faketensor import _recast_to

    with FakeTensorMode():
        emb = torch.nn.Embedding(8, 4, dtype=torch.bfloat16)
        head = torch.nn.Linear(4, 8, bias=False, dtype=torch.bfloat16)
        head.weight = emb.weight
        model = torch.nn.ModuleDict({"emb": emb, "head": head})
        out = _recast_to(torch.nn.Module.to)(model, dtype=torch.float32)
    assert out is model and model["emb"].weight.dtype == torch.float32
    assert model["head"].weight is model["emb"].weight
