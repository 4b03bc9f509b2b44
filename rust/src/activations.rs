//! What autograd keeps for backward, per token, op by op.
//!
//! Each rule follows an op's derivative formula in PyTorch's
//! `tools/autograd/derivatives.yaml`: a product `a * b` keeps `b` if `a` needs a gradient
//! and `a` if `b` does; `F.linear(x, W)` keeps `x` only if `W` trains; SiLU/GELU keep their
//! input; native `layer_norm` keeps input, mean and rstd; SDPA's flash and
//! memory-efficient kernels keep q, k, v, the output and a fp32 log-sum-exp per head.
//! Module code is transformers 5's (`modeling_llama.py` and relatives) and peft's
//! `LoraLayer.forward` (the input is cast to the adapter's fp32 dtype, then dropout).
//!
//! Units: `b_*` = bytes per token, `s_*` = bytes per token per token of context (eager
//! attention's score matrices), `c_*` = bytes independent of tokens (autocast copies).

use crate::analysis::{Act, Analysis, LayerInfo, LoraSums, GROUP_ATTN_IN, GROUP_ATTN_OUT, GROUP_MLP_IN, GROUP_MLP_OUT};
use crate::gpu::GpuSpec;
use crate::plan::{Attention, Dtype, Plan, Trainer};
use crate::shape::{Hints, Mixer, MixerKind, ModelShape, NormKind};

/// Saved-for-backward bytes of one layer.
#[derive(Debug, Clone, Copy, Default)]
pub struct Saved {
    pub per_token: u64,
    pub per_token_ctx: u64,
    pub constant: u64,
}

/// Which parts of one layer take part in autograd.
#[derive(Debug, Clone, Copy)]
pub struct LayerGrad {
    /// The layer's input requires grad (something below trains).
    pub input: bool,
    /// The base weights train (full fine-tuning, layer not frozen).
    pub weights: bool,
    /// The adapted linears of this layer (all zero when frozen or full fine-tuning).
    pub lora: LoraSums,
}

impl LayerGrad {
    pub fn any_trains(&self) -> bool {
        self.weights || self.lora.any
    }
}

/// What every layer of one plan shares: widths, the attention kernel, which dropouts are on.
#[derive(Debug, Clone, Copy)]
pub struct PlanCtx {
    pub w: Widths,
    pub kernel: AttnKernel,
    pub lora_r: u64,
    /// LoRA dropout is active (it keeps a mask).
    pub lora_dropout: bool,
    /// Residual-branch dropout is active.
    pub hidden_dropout: bool,
    /// Attention-probability dropout is active.
    pub attention_dropout: bool,
    /// What cross-attention layers read (Llama 3.2 Vision's vision states: cross.rs);
    /// `None` without images.
    pub cross: Option<crate::cross::CrossCtx>,
    /// The sequence length (`max_length`): whether a sliding-window layer needs a mask.
    pub max_length: u64,
    /// On SDPA's half-precision path (no eager, no flash_attention_2, no fp32, no dropout):
    /// whether the GPU is Hopper or newer (cuDNN attention eligible); `None` off that path.
    pub sdpa_half_hopper: Option<bool>,
}

impl PlanCtx {
    pub fn new(shape: &ModelShape, plan: &Plan, gpu: Option<&GpuSpec>) -> Self {
        PlanCtx {
            w: Widths::of(plan.dtype),
            kernel: attention_kernel(shape, plan, gpu),
            lora_r: plan.lora_r,
            lora_dropout: dropout(plan, plan.lora_dropout) > 0.0,
            hidden_dropout: dropout(plan, shape.hints.hidden_dropout) > 0.0,
            attention_dropout: dropout(plan, shape.hints.attention_dropout) > 0.0,
            cross: None,
            max_length: plan.max_length,
            sdpa_half_hopper: sdpa_half_hopper(shape, plan, gpu),
        }
    }
}

/// Bytes per element for the tensors a plan produces.
#[derive(Debug, Clone, Copy)]
pub struct Widths {
    /// Matmul outputs (bf16/fp16 under half or autocast, fp32 otherwise).
    pub e: u64,
    /// Residual stream and norm outputs (fp32 under autocast).
    pub r: u64,
    /// fp32 master weights under autocast.
    pub amp: bool,
    /// The forward runs under `torch.autocast`: Trainer's `bf16=True` wraps it even when
    /// the weights are already bf16 (accelerate `convert_outputs_to_fp32(autocast(...))`).
    pub autocast: bool,
}

impl Widths {
    pub fn of(dtype: Dtype) -> Self {
        Widths {
            e: dtype.compute_bytes(),
            r: dtype.residual_bytes(),
            amp: dtype.is_amp(),
            autocast: !matches!(dtype, Dtype::Fp32 | Dtype::Fp16),
        }
    }
}

/// Bytes per MLP-width element an activation keeps (derivatives.yaml: silu/gelu/relu keep
/// their input). transformers' python `NewGELUActivation` ("gelu_new": GPT-2, Phi-2)
/// computes `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))` and keeps x (for pow), tanh(…),
/// 0.5·x and 1+tanh(…); under autocast `pow` and `tanh` run in fp32 (autocast's fp32 op
/// list), so three of the four are fp32: 4 + 4 + 2 + 4 = 14 bytes instead of 4 × 2.
pub fn act_saved_bytes(act: Act, w: Widths) -> u64 {
    match act {
        Act::GeluTanh => {
            if w.autocast && w.e < 4 {
                14
            } else {
                4 * w.e
            }
        }
        Act::QuickGelu => 2 * w.e,
        Act::Relu | Act::Other => w.e,
    }
}

/// A dropout probability as training sees it: trl's DPOTrainer sets every dropout to 0
/// (`DPOConfig.disable_dropout=True`), LoRA's included.
pub fn dropout(plan: &Plan, p: f64) -> f64 {
    if plan.trainer == Trainer::Dpo {
        0.0
    } else {
        p
    }
}

/// Saved bytes per token of one norm over `h` features.
pub(crate) fn norm_saved(shape: &ModelShape, w: Widths, input_grad: bool, weight_trains: bool, h: u64) -> u64 {
    match shape.norm {
        // HF RMSNorm: x.to(fp32); pow keeps x32; rsqrt keeps its [.,1] output; then
        // weight * normed.to(dtype) keeps normed (Gemma: in fp32) when the weight trains.
        NormKind::RmsNorm => {
            let x = if input_grad { 4 * h + 4 } else { 0 };
            let wt = if weight_trains { if shape.hints.norm_fp32_weight { 4 * h } else { w.r * h } } else { 0 };
            x + wt
        }
        // native_layer_norm keeps input, mean and rstd (fp32); layer_norm is on autocast's
        // fp32 list, so a half input is first copied to fp32 and that copy is kept.
        NormKind::LayerNorm => {
            if input_grad || weight_trains {
                (if w.autocast { 4 } else { w.r }) * h + 8
            } else {
                0
            }
        }
    }
}

