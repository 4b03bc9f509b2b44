//! The vision tower of a vision-language model: its inventory, how many patches an image
//! becomes in the encoder and how many tokens in the language model, and what the tower
//! and its projector keep for backward.
//!
//! The tower is an encoder stack with widths of its own (Qwen2.5-VL-7B: 1280 wide, 32
//! blocks, against the language model's 3584), run once per image at its own sequence
//! length (the image's patches). [`VisionTower::stack_shape`] describes it as a shape of its
//! own so the per-op rules of `activations.rs` price its blocks with its widths.
//!
//! What is in the autograd graph follows the same mechanism as the language model's layers
//! (`estimator.rs` `layer_segments`): the pixel values never require grad, so a frozen tower
//! saves nothing — unless transformers 5's `enable_input_require_grads` (called by
//! `gradient_checkpointing_enable` under peft, modeling_utils.py) hooks the tower's input
//! embedding too: it hooks `get_input_embeddings()` of every `PreTrainedModel` submodule,
//! and the towers are `PreTrainedModel`s whose input embedding is the patch embedding
//! (`_input_embed_layer = "patch_embed"` in modeling_qwen2_5_vl.py,
//! `embeddings.patch_embedding` for SigLIP/CLIP). Under checkpointing the frozen tower is
//! therefore in the graph: each block keeps its checkpoint input and is recomputed in
//! backward (every tower's blocks are `GradientCheckpointingLayer`s: Qwen2VLVisionBlock,
//! Qwen2_5_VLVisionBlock, Qwen3VLVisionBlock, CLIPEncoderLayer, SiglipEncoderLayer,
//! Idefics3EncoderLayer). Qwen3-VL's vision model names no input embedding, so nothing
//! hooks it ([`InputHook`]).

use serde::{Deserialize, Serialize};

use crate::error::{checked_sum, Checked, Error, Result};
use crate::shape::{Hints, LayerType, ModelShape, NormKind, Param, Stack};

/// How an image becomes encoder patches and language-model tokens (the processors'
/// arithmetic; each variant cites its processor).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ImageRule {
    /// Qwen2-VL / Qwen2.5-VL / Qwen3-VL: the image processor's `smart_resize`
    /// (image_processing_qwen2_vl.py) rounds height and width to multiples of
    /// `factor = patch_size · merge_size` (28 for patch 14, merge 2) with
    /// `min_pixels ≤ h·w ≤ max_pixels`; the encoder sees `(h/patch)·(w/patch)` patches
    /// (`image_grid_thw` = (1, h/14, w/14): a still image is one temporal patch, the frame
    /// repeated `temporal_patch_size` times) and the language model `patches / merge²`
    /// tokens (the 2×2 patch merger). The largest image at `max_pixels` therefore has at
    /// most `⌊max_pixels / factor²⌋` tokens and `merge²` times as many patches; that upper
    /// bound is what is priced.
    Dynamic { patch_size: u64, merge_size: u64, min_pixels: u64, max_pixels: u64 },
    /// A fixed resize: every image becomes `patches` encoder positions and `tokens`
    /// language-model tokens whatever its size (Gemma 3: 896² → 4096 SigLIP patches pooled
    /// to `mm_tokens_per_image` = 256; LLaVA-1.5: 336² → 576 patches + the class token,
    /// 576 tokens). `max_pixels` does not change them. `tiles`: encoder images one image
    /// becomes, each attending within itself (Idefics3/SmolVLM split an image into 4×4 tiles
    /// plus a global view: 17; else 1).
    Fixed {
        patches: u64,
        tokens: u64,
        #[serde(default = "one_tile")]
        tiles: u64,
    },
    /// Llama 3.2 Vision (`mllama`): the images stay out of the text — each is one
    /// `<|image|>` token — and the decoder's cross-attention layers attend to
    /// `vision_tokens` projected vision states per image (`tiles` tiles of `(image_size /
    /// patch_size)² + 1` positions: 4 · 1025 = 4100). `MllamaImageProcessor` pads every image
    /// to `max_image_tiles` tiles (`pad_batches_and_tiles`) and the model requires that count
    /// (the aspect-ratio embeddings reshape to `max_num_tiles`), so `max_pixels` changes
    /// nothing. The tower runs `patches` positions per image (each tile padded to a multiple
    /// of 8: 4 · 1032 = 4128), its local and global blocks alike attending over the whole
    /// image (modeling_mllama.py `MllamaVisionModel.forward`: `hidden_states.view(B · media,
    /// -1, dim)`).
    Cross { patches: u64, tiles: u64, vision_tokens: u64 },
}

