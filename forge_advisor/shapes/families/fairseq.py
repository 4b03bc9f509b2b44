"""fairseq-style decoders that transformers exposes as causal LMs: the decoder half of BART,
mBART, Blenderbot, Marian, MVP, Pegasus, PLBart, BigBird-Pegasus, TrOCR and Whisper
(``<Type>ForCausalLM``: the seq2seq decoder without its encoder), and the decoder-only
XGLM and BioGPT.

One layer (``modeling_bart.py`` ``BartDecoderLayer`` and its copies): ``self_attn.{q,k,v,
out}_proj = Linear(d, d)``, ``self_attn_layer_norm``, then, for the seq2seq decoders,
``encoder_attn.{q,k,v,out}_proj`` and ``encoder_attn_layer_norm`` (built even when no
encoder states are passed), then ``fc1 = Linear(d, ffn)``, ``fc2 = Linear(ffn, d)``,
``final_layer_norm``; every LayerNorm has a bias. Outside the layers: ``embed_tokens``,
a position table (learned, or a sinusoidal table stored as a parameter), optional
``layernorm_embedding`` and final ``layer_norm``; the LM head is tied to the embeddings.

A causal LM never feeds encoder states, so the cross-attention projections hold parameters
(and take LoRA by name) but do no work: they are listed with role ``other`` and the layers
are not marked ``cross_attention``.
"""

from __future__ import annotations

from dataclasses import dataclass

from forge_advisor.shapes.config import ConfigReader
from forge_advisor.shapes.families.common import layer_norm, python_facts
from forge_advisor.shapes.model import LayerType, Linear, ModelShape, Param
from forge_advisor.shapes.registry import UnsupportedArchitecture, register_architecture


@dataclass(frozen=True)
class Fairseq:
    prefix: str = "model.decoder"
    cross: bool | str = True  # or the config flag that adds it (XGLM: add_cross_attention)
    hidden: tuple[str, ...] = ("d_model",)
    ffn: tuple[str, ...] = ("decoder_ffn_dim",)
    layers: tuple[str, ...] = ("decoder_layers",)
    heads: tuple[str, ...] = ("decoder_attention_heads",)
    vocab: tuple[str, ...] = ("vocab_size",)
    # position rows: a config field plus a fixed offset (BART's learned table has 2 extra
    # rows, modeling_bart.py BartLearnedPositionalEmbedding.offset = 2), or None
    positions: tuple[str, int] | None = ("max_position_embeddings", 2)
    positions_default: int = 1024
    embedding_norm: bool | str = False  # layernorm_embedding (or the config flag naming it)
    final_norm: bool = False
    attn_bias: bool | str = True  # bool, or the config field (BigBird-Pegasus: use_bias)
    k_bias: bool = True  # Whisper: k_proj has no bias
    untied_head: bool = False  # BigBird-Pegasus ForCausalLM has no tied-weights key
    seq2seq: bool = True  # the config class defaults to is_encoder_decoder=True


_BART = Fairseq(embedding_norm=True)
SPECS: dict[str, Fairseq] = {
    "bart": _BART,
    "mvp": _BART,
    "plbart": _BART,
    "mbart": Fairseq(embedding_norm=True, final_norm=True),
    "blenderbot": Fairseq(positions=("max_position_embeddings", 0), final_norm=True),
    "blenderbot-small": Fairseq(positions=("max_position_embeddings", 0), embedding_norm=True),
    # MarianSinusoidalPositionalEmbedding / PegasusSinusoidalPositionalEmbedding are
    # nn.Embedding subclasses: their (frozen) tables are parameters
    "marian": Fairseq(positions=("max_position_embeddings", 0), vocab=("decoder_vocab_size", "vocab_size")),
    "pegasus": Fairseq(positions=("max_position_embeddings", 0), final_norm=True),
    "bigbird_pegasus": Fairseq(positions=("max_position_embeddings", 0), embedding_norm=True, attn_bias=("use_bias", False), untied_head=True),
    "trocr": Fairseq(embedding_norm="layernorm_embedding", seq2seq=False),
    "whisper": Fairseq(positions=("max_target_positions", 0), positions_default=448, final_norm=True, k_bias=False),
    # decoder-only relatives: no cross-attention
    "xglm": Fairseq(prefix="model", cross="add_cross_attention", seq2seq=False, ffn=("ffn_dim",), layers=("num_layers",), heads=("attention_heads",), positions=None, final_norm=True),
    "biogpt": Fairseq(prefix="biogpt", cross=False, seq2seq=False, hidden=("hidden_size",), ffn=("intermediate_size",), layers=("num_hidden_layers",),
                      heads=("num_attention_heads",), final_norm=True),
}


