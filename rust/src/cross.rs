//! Llama 3.2 Vision (`mllama`): images reach the text through cross-attention layers, not
//! through tokens of its sequence (modeling_mllama.py, transformers 5).
//!
//! Per image the tower runs `P` positions (`max_num_tiles` tiles of `(image_size / patch)² + 1`
//! positions, each tile padded to a multiple of 8: 4 · 1608 = 6432 at 560 px), local blocks
//! then gated global blocks, every block attending over the whole image under the
//! aspect-ratio mask `[B·media, 1, P, P]` (`_prepare_aspect_ratio_attention_mask`, one tensor
//! of the compute dtype shared by every block). The projector (`Linear(vision_output_dim, H)`)
//! maps each of the `V` = tiles · 1601 unpadded positions to a vision state; every
//! `MllamaCrossAttentionDecoderLayer` projects those states to keys and values and lets the
//! `T` text tokens attend to them under the cross-attention mask `[B, 1, T, V]`
//! (`_prepare_cross_attention_mask`, compute dtype, shared by every cross layer).
//!
//! What differs from the other vision-language models, each priced here:
//!
//! * the tower's blocks are plain `nn.Module`s (`MllamaVisionEncoderLayer` is not a
//!   `GradientCheckpointingLayer`), so checkpointing never recomputes them: once the tower is
//!   in the graph (it trains, or `enable_input_require_grads` hooks its `patch_embedding`
//!   under checkpointing) each block keeps everything it saved;
//! * the SDPA kernels keep the additive masks they are given (`attn_bias` is an input of
//!   their backward): the aspect-ratio mask `e · P²` per image while any tower block is in the
//!   graph, the cross-attention mask `e · T · V` per sample while any cross layer is;
//! * the projected vision states `[B, V, H]` are one tensor read by every cross layer: kept
//!   once when checkpointing passes them to each cross layer's checkpoint, or when the
//!   k/v projections' weights train (their saved input; under autocast each keeps its own
//!   half copy instead);
//! * a cross layer's per-token costs split into the text side (`q_proj`, `q_norm`, the query
//!   and output of attention, `o_proj`, the MLP, the tanh gates) and the vision side
//!   (`k_proj`/`v_proj` inputs under LoRA, `k_norm`, keys and values), which scales with `V`
//!   and is counted here per text token as `⌈x · V / T⌉` ([`crate::vision::per_lm_token`]).

use crate::activations::{norm_saved, AttnKernel, LayerGrad, PlanCtx, Saved};
use crate::analysis::{Analysis, LayerInfo, GROUP_ATTN_IN, GROUP_ATTN_OUT};
use crate::shape::ModelShape;
use crate::timeline::{Segment, Segments};
use crate::analysis::VisionAnalysis;
use crate::vision::{per_lm_token, ImagePlan, LanguageSide, TowerSegments};

/// What the decoder's cross-attention layers read, per sample.
#[derive(Debug, Clone, Copy, Default)]
pub struct CrossCtx {
    /// Vision states per sample (`V` = images · tiles · positions per tile).
    pub tokens: u64,
    /// Text tokens per sample (`T` = max_length).
    pub seq: u64,
    /// The vision states require grad (the tower or the projector is in the graph).
    pub states_grad: bool,
    /// The plan's LoRA target mask (which of q/k/v are adapted).
    pub mask: u64,
}

/// peft LoRA's saved inputs of `n` adapted linears reading `in_f` features in all
/// (`activations::lora_inputs` for one part of a group). Dropout's bool mask is kept only when
/// its input requires grad (autograd records no dropout on a tensor outside the graph: the
/// vision states of a frozen tower), while `lora_A` keeps dropout's output for its weight.
fn lora_in(cx: &PlanCtx, in_f: u64, n: u64, input_grad: bool) -> u64 {
    if n == 0 {
        return 0;
    }
    let drop = if cx.lora_dropout && input_grad { in_f } else { 0 };
    if cx.w.autocast {
        2 * in_f + drop + 2 * cx.lora_r * n
    } else {
        4 * in_f + drop + 4 * cx.lora_r * n
    }
}

