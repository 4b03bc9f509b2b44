"""`ModelShape`: the Python twin of the Rust ``ModelShape`` (rust/src/shape.rs).

The parser fills these dataclasses from a ``config.json``; :meth:`ModelShape.native`
hands them to Rust once (as JSON) and every count and estimate runs there.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any, Literal

from forge_advisor.errors import ForgeError

__all__ = ["Linear", "LayerType", "Mixer", "Param", "ModelShape", "Role", "ParamRole", "ImageRule", "Projector", "VisionTower"]

Role = Literal["attention", "mlp", "expert", "shared_expert", "router", "other"]
ParamRole = Literal["embedding", "position", "lm_head", "norm", "other"]


@dataclass(frozen=True)
class Linear:
    """A linear map inside a layer, named as the model names it (``self_attn.q_proj``)."""

    name: str
    in_features: int
    out_features: int
    bias: bool
    role: Role
    count: int = 1
    lora_targetable: bool = True
    # an nn.Linear that peft refuses to adapt in this architecture (peft's
    # tuners_utils._check_lora_target_modules_mamba: out_proj of Mamba-based models)
    peft_excluded: bool = False
    # a weight of a block tied across layers, owned by an earlier layer (Zamba's shared
    # transformer): parameters, gradients, optimizer state counted there, activations
    # here (rust/src/shape.rs `Linear::shared`)
    shared: bool = False
    # held by the layer, not run by its forward (Zamba2's adapter slots of the shared
    # block's other invocations): parameters counted, no activations
    idle: bool = False

    @property
    def leaf(self) -> str:
        """The last component of the name, which is what peft's ``target_modules`` match."""
        return self.name.rsplit(".", 1)[-1]

    @property
    def num_parameters(self) -> int:
        return (self.in_features * self.out_features + (self.out_features if self.bias else 0)) * self.count


MixerKind = Literal["gated_delta_net", "mamba", "mamba2", "short_conv"]


@dataclass(frozen=True)
class Mixer:
    """A sequence mixer other than softmax attention (the Rust ``Mixer`` in rust/src/shape.rs):
    its widths decide what autograd keeps and what the scan costs (rust/src/activations.rs,
    rust/src/throughput.rs). Fields a kind does not use stay 0.

    * ``gated_delta_net`` (Qwen3-Next, Qwen3.5): ``heads`` value heads of ``head_dim``,
      ``key_heads`` key heads of ``key_head_dim``, chunked scan of ``chunk_size`` tokens;
    * ``mamba`` (Mamba-1 selective scan): ``d_inner`` channels, ``d_state``, ``dt_rank``;
    * ``mamba2`` (SSD): ``heads`` × ``head_dim`` = ``d_inner``, ``n_groups`` of ``d_state``,
      ``chunk_size``;
    * ``short_conv`` (LFM2): a gated depthwise convolution over ``d_inner`` channels.

    ``conv_dim`` channels go through a depthwise causal convolution of ``conv_kernel`` taps.
    """

    kind: MixerKind
    d_inner: int
    conv_dim: int
    conv_kernel: int
    heads: int = 0
    head_dim: int = 0
    key_heads: int = 0
    key_head_dim: int = 0
    d_state: int = 0
    n_groups: int = 0
    dt_rank: int = 0
    chunk_size: int = 0
    gated_norm: bool = False  # a gated RMSNorm over the scan output (Qwen3-Next, Mamba-2)


@dataclass(frozen=True)
class LayerType:
    stack: Literal["decoder", "encoder"]
    linears: tuple[Linear, ...]
    other_parameters: int = 0
    moe: bool = False
    cross_attention: bool = False
    # softmax self-attention in the layer (False: a layer of only a mixer and/or an MLP)
    attention: bool = True
    # a recurrent / state-space / convolutional mixer (besides attention where both are set)
    mixer: Mixer | None = None
    # forward runs with autograd per step: 1 but for recurrent stacks (HRM, shapes/families/hrm.py)
    passes: int = 1
    # tokens a sliding-window attention layer attends to (0: full attention), recorded where
    # it changes what attention keeps (Gemma 4: a mask past the window; activations.rs)
    sliding_window: int = 0

    @property
    def num_parameters(self) -> int:
        """Parameters the layer owns (a tied weight counts at its owner)."""
        return sum(lin.num_parameters for lin in self.linears if not lin.shared) + self.other_parameters


