"""Layer freezing: exactly the expected layers, trainable counts by hand."""

from __future__ import annotations

import pytest
import torch

from forge_advisor.errors import ForgeError
from forge_advisor.train.freezing import count_parameters, find_layer_list, frozen_layer_count, setup_lp_lora_style

H, I, V, L = 32, 64, 100, 4  # hidden, intermediate, vocab, layers; 4 heads of 8, 2 kv heads


def llama(tied: bool = False):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=H, intermediate_size=I, num_hidden_layers=L, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=V, tie_word_embeddings=tied)
    return LlamaForCausalLM(cfg)


def test_floor_arithmetic():
    assert frozen_layer_count(0.5, 3) == 1  # floor(1.5)
    assert frozen_layer_count(0.29, 100) == 29  # 28.999999999999996 rounds first
    assert frozen_layer_count(0.0, 32) == 0


@pytest.mark.parametrize(("ratio", "frozen"), [(0.25, 1), (0.5, 2), (0.74, 2), (0.75, 3)])
def test_lora_freeze_counts(ratio, frozen):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(llama(), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    report = setup_lp_lora_style(model, ratio)
    assert report.frozen_layers == tuple(range(frozen)) and report.num_layers == L
    # per layer: q 4·(32+32) = 256, v 4·(32+16) = 192 (v_proj 32 -> 2 kv heads × 8 = 16)
    per_layer = 4 * (H + H) + 4 * (H + 16)
    assert report.trainable_parameters == per_layer * (L - frozen)
    for i, layer in enumerate(find_layer_list(model)[1]):
        assert all(p.requires_grad == (i >= frozen) for n, p in layer.named_parameters() if "lora_" in n)


def test_full_finetune_freeze_counts():
    model = llama()
    _, total = count_parameters(model)
    report = setup_lp_lora_style(model, 0.5)
    # per layer: attention 32·32 + 32·16 + 32·16 + 32·32 = 3,072; MLP 3·32·64 = 6,144; norms 64
    per_layer = 3072 + 6144 + 64
    assert report.trainable_parameters == total - V * H - 2 * per_layer
    assert report.embeddings_frozen and not report.head_tied
    assert model.lm_head.weight.requires_grad


def test_tied_head_freezes_with_embeddings():
    model = llama(tied=True)
    report = setup_lp_lora_style(model, 0.25)
    assert report.head_tied and not model.lm_head.weight.requires_grad


def test_generic_architecture_gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=4, n_head=4, vocab_size=V, n_positions=64))
    name, layers = find_layer_list(model)
    assert name == "transformer.h" and len(layers) == 4
    report = setup_lp_lora_style(model, 0.5)
    assert report.frozen_layers == (0, 1)
    assert not any(p.requires_grad for p in model.transformer.h[1].parameters())
    assert all(p.requires_grad for p in model.transformer.h[2].parameters())


def test_bad_ratio():
    with pytest.raises(ForgeError, match=r"freeze_ratio=1.2 is out of range"):
        setup_lp_lora_style(llama(), 1.2)