/// The attention block of a `MllamaCrossAttentionDecoderLayer`, per text token, added to
/// `out` (modeling_mllama.py `MllamaTextCrossAttention.forward`,
/// `MllamaCrossAttentionDecoderLayer.forward`):
///
/// text side: `input_layernorm`; `q_proj`'s input (weights train: `e·H`, one autocast copy
/// under amp) and LoRA input; `q_norm` (RMSNorm over head_dim: fp32 q and a rsqrt per head,
/// `4·qd + 4·heads`, + the normed q `e·qd` when its weight trains); SDPA's query, output and
/// fp32 log-sum-exp (`e·2·qd + 4·heads`; given the mask, no layout copies); eager keeps q and per
/// vision state its fp32 softmax and half cast (`(4 + e)·heads·V`); `o_proj`'s input; the
/// tanh gates (`residual + gate.tanh() * x`: `mul` keeps `x` for the gate's grad, `e·H` each,
/// when the gates train);
///
/// vision side, per vision state: the LoRA inputs of the adapted `k_proj`/`v_proj` (dropout's
/// mask only when the states require grad: measured on fake-H100 with peft); `k_norm`
/// when the keys need grad (`4·kd + 4·kv_heads`, + `e·kd` when its weight trains); SDPA's keys
/// and values repeated to every head (`e·2·qd`: a mask disables SDPA's native GQA); under autocast the
/// k/v projections' half copies of the states (`2·2·H`) when their weights train.
pub(crate) fn attention_saved(shape: &ModelShape, an: &Analysis, info: &LayerInfo, g: &LayerGrad, cx: &PlanCtx, c: &CrossCtx, out: &mut Saved) {
    let (w, h) = (cx.w, shape.hidden_size);
    let (heads, kvh) = (shape.num_attention_heads, shape.num_key_value_heads);
    let (qd, kd) = (heads * shape.head_dim, kvh * shape.head_dim);
    let live = g.lora.n[GROUP_ATTN_IN] > 0;
    let adapted = |bit: u32| live && c.mask & (1u64 << bit) != 0;
    let Some((q, kv)) = info.attn_in.split_first() else { return };
    let q_lora = adapted(q.bit);
    let (kv_in, kv_n) = kv.iter().filter(|l| adapted(l.bit)).fold((0, 0), |(i, n), l| (i + l.in_f, n + 1));
    let k_lora = kv.first().is_some_and(|k| adapted(k.bit));

    let mut text = norm_saved(shape, w, g.input, g.weights, h) * an.norms_per_block;
    if g.weights {
        text += if w.amp { 2 * q.in_f } else { w.e * q.in_f };
    }
    text += if q_lora { lora_in(cx, q.in_f, 1, g.input) } else { 0 };
    let q_grad = g.input || g.weights || q_lora;
    let k_grad = c.states_grad || g.weights || k_lora;
    let attn_grad = q_grad || c.states_grad || g.weights || kv_n > 0;
    let mut vision = lora_in(cx, kv_in, kv_n, c.states_grad);
    if g.weights && w.amp {
        vision += 2 * kv.iter().map(|l| l.in_f).sum::<u64>();
    }
    if q_grad {
        text += 4 * qd + 4 * heads + if g.weights { w.e * qd } else { 0 };
    }
    if k_grad {
        vision += 4 * kd + 4 * kvh + if g.weights { w.e * kd } else { 0 };
    }
    if attn_grad {
        if cx.kernel == AttnKernel::Eager {
            let rep = if kvh == heads { kd } else { qd };
            text += w.e * qd;
            let mut s = (4 + w.e) * heads;
            if cx.attention_dropout {
                s += (1 + w.e) * heads;
            }
            text = text.saturating_add(s.saturating_mul(c.tokens));
            vision += w.e * 2 * rep;
        } else {
            // with a mask, transformers' sdpa_attention_forward repeats k/v to every head
            // (`use_gqa_in_sdpa` only without one), and the kernel given an explicit bias keeps
            // q, k, v, the output and the log-sum-exp, no layout copies (fake-H100 cuDNN)
            text += w.e * 2 * qd + 4 * heads;
            vision += w.e * 2 * qd;
        }
    }
    if g.weights {
        text += if w.amp { 2 * qd } else { w.e * qd };
    }
    text += lora_o(cx, g);
    if g.weights {
        text += 2 * w.e * h; // the two tanh gates' `mul` inputs
    }
    if cx.hidden_dropout {
        text += h;
    }
    out.per_token = out.per_token.saturating_add(text).saturating_add(per_lm_token(vision, c.tokens, c.seq));
}

fn lora_o(cx: &PlanCtx, g: &LayerGrad) -> u64 {
    lora_in(cx, g.lora.in_f[GROUP_ATTN_OUT], g.lora.n[GROUP_ATTN_OUT], true)
}