@dataclass(frozen=True)
class Param:
    """A parameter tensor outside the layers (embeddings, position table, final norm, head)."""

    name: str
    numel: int
    role: ParamRole


@dataclass(frozen=True)
class ImageRule:
    """How an image becomes encoder patches and language-model tokens (rust/src/vision.rs
    ``ImageRule``): ``dynamic`` (Qwen2-VL's ``smart_resize`` to multiples of
    ``patch_size · merge_size`` within [min_pixels, max_pixels]), ``fixed`` (a resize to
    one size: ``patches`` and ``tokens`` per image whatever ``max_pixels`` says) or ``cross``
    (Llama 3.2 Vision: every image padded to ``tiles`` tiles, ``patches`` encoder positions
    attending over the whole image, one placeholder token in the text, ``vision_tokens``
    states the decoder's cross-attention layers read; families/mllama.py)."""

    kind: Literal["dynamic", "fixed", "cross"]
    patch_size: int = 0
    merge_size: int = 0
    min_pixels: int = 0
    max_pixels: int = 0
    patches: int = 0
    tokens: int = 0
    tiles: int = 1  # fixed: encoder images per image (Idefics3/SmolVLM: 4×4 tiles + a global view)
    vision_tokens: int = 0  # cross: vision states per image the cross-attention layers attend to

    def to_dict(self) -> dict[str, Any]:
        keys = {"dynamic": ("patch_size", "merge_size", "min_pixels", "max_pixels"), "fixed": ("patches", "tokens", "tiles"),
                "cross": ("patches", "tiles", "vision_tokens")}[self.kind]
        return {"kind": self.kind, **{k: getattr(self, k) for k in keys}}

    def per_image(self, max_pixels: int | None) -> tuple[int, int]:
        """``(encoder patches, language-model tokens)`` of the largest image at ``max_pixels``
        (the twin of the Rust rule, for messages; the estimate is the core's)."""
        if self.kind != "dynamic":
            return self.patches, self.tokens
        factor = self.patch_size * self.merge_size
        tokens = max(max(max_pixels or self.max_pixels, self.min_pixels) // (factor * factor), 1)
        return tokens * self.merge_size**2, tokens


@dataclass(frozen=True)
class VideoRule:
    """How a video becomes encoder patches and tokens (rust/src/video.rs ``VideoRule``, which
    prices it): groups of ``temporal_patch_size`` frames, each resized within the video
    processor's [min_pixels, max_pixels] — per frame, or over all frames when
    ``pixels_span_frames`` (Qwen3-VL) — and Qwen3-VL's timestamps at ``timestamp_fps``."""

    temporal_patch_size: int
    min_pixels: int
    max_pixels: int
    pixels_span_frames: bool = False
    timestamp_fps: int = 0


@dataclass(frozen=True)
class Projector:
    """The projector between the tower and the language model (per language-model token)."""

    linears: tuple[Linear, ...]
    other_parameters: int = 0
    norm_width: int = 0
    pooled: bool = False  # the tower's output is average-pooled into the tokens (Gemma 3)

    @property
    def num_parameters(self) -> int:
        return sum(lin.num_parameters for lin in self.linears) + self.other_parameters


@dataclass(frozen=True)
class VisionTower:
    """A vision-language model's image encoder (its own widths and blocks) and projector."""

    hidden_size: int
    num_attention_heads: int
    head_dim: int
    intermediate_size: int
    norm: Literal["rms_norm", "layer_norm"]
    gated_mlp: bool
    hidden_act: str
    layer_types: tuple[LayerType, ...]
    layers: tuple[int, ...]
    params: tuple[Param, ...]
    projector: Projector
    images: ImageRule
    post_norm: bool = False
    # Qwen2.5-VL window attention: patches per window, and the blocks that attend over the whole image
    window_patches: int = 0
    full_attention_blocks: tuple[int, ...] = ()
    # what transformers' enable_input_require_grads hooks (rust/src/vision.rs InputHook)
    input_hook: Literal["patch", "embeddings", "none"] = "patch"
    # how a video becomes patches and tokens (None: the model takes no videos)
    videos: VideoRule | None = None

    @property
    def num_parameters(self) -> int:
        blocks = sum(self.layer_types[i].num_parameters for i in self.layers)
        return blocks + sum(p.numel for p in self.params) + self.projector.num_parameters

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["images"] = self.images.to_dict()
        return d


@dataclass(frozen=True)
class ModelShape:
    """Everything the estimator needs to know about a model, exactly."""

    name: str
    model_type: str
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool
    norm: Literal["rms_norm", "layer_norm"]
    gated_mlp: bool
    layer_types: tuple[LayerType, ...]
    layers: tuple[int, ...]
    params: tuple[Param, ...]
    num_encoder_layers: int = 0
    num_experts: int = 0
    num_experts_per_tok: int = 0
    moe_intermediate_size: int = 0
    is_encoder_decoder: bool = False
    parallel_attn: bool = False
    vision: VisionTower | None = None
    # Not part of the Rust twin: facts for the runtime and for messages.
    hidden_act: str = "silu"
    max_position_embeddings: int | None = None
    torch_dtype: str | None = None
    source: str = ""
    architectures: tuple[str, ...] = field(default_factory=tuple)
    # the checkpoint's own quantisation (config.json `quantization_config.quant_method`, e.g.
    # gpt-oss's "mxfp4"): what it is stored in, not what it trains in
    checkpoint_quantization: str | None = field(default=None, compare=False)
    # Facts that change activation memory (rust/src/shape.rs `Hints`): norm_fp32_weight,
    # qk_norm, hidden_dropout, attention_dropout, *_softcapping, eager_only.
    hints: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    _PYTHON_ONLY = ("hidden_act", "max_position_embeddings", "torch_dtype", "source", "architectures", "checkpoint_quantization")

    # -- sequence length --------------------------------------------------------------
    def check_length(self, tokens: int, flag: str = "max_length") -> None:
        """Refuse a sequence longer than the model's position limit (``max_position_embeddings``
        / ``n_positions`` where the architecture has one): positions past it have no embedding."""
        limit = self.max_position_embeddings
        if limit is not None and isinstance(tokens, int) and tokens > limit:
            raise ForgeError(f"{flag}={tokens} is beyond {self.name}'s position limit of {limit:,} tokens "
                             f"(max_position_embeddings): use {flag}={limit} or less",
                             field="max_length", value=str(tokens), allowed=f"[1, {limit}]")

    def length_or_limit(self, tokens: int) -> int:
        """A default length, shortened to the model's position limit (gpt2: 2048 -> 1024)."""
        limit = self.max_position_embeddings
        return tokens if limit is None else min(tokens, limit)

    def image_tokens(self, fields: Any) -> int:
        """Language-model tokens the images of one sample take under plan ``fields`` (a
        mapping with ``max_pixels`` / ``images_per_sample``, defaults: the processor's, 1);
        0 for a text-only model. A default length is text plus these (trl counts image
        tokens inside ``max_length``: rust/src/vision.rs ``image_plan``)."""
        if self.vision is None:
            return 0
        images = fields.get("images_per_sample", 1)
        return images * self.vision.images.per_image(fields.get("max_pixels"))[1]

    def default_length(self, fields: Any) -> int:
        """The ``max_length`` recommend and fit ask for when none is given: 2048 text tokens
        plus the image tokens of a vision-language sample under plan ``fields`` (trl counts
        them inside ``max_length``), within the model's position limit."""
        return self.length_or_limit(2048 + self.image_tokens(fields) + self.video_tokens(fields))

    def video_tokens(self, fields: Any) -> int:
        """Language-model tokens the videos of one sample take under plan ``fields``
        (``videos_per_sample``, ``num_frames``, ``video_max_pixels``; the core's count,
        rust/src/video.rs); 0 for a model that takes no videos."""
        videos = fields.get("videos_per_sample", 0)
        if not videos or self.vision is None or self.vision.videos is None:
            return 0
        from forge_advisor.plan import Plan

        return videos * self.native.video_tokens(fields.get("num_frames", Plan.num_frames), fields.get("video_max_pixels"))

    def check_vision_fields(self, given: Any) -> None:
        """Refuse vision-language plan fields (``max_pixels``, ``images_per_sample``,
        ``freeze_vision_tower``) named in ``given`` for a model without a vision tower: a
        text-only model has no images to price, and silently ignoring them would price
        something else than what was asked."""
        from forge_advisor.plan import VISION_FIELDS

        named = [k for k in VISION_FIELDS if k in given]
        if named and self.vision is None:
            raise ForgeError(f"{named[0]} applies to vision-language models; {self.name} ({self.model_type}) has no vision tower",
                             field=named[0], value=str(given[named[0]]), allowed="a vision-language model")
        self.check_video_fields(given)

    def check_video_fields(self, given: Any) -> None:
        """Refuse the video fields (``videos_per_sample``, ``num_frames``,
        ``video_max_pixels``) for a model whose processor takes no videos (Gemma 3, LLaVA,
        Idefics3: only Qwen2-VL, Qwen2.5-VL and Qwen3-VL have a video processor here)."""
        from forge_advisor.plan import VIDEO_FIELDS

        named = [k for k in VIDEO_FIELDS if k in given]
        if named and self.vision is not None and self.vision.videos is None:
            raise ForgeError(f"{named[0]} applies to models that take videos (Qwen2-VL, Qwen2.5-VL, Qwen3-VL); "
                             f"{self.name} ({self.model_type}) takes images only",
                             field=named[0], value=str(given[named[0]]), allowed="a model with a video processor")

    def text_only(self) -> ModelShape:
        """The language model alone: what a VLM type's text-only causal-LM class builds
        (``MllamaForCausalLM`` builds ``config.get_text_config()``, no tower or projector)."""
        from dataclasses import replace

        return replace(self, vision=None)

    # -- conversion -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The dict the Rust core reads (Python-only facts left out)."""
        d = asdict(self)
        for key in self._PYTHON_ONLY:
            d.pop(key)
        d["hints"] = {"hidden_act": self.hidden_act, **self.hints}
        if self.vision is None:
            del d["vision"]
        else:
            d["vision"] = self.vision.to_dict()
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @cached_property
    def native(self) -> Any:
        """The validated Rust ``Shape`` (built once per shape)."""
        from forge_advisor.core import Shape

        try:
            return Shape.from_json(self.to_json())
        except ValueError as exc:
            raise ForgeError(f"{self.name}: {exc}") from None

    # -- counts (exact; computed in Rust with overflow checks) --------------------------
    @property
    def num_parameters(self) -> int:
        return int(self.native.num_parameters())

    @property
    def active_parameters(self) -> int:
        return int(self.native.active_parameters())

    @property
    def embedding_parameters(self) -> int:
        return int(self.native.embedding_parameters())

    @property
    def layer_parameters(self) -> list[int]:
        return list(self.native.layer_parameters())

    # -- inventory helpers --------------------------------------------------------------
    def decoder_layer_indices(self) -> list[int]:
        return [i for i, t in enumerate(self.layers) if self.layer_types[t].stack == "decoder"]

    def linear_names(self) -> list[str]:
        """Distinct leaf names of the LoRA-targetable linears (what peft's target_modules match)."""
        seen: dict[str, None] = {}
        for lt in self.layer_types:
            for lin in lt.linears:
                if lin.lora_targetable and not lin.peft_excluded:
                    seen.setdefault(lin.leaf, None)
        return list(seen)

    def fused_expert_parameters(self) -> int:
        """Parameters in fused routed-expert tensors (not ``nn.Linear``: bitsandbytes leaves
        them in the compute dtype, peft reaches them only through ``target_parameters``)."""
        per_type = [sum(lin.in_features * lin.out_features * lin.count for lin in lt.linears
                        if lin.role == "expert" and not lin.lora_targetable) for lt in self.layer_types]
        return sum(per_type[i] for i in self.layers)

    def fused_expert_names(self) -> list[str]:
        """The fused routed-expert tensors (``nn.Parameter [E, out, in]``, not ``nn.Linear``),
        as ``experts.<name>``: what peft's ``target_parameters`` match (by suffix of
        ``module.parameter``), e.g. ``["experts.gate_up_proj", "experts.down_proj"]``."""
        seen: dict[str, None] = {}
        for lt in self.layer_types:
            for lin in lt.linears:
                if lin.role == "expert" and not lin.lora_targetable:
                    seen.setdefault(f"experts.{lin.leaf}", None)
        return list(seen)

    def peft_excluded_names(self) -> list[str]:
        """Leaf names of linears peft refuses to adapt (Mamba-based models' ``out_proj``)."""
        return sorted({lin.leaf for lt in self.layer_types for lin in lt.linears if lin.peft_excluded})

    def attention_linear_names(self) -> list[str]:
        """The attention projections (q/k/v/o, fused or not), for the default LoRA targets."""
        seen: dict[str, None] = {}
        for lt in self.layer_types:
            for lin in lt.linears:
                if lin.role == "attention" and lin.lora_targetable and not lin.peft_excluded:
                    seen.setdefault(lin.leaf, None)
        return list(seen)