fn one_tile() -> u64 {
    1
}

impl ImageRule {
    /// `(encoder patches, language-model tokens)` of the largest image at `max_pixels`
    /// (`None`: the processor's default).
    pub fn per_image(&self, max_pixels: Option<u64>) -> (u64, u64) {
        match *self {
            ImageRule::Dynamic { patch_size, merge_size, min_pixels, max_pixels: default } => {
                let factor = patch_size * merge_size;
                // smart_resize keeps h·w ≥ min_pixels: a larger max than min is what bounds it
                let px = max_pixels.unwrap_or(default).max(min_pixels);
                let tokens = (px / (factor * factor)).max(1);
                (tokens * merge_size * merge_size, tokens)
            }
            ImageRule::Fixed { patches, tokens, .. } => (patches, tokens),
            ImageRule::Cross { patches, .. } => (patches, 1),
        }
    }

    /// Vision states per image that cross-attention layers read (0: the images are tokens
    /// of the language model's sequence instead).
    pub fn cross_tokens(&self) -> u64 {
        match *self {
            ImageRule::Cross { vision_tokens, .. } => vision_tokens,
            _ => 0,
        }
    }

    /// Encoder positions one attention window spans: a whole image, or one tile of it.
    pub fn attention_context(&self, patches_per_image: u64) -> u64 {
        match *self {
            ImageRule::Dynamic { .. } | ImageRule::Cross { .. } => patches_per_image,
            ImageRule::Fixed { tiles, .. } => patches_per_image / tiles.max(1),
        }
    }

    /// Patches per language-model token (Qwen: merge² = 4; fixed rules: their ratio,
    /// rounded up).
    pub fn patches_per_token(&self) -> u64 {
        match *self {
            ImageRule::Dynamic { merge_size, .. } => merge_size * merge_size,
            ImageRule::Fixed { patches, tokens, .. } => patches.div_ceil(tokens.max(1)),
            ImageRule::Cross { patches, .. } => patches,
        }
    }
}

/// The projector between the tower and the language model (Qwen's `merger`, LLaVA's
/// `multi_modal_projector`, Gemma 3's pooled norm + projection).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Projector {
    /// Its linear maps (and Gemma 3's projection matrix, not an `nn.Linear`:
    /// `lora_targetable: false`), in forward order, per language-model image token.
    pub linears: Vec<crate::shape::Linear>,
    /// Parameters besides the linears (norm weights and biases).
    #[serde(default)]
    pub other_parameters: u64,
    /// Width of the norm at its input (0: none), applied per language-model token
    /// (Qwen's `ln_q` runs per patch over `merge²` patches of the tower's width: the same
    /// bytes as one norm over `merge² · width`).
    #[serde(default)]
    pub norm_width: u64,
    /// The tower's output is average-pooled into the tokens first (Gemma 3's `avg_pool`).
    #[serde(default)]
    pub pooled: bool,
}