/// peft LoRA branch on the adapted linears of one group: per linear with `in_f` inputs,
/// `lora_B(lora_A(dropout(x.to(fp32))))` (peft `LoraLayer._cast_input_dtype` casts to the
/// fp32 adapter dtype).
fn lora_inputs(cx: &PlanCtx, g: &LayerGrad, group: usize) -> u64 {
    let (in_f, n) = (g.lora.in_f[group], g.lora.n[group]);
    let drop = if cx.lora_dropout { in_f } else { 0 };
    if cx.w.autocast {
        // under autocast lora_A keeps its half cast of the (fp32) input; dropout keeps a
        // bool mask; the fp32 copy and dropout's output are temporaries
        2 * in_f + drop + 2 * cx.lora_r * n
    } else {
        // half base: a fp32 copy per adapted module; dropout keeps mask + its fp32 output
        4 * in_f + drop + 4 * cx.lora_r * n
    }
}

/// Input kept by the base linears of one group: one shared tensor in half/fp32, one
/// autocast copy per linear under amp.
fn base_inputs(w: Widths, g: &LayerGrad, info: &LayerInfo, group: usize) -> u64 {
    if !g.weights {
        0
    } else if w.amp {
        2 * info.group_in_sum[group]
    } else {
        w.e * info.group_first_in[group]
    }
}

/// The attention kernel PyTorch's SDPA dispatch picks (torch/nn/attention, sdp_utils):
/// cuDNN on Hopper and newer for half inputs without dropout, memory-efficient attention
/// for fp32 or dropout, FlashAttention otherwise. Without a GPU, Hopper is assumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttnKernel {
    Eager,
    Cudnn,
    Flash,
    Efficient,
}

/// `Some(hopper)` when SDPA picks among its half-precision kernels (see [`attention_kernel`]).
fn sdpa_half_hopper(shape: &ModelShape, plan: &Plan, gpu: Option<&GpuSpec>) -> Option<bool> {
    let off = plan.attn_implementation != Attention::Sdpa
        || shape.hints.eager_only
        || Widths::of(plan.dtype).e == 4
        || dropout(plan, shape.hints.attention_dropout) > 0.0;
    (!off).then(|| gpu.and_then(GpuSpec::cc_major).is_none_or(|major| major >= 9))
}

/// The kernel of one layer whose head width `qd / heads` is its own (`Hints::
/// per_layer_attention`, Gemma 4): on the half path, heads wider than 256 run the
/// memory-efficient kernel (FlashAttention and cuDNN take at most 256), as fake-H100 SDPA
/// dispatched on Gemma 4's 512-wide full-attention layers (benches/cases_accuracy.json
/// `g4-*`, `attention_ops`). Otherwise the model's kernel.
pub fn layer_kernel(shape: &ModelShape, cx: &PlanCtx, qd: u64) -> AttnKernel {
    let heads = shape.num_attention_heads.max(1);
    match cx.sdpa_half_hopper {
        Some(_) if shape.hints.per_layer_attention && qd / heads > 256 => AttnKernel::Efficient,
        _ => cx.kernel,
    }
}

pub fn attention_kernel(shape: &ModelShape, plan: &Plan, gpu: Option<&GpuSpec>) -> AttnKernel {
    if plan.attn_implementation == Attention::Eager || shape.hints.eager_only {
        return AttnKernel::Eager;
    }
    if plan.attn_implementation == Attention::FlashAttention2 {
        return AttnKernel::Flash;
    }
    // a dense float mask that needs its gradient: only the memory-efficient kernel takes
    // one (sdpa_attention.py `create_position_bias_mask`; activations_conv.rs)
    if shape.hints.dense_position_bias {
        return AttnKernel::Efficient;
    }
    let w = Widths::of(plan.dtype);
    if w.e == 4 || dropout(plan, shape.hints.attention_dropout) > 0.0 {
        return AttnKernel::Efficient;
    }
    let hopper = gpu.and_then(GpuSpec::cc_major).is_none_or(|major| major >= 9);
    if hopper && shape.head_dim <= 128 {
        AttnKernel::Cudnn
    } else {
        AttnKernel::Flash
    }
}

/// Saved bytes of one layer for a plan (no checkpointing): the attention block
/// ([`attention_saved`]), the MLP block ([`mlp_saved`]) and its routed experts
/// ([`moe_saved`]), the residual dropout's mask, and autocast's half copies of the weights.
pub fn layer_saved(shape: &ModelShape, an: &Analysis, info: &LayerInfo, g: &LayerGrad, cx: &PlanCtx) -> Saved {
    let w = cx.w;
    let h = shape.hidden_size;
    let mut out = Saved::default();
    let trains = g.any_trains();
    if !g.input && !trains {
        return out; // not in the graph at all
    }
    if info.attention {
        attention_saved(shape, an, info, g, cx, &mut out);
        crate::activations_conv::conv_bias_saved(shape, cx, &mut out);
    } else if info.mixer.is_some() {
        mixer_block_saved(shape, info, g, cx, &mut out);
    }
    if let Some(m) = &info.mixer {
        mixer_scan_saved(shape, m, info, g, cx, &mut out);
        if info.attention && shape.hints.concat_embeddings {
            out.per_token += shared_block_sequence_saved(shape, g, cx);
        }
    }
    if !an.mixed_blocks || info.has_ffn {
        mlp_saved(shape, an, info, g, cx, &mut out);
    }
    if info.moe {
        out.per_token += moe_saved(shape, info, g, w, act_saved_bytes(an.act, w));
        out.per_token += norm_saved(shape, w, true, g.weights, h) * shape.hints.moe_block_norms;
    }
    if shape.hints.per_layer_input_width > 0 {
        out.per_token += per_layer_input_saved(shape, an, g, cx);
    }
    if cx.hidden_dropout {
        out.per_token += h;
    }
    out.per_token += 2 * hyper_connection_saved(shape, w);
    // autocast keeps a half copy of every fp32 weight whose grad path needs it until backward
    if w.amp && (g.weights || g.input || trains) {
        out.constant += 2 * info.linear_weight_params;
    }
    out
}