/// Eager attention's backward in a tower block, per (position, context position) and head:
/// the matmul with `v` makes the probabilities' grad (`e`) while everything is held; then the
/// probabilities (`e`, saved by that matmul) are freed as the cast back to fp32 makes its
/// grad (`4`); softmax's backward turns that into the scores' grad (`e`) and frees its fp32
/// output. At most `max(e, 4)` more than the block's saved tensors at any moment.
fn eager_transient(mut t: Saved, shape: &ModelShape, cx: &PlanCtx) -> Saved {
    if cx.kernel == AttnKernel::Eager {
        t.per_token_ctx = cx.w.e.max(4) * shape.num_attention_heads;
    }
    t
}

/// One segment of `kept` bytes per language-model token, kept until the backward reaches it.
fn push_once(out: &mut TowerSegments, segs: &mut Segments, kept: u64, grads: u64) {
    out.kept_per_token = out.kept_per_token.saturating_add(kept);
    segs.push(Segment { n: 1, kept, full: kept, layer_grads: grads, ..Segment::default() });
}

/// The tower and projector of a cross-attention model as segments below the decoder (the
/// twin of `vision::push_segments` for the `Cross` rule; module docs for what differs).
pub(crate) fn push_tower_segments(
    v: &VisionAnalysis,
    ip: &ImagePlan,
    plan: &crate::plan::Plan,
    act_plan: &crate::plan::Plan,
    cx: &PlanCtx,
    lm: LanguageSide,
    segs: &mut Segments,
) -> TowerSegments {
    use crate::activations::{layer_backward_transient, layer_saved};
    let mut out = TowerSegments::default();
    if ip.patches == 0 {
        return out;
    }
    let (shape, an, t) = (&v.shape, &v.an, plan.max_length);
    // SDPA given the aspect-ratio mask keeps q, k, v, output and log-sum-exp without cuDNN's
    // layout copies (measured on fake-H100 cuDNN): the memory-efficient kernel's set
    let kernel = if cx.kernel == AttnKernel::Cudnn { AttnKernel::Efficient } else { cx.kernel };
    let tcx = PlanCtx { hidden_dropout: false, attention_dropout: false, cross: None, kernel, ..*cx };
    let (e, hv) = (tcx.w.e, shape.hidden_size);
    let scale = |x: u64| per_lm_token(x, ip.patches, t);
    // MllamaVisionModel.get_input_embeddings returns `patch_embedding`: under checkpointing
    // `enable_input_require_grads` hooks it, and its output is a leaf held until backward
    let hooked = plan.gradient_checkpointing;
    let mut input = ip.tower_weights || hooked;
    if plan.gradient_checkpointing {
        let patch_leaf = if ip.tower_weights { 0 } else { scale(e * hv) };
        let lm_leaf = if lm.embed_trains { 0 } else { e * lm.hidden_size };
        push_once(&mut out, segs, patch_leaf + lm_leaf, 0);
    }
    // layernorm_pre and layernorm_post over every position (LayerNorm keeps its input —
    // a fp32 copy under autocast — mean and rstd, + the normed output when its weight trains)
    let norm = (if tcx.w.autocast { 4 } else { tcx.w.r }) * hv + 8 + if ip.tower_weights { tcx.w.r * hv } else { 0 };
    let mut in_graph = false;
    for &(ty, start, end) in &an.runs {
        let info = &an.types[ty as usize];
        let lora = if ip.tower_mask != 0 { info.lora_sums(ip.tower_mask) } else { Default::default() };
        let g = LayerGrad { input, weights: ip.tower_weights, lora };
        if !(g.input || g.any_trains()) {
            continue;
        }
        if !in_graph {
            push_once(&mut out, segs, scale(norm), 0); // layernorm_pre, before the first block
        }
        in_graph = true;
        let n = (end - start) as u64;
        let saved = layer_saved(shape, an, info, &g, &tcx);
        out.autocast_copies = out.autocast_copies.saturating_add(saved.constant.saturating_mul(n));
        // the global blocks' `gate_attn.tanh() * x` and `gate_ffn.tanh() * x` keep x when the
        // gates train (type 1 of the Cross rule's tower: families/mllama.py)
        let gates = if ty == 1 && ip.tower_weights { 2 * e * hv } else { 0 };
        let full = Segment::per_token(&saved, ip.patches_per_image) + gates;
        let trainable = if ip.tower_weights { info.params } else { plan.lora_r.saturating_mul(lora.params_per_rank) };
        // not GradientCheckpointingLayers: every block keeps all it saved, checkpointing or not
        let transient = scale(Segment::per_token(&eager_transient(layer_backward_transient(shape, info, act_plan), shape, &tcx), ip.patches_per_image));
        out.push_blocks(segs, plan, n, scale(full), scale(full), transient, saved.constant, trainable.saturating_mul(lm.grad_bytes_per) / lm.grad_scale);
        input = true;
        if ty == 0 && end as usize == an.layers.iter().filter(|&&x| x == 0).count() {
            push_once(&mut out, segs, scale(norm), 0); // layernorm_post, between the local and global stacks
        }
    }
    let images = ip.patches / v.tower.images.per_image(None).0.max(1);
    let cross = ip.cross_tokens;
    let mut masks = 0u64;
    if in_graph && tcx.kernel != AttnKernel::Eager {
        // the aspect-ratio mask, [P, P] per image, an input of every block's SDPA backward
        masks = masks.saturating_add(per_lm_token(e * ip.patches_per_image, ip.patches_per_image * images, t));
    }
    // the projector per vision state: its input (the tower's output concatenated with the
    // intermediate layers', `vision_output_dim` wide) when its weight trains
    let proj_in = v.tower.projector.linears.first().map_or(0, |l| l.in_features);
    let mut states = if ip.projector_weights { (if tcx.w.amp { 2 } else { e }) * proj_in } else { 0 };
    // the projected states [B, V, H], one tensor for every cross layer: kept as the cross
    // layers' checkpoint input, or as the k/v projections' input when their weights train
    if plan.gradient_checkpointing || (ip.projector_weights && !tcx.w.amp) {
        states += e * lm.hidden_size;
    }
    let grads = if ip.projector_weights { v.projector_params.saturating_mul(lm.grad_bytes_per) / lm.grad_scale } else { 0 };
    // the cross-attention mask [B, 1, T, V], an input of every cross layer's SDPA backward
    // (and of their checkpoints)
    if tcx.kernel != AttnKernel::Eager || plan.gradient_checkpointing {
        masks = masks.saturating_add(e * cross);
    }
    push_once(&mut out, segs, per_lm_token(states, cross, t).saturating_add(masks), grads);
    out.cross_states_grad = input || ip.projector_weights;
    out.in_graph = in_graph;
    out
}

