"""Random and broken inputs to the shape parser and to the Rust ``Shape.from_json``.

The only allowed outcomes: a valid shape, or ``ForgeError`` / ``ValueError`` with a
one-line message. Never another exception, never a hang (hypothesis' deadline), never a
huge allocation (absurd sizes are refused before anything is built).
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forge_advisor import _native
from forge_advisor.errors import ForgeError
from forge_advisor.shapes import shape_from_config, supported_model_types
from forge_advisor.shapes.catalog import catalog_models
from forge_advisor.shapes.model import ModelShape

REGISTERED = supported_model_types()
CATALOG_CONFIGS = [dict(m.config) for m in catalog_models()]
FIELDS = sorted({k for c in CATALOG_CONFIGS for k in c} | {"text_config", "vision_config", "n_inner", "ffn_hidden_size", "num_kv_heads", "head_dim", "word_embed_proj_dim", "num_ln_in_parallel_attn", "mlp_only_layers", "add_cross_attention"})
SIZE_FIELDS = [
    "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "intermediate_size", "vocab_size",
    "head_dim", "n_embd", "n_layer", "n_head", "d_model", "d_ff", "d_kv", "num_layers", "num_heads", "ffn_dim",
    "num_experts", "num_local_experts", "num_experts_per_tok", "moe_intermediate_size", "max_position_embeddings",
]

BAD_SCALARS = st.one_of(
    st.integers(min_value=-(10**18), max_value=10**18),
    st.sampled_from([0, -1, 1, 2, 3, 10**12, 10**15, 2**63, 2**64 + 1, 10**40]),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.lists(st.integers(min_value=-3, max_value=50), max_size=4),
    st.dictionaries(st.sampled_from(["hidden_size", "num_hidden_layers", "model_type"]), st.integers(-5, 100), max_size=3),
)


def check_outcome(fn: Any, *args: Any) -> Any:
    try:
        result = fn(*args)
    except (ForgeError, ValueError) as exc:
        msg = str(exc)
        assert msg and "\n" not in msg, f"multi-line error: {msg!r}"
        return None
    return result


def assert_valid(shape: ModelShape | None) -> None:
    if shape is None:
        return
    assert isinstance(shape, ModelShape)
    n = shape.num_parameters
    assert isinstance(n, int) and 0 < n <= 10**13
    assert shape.active_parameters <= n
    assert len(shape.layers) == shape.num_hidden_layers + shape.num_encoder_layers


def parse(config: dict[str, Any]) -> ModelShape:
    return shape_from_config(config, "fuzz")


# a generous deadline still catches a hang without flaking on a loaded 2-core machine
COMMON = settings(max_examples=300, deadline=10_000, suppress_health_check=[HealthCheck.too_slow])


@COMMON
@given(base=st.sampled_from(CATALOG_CONFIGS), field=st.sampled_from(FIELDS), value=BAD_SCALARS)
def test_one_broken_field_in_a_real_config(base: dict[str, Any], field: str, value: Any) -> None:
    config = json.loads(json.dumps(base))
    config[field] = value
    assert_valid(check_outcome(parse, config))


@COMMON
@given(base=st.sampled_from(CATALOG_CONFIGS), drop=st.sets(st.sampled_from(FIELDS), max_size=6))
def test_missing_fields(base: dict[str, Any], drop: set[str]) -> None:
    config = {k: v for k, v in base.items() if k not in drop}
    assert_valid(check_outcome(parse, config))


@COMMON
@given(
    model_type=st.sampled_from(REGISTERED),
    sizes=st.dictionaries(st.sampled_from(SIZE_FIELDS), st.one_of(st.integers(-3, 300), st.sampled_from([10**12, 10**15, 0])), max_size=12),
    flags=st.dictionaries(
        st.sampled_from(["tie_word_embeddings", "attention_bias", "mlp_bias", "multi_query", "new_decoder_architecture", "parallel_attn", "qk_layernorm", "enable_bias", "do_layer_norm_before"]),
        st.one_of(st.booleans(), st.integers(-1, 2), st.text(max_size=3)),
        max_size=4,
    ),
)
def test_random_configs_of_registered_types(model_type: str, sizes: dict[str, Any], flags: dict[str, Any]) -> None:
    assert_valid(check_outcome(parse, {"model_type": model_type, **sizes, **flags}))


def test_absurd_depth_is_refused_fast() -> None:
    for mt in REGISTERED:
        config = {"model_type": mt, "hidden_size": 64, "n_embd": 64, "d_model": 64, "num_hidden_layers": 10**12,
                  "n_layer": 10**12, "num_layers": 10**12, "num_attention_heads": 4, "intermediate_size": 64,
                  "vocab_size": 100, "d_kv": 16, "d_ff": 64, "num_heads": 4, "n_head": 4, "ffn_dim": 64,
                  "text_config": {"num_hidden_layers": 10**12}}  # gemma3 reads its depth there
        assert check_outcome(parse, config) is None, mt


def test_non_object_configs() -> None:
    for value in ([], "llama", 3, None, [{"model_type": "llama"}]):
        assert check_outcome(parse, value) is None  # type: ignore[arg-type]


# -- the Rust boundary ----------------------------------------------------------------------------

JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False), st.text(max_size=6)),
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=5)),
    max_leaves=30,
)
VALID_SHAPES = [json.loads(shape_from_config(dict(c), "x").to_json()) for c in CATALOG_CONFIGS[::6]]


def from_json(text: str) -> Any:
    return _native.Shape.from_json(text)


@COMMON
@given(doc=JSON)
def test_from_json_random_documents(doc: Any) -> None:
    check_outcome(from_json, json.dumps(doc))


@COMMON
@given(text=st.text(max_size=200))
def test_from_json_random_text(text: str) -> None:
    check_outcome(from_json, text)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc[:3]):
            out += _paths(v, (*prefix, i))
    return out


@COMMON
@given(data=st.data(), base=st.sampled_from(VALID_SHAPES), value=BAD_SCALARS)
def test_from_json_one_broken_value(data: st.DataObject, base: dict[str, Any], value: Any) -> None:
    doc = json.loads(json.dumps(base))
    path = data.draw(st.sampled_from(_paths(doc)))
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    try:
        text = json.dumps(doc)
    except ValueError:
        return  # e.g. NaN is not JSON
    shape = check_outcome(from_json, text)
    if shape is not None:
        n = shape.num_parameters()
        assert 0 <= n <= 10**13


# -- the meta-device fallback (transformers' own model types without a parser) -----------------

TINY_FALLBACK = {"model_type": "mamba", "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 64}


@settings(max_examples=40, deadline=20_000, suppress_health_check=[HealthCheck.too_slow])
@given(field=st.sampled_from(sorted(TINY_FALLBACK) + ["head_dim", "tie_word_embeddings", "max_position_embeddings"]), value=BAD_SCALARS)
def test_meta_fallback_broken_field(field: str, value: Any) -> None:
    config = dict(TINY_FALLBACK)
    config[field] = value
    assert_valid(check_outcome(parse, config))