/// The attention block's saved bytes, added to `out`: its norm(s), the inputs of the
/// q/k/v projections (base and LoRA), what the attention kernel keeps ([`qkv_saved`]),
/// the output projection's input, a dropout mask and cross-attention's projections.
fn attention_saved(shape: &ModelShape, an: &Analysis, info: &LayerInfo, g: &LayerGrad, cx: &PlanCtx, out: &mut Saved) {
    if let (true, Some(c)) = (info.cross_attention, cx.cross.as_ref()) {
        return crate::cross::attention_saved(shape, an, info, g, cx, c, out);
    }
    let (w, h) = (cx.w, shape.hidden_size);
    let heads = shape.num_attention_heads;
    let (qd, kd) = attn_widths(shape, info);
    let kernel = layer_kernel(shape, cx, qd);
    out.per_token += norm_saved(shape, w, g.input, g.weights, h) * an.norms_per_block;
    out.per_token += base_inputs(w, g, info, GROUP_ATTN_IN) + lora_inputs(cx, g, GROUP_ATTN_IN);
    let qkv_grad = g.input || g.weights || g.lora.n[GROUP_ATTN_IN] > 0;
    if qkv_grad {
        qkv_saved(shape, (qd, kd), info.sliding_window, g, &PlanCtx { kernel, ..*cx }, out);
    }
    let o_in: u64 = info.attn_out_in.unwrap_or(qd);
    let gated = shape.hints.attn_gate_width > 0;
    if gated && qkv_grad {
        out.per_token += attn_gate_saved(shape, g, cx, o_in);
    }
    // under cuDNN the output is already contiguous after `transpose(1, 2)`: o_proj keeps
    // the very tensor counted above (unless a gate multiplies it into a new one first)
    if g.weights && !(qkv_grad && kernel == AttnKernel::Cudnn && !gated) {
        out.per_token += if w.amp { 2 * o_in } else { w.e * o_in };
    }
    out.per_token += lora_inputs(cx, g, GROUP_ATTN_OUT);
    if cx.hidden_dropout {
        out.per_token += h; // bool mask on the attention branch
    }
    if info.cross_attention {
        // cross-attention: same projections over encoder states (approximation: as self)
        out.per_token += base_inputs(w, g, info, GROUP_ATTN_IN) + w.e * (2 * qd + 2 * kd) + 4 * heads;
    }
}

/// The per-layer input branch after the MLP (modeling_gemma4.py `Gemma4TextDecoderLayer.
/// forward`, P = `hidden_size_per_layer_input`): `per_layer_input_gate(h)` keeps h when its
/// weight trains; the activation keeps the gate's output ([`act_saved_bytes`] · P); the
/// product with the layer's slice of the per-layer inputs keeps that slice (a view of the
/// model-wide `[B, S, L, P]` tensor, counted once: estimator.rs `tail_per_token`) and, when
/// that slice needs a gradient (the PLE weights train), the activation's output (e · P);
/// `per_layer_projection` keeps the product (e · P) when its weight trains;
/// `post_per_layer_input_norm` over H is one more norm ([`norm_saved`]); `hidden_states *=
/// layer_scalar` multiplies by a buffer and keeps nothing per token.
fn per_layer_input_saved(shape: &ModelShape, an: &Analysis, g: &LayerGrad, cx: &PlanCtx) -> u64 {
    let (w, h, p) = (cx.w, shape.hidden_size, shape.hints.per_layer_input_width);
    let half_in = |n: u64| if w.amp { 2 * n } else { w.e * n };
    let mut bytes = act_saved_bytes(an.act, w) * p + norm_saved(shape, w, true, g.weights, h);
    if g.weights {
        bytes += half_in(h) + w.e * p + half_in(p);
    }
    bytes
}

/// Gated attention output (modeling_afmoe.py `AfmoeAttention.forward`:
/// `output = output * torch.sigmoid(gate_states)` before `o_proj`; modeling_beam.py adds a
/// per-head bias first; modeling_laguna.py: `F.softplus(g_proj(x).float()).to(dtype)`, per
/// head or per channel). derivatives.yaml: `sigmoid_backward(grad, result)` keeps the
/// sigmoid's output (e · gw); `softplus_backward(grad, self, …)` keeps its fp32 input
/// (4 · gw) and the mul then keeps the half cast (e · gw); `mul` keeps both operands, the
/// gate (counted) and the attention output (e · q): under cuDNN that is the contiguous
/// output SDPA already keeps ([`qkv_saved`]), under flash/efficient/eager a new copy
/// (`transpose(1, 2).contiguous()` in sdpa/eager_attention_forward). gw = gate width.
/// The gate projection is outside the attention groups (role "other"); under amp its
/// autocast half copy of the normed input (2 · H) is kept when its weight trains.
fn attn_gate_saved(shape: &ModelShape, g: &LayerGrad, cx: &PlanCtx, q: u64) -> u64 {
    let (e, gw) = (cx.w.e, shape.hints.attn_gate_width);
    let gate = if shape.hints.attn_gate_fp32 { 4 * gw + e * gw } else { e * gw };
    let output = if cx.kernel == AttnKernel::Cudnn { 0 } else { e * q };
    let input = if g.weights && cx.w.amp { 2 * shape.hidden_size } else { 0 };
    gate + output + input
}

/// What a Zamba hybrid layer keeps beyond an attention + mixer layer whose mixer reads the
/// attention's normed input (`concat_embeddings`; modeling_zamba2.py `Zamba2HybridLayer`):
/// the attention's pre-norm is 2H wide, not H (`input_layernorm` over the concatenation:
/// one more H of what [`norm_saved`] keeps); the Mamba block has its own pre-norm over
/// `hidden + linear(transformer_out)` (another H-wide norm) whose output in_proj keeps when
/// its weight trains (a tensor of its own, e · H; under amp the autocast copy is in the
/// attention group's sum already); and `linear` keeps its input (the MLP's output) when
/// its weight trains.
fn shared_block_sequence_saved(shape: &ModelShape, g: &LayerGrad, cx: &PlanCtx) -> u64 {
    let (w, h) = (cx.w, shape.hidden_size);
    // the concatenation needs a gradient when the layer's input does; the Mamba block's
    // input also when anything in the shared block or `linear` trains
    let norms = norm_saved(shape, w, g.input, g.weights, h) + norm_saved(shape, w, g.input || g.any_trains(), g.weights, h);
    let inputs = if !g.weights {
        0
    } else if w.amp {
        2 * h // linear's autocast copy
    } else {
        2 * w.e * h // in_proj's and linear's inputs
    };
    norms + inputs
}

