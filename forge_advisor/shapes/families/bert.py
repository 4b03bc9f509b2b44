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
    # configuration_electra.py: embedding_size defaults to 128
    e = c.int("embedding_size", default=128) if s.head == "electra" else h
    linears = _block("attention", h, "attention")
    norms = 2
    if c.bool("add_cross_attention", default=False):
        linears += _block("crossattention", h, "other")
        norms += 1
    linears += [Linear("intermediate.dense", h, inter, True, "mlp"), Linear("output.dense", inter, h, True, "mlp")]
    p = f"{s.prefix}.embeddings"
    params = [
        Param(f"{p}.word_embeddings.weight", vocab * e, "embedding"),
        Param(f"{p}.position_embeddings.weight", positions * e, "position"),
        Param(f"{p}.LayerNorm", layer_norm(e), "norm"),
    ]
    if s.token_types:
        params.append(Param(f"{p}.token_type_embeddings.weight", c.int("type_vocab_size", default=2) * e, "other"))
    if s.pooler:
        params.append(Param(f"{s.prefix}.pooler.dense", h * h + h, "other"))
    if s.head == "cls":
        params += [Param("cls.predictions.transform", h * h + h + layer_norm(h), "other"), Param("cls.predictions.bias", vocab, "lm_head")]
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
    tie = c.bool("tie_word_embeddings", default=True)
    if not tie:
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


register_architecture(*SPECS)(build_bert)
