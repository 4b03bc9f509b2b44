"""BERT-style encoders that transformers also builds as causal LMs (``BertLMHeadModel``,
``RobertaForCausalLM``...). One layer (modeling_bert.py ``BertLayer``): ``attention.self.
{query,key,value} = Linear(H, H)``, ``attention.output.dense = Linear(H, H)`` and its
``LayerNorm``, ``intermediate.dense = Linear(H, I)``, ``output.dense = Linear(I, H)`` and its
``LayerNorm``, all biased; with ``add_cross_attention`` a ``crossattention`` block of the
same shape (role ``other``: a causal LM passes no encoder states).

Outside the layers, by family:

* BERT / ERNIE / BigBird: ``embeddings.{word,position,token_type}_embeddings`` and
  ``LayerNorm``; ``cls.predictions.transform.dense`` + ``LayerNorm`` and a ``[V]`` bias; the
  decoder weight is tied to the word embeddings; BigBird's causal LM keeps its ``pooler``.
* RoBERTa / CamemBERT / XLM-R / Data2Vec-text: the same embeddings; ``lm_head.dense`` +
  ``layer_norm`` and a ``[V]`` bias, decoder tied.
* BertGeneration: word and position embeddings and ``LayerNorm`` only; ``lm_head.bias``.
* ELECTRA: embeddings of ``embedding_size`` E, ``embeddings_project (E→H)`` when E ≠ H,
  ``generator_predictions.dense (H→E)`` + ``LayerNorm(E)``, ``generator_lm_head`` tied with a
  ``[V]`` bias.
* Pre-LayerNorm layouts (Megatron-BERT, RoBERTa-PreLayerNorm, XLM-R XL): the same two norms
  per layer under other names; the embeddings' ``LayerNorm`` moves to a final norm after the
  stack (Megatron ``encoder.ln``, XLM-R XL ``encoder.LayerNorm``) or is joined by one
  (RoBERTa-PreLayerNorm ``roberta_prelayernorm.LayerNorm``).
* RemBERT: embeddings of ``input_embedding_size`` E, ``encoder.embedding_hidden_mapping_in
  (E→H)``, an untied head ``cls.predictions.dense (H→O)`` + ``LayerNorm(O)`` + ``decoder
  (O→V)`` with O = ``output_embedding_size`` (modeling_rembert.py).
* RoFormer: embeddings of ``embedding_size`` E (default H) without a position table,
  ``embeddings_project (E→H)`` when E ≠ H, a fixed sinusoidal table ``encoder.embed_positions
  [max_position_embeddings, H/heads]`` (an nn.Embedding parameter), head transform H→E
  (modeling_roformer.py).
* RoCBert: ``pronunciation_embed`` and ``shape_embed`` tables and ``map_inputs_layer
  (H + pron + shape → H)`` when ``concat_input`` (modeling_roc_bert.py ``RoCBertEmbeddings``).
* X-MOD: one bottleneck adapter per language in every layer, ``output.adapter_modules.<lang>.
  {dense1 (H→H/f), dense2 (H/f→H)}`` biased, f = ``adapter_reduction_factor``, and an optional
  ``output.adapter_layer_norm`` (modeling_xmod.py ``XmodOutput``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from forge_advisor.shapes.config import ConfigReader
from forge_advisor.shapes.families.common import layer_norm, python_facts
from forge_advisor.shapes.model import LayerType, Linear, ModelShape, Param
from forge_advisor.shapes.registry import register_architecture


@dataclass(frozen=True)
class BertSpec:
    prefix: str
    head: Literal["cls", "lm_head", "bias_only", "electra"]
    token_types: bool = True
    pooler: bool = False
    embed_norm: bool = True  # embeddings.LayerNorm
    final_norm: str | None = None  # a LayerNorm after the stack (pre-LN layouts)
    kind: Literal["bert", "rembert", "roformer", "roc_bert", "xmod"] = "bert"


SPECS: dict[str, BertSpec] = {
    "bert": BertSpec("bert", "cls"),
    "ernie": BertSpec("ernie", "cls"),
    "big_bird": BertSpec("bert", "cls", pooler=True),
    "roberta": BertSpec("roberta", "lm_head"),
    "camembert": BertSpec("roberta", "lm_head"),
    "xlm-roberta": BertSpec("roberta", "lm_head"),
    "data2vec-text": BertSpec("data2vec_text", "lm_head"),
    "bert-generation": BertSpec("bert", "bias_only", token_types=False),
    "electra": BertSpec("electra", "electra"),
    "megatron-bert": BertSpec("bert", "cls", embed_norm=False, final_norm="bert.encoder.ln"),
    "roberta-prelayernorm": BertSpec("roberta_prelayernorm", "lm_head", final_norm="roberta_prelayernorm.LayerNorm"),
    "xlm-roberta-xl": BertSpec("roberta", "lm_head", embed_norm=False, final_norm="roberta.encoder.LayerNorm"),
    "rembert": BertSpec("rembert", "cls", kind="rembert"),
    "roformer": BertSpec("roformer", "cls", kind="roformer"),
    "roc_bert": BertSpec("roc_bert", "cls", kind="roc_bert"),
    "xmod": BertSpec("roberta", "lm_head", kind="xmod"),
}


def _block(prefix: str, h: int, role: str) -> list[Linear]:
    return [
        Linear(f"{prefix}.self.query", h, h, True, role),  # type: ignore[arg-type]
        Linear(f"{prefix}.self.key", h, h, True, role),  # type: ignore[arg-type]
        Linear(f"{prefix}.self.value", h, h, True, role),  # type: ignore[arg-type]
        Linear(f"{prefix}.output.dense", h, h, True, role),  # type: ignore[arg-type]
    ]


def build_bert(c: ConfigReader, name: str) -> ModelShape:
    model_type = c.str("model_type")
    s = SPECS[model_type]
    h = c.int("hidden_size")
    inter = c.int("intermediate_size")
    n = c.layers("num_hidden_layers")
    heads = c.int("num_attention_heads")
    vocab = c.int("vocab_size")
    positions = c.int("max_position_embeddings", default=512)
    # configuration_electra.py: embedding_size defaults to 128; configuration_roformer.py: to H
    e = c.int("embedding_size", default=128) if s.head == "electra" else h
    if s.kind == "roformer":
        e = c.int("embedding_size", default=h)
    elif s.kind == "rembert":
        e = c.int("input_embedding_size", default=256)
    linears = _block("attention", h, "attention")
    norms = 2
    if c.bool("add_cross_attention", default=False):
        linears += _block("crossattention", h, "other")
        norms += 1
    linears += [Linear("intermediate.dense", h, inter, True, "mlp"), Linear("output.dense", inter, h, True, "mlp")]
    if s.kind == "xmod":
        linears += _xmod_adapters(c, h)
        norms += 1 if c.bool("adapter_layer_norm", default=False) else 0
    p = f"{s.prefix}.embeddings"
    params = [Param(f"{p}.word_embeddings.weight", vocab * e, "embedding")]
    if s.kind == "roformer":
        # RoFormerSinusoidalPositionalEmbedding(max_position_embeddings, H // heads): fixed
        # values, but an nn.Embedding weight all the same
        params.append(Param(f"{s.prefix}.encoder.embed_positions.weight", positions * (h // heads), "position"))
    else:
        params.append(Param(f"{p}.position_embeddings.weight", positions * e, "position"))
    if s.embed_norm:
        params.append(Param(f"{p}.LayerNorm", layer_norm(e), "norm"))
    if s.final_norm:
        params.append(Param(s.final_norm, layer_norm(h), "norm"))
    if s.kind == "roc_bert":
        params += _roc_bert_embeddings(c, p, h)
    if s.kind in ("roformer", "rembert") and e != h:
        where = f"{s.prefix}.embeddings_project" if s.kind == "roformer" else f"{s.prefix}.encoder.embedding_hidden_mapping_in"
        params.append(Param(where, e * h + h, "other"))
    if s.token_types:
        params.append(Param(f"{p}.token_type_embeddings.weight", c.int("type_vocab_size", default=2) * e, "other"))
    if s.pooler:
        params.append(Param(f"{s.prefix}.pooler.dense", h * h + h, "other"))
    tie = c.bool("tie_word_embeddings", default=s.kind != "rembert")
    if s.kind == "rembert":
        # RemBertLMPredictionHead: dense H→O, LayerNorm(O), decoder O→V with bias; O ≠ E, so
        # the decoder never ties
        o = c.int("output_embedding_size", default=1664)
        params += [Param("cls.predictions.dense", h * o + o + layer_norm(o), "other"), Param("cls.predictions.decoder", o * vocab + vocab, "lm_head")]
        tie = False
    elif s.head == "cls":
        # the transform maps H→E (E = H except RoFormer's embedding_size)
        params += [Param("cls.predictions.transform", h * e + e + layer_norm(e), "other"), Param("cls.predictions.bias", vocab, "lm_head")]
    elif s.head == "lm_head":
        params += [Param("lm_head.dense", h * h + h + layer_norm(h), "other"), Param("lm_head.bias", vocab, "lm_head")]
    elif s.head == "bias_only":
        params.append(Param("lm_head.bias", vocab, "lm_head"))
    else:  # electra
        if e != h:
            params.append(Param(f"{s.prefix}.embeddings_project", e * h + h, "other"))
        params += [
            Param("generator_predictions", h * e + e + layer_norm(e), "other"),
            Param("generator_lm_head.bias", vocab, "lm_head"),
        ]
    if not tie and s.kind != "rembert":
        # untied, the decoder Linear keeps its own weight and (except ELECTRA's
        # generator_lm_head, whose bias is its own anyway) a bias no longer tied to `.bias`
        own_bias = vocab if s.head != "electra" else 0
        params.append(Param("lm_head.decoder", vocab * e + own_bias, "lm_head"))
    return ModelShape(
        name=name,
        model_type=model_type,
        hidden_size=h,
        num_hidden_layers=n,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        head_dim=max(h // heads, 1),
        intermediate_size=inter,
        vocab_size=vocab,
        tie_word_embeddings=tie,
        norm="layer_norm",
        gated_mlp=False,
        layer_types=(LayerType("decoder", tuple(linears), other_parameters=norms * layer_norm(h)),),
        layers=(0,) * n,
        params=tuple(params),
        **python_facts(c, act_default="gelu"),
    )


def _xmod_adapters(c: ConfigReader, h: int) -> list[Linear]:
    """modeling_xmod.py XmodAdapter: dense1 Linear(H, H // adapter_reduction_factor), dense2 back."""
    langs = c.data.get("languages") or ["en_XX"]
    if not isinstance(langs, list) or not all(isinstance(x, str) for x in langs):
        from forge_advisor.errors import ForgeError

        raise ForgeError(f"{c.source}: field 'languages'={langs!r} must be a list of language codes")
    b = h // c.int("adapter_reduction_factor", default=2)
    out: list[Linear] = []
    for lang in langs:
        out += [Linear(f"output.adapter_modules.{lang}.dense1", h, b, True, "other"), Linear(f"output.adapter_modules.{lang}.dense2", b, h, True, "other")]
    return out


def _roc_bert_embeddings(c: ConfigReader, p: str, h: int) -> list[Param]:
    """RoCBertEmbeddings: pronunciation and shape tables (always built) and map_inputs_layer
    over the concatenation of the enabled ones (modeling_roc_bert.py)."""
    pron_dim, shape_dim = c.int("pronunciation_embed_dim", default=768), c.int("shape_embed_dim", default=512)
    out = [
        Param(f"{p}.pronunciation_embed.weight", c.int("pronunciation_vocab_size", default=910) * pron_dim, "other"),
        Param(f"{p}.shape_embed.weight", c.int("shape_vocab_size", default=24858) * shape_dim, "other"),
    ]
    if c.bool("concat_input", default=True):
        d = h + (pron_dim if c.bool("enable_pronunciation", default=True) else 0) + (shape_dim if c.bool("enable_shape", default=True) else 0)
        out.append(Param(f"{p}.map_inputs_layer", d * h + h, "other"))
    return out


register_architecture(*SPECS)(build_bert)