/// A layer whose token mixer is not attention (Mamba, Gated DeltaNet, short convolution),
/// its block's saved bytes added to `out`: the pre-norm, the in-projections' input (base
/// and LoRA: they are the "attention"-role linears reading the normed hidden state), the
/// output projection's input (`d_inner` wide) and a dropout mask. The scan itself is
/// [`mixer_scan_saved`].
fn mixer_block_saved(shape: &ModelShape, info: &LayerInfo, g: &LayerGrad, cx: &PlanCtx, out: &mut Saved) {
    let (w, h) = (cx.w, shape.hidden_size);
    out.per_token += norm_saved(shape, w, g.input, g.weights, h);
    out.per_token += base_inputs(w, g, info, GROUP_ATTN_IN) + lora_inputs(cx, g, GROUP_ATTN_IN);
    out.per_token += lora_inputs(cx, g, GROUP_ATTN_OUT);
    if cx.hidden_dropout {
        out.per_token += h;
    }
}

/// What a mixer's own operations keep for backward, per token, on the path transformers 5
/// runs without the `fla`, `mamba_ssm` and `causal_conv1d` packages (their torch
/// fallbacks; with the kernels installed far less is kept). Counted tensor by tensor in
/// the modeling code (and checked against autograd's saved tensors on CPU and the
/// fake-tensor truth cases, benches/cases_accuracy.json). `e` is the compute width; the
/// scans compute in fp32 (4 bytes). Kept only when something below or inside the mixer
/// needs a gradient; the output projection's input when its weight trains.
fn mixer_scan_saved(shape: &ModelShape, m: &Mixer, info: &LayerInfo, g: &LayerGrad, cx: &PlanCtx, out: &mut Saved) {
    let w = cx.w;
    let in_grad = g.input || g.weights || g.lora.n[GROUP_ATTN_IN] > 0;
    if g.weights {
        // out_proj keeps its input (an autocast copy under amp); Mamba-1's x_proj and
        // dt_proj keep theirs (the convolution's activated output, the dt rank)
        let e_in = if w.amp { 2 } else { w.e };
        // (beside attention, as in Falcon-H1, attention_saved counted the wider of o_proj's
        // and out_proj's inputs: add the narrower)
        let out_in = if info.attention {
            (shape.num_attention_heads * shape.head_dim + m.d_inner).saturating_sub(info.attn_out_in.unwrap_or(0))
        } else {
            m.d_inner
        };
        out.per_token += e_in * out_in + if m.kind == MixerKind::Mamba { e_in * (m.d_inner + m.dt_rank) } else { 0 };
        if m.kind == MixerKind::Mamba2 {
            out.per_token += mamba2_weight_saved(m);
        }
    }
    if !in_grad {
        return;
    }
    out.per_token += mixer_core_bytes(m, w);
}

/// What a Mamba-2 mixer's torch path keeps only for its own small weights' gradients
/// (modeling_zamba2.py / modeling_nemotron_h.py `mamba2_chunk_scan`, `…RMSNormGated`):
/// `D[..., None] * pad_tensor_by_size(x)` keeps the padded fp32 copy of x for D's grad
/// (4 · I; `pad` returns a new tensor even with no padding), and the gated norm's
/// `weight * hidden.to(input_dtype)` keeps the normed fp32 scan output for the weight's
/// grad (4 · I: its input dtype is the scan's fp32). The depthwise convolution's input is
/// a view of in_proj's output, kept already ([`mixer_core_bytes`]).
fn mamba2_weight_saved(m: &Mixer) -> u64 {
    4 * m.d_inner + if m.gated_norm { 4 * m.d_inner } else { 0 }
}

/// Per-token bytes a mixer's torch path keeps when its input needs a gradient (`e`: the
/// compute width; `nv` heads of `dk`/`dv`, `C` the chunk, `I` = d_inner, `N` = d_state):
///
/// * Gated DeltaNet (modeling_qwen3_next.py `Qwen3NextGatedDeltaNet.forward`,
///   `torch_chunk_gated_delta_rule`, `Qwen3NextRMSNormGated`): the convolution's input and
///   output (2·e·conv_dim), β = sigmoid(b) (e·nv), fp32 per-head scalars (decay g, its
///   softplus input, cumsums, chunk decays, the norm's rsqrt: 32·nv), fp32 q/k copies
///   through the l2-norm, scaling, β and decay products and their per-chunk slices (8 of
///   nv·dk: 32·nv·dk), fp32 values (v, v·β, v_new, the norm's fp32 input, normed and gated
///   output: 24·nv·dv) with the gate product's half input (e·nv·dv), C×C chunk matrices (the
///   pairwise decay, k_β·kᵀ, q·kᵀ, their masked products: 5 × 4·nv·C) and one fp32 state
///   [dk, dv] per head and chunk (4·nv·dk·dv/C);
/// * Mamba-1 (modeling_mamba.py `MambaMixer.forward`, `mamba_selective_scan`: the
///   sequential loop, since the associative scan runs only under torch.compile): per step
///   the fp32 state and its cast to the compute dtype for `@ C` (4 + e)·I·N, plus the fp32
///   discretised A and B·u over the whole sequence (8·I·N); in_proj's output (2·e·I), the
///   convolution's output (e·I), the gate, dt and their fp32 copies ((3e + 8)·I), x_proj's
///   output e·(R + 2N) and B in fp32 (4·N); in fp32 the cast is the state itself;
/// * Mamba-2 (modeling_nemotron_h.py / modeling_falcon_h1.py `torch_forward`): in_proj's
///   output e·(I + conv_dim + nv), the convolution's output e·conv_dim, fp32 B and C
///   repeated per head with their chunked views (5 × 4·nv·N), C×C per-head chunk matrices
///   (segment sums, decays, C·Bᵀ: 3 × 4·nv·C), per-head scalars (dt, A·dt, their cumsums:
///   12·nv + 2·e·nv), chunk states (2 × 4·nv·hd·N/C), and fp32 copies of x and the scan
///   output (5 × 4·I) with the gate's product (e·I), or with the gated RMSNorm its fp32
///   input, normed and gated output (8 × 4·I) and a rsqrt per group (4·G). Under autocast
///   (Trainer's `bf16=True`, also on bf16 weights) the chunk scan's five einsums run as
///   half-width bmm (autocast's lower-precision op list), so what they keep is the e-wide
///   cast, not the fp32 tensor: G = C·Bᵀ keeps C and B and its output (kept by G·L) is e
///   wide (2·nv·N + nv·C), Y_diag keeps M and x (nv·C + I), the chunk states keep B·decay
///   and x (nv·N + I), the inter-chunk recurrence keeps the states (nv·hd·N/C), and C·states
///   keeps C and the states (nv·N + nv·hd·N/C) and its output (kept by the decay product,
///   I): each of those 4·nv·N + 2·nv·C + 3·I + 2·nv·hd·N/C elements is e instead of 4 bytes
///   (measured on fake tensors with and without `torch.autocast`, three (N, C, heads,
///   head_dim) shapes: exact up to the per-sequence chunk-count terms);
/// * short convolution (modeling_lfm2.py `Lfm2ShortConv.forward`): in_proj's output B·C·x
///   (3·e·d), the product B·x the convolution reads (e·d) and the convolution's output the
///   C· product keeps (e·d).
pub fn mixer_core_bytes(m: &Mixer, w: Widths) -> u64 {
    let e = w.e;
    let (nv, c, i, n) = (m.heads, m.chunk_size.max(1), m.d_inner, m.d_state);
    match m.kind {
        MixerKind::GatedDeltaNet => {
            let (dk, dv) = (m.key_head_dim, m.head_dim);
            2 * e * m.conv_dim + e * nv + 32 * nv + 32 * nv * dk + (24 + e) * nv * dv + 20 * nv * c + 4 * nv * dk * dv / c
        }
        MixerKind::Mamba => {
            let cast = if e < 4 { e } else { 0 };
            (4 + cast + 8) * i * n + (6 * e + 8) * i + e * (m.dt_rank + 2 * n) + 4 * n
        }
        MixerKind::Mamba2 => {
            let hd = m.head_dim;
            let common = 20 * nv * n + 12 * nv * c + 12 * nv + 2 * e * nv + 8 * nv * hd * n / c + e * (i + m.conv_dim + nv) + e * m.conv_dim;
            // the einsums' fp32 operands and outputs kept as autocast's half-width casts
            let einsum_elems = 4 * nv * n + 2 * nv * c + 3 * i + 2 * nv * hd * n / c;
            let narrowed = if w.autocast && e < 4 { (4 - e) * einsum_elems } else { 0 };
            common - narrowed + if m.gated_norm { 32 * i + 4 * m.n_groups } else { 20 * i + e * i }
        }
        MixerKind::ShortConv => 5 * e * m.d_inner,
    }
}