/// FLOPs per text token that the cross-attention layers cost beyond what `throughput.rs`
/// counts for them as if they were self-attention layers over the text: attention over the
/// `V` vision states (non-causal, the kernel given a mask: `4·qd·V` forward) in place of the
/// text's own context, and `k_proj`/`v_proj` run per vision state (`2·in·out · V/T`) in place
/// of per text token. Backward as there: attention ×2.5 (eager ×2), the input gradient of
/// k/v when the vision states need grad, their weight gradient when they train, LoRA's
/// `2·r·(in+out)` per adapted k/v forward and twice that backward; checkpointing recomputes
/// the forward. Every cross layer is taken as in the graph (its text input requires grad
/// whenever anything below it or in it trains).
pub(crate) fn flops_correction(an: &Analysis, shape: &ModelShape, plan: &crate::plan::Plan, c: &CrossCtx, frozen: u64) -> f64 {
    use crate::plan::{Attention, Method};
    if c.tokens == 0 {
        return 0.0;
    }
    let eager = plan.attn_implementation == Attention::Eager || shape.hints.eager_only;
    let whole = eager || plan.context_follows_batch();
    let s = plan.attention_context(plan.per_device_train_batch_size) as f64;
    let qd = (shape.num_attention_heads * shape.head_dim) as f64;
    let (v, t) = (c.tokens as f64, c.seq.max(1) as f64);
    let bwd_attn = if eager { 2.0 } else { 2.5 };
    let full = plan.method == Method::Full;
    let r = plan.lora_r as f64;
    let mut total = 0.0;
    for (i, &ty) in an.layers.iter().enumerate() {
        let info = &an.types[ty as usize];
        if !info.cross_attention {
            continue;
        }
        let live = i as u64 >= frozen;
        let attn = 4.0 * qd * (v - s * if whole { 1.0 } else { 0.5 });
        let (mut fwd, mut bwd) = (attn, attn * bwd_attn);
        for l in info.attn_in.iter().skip(1) {
            let mac = 2.0 * (l.in_f * l.out_f * l.count) as f64 * (v / t - 1.0);
            fwd += mac;
            bwd += if c.states_grad { mac } else { 0.0 } + if full && live { mac } else { 0.0 };
            if !full && live && c.mask & (1 << l.bit) != 0 {
                let lora = 2.0 * r * (l.in_f + l.out_f) as f64 * (v / t - 1.0);
                fwd += lora;
                bwd += 2.0 * lora;
            }
        }
        total += fwd + bwd + if plan.gradient_checkpointing { fwd } else { 0.0 };
    }
    total
}
