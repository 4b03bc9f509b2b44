"""GIT (``git``, GenerativeImage2Text): a BERT-layout text decoder after a CLIP vision
encoder.

Transcribes transformers 5's modeling_git.py. ``GitModel``: ``embeddings`` (word and
position tables and a LayerNorm, no token types), ``image_encoder`` (``GitVisionModel``, a
CLIP vision transformer: vlm.py ``clip_like_tower``), ``encoder.layer`` (``GitLayer``:
BERT's ``attention.self.{query,key,value}``, ``attention.output.dense`` + LayerNorm,
``intermediate.dense``, ``output.dense`` + LayerNorm, all biased: bert.py ``_block``),
``visual_projection`` (``Linear(Hv, H)`` and a LayerNorm(H)) and, with
``num_image_with_embedding``, one ``img_temporal_embedding`` [1, 1, Hv] per frame;
``GitForCausalLM.output = Linear(H, V)`` with bias, its weight tied to the word embeddings
when ``tie_word_embeddings`` (default false).

Activations: the text decoder's rules (post-LayerNorm BERT blocks, GELU, eager attention:
``GIT_SELF_ATTENTION_CLASSES`` has only "eager"); not checked on fake-tensor truth. The image
encoder and projection are parameters outside the layers (``git.image_encoder``,
``git.visual_projection``), not a priced tower: a text-only step (no ``pixel_values``)
never runs them, so it is priced as it runs; with images the tower's activations and the
visual tokens the decoder reads ((image_size / patch_size)² + 1 per image) are not priced,
an underestimate (README "Architecture coverage").
"""

from __future__ import annotations

from forge_advisor.errors import ForgeError
from forge_advisor.shapes.config import ConfigReader
from forge_advisor.shapes.families.bert import _block
from forge_advisor.shapes.families.common import layer_norm, python_facts
from forge_advisor.shapes.families.vlm import clip_like_tower
from forge_advisor.shapes.hints import hints_for
from forge_advisor.shapes.model import ImageRule, LayerType, Linear, ModelShape, Param, Projector
from forge_advisor.shapes.registry import register_architecture

__all__: list[str] = []

# configuration_git.py GitVisionConfig field defaults
GIT_VISION_DEFAULTS = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
                       "num_channels": 3, "image_size": 224, "patch_size": 16, "hidden_act": "quick_gelu"}


@register_architecture("git")
def build_git(c: ConfigReader, name: str) -> ModelShape:
    h, inter = c.int("hidden_size", default=768), c.int("intermediate_size", default=3072)
    n, heads = c.layers("num_hidden_layers", default=6), c.int("num_attention_heads", default=12)
    vocab, positions = c.int("vocab_size", default=30522), c.int("max_position_embeddings", default=1024)
    raw = c.data.get("vision_config") or {}
    if not isinstance(raw, dict):
        raise ForgeError(f"{c.source}: field 'vision_config' must be an object")
    v = ConfigReader({**GIT_VISION_DEFAULTS, **raw}, f"{c.source} [vision_config]")
    hv = v.int("hidden_size")
    grid = (v.int("image_size") // v.int("patch_size")) ** 2
    # the CLIP tower's own tensors (blocks and embeddings; its projector is GIT's, below)
    tower = clip_like_tower(v, "clip", Projector(()), ImageRule("fixed", patches=grid + 1, tokens=grid + 1))
    frames = c.int("num_image_with_embedding", default=0, minimum=0)
    tie = c.bool("tie_word_embeddings", default=False)
    linears = _block("attention", h, "attention") + [Linear("intermediate.dense", h, inter, True, "mlp"),
                                                      Linear("output.dense", inter, h, True, "mlp")]
    params = [
        Param("git.embeddings.word_embeddings.weight", vocab * h, "embedding"),
        Param("git.embeddings.position_embeddings.weight", positions * h, "position"),
        Param("git.embeddings.LayerNorm", layer_norm(h), "norm"),
        Param("git.image_encoder", tower.num_parameters, "other"),
        Param("git.visual_projection", hv * h + h + layer_norm(h), "other"),
        Param("output.bias", vocab, "lm_head"),
    ]
    if frames:
        params.append(Param("git.img_temporal_embedding", frames * hv, "other"))
    if not tie:
        params.append(Param("output.weight", vocab * h, "lm_head"))
    shape = ModelShape(
        name=name, model_type="git", hidden_size=h, num_hidden_layers=n, num_attention_heads=heads, num_key_value_heads=heads,
        head_dim=max(h // heads, 1), intermediate_size=inter, vocab_size=vocab, tie_word_embeddings=tie, norm="layer_norm",
        gated_mlp=False, layer_types=(LayerType("decoder", tuple(linears), other_parameters=2 * layer_norm(h)),),
        layers=(0,) * n, params=tuple(params), **python_facts(c, act_default="gelu", positions=positions),
    )
    # modeling_git.py GIT_SELF_ATTENTION_CLASSES has only "eager" (no SDPA support)
    object.__setattr__(shape, "hints", {**hints_for(c, "git"), "eager_only": True})
    return shape