/// The query width and the width of the keys (= values) a layer computes itself:
/// `heads · head_dim` and `kv_heads · head_dim` from the shape, or with
/// `Hints::per_layer_attention` from the layer's own projections (Gemma 4,
/// modeling_gemma4.py `Gemma4TextAttention`): q from `o_proj`'s input (heads · hd of the
/// layer), k from `k_proj` (the second attention input projection, after `q_proj`), and 0 in
/// a layer that reuses an earlier layer's K/V (`is_kv_shared_layer`: no `k_proj`; the
/// tensors SDPA keeps there are the producer's, counted once in the producer).
fn attn_widths(shape: &ModelShape, info: &LayerInfo) -> (u64, u64) {
    let (qd, kd) = (shape.num_attention_heads * shape.head_dim, shape.num_key_value_heads * shape.head_dim);
    if !shape.hints.per_layer_attention {
        return (qd, kd);
    }
    (info.attn_out_in.unwrap_or(qd), info.attn_in.get(1).map_or(0, |k| k.out_f))
}

/// What attention keeps when q, k, v need grads, added to `out`: per-head q/k norms, then
/// eager's q, k, v (`e · (qd + 2·rep)`) and per context token its fp32 softmax and half
/// cast (`(4 + e) · heads`, + softcapping's tanh and dropout's mask), or SDPA's q, k, v,
/// output and fp32 log-sum-exp (`e · (2·qd + 2·kd) + 4 · heads`, cuDNN: + its copies).
fn qkv_saved(shape: &ModelShape, (qd, kd): (u64, u64), window: u64, g: &LayerGrad, cx: &PlanCtx, out: &mut Saved) {
    let (w, hints): (Widths, &Hints) = (cx.w, &shape.hints);
    let heads = shape.num_attention_heads;
    // K/V heads of this layer: kd over the layer's head width qd / heads
    let kv_heads = if qd == 0 { 0 } else { kd * heads / qd };
    if hints.qk_norm {
        // per-head RMSNorm on q and k: fp32 copies and rsqrt per head
        out.per_token += 4 * (qd + kd) + 4 * (heads + kv_heads);
        if g.weights {
            out.per_token += w.e * (qd + kd);
        }
    }
    if hints.v_norm {
        // Gemma4RMSNorm(with_scale=False) on v: `x.float()` kept by pow and by the product
        // with `pow(mean(x²) + eps, -0.5)`, whose [.., 1] output (and its input) it keeps too
        out.per_token += 4 * kd + 8 * kv_heads;
    }
    if hints.dsa_indexer_heads > 0 && cx.kernel != AttnKernel::Eager {
        // DSA folds the indexer's top-k into a materialised `[B, 1, S, T]` mask
        // (modeling_deepseek_v32.py: `attention_mask & ~index_mask`); SDPA turns a bool
        // mask into an additive bias of the query's dtype and its backward keeps it
        out.per_token_ctx += w.e;
    }
    if cx.kernel == AttnKernel::Eager {
        let rep = if kd == 0 { 0 } else if kv_heads == heads { kd } else { qd };
        out.per_token += w.e * (qd + 2 * rep);
        // fp32 softmax output + its cast to the compute dtype, per (token, context)
        let mut s = (4 + w.e) * heads;
        if hints.attn_logit_softcapping {
            s += w.e * heads; // tanh keeps its output
        }
        if cx.attention_dropout {
            s += (1 + w.e) * heads;
        }
        out.per_token_ctx += s;
    } else {
        // q, k, v (GQA passed natively), output, fp32 logsumexp per head; where transformers
        // repeats K/V to every head first, the repeated copies (see `sdpa_repeats_kv`)
        let masked = window > 0 && cx.max_length > window;
        let kept_kv = if sdpa_repeats_kv(shape, qd, kd, masked, cx.kernel) { qd } else { kd };
        out.per_token += w.e * (2 * qd + 2 * kept_kv) + 4 * heads;
        if masked && shape.hints.per_layer_attention {
            // the sliding window's bool mask [B, 1, S, S] becomes an additive bias in the
            // query's dtype that the kernel keeps for backward (as the DSA mask above)
            out.per_token_ctx += w.e;
        }
        if cx.kernel == AttnKernel::Cudnn {
            // cuDNN keeps its layout-normalised copies of q, k, v and an output in
            // [b, s, h, d] layout (measured on fake-H100 SDPA, benches/truth); without
            // rotary, q, k, v already have that layout and are not copied
            let copies = if hints.attention_without_rope { 0 } else { qd + 2 * kept_kv };
            out.per_token += w.e * copies + w.e * qd;
        }
    }
}