impl Projector {
    pub fn num_parameters(&self) -> Result<u64> {
        let lin = self.linears.iter().map(crate::shape::Linear::num_parameters).collect::<Result<Vec<_>>>()?;
        checked_sum(lin, "projector parameters")?.add_or(self.other_parameters, "projector parameters")
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VisionTower {
    pub hidden_size: u64,
    pub num_attention_heads: u64,
    pub head_dim: u64,
    pub intermediate_size: u64,
    pub norm: NormKind,
    pub gated_mlp: bool,
    pub hidden_act: String,
    /// The encoder blocks' types (stack `encoder`) and one index per block.
    pub layer_types: Vec<LayerType>,
    pub layers: Vec<u32>,
    /// The tower's tensors outside its blocks (patch and position embeddings, post norm,
    /// pooling head).
    pub params: Vec<Param>,
    pub projector: Projector,
    pub images: ImageRule,
    /// A norm over the tower's output per patch (SigLIP/CLIP `post_layernorm`).
    #[serde(default)]
    pub post_norm: bool,
    /// Qwen2.5-VL's window attention: blocks not in `full_attention_blocks` attend within
    /// windows of this many patches (`(window_size / patch_size)²` = (112 / 14)² = 64;
    /// modeling_qwen2_5_vl.py `get_window_index`, `fullatt_block_indexes`); 0: every block
    /// attends over the whole image.
    #[serde(default)]
    pub window_patches: u64,
    #[serde(default)]
    pub full_attention_blocks: Vec<u64>,
    /// What `enable_input_require_grads` hooks in the tower (see the module docs).
    #[serde(default)]
    pub input_hook: InputHook,
    /// How a video becomes patches and tokens (`None`: the model takes no videos).
    #[serde(default)]
    pub videos: Option<VideoRule>,
}

/// How transformers 5's `enable_input_require_grads` reaches a tower: it hooks
/// `get_input_embeddings()` of every `PreTrainedModel` submodule and skips those that raise
/// `NotImplementedError` (modeling_utils.py).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputHook {
    /// The patch embedding is hooked; its output is a leaf apart from the first block's
    /// input (Qwen2-VL/2.5-VL `_input_embed_layer = "patch_embed"`, CLIP/SigLIP
    /// `embeddings.patch_embedding`).
    #[default]
    Patch,
    /// The whole embeddings module is hooked: its output is the first block's input
    /// (Idefics3/SmolVLM `get_input_embeddings` returns `self.embeddings`).
    Embeddings,
    /// Nothing is hooked (Qwen3-VL's vision model names no input embedding): a frozen tower
    /// stays outside the graph even under checkpointing.
    None,
}

impl VisionTower {
    pub fn validate(&self) -> Result<()> {
        for (field, v) in [
            ("vision.hidden_size", self.hidden_size),
            ("vision.num_attention_heads", self.num_attention_heads),
            ("vision.head_dim", self.head_dim),
            ("vision.intermediate_size", self.intermediate_size),
        ] {
            if v == 0 {
                return Err(Error::field(field, v, "a positive integer"));
            }
        }
        if self.layers.is_empty() {
            return Err(Error::field("vision.layers", "[]", "at least one encoder block"));
        }
        if let ImageRule::Dynamic { patch_size, merge_size, .. } = self.images {
            if patch_size == 0 || merge_size == 0 {
                return Err(Error::field("vision.images", format!("patch {patch_size}, merge {merge_size}"), "positive sizes"));
            }
        }
        if let ImageRule::Cross { patches, tiles, vision_tokens } = self.images {
            if patches == 0 || tiles == 0 || vision_tokens == 0 {
                return Err(Error::field("vision.images", format!("{patches} patches, {vision_tokens} vision tokens"), "positive counts"));
            }
        }
        if let ImageRule::Fixed { patches, tokens, tiles } = self.images {
            if patches == 0 || tokens == 0 || tiles == 0 {
                return Err(Error::field("vision.images", format!("{patches} patches, {tokens} tokens"), "positive counts"));
            }
        }
        if let Some(r) = &self.videos {
            r.validate(&self.images)?;
        }
        self.stack_shape().validate()
    }

    /// Every parameter of the tower and its projector.
    pub fn num_parameters(&self) -> Result<u64> {
        let layers = self.stack_shape().num_parameters()?;
        layers.add_or(self.projector.num_parameters()?, "vision parameters")
    }

    /// Parameters of the tower alone (blocks and the tensors around them), without the projector.
    pub fn tower_parameters(&self) -> Result<u64> {
        self.stack_shape().num_parameters()
    }