def _flag(c: ConfigReader, value: bool | str | tuple[str, bool], default: bool = True) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, tuple):
        return c.bool(value[0], default=value[1])
    return c.bool(value, default=default)


def _attention(prefix: str, d: int, bias: bool, k_bias: bool, role: str) -> list[Linear]:
    return [
        Linear(f"{prefix}.q_proj", d, d, bias, role),  # type: ignore[arg-type]
        Linear(f"{prefix}.k_proj", d, d, bias and k_bias, role),  # type: ignore[arg-type]
        Linear(f"{prefix}.v_proj", d, d, bias, role),  # type: ignore[arg-type]
        Linear(f"{prefix}.out_proj", d, d, bias, role),  # type: ignore[arg-type]
    ]


def build_fairseq(c: ConfigReader, name: str) -> ModelShape:
    model_type = c.str("model_type")
    s = SPECS[model_type]
    if s.seq2seq and c.bool("is_encoder_decoder", default=True):
        # a BART/Marian/Whisper... checkpoint is the whole encoder-decoder: only its
        # decoder-only causal LM (`is_encoder_decoder: false`) is parsed here
        raise UnsupportedArchitecture(model_type, c.source)
    d = c.int(*s.hidden)
    ffn = c.int(*s.ffn)
    n_layers = c.layers(*s.layers)
    heads = c.int(*s.heads)
    vocab = c.int(*s.vocab)
    bias = _flag(c, s.attn_bias)
    cross = _flag(c, s.cross, default=False)
    linears = _attention("self_attn", d, bias, s.k_bias, "attention")
    norms = 2
    if cross:
        linears += _attention("encoder_attn", d, bias, s.k_bias, "other")
        norms += 1
    linears += [Linear("fc1", d, ffn, True, "mlp"), Linear("fc2", ffn, d, True, "mlp")]
    p = s.prefix
    params = [Param(f"{p}.embed_tokens.weight", vocab * d, "embedding")]
    if s.positions is not None:
        field, offset = s.positions
        if model_type != "trocr" or c.bool("use_learned_position_embeddings", default=True):
            rows = c.int(field, default=s.positions_default) + offset
            params.append(Param(f"{p}.embed_positions.weight", rows * d, "position"))
    if _flag(c, s.embedding_norm):
        params.append(Param(f"{p}.layernorm_embedding", layer_norm(d), "norm"))
    if s.final_norm:
        params.append(Param(f"{p}.layer_norm", layer_norm(d), "norm"))
    tie = not s.untied_head and c.bool("tie_word_embeddings", default=True)
    if not tie:
        params.append(Param("lm_head.weight", vocab * d, "lm_head"))
    return ModelShape(
        name=name,
        model_type=model_type,
        hidden_size=d,
        num_hidden_layers=n_layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        head_dim=max(d // heads, 1),
        intermediate_size=ffn,
        vocab_size=vocab,
        tie_word_embeddings=tie,
        norm="layer_norm",
        gated_mlp=False,
        layer_types=(LayerType("decoder", tuple(linears), other_parameters=norms * layer_norm(d)),),
        layers=(0,) * n_layers,
        params=tuple(params),
        **python_facts(c, act=("activation_function", "hidden_act"), act_default="gelu"),
    )


register_architecture(*SPECS)(build_fairseq)