/// transformers passes grouped K/V to SDPA natively only without a mask and with heads of at
/// most 256 (integrations/sdpa_attention.py `use_gqa_in_sdpa`: "CUDA ... require no mask and
/// supported head dims to avoid falling back to the math kernel"); otherwise `repeat_kv`
/// expands K and V to every query head, `x[:, :, None].expand(b, kv, n, s, d).reshape(b,
/// kv·n, s, d)`: a copy that SDPA keeps when kv > 1, a view (the size-1 dim merges with the
/// stride-0 one) with a single K/V head, which the memory-efficient kernel then copies to
/// its contiguous layout. With `Hints::per_layer_attention` only (Gemma 4: 512-wide
/// full-attention heads on the efficient kernel, sliding layers masked past their window); a
/// layer reusing an earlier layer's K/V (`kd` = 0) repeats the shared tensors itself, with
/// the model's `num_key_value_heads`.
fn sdpa_repeats_kv(shape: &ModelShape, qd: u64, kd: u64, masked: bool, kernel: AttnKernel) -> bool {
    let heads = shape.num_attention_heads;
    if !shape.hints.per_layer_attention || qd == 0 || heads == 0 {
        return false;
    }
    let kv_heads = if kd == 0 { shape.num_key_value_heads } else { kd * heads / qd };
    let wide = qd / heads > 256;
    kv_heads < heads && (masked || wide) && (kv_heads > 1 || kernel == AttnKernel::Efficient)
}

/// The MLP block's saved bytes, added to `out`: its norm(s) (shared with attention under
/// parallel attention), the up/gate inputs (base and LoRA), the activation
/// ([`act_saved_bytes`]; gated: `(act + 2e) · inter` with the gate product), and the down
/// projection's input unless ReLU's saved output is that very tensor.
fn mlp_saved(shape: &ModelShape, an: &Analysis, info: &LayerInfo, g: &LayerGrad, cx: &PlanCtx, out: &mut Saved) {
    let (w, h) = (cx.w, shape.hidden_size);
    let attn_trains = g.weights || g.lora.n[GROUP_ATTN_IN] + g.lora.n[GROUP_ATTN_OUT] > 0;
    let mlp_grad_in = g.input || attn_trains;
    out.per_token += norm_saved(shape, w, mlp_grad_in, g.weights, h) * an.norms_per_block;
    if shape.parallel_attn {
        // attention and MLP read the same normed input: one norm's worth is shared
        out.per_token -= norm_saved(shape, w, mlp_grad_in, g.weights, h).min(out.per_token);
    }
    let act = act_saved_bytes(an.act, w);
    let mlp_grad = mlp_grad_in || g.weights || g.lora.n[GROUP_MLP_IN] + g.lora.n[GROUP_MLP_OUT] > 0;
    if !info.mlp_in.is_empty() {
        out.per_token += base_inputs(w, g, info, GROUP_MLP_IN) + lora_inputs(cx, g, GROUP_MLP_IN);
        let inter = info.mlp_inter.unwrap_or(shape.intermediate_size);
        if mlp_grad {
            out.per_token += if shape.gated_mlp { (act + 2 * w.e) * inter } else { act * inter };
        }
        // the down projection keeps its input, unless that tensor is already kept: ReLU
        // saves its own output (derivatives.yaml `threshold_backward(grad, result, 0)`)
        let shared_with_act = !shape.gated_mlp && an.act == Act::Relu && mlp_grad;
        if g.weights && !shared_with_act {
            out.per_token += if w.amp { 2 * inter } else { w.e * inter };
        }
        out.per_token += lora_inputs(cx, g, GROUP_MLP_OUT);
    }
}

/// A mixture-of-experts block's saved bytes per token: the router's fp32 softmax over
/// `experts` and the top-k weights (`4 · experts + 8 · k`), per routed token (`k` of them)
/// its gathered input, gate_up and activation outputs, product and expert output, and
/// the shared expert's MLP; `act` = [`act_saved_bytes`]. transformers 5 routes every token
/// (no capacity factor, nothing dropped: `grouped_mm_experts_forward` runs all `T·k` (token,
/// expert) pairs, sorted by expert, integrations/moe.py), so this scales with `k`, not with a
/// capacity. The router logits the load-balancing loss reads are kept outside the layer
/// (`Hints::router_logits_kept`, estimator.rs).
fn moe_saved(shape: &ModelShape, info: &LayerInfo, g: &LayerGrad, w: Widths, act: u64) -> u64 {
    let h = shape.hidden_size;
    let mut per_token = 0u64;
    let experts = shape.num_experts.max(1);
    let k = shape.num_experts_per_tok.max(1);
    let mi = shape.moe_intermediate_size.max(1);
    // router logits softmax in fp32 + routing weights
    per_token += 4 * experts + 8 * k;
    if g.weights {
        per_token += w.e * h; // router input
    }
    // per routed token: gathered input (if the gate_up weight trains: full fine-tuning, or
    // its merged LoRA weight under `target_parameters`), gate_up output, act output,
    // product (if the down weight trains), expert output kept by the routing-weight multiply
    let (in_trains, out_trains) = (g.weights || g.lora.expert_in, g.weights || g.lora.expert_out);
    let per_route = (if in_trains { w.e * h } else { 0 })
        + w.e * 2 * mi
        + act * mi
        + (if out_trains { w.e * mi } else { 0 })
        + w.e * h
        + 8;
    per_token += k * per_route;
    if let Some(si) = info.shared_inter {
        per_token += (act + 2 * w.e) * si + if g.weights { 2 * w.e * si.max(h) } else { 0 } + 2 * w.e * h;
    }
    per_token
}