    /// The tower as a stack of its own, for the per-op activation rules: its widths, its
    /// norm and activation, its blocks as the only layers (no vocabulary: `vocab_size` 1
    /// is never read for a tower, which has no logits).
    pub fn stack_shape(&self) -> ModelShape {
        ModelShape {
            name: "vision_tower".into(),
            model_type: "vision_tower".into(),
            hidden_size: self.hidden_size,
            num_hidden_layers: self.layers.len() as u64,
            num_encoder_layers: 0,
            num_attention_heads: self.num_attention_heads,
            num_key_value_heads: self.num_attention_heads,
            head_dim: self.head_dim,
            intermediate_size: self.intermediate_size,
            vocab_size: 1,
            tie_word_embeddings: false,
            norm: self.norm,
            gated_mlp: self.gated_mlp,
            num_experts: 0,
            num_experts_per_tok: 0,
            moe_intermediate_size: 0,
            is_encoder_decoder: false,
            parallel_attn: false,
            hints: Hints { hidden_act: self.hidden_act.clone(), ..Hints::default() },
            layer_types: self.layer_types.iter().map(|lt| LayerType { stack: Stack::Decoder, ..lt.clone() }).collect(),
            layers: self.layers.clone(),
            params: self.params.clone(),
            vision: None,
        }
    }
}

pub use crate::video::VideoRule;

/// What a plan's images cost the tower and the language model's sequence, per sample.
#[derive(Debug, Clone, Copy, Default)]
pub struct ImagePlan {
    /// Encoder patches per sample (all its images).
    pub patches: u64,
    /// Language-model tokens the images and videos take per sample (inside `max_length`).
    pub tokens: u64,
    /// Of those, the videos' (video.rs).
    pub video_tokens: u64,
    /// Encoder positions one attention spans (an image, or a tile of it: eager attention's
    /// context and the attention FLOPs).
    pub patches_per_image: u64,
    /// The tower's weights train (full fine-tuning with `freeze_vision_tower=false`).
    pub tower_weights: bool,
    /// The projector's weights train (full fine-tuning).
    pub projector_weights: bool,
    /// The tower's LoRA target mask (0: no adapters on it).
    pub tower_mask: u64,
    /// Vision states per sample that cross-attention layers read (`ImageRule::Cross`; 0:
    /// the images are tokens of the sequence).
    pub cross_tokens: u64,
}

/// The images of one sample under `plan` (`None` for a text-only model).
///
/// `max_length` counts the image tokens: trl 1.x's `DataCollatorForVisionLanguageModeling`
/// (trl/trainer/sft_trainer.py `_collate_language_modeling`) passes `truncation=True,
/// max_length` to the processor, which expands each image placeholder into its tokens
/// first, so truncation cuts into them and the model then raises "Image features and
/// image tokens do not match", which `SFTTrainer.compute_loss` re-raises as "`max_length`
/// is too short". A plan whose images alone exceed `max_length` is refused here the same
/// way. With `max_pixels` unset, a dynamic-resolution processor's default (Qwen2-VL:
/// 12,845,056 px = 16,384 tokens) would let such an image through; the largest image trl
/// can train is then the one whose tokens fit `max_length`, and that is what is priced.
pub fn image_plan(an: &crate::analysis::Analysis, plan: &crate::plan::Plan) -> Result<Option<ImagePlan>> {
    let Some(v) = an.vision.as_deref() else { return Ok(None) };
    let images = plan.images_per_sample;
    let full = plan.method == crate::plan::Method::Full;
    let tower_weights = full && !plan.freeze_vision_tower;
    let tower_mask = if !full && !plan.freeze_vision_tower { v.lenient_mask(plan.lora_target_modules.as_ref()) } else { 0 };
    let base = ImagePlan { tower_weights, projector_weights: full, tower_mask, ..Default::default() };
    // the videos first (video.rs): their tokens leave the rest of max_length to the images
    // (a video shrunk to fit leaves room for images of a set size)
    let pinned = plan.max_pixels.is_some() || matches!(v.tower.images, ImageRule::Fixed { .. });
    let reserved = if pinned { images.saturating_mul(v.tower.images.per_image(plan.max_pixels).1) } else { 0 };
    let videos = crate::video::video_plan(&v.tower, plan, reserved)?;
    let base = ImagePlan { patches: videos.patches, tokens: videos.tokens, video_tokens: videos.tokens, patches_per_image: videos.context, ..base };
    if images == 0 {
        return Ok(Some(base));
    }
    let (mut patches, mut tokens) = v.tower.images.per_image(plan.max_pixels);
    let budget = (plan.max_length - videos.tokens) / images;
    if tokens > budget {
        let dynamic = matches!(v.tower.images, ImageRule::Dynamic { .. });
        if plan.max_pixels.is_none() && dynamic && budget > 0 {
            let ppt = v.tower.images.patches_per_token();
            (patches, tokens) = (budget * ppt, budget);
        } else {
            return Err(Error::field(
                "max_length",
                plan.max_length,
                format!(
                    "at least {} tokens: {images} image(s) per sample take {tokens} tokens each{}, and trl truncates inside \
                     them (\"Image features and image tokens do not match\"); lower max_pixels or images_per_sample",
                    tokens.saturating_mul(images).saturating_add(videos.tokens),
                    if videos.tokens > 0 { format!(" besides {} video tokens", videos.tokens) } else { String::new() }
                ),
            ));
        }
    }
    // one attention span for the whole sample: the longer of an image's and a video frame group's
    let context = v.tower.images.attention_context(patches).max(base.patches_per_image);
    let cross_tokens = v.tower.images.cross_tokens() * images;
    Ok(Some(ImagePlan { patches: patches * images + base.patches, tokens: tokens * images + base.tokens, patches_per_image: context, cross_tokens, ..base }))
}

/// `x` bytes per encoder patch as bytes per language-model token of a sequence of `t`
/// tokens carrying `patches` patches: `⌈x · patches / t⌉` (the timeline multiplies every
/// segment by the micro-batch's tokens; rounding up errs by under one byte per token).
pub(crate) fn per_lm_token(x: u64, patches: u64, t: u64) -> u64 {
    ((x as u128 * patches as u128).div_ceil(t.max(1) as u128)).min(u64::MAX as u128) as u64
}

/// Bytes the projector keeps per language-model image token: its input norm (fp32 input
/// and a statistic per patch, `4·width + 8·patches per token`; + the normed output when its
/// weight trains), the input of each linear whose weight trains, and the activation's input
/// between the linears (GELU keeps its input, derivatives.yaml).
pub(crate) fn projector_saved(v: &VisionAnalysis, w: crate::activations::Widths, in_graph: bool, trains: bool) -> u64 {
    let p = &v.tower.projector;
    if !in_graph && !trains {
        return 0;
    }
    let mut b = 0u64;
    if p.norm_width > 0 {
        b += 4 * p.norm_width + 8 * v.tower.images.patches_per_token();
        if trains {
            b += w.r * p.norm_width;
        }
    }
    if trains {
        b += p.linears.iter().map(|l| if w.amp { 2 } else { w.e } * l.in_features).sum::<u64>();
    }
    if p.linears.len() > 1 {
        b += w.e * p.linears[0].out_features;
    }
    if p.pooled && in_graph {
        // AvgPool2d keeps its input (derivatives.yaml `avg_pool2d: avg_pool2d_backward(grad,
        // self, …)`): every patch of the tower's output, pooled into this token
        b += w.e * v.tower.hidden_size * v.tower.images.patches_per_token();
    }
    b
}

use crate::analysis::VisionAnalysis;

/// What an estimate reports about the images (the `vision` section of `estimate --json`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct VisionReport {
    /// Encoder patches per sample and the language-model tokens they become (inside `max_length`).
    pub patches_per_sample: u64,
    pub image_tokens_per_sample: u64,
    /// Language-model tokens of the sample's videos (video.rs; 0 without videos).
    pub video_tokens_per_sample: u64,
    pub tower_parameters: u64,
    pub projector_parameters: u64,
    /// Trainable parameters of the tower (its weights or its adapters).
    pub tower_trainable_parameters: u64,
    /// What the tower and projector keep for backward per micro-batch (part of `activations`
    /// while the language model runs: its blocks' checkpoint inputs, or all they saved).
    pub kept_bytes: u64,
    /// Vision states per sample the decoder's cross-attention layers read (Llama 3.2
    /// Vision; 0 where the images are tokens of the sequence).
    pub vision_states_per_sample: u64,
}

