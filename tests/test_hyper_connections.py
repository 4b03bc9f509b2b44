"""Hyper-connections (HY-V4): the activation rule against what autograd really keeps.

The fake-tensor harness cannot build HY-V4 (its `HYV4HyperConnection(config).to(float32)`
swaps parameters, which fake tensors refuse), so the independent source here is the real
transformers module run on CPU under `torch.autograd.graph.saved_tensors_hooks`: the bytes
of every tensor saved for backward, parameters aside, per token. The estimator must add
exactly that, twice per layer (attention and FFN connections), to what each layer keeps.
"""

from __future__ import annotations

import dataclasses

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from benches.arch_sweep import small_config  # noqa: E402
from forge_advisor.estimate import estimate  # noqa: E402
from forge_advisor.plan import Plan  # noqa: E402
from forge_advisor.shapes.registry import build_shape  # noqa: E402


def saved_bytes_per_token(hidden: int, streams: int, tokens: int) -> float:
    from transformers.models.hy_v4 import modeling_hy_v4 as hy

    cfg = transformers.AutoConfig.for_model("hy_v4", hidden_size=hidden, hc_mult=streams, num_hidden_layers=1)
    hc = hy.HYV4HyperConnection(cfg)
    x = torch.randn(1, tokens, streams, hidden, dtype=torch.bfloat16, requires_grad=True)
    branch = torch.randn(1, tokens, hidden, dtype=torch.bfloat16, requires_grad=True)
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        post, _ = hc(x)
        # HYV4DecoderLayer.forward: the branch output rejoins the n streams
        (post.float().unsqueeze(-1) * branch.float().unsqueeze(-2) + x.float()).to(torch.bfloat16)
    params = {p.untyped_storage().data_ptr() for p in hc.parameters()}
    return sum(v for k, v in saved.items() if k not in params) / tokens


def test_hyper_connection_rule_is_what_autograd_keeps() -> None:
    config = small_config("hy_v4")
    shape = build_shape(config, "hy_v4")
    n = shape.hints["hyper_connection_streams"]
    assert n == config["hc_mult"] == 4
    tokens = 256  # long enough that the top layer's backward is the peak with and without the streams
    measured = saved_bytes_per_token(shape.hidden_size, n, 16)
    plan = Plan(gradient_checkpointing=False, max_length=tokens, per_device_train_batch_size=1, lora_r=1)
    # the indexer off: its forward moment (wq_b's 16 x 128 query per token, activations.rs
    # indexer_call_held) out-weighs this 64-wide toy layer, and the rule is compared at the
    # top layer's backward, where every layer's saved bytes are alive
    shape = dataclasses.replace(shape, hints={**shape.hints, "dsa_indexer_heads": 0})
    with_hc = estimate(shape, plan).raw
    without = estimate(dataclasses.replace(shape, hints={**shape.hints, "hyper_connection_streams": 0}), plan).raw
    # the top layer's backward: every layer's saved bytes alive (plus buffers, which differ)
    assert with_hc["peak_phase"] == without["peak_phase"] == "layer_backward"
    added = with_hc["breakdown"]["activations"] - without["breakdown"]["activations"]
    assert added == 2 * shape.num_hidden_layers * tokens * measured