/// peft `target_parameters` on a layer's fused expert tensors, in bytes independent of the
/// tokens: (what autograd saves, what its backward holds at once). peft's `ParamWrapper`
/// (peft/tuners/lora/layer.py) registers a parametrization for each forward: with one
/// adapter and `E > 1` experts `_LoraFactorsProxy` folds `W + s·B·A` with one `baddbmm`
/// into a new tensor of W's shape and dtype (autocast off), `E·in·out` elements, and
/// baddbmm keeps the two factors cast to W's dtype (`r·E·(in + out)` elements). The
/// experts' matmul (transformers' `grouped_mm`) keeps that merged weight for the input
/// gradient; its backward builds a gradient of the same shape, consumed at once by the
/// baddbmm backward. Backward runs the output side (down) first, then the input side
/// (gate_up), whose merged weights are alive until their own backward: beyond the merged
/// weights, the transient is `max(down, gate_up − down)` elements (Qwen3-30B-A3B's layer:
/// max(201M, 403M − 201M) = 201M; fake-tensor truth, benches/cases_accuracy.json). Half
/// weights: merged and factors in half. fp32: the factors are the fp32 adapters themselves
/// (no copy), merged in fp32. Autocast over fp32 weights (amp) is approximate: the merged
/// tensor is fp32 and transformers' `grouped_mm` is not autocast-enabled (it casts its input
/// to the weight's dtype), so the experts run in fp32 and no half copy exists; priced here as
/// the half copy the autocast term already counts plus a fp32 gradient — measured −2.3% on
/// q3moe-lora-experts-amp, within the bar because the autocast term also keeps the head's half
/// copy through the layers' backward, which autograd frees after the head's backward.
pub fn expert_lora_fixed(lora: &LoraSums, dtype: Dtype, r: u64) -> (u64, u64) {
    if lora.expert_merged == 0 {
        return (0, 0);
    }
    let grad = lora.expert_merged_max_out.max(lora.expert_merged_max_in.saturating_sub(lora.expert_merged_out));
    match dtype {
        Dtype::Bf16 | Dtype::Fp16 => (2 * lora.expert_merged + 2 * r * lora.expert_params_per_rank, 2 * grad),
        Dtype::Fp32 => (4 * lora.expert_merged, 4 * grad),
        Dtype::AmpBf16 | Dtype::AmpFp16 => (0, 6 * grad),
    }
}

/// Bytes alive only while one layer runs forward, saved by nothing: the DeepSeek sparse
/// attention indexer (modeling_deepseek_v32.py `DeepseekV32Indexer.forward`, under
/// `torch.no_grad()`) scores every query against every key per indexer head,
/// `scores = matmul(q.float(), k.float()) * softmax_scale` then `relu(scores)`: tensors of
/// `[B, S, index_n_heads, T]` in the matmul's dtype (bf16 under autocast, whose matmul runs
/// in half; else the weights' dtype), two of them alive at once (the matmul output and its
/// scaled copy, then the scaled scores and their ReLU): `2 · e · heads` bytes per token per
/// token of context. The `[B, S, T]` index scores, top-k and masks that follow are one
/// head's worth, freed before the attention runs. Per token, what the layer already holds
/// when its indexer runs ([`indexer_call_held`]).
pub fn layer_forward_transient(shape: &ModelShape, info: &LayerInfo, g: &LayerGrad, cx: &PlanCtx) -> Saved {
    let heads = shape.hints.dsa_indexer_heads;
    if heads == 0 {
        return Saved::default();
    }
    Saved { per_token: indexer_call_held(shape, info, g, cx), per_token_ctx: 2 * cx.w.e * heads, constant: 0 }
}

/// Per token, what a DSA layer holds while its indexer scores (`DeepseekV32Attention.forward`
/// calls `self.indexer(...)` after every input projection and `expand_kv`): the norm's
/// saved bytes and the projections' saved inputs (as [`attention_saved`] counts them), the
/// normed input (e · H) and every attention input projection's output (e · Σ out_features:
/// q_a, q_b, kv_a, kv_b; `value_states` is a view of kv_b's), the two new tensors built
/// from them, `query_states = cat(q_pass, q_rot)` (e · heads · head_dim) and `expand_kv`'s
/// `key_states = new_empty(...)` (e · kv_heads · head_dim), and inside the indexer its query,
/// `wq_b`'s output and the rotated `cat([q_rot, q_pass])` (2 · e · index_heads ·
/// index_head_dim). The layer's saved bytes count them only once the layer has finished.
/// Checked by tracking live storages on the real `DeepseekV32Attention` (CPU, bf16
/// autocast, input needing grad) when `DeepseekV32Indexer.forward` is entered: the tensors
/// named here are alive, and besides them only the q/kv sub-norms' fp32 copies and the
/// rotary outputs (widths the shape does not carry, so left out). The sum meets fake-tensor
/// truth on the `dsv32-*` cases of benches/cases_accuracy.json (4,096 and 8,192 tokens).
fn indexer_call_held(shape: &ModelShape, info: &LayerInfo, g: &LayerGrad, cx: &PlanCtx) -> u64 {
    let (w, h, hints) = (cx.w, shape.hidden_size, &shape.hints);
    let qd = shape.num_attention_heads * shape.head_dim;
    let kd = shape.num_key_value_heads * shape.head_dim;
    let outs: u64 = info.attn_in.iter().map(|l| l.out_f * l.count).sum();
    let saved = norm_saved(shape, w, g.input, g.weights, h)
        + base_inputs(w, g, info, GROUP_ATTN_IN)
        + lora_inputs(cx, g, GROUP_ATTN_IN);
    let indexer_q = 2 * hints.dsa_indexer_heads * hints.dsa_indexer_head_dim;
    saved + w.e * (h + outs + qd + kd + indexer_q)
}

/// One hyper-connection's saved bytes per token (modeling_hy_v4.py `HYV4HyperConnection.
/// forward`, under `autocast(enabled=False)`, and `HYV4DecoderLayer.forward`; a layer has
/// two, around attention and around the FFN), n = streams: `flat = streams.flatten(2).float()`
/// kept by the unweighted RMSNorm's pow (4 · n · H); `pre.unsqueeze(-1) * streams` keeps
/// the n-stream input (r · n · H, the residual's width) and `pre` (4 · n); the combine
/// `post.float().unsqueeze(-1) * out.float().unsqueeze(-2)` keeps the branch output's fp32
/// copy (4 · H); the mixes, their scaled logits, both sigmoids, `pre` and `post` and the
/// norm's rsqrt are `8n + 1` fp32 values. Checked with `saved_tensors_hooks` on the real
/// `HYV4HyperConnection` (n = 4, H = 64, bf16 streams): 1,924 bytes per token kept, the
/// parameters aside, = 4·4·64 + 2·4·64 + 4·64 + 4·33.
fn hyper_connection_saved(shape: &ModelShape, w: Widths) -> u64 {
    let (n, h) = (shape.hints.hyper_connection_streams, shape.hidden_size);
    if n == 0 {
        return 0;
    }
    4 * n * h + w.r * n * h + 4 * h + 4 * (8 * n + 1)
}

/// Saved bytes of a layer under non-reentrant checkpointing: only its input (with
/// hyper-connections, all n residual streams).
pub fn layer_checkpointed(shape: &ModelShape, w: Widths) -> Saved {
    Saved { per_token: w.r * shape.hidden_size * shape.hints.hyper_connection_streams.max(1), per_token_ctx: 0, constant: 0 }
}