/// What the tower's segments need to know about the language model's side of the plan.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LanguageSide {
    /// Bytes of one gradient and the GPUs grads are sharded over (estimator.rs `Basis`).
    pub(crate) grad_bytes_per: u64,
    pub(crate) grad_scale: u64,
    /// The input embeddings train (else, under checkpointing, their output is a hooked leaf).
    pub(crate) embed_trains: bool,
    pub(crate) hidden_size: u64,
}

/// What the tower's segments leave for the language model.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TowerSegments {
    /// The image features entering the language model require grad (the tower or the
    /// projector is in the graph): `masked_scatter` into the input embeddings then makes
    /// the first decoder layer's input require grad.
    pub(crate) output_grad: bool,
    /// Autocast's half weight copies the tower's blocks keep (without checkpointing).
    pub(crate) autocast_copies: u64,
    /// Whether any tower block is in the graph (its FLOPs include a backward).
    pub(crate) in_graph: bool,
    /// Σ kept bytes per language-model token over the tower's segments.
    pub(crate) kept_per_token: u64,
    /// Activation offloading's host bytes per language-model token.
    pub(crate) host_per_token: u64,
    /// The vision states cross-attention layers read require grad (cross.rs).
    pub(crate) cross_states_grad: bool,
}

impl TowerSegments {
    /// `n` tower blocks of one type as one segment: `kept` bytes each per language-model
    /// token unless trl's activation offloading moves them to the host (as the decoder's,
    /// estimator.rs `layer_segment`, levers.rs: one block fetched ahead, a transient), with
    /// `full` (all they saved), their backward `transient`, autocast's weight-copy
    /// `constant` and their gradients `layer_grads`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn push_blocks(&mut self, segs: &mut crate::timeline::Segments, plan: &crate::plan::Plan, n: u64, kept: u64, full: u64, transient: u64, constant: u64, layer_grads: u64) {
        let (kept, prefetch) = if plan.activation_offloading { (0, crate::levers::offload_prefetch_per_token(kept)) } else { (kept, 0) };
        self.host_per_token = self.host_per_token.saturating_add(prefetch.saturating_mul(n));
        self.kept_per_token = self.kept_per_token.saturating_add(kept.saturating_mul(n));
        segs.push(crate::timeline::Segment { n, kept, full, transient: prefetch + transient, constant, layer_grads, ..crate::timeline::Segment::default() });
    }
}

/// The tower's blocks and the projector as [`crate::timeline::Segment`]s below the language
/// model's layers, in bytes per language-model token ([`per_lm_token`]). A block is in the
/// graph when its input requires grad — the patch embedding trains, or checkpointing's
/// `enable_input_require_grads` hooks the tower's patch embedding (module docs) — or it
/// trains; then it keeps what `activations::layer_saved` says for its widths (its
/// checkpoint input alone under checkpointing). Not in the graph, it keeps nothing.
pub(crate) fn push_segments(
    v: &VisionAnalysis,
    ip: &ImagePlan,
    plans: (&crate::plan::Plan, &crate::plan::Plan),
    cx: &crate::activations::PlanCtx,
    lm: LanguageSide,
    segs: &mut crate::timeline::Segments,
) -> TowerSegments {
    let (plan, act_plan) = plans;
    if matches!(v.tower.images, ImageRule::Cross { .. }) {
        return crate::cross::push_tower_segments(v, ip, plan, act_plan, cx, lm, segs);
    }
    let (grad_bytes_per, grad_scale) = (lm.grad_bytes_per, lm.grad_scale);
    use crate::activations::{layer_backward_transient, layer_checkpointed, layer_saved, LayerGrad, PlanCtx};
    use crate::timeline::Segment;
    let mut out = TowerSegments::default();
    if ip.patches == 0 {
        return out;
    }
    let (shape, an, t) = (&v.shape, &v.an, plan.max_length);
    // the tower's own context: its widths, no dropout (the towers' configs have none)
    let tcx = PlanCtx { hidden_dropout: false, attention_dropout: false, ..*cx };
    let scale = |x: u64| per_lm_token(x, ip.patches, t);
    let hooked = plan.gradient_checkpointing && v.tower.input_hook != InputHook::None;
    let mut input = ip.tower_weights || hooked;
    let ckpt = Segment::per_token(&layer_checkpointed(shape, tcx.w), 0);
    // Under checkpointing `enable_input_require_grads` makes two outputs leaves that require
    // grad, and a leaf used in the graph is held by its AccumulateGrad node until backward:
    // the frozen patch embedding's output (per patch, e·Hv: the first block's input is a new
    // tensor — position embeddings added, or Qwen's window permutation), and the language
    // model's frozen input embeddings (per token, e·H: `masked_scatter` of the image features
    // makes the first decoder layer's input a new tensor).
    if plan.gradient_checkpointing {
        let patch_leaf = hooked && !ip.tower_weights && v.tower.input_hook == InputHook::Patch;
        let leaves = if patch_leaf { scale(tcx.w.e * shape.hidden_size) } else { 0 }
            + if lm.embed_trains { 0 } else { tcx.w.e * lm.hidden_size };
        out.kept_per_token = out.kept_per_token.saturating_add(leaves);
        segs.push(Segment { n: 1, kept: leaves, full: leaves, transient: 0, constant: 0, layer_grads: 0, ..Segment::default() });
    }
    for &(ty, start, end) in &an.runs {
        let info = &an.types[ty as usize];
        let lora = if ip.tower_mask != 0 { info.lora_sums(ip.tower_mask) } else { Default::default() };
        let g = LayerGrad { input, weights: ip.tower_weights, lora };
        if !(g.input || g.any_trains()) {
            continue;
        }
        out.in_graph = true;
        let n = (end - start) as u64;
        let saved = layer_saved(shape, an, info, &g, &tcx);
        if !plan.gradient_checkpointing {
            out.autocast_copies = out.autocast_copies.saturating_add(saved.constant.saturating_mul(n));
        }
        let full = Segment::per_token(&saved, ip.patches_per_image);
        let trainable = if ip.tower_weights { info.params } else { plan.lora_r.saturating_mul(lora.params_per_rank) };
        let kept = scale(if plan.gradient_checkpointing { ckpt } else { full });
        let transient = scale(Segment::per_token(&layer_backward_transient(shape, info, act_plan), ip.patches_per_image));
        out.push_blocks(segs, plan, n, kept, scale(full), transient, saved.constant, trainable.saturating_mul(grad_bytes_per) / grad_scale);
        input = true;
    }
    // SigLIP/CLIP `post_layernorm` over every patch: native_layer_norm keeps its input (a
    // fp32 copy under autocast, layer_norm being on autocast's fp32 list), mean and rstd
    if v.tower.post_norm && (input || ip.tower_weights) {
        let norm = (if tcx.w.autocast { 4 } else { tcx.w.r }) * v.tower.hidden_size + 8
            + if ip.tower_weights { tcx.w.r * v.tower.hidden_size } else { 0 };
        let kept = scale(norm);
        out.kept_per_token = out.kept_per_token.saturating_add(kept);
        segs.push(Segment { n: 1, kept, full: kept, transient: 0, constant: 0, layer_grads: 0, ..Segment::default() });
    }
    // the projector runs per language-model image token (its input: the tower's output)
    let proj = projector_saved(v, tcx.w, input, ip.projector_weights);
    if proj > 0 {
        let grads = if ip.projector_weights { v.projector_params.saturating_mul(grad_bytes_per) / grad_scale } else { 0 };
        let kept = per_lm_token(proj, ip.tokens, t);
        out.kept_per_token = out.kept_per_token.saturating_add(kept);
        segs.push(Segment { n: 1, kept, full: kept, transient: 0, constant: 0, layer_grads: grads, ..Segment::default() });
    }
    out.output_grad = input || ip.projector_weights;
    out
}