/// Extra bytes alive while one layer back-propagates (gradient buffers of its
/// intermediate tensors; the residual gradient in and out). The MLP's are its dense MLP's,
/// or in a mixture-of-experts layer without one its shared expert's (none without either:
/// Qwen3-MoE, Mixtral, gpt-oss), plus the routed experts'.
pub fn layer_backward_transient(shape: &ModelShape, info: &LayerInfo, plan: &Plan) -> Saved {
    let w = Widths::of(plan.dtype);
    let h = shape.hidden_size;
    let inter = if info.moe { info.mlp_inter.or(info.shared_inter).unwrap_or(0) } else { info.mlp_inter.unwrap_or(shape.intermediate_size) };
    let mlp = if shape.gated_mlp { 3 * w.e * inter } else { 2 * w.e * inter };
    // a layer of a mixer or attention alone (Nemotron-H) has no MLP gradients
    let mlp = if !info.has_ffn && (info.mixer.is_some() || !info.attention) { 0 } else { mlp };
    // the residual's gradient in and out (n streams with hyper-connections)
    let mut per_token = 2 * w.r * h * shape.hints.hyper_connection_streams.max(1) + mlp;
    if info.moe {
        // the experts' gradients and the combine's backward run one after the other
        let experts = shape.num_experts_per_tok * 3 * w.e * shape.moe_intermediate_size;
        per_token += experts.max(moe_combine_backward(shape, w));
    }
    let mut per_token_ctx = 0;
    if info.attention && (plan.attn_implementation == Attention::Eager || shape.hints.eager_only) {
        per_token_ctx = (2 * w.e + 4) * shape.num_attention_heads;
    } else if info.attention {
        per_token_ctx = crate::activations_conv::position_bias_backward(shape, w);
    }
    Saved { per_token, per_token_ctx, constant: 0 }
}

/// Per token, what a layer holds while its fp32 experts' combine runs forward
/// (`Hints::moe_fp32_combine`; transformers integrations/moe.py `grouped_mm_experts_forward`):
/// `weighted_out = proj_out * sample_weights_g` (fp32 `[T·k, H]`) and its reordered copy
/// `weighted_out[inv_perm]` are alive together, 2 · 4·k·H, saved by nothing, on top of
/// `held`, the layer's saved bytes per token (all of them: the two norms that follow the
/// block, `post_feedforward_layernorm_2` and `post_feedforward_layernorm`, are not saved
/// yet, an overcount of 2 · 4·H against the 8·k·H here). Gemma 4 26B-A4B (k = 8,
/// H = 2,816) at 4,096 tokens: 2 · 4 · 8 · 2,816 · 4,096 = 738,197,504 bytes, the fp32
/// `mul` and `index` outputs live at the forward peak of a fake-tensor step
/// (benches/cases_accuracy.json `g4-26b-a4b-smallvocab-lora-nogc`). 0 without the hint.
pub fn moe_combine_forward(shape: &ModelShape, info: &LayerInfo, held: u64) -> u64 {
    if !(info.moe && shape.hints.moe_fp32_combine) {
        return 0;
    }
    held + 8 * shape.num_experts_per_tok * shape.hidden_size
}

/// Per token, what the backward of an fp32 experts' combine holds at once
/// (`Hints::moe_fp32_combine`; transformers integrations/moe.py `grouped_mm_experts_forward`,
/// k routes, H = hidden size): `weighted_out = proj_out * sample_weights_g` is fp32
/// (`[T·k, H]`, half × fp32 promotes), then `weighted_out[inv_perm]` and
/// `.view(T, k, H).sum(dim=1)`. Backward: IndexBackward scatters the fp32 gradient into new
/// zeros (4·k·H); MulBackward0 then builds both products at once, `grad * sample_weights`
/// for `proj_out` and `grad * proj_out` for the weights (2 · 4·k·H, fp32), and the engine
/// casts the first to `proj_out`'s half dtype (e·k·H; none when the experts run in fp32:
/// fp32 weights, or autocast, which `grouped_mm` does not join). (12 + e)·k·H in all:
/// Gemma 4 26B-A4B's layer (k = 8, H = 2,816, bf16) at 4,096 tokens, 14 · 8 · 2,816 · 4,096
/// = 1,291,845,632 bytes, the live fp32 `[32768, 2816]` index_put and two mul outputs and the
/// bf16 cast seen at the backward peak of a fake-tensor step (benches/cases_accuracy.json
/// `g4-26b-a4b-smallvocab-lora-nogc`, whose peak temporaries are these plus the residual's
/// 4·H fp32 gradient of `.to(hidden_states.dtype)`).
fn moe_combine_backward(shape: &ModelShape, w: Widths) -> u64 {
    if !shape.hints.moe_fp32_combine {
        return 0;
    }
    let kh = shape.num_experts_per_tok * shape.hidden_size;
    let cast = if w.e < 4 && !w.amp { w.e } else { 0 };
    (12 + cast) * kh
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mamba2(n: u64, c: u64, nv: u64, hd: u64) -> Mixer {
        let i = nv * hd;
        Mixer {
            kind: MixerKind::Mamba2, d_inner: i, conv_dim: i + 2 * n, conv_kernel: 4, heads: nv, head_dim: hd,
            key_heads: 0, key_head_dim: 0, d_state: n, n_groups: 1, dt_rank: 0, chunk_size: c, gated_norm: false,
        }
    }

    /// What autocast saves on Mamba-2's chunk scan: Falcon-H1's mixer (1 layer, hidden 256,
    /// bf16 weights, one sequence) measured on fake tensors with and without
    /// `torch.autocast(bf16)`, autograd's saved storages summed; the measured difference
    /// also holds per-sequence chunk-count terms (< 0.9%), so within 1%.
    #[test]
    fn autocast_keeps_the_chunk_scan_einsums_half_wide() {
        // (seq, N, C, heads, head_dim, measured bytes without − with autocast)
        for (s, n, c, nv, hd, measured) in [
            (512u64, 32u64, 64u64, 8u64, 64u64, 4_225_776u64),
            (512, 128, 128, 16, 32, 15_334_624),
            (1024, 64, 256, 4, 128, 10_026_808),
        ] {
            let m = mamba2(n, c, nv, hd);
            // pure bf16 widths without autocast (e = 2) vs Trainer's bf16 (autocast)
            let plain = Widths { e: 2, r: 2, amp: false, autocast: false };
            let auto = Widths::of(Dtype::Bf16);
            assert!(auto.autocast && auto.e == 2);
            let est = s * (mixer_core_bytes(&m, plain) - mixer_core_bytes(&m, auto));
            let err = (est as f64 - measured as f64).abs() / measured as f64;
            assert!(err < 0.01, "{s} {n} {c} {nv} {hd}: {est} vs {measured}");
        }
    }
}