/// Training FLOPs the images add per language-model token: per patch, each block's
/// linears (`2·in·out` forward, as many for the input gradient when the block is in the
/// graph, as many again for the weight gradient when it trains, LoRA's `2·r·(in+out)`
/// forward and twice that backward) and non-causal attention within the image
/// (`4·heads·head_dim·patches_per_image` forward, 2.5× backward as for the language model),
/// a forward more under checkpointing; the projector per image token.
pub(crate) fn flops_per_lm_token(v: &VisionAnalysis, ip: &ImagePlan, plan: &crate::plan::Plan, in_graph: bool) -> f64 {
    if ip.patches == 0 {
        return 0.0;
    }
    let an = &v.an;
    let width = 4.0 * (v.shape.num_attention_heads * v.shape.head_dim) as f64;
    let r = plan.lora_r as f64;
    let mut per_patch = 0.0;
    for (block, &t) in an.layers.iter().enumerate() {
        let info = &an.types[t as usize];
        // a windowed block attends over its window only (the window's patches, at most the image's)
        let windowed = v.tower.window_patches > 0 && !v.tower.full_attention_blocks.contains(&(block as u64));
        let ctx = if windowed { v.tower.window_patches.min(ip.patches_per_image) } else { ip.patches_per_image };
        let attn = width * ctx as f64;
        let mut fwd = attn + info.fwd_flops_linear as f64;
        let mut bwd = if in_graph { 2.5 * attn + info.fwd_flops_linear as f64 } else { 0.0 };
        if ip.tower_weights {
            bwd += info.fwd_flops_linear as f64;
        }
        if ip.tower_mask != 0 {
            let lora = 2.0 * r * info.lora_sums(ip.tower_mask).in_plus_out as f64;
            fwd += lora;
            bwd += 2.0 * lora;
        }
        per_patch += fwd + bwd + if plan.gradient_checkpointing && in_graph { fwd } else { 0.0 };
    }
    let proj = v.projector_fwd_flops as f64 * if ip.projector_weights { 3.0 } else if in_graph { 2.0 } else { 1.0 };
    // the projector maps every vision state (Cross: `cross_tokens`), else every image token
    let rows = if ip.cross_tokens > 0 { ip.cross_tokens } else { ip.tokens };
    (per_patch * ip.patches as f64 + proj * rows as f64) / plan.max_length as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Qwen2.5-VL at max_pixels = 1280·28·28 = 1,003,520: 1280 tokens, 5120 patches; the
    /// processor default 12,845,056 px = 16384·28·28 gives 16384 tokens.
    #[test]
    fn dynamic_rule_counts_tokens_and_patches() {
        let rule = ImageRule::Dynamic { patch_size: 14, merge_size: 2, min_pixels: 3136, max_pixels: 12_845_056 };
        assert_eq!(rule.per_image(Some(1_003_520)), (5120, 1280));
        assert_eq!(rule.per_image(None), (65536, 16384));
        assert_eq!(rule.per_image(Some(1_003_520 + 783)), (5120, 1280));
        // below min_pixels = 3136 px the processor scales up to 4 tokens (3136 / 784)
        assert_eq!(rule.per_image(Some(100)), (16, 4));
    }

    /// Llama 3.2 Vision at 560 px tiles of 14 px patches, 4 tiles: 1601 positions per tile
    /// padded to 1608 in the tower, one `<|image|>` token, 4 · 1601 cross-attention states;
    /// the whole image is one attention context whatever `max_pixels` says.
    #[test]
    fn cross_rule_is_one_token_and_tiles_of_vision_states() {
        let rule = ImageRule::Cross { patches: 4 * 1608, tiles: 4, vision_tokens: 4 * 1601 };
        assert_eq!(rule.per_image(None), (6432, 1));
        assert_eq!(rule.per_image(Some(100)), rule.per_image(Some(10_000_000)));
        assert_eq!(rule.attention_context(6432), 6432);
        assert_eq!(rule.cross_tokens(), 6404);
        assert_eq!(ImageRule::Fixed { patches: 4096, tokens: 256, tiles: 1 }.cross_tokens(), 0);
    }
}
