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
use crate::shape::{Hints, ModelShape, NormKind};

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
fn norm_saved(shape: &ModelShape, w: Widths, input_grad: bool, weight_trains: bool, h: u64) -> u64 {
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

pub fn attention_kernel(shape: &ModelShape, plan: &Plan, gpu: Option<&GpuSpec>) -> AttnKernel {
    if plan.attn_implementation == Attention::Eager || shape.hints.eager_only {
        return AttnKernel::Eager;
    }
    if plan.attn_implementation == Attention::FlashAttention2 {
        return AttnKernel::Flash;
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
    attention_saved(shape, an, info, g, cx, &mut out);
    mlp_saved(shape, an, info, g, cx, &mut out);
    if info.moe {
        out.per_token += moe_saved(shape, info, g, w, act_saved_bytes(an.act, w));
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
    let (w, kernel, h) = (cx.w, cx.kernel, shape.hidden_size);
    let heads = shape.num_attention_heads;
    let qd = heads * shape.head_dim;
    let kd = shape.num_key_value_heads * shape.head_dim;
    out.per_token += norm_saved(shape, w, g.input, g.weights, h) * an.norms_per_block;
    out.per_token += base_inputs(w, g, info, GROUP_ATTN_IN) + lora_inputs(cx, g, GROUP_ATTN_IN);
    let qkv_grad = g.input || g.weights || g.lora.n[GROUP_ATTN_IN] > 0;
    if qkv_grad {
        qkv_saved(shape, g, cx, out);
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

/// What attention keeps when q, k, v need grads, added to `out`: per-head q/k norms, then
/// eager's q, k, v (`e · (qd + 2·rep)`) and per context token its fp32 softmax and half
/// cast (`(4 + e) · heads`, + softcapping's tanh and dropout's mask), or SDPA's q, k, v,
/// output and fp32 log-sum-exp (`e · (2·qd + 2·kd) + 4 · heads`, cuDNN: + its copies).
fn qkv_saved(shape: &ModelShape, g: &LayerGrad, cx: &PlanCtx, out: &mut Saved) {
    let (w, hints): (Widths, &Hints) = (cx.w, &shape.hints);
    let heads = shape.num_attention_heads;
    let qd = heads * shape.head_dim;
    let kd = shape.num_key_value_heads * shape.head_dim;
    if hints.qk_norm {
        // per-head RMSNorm on q and k: fp32 copies and rsqrt per head
        out.per_token += 4 * (qd + kd) + 4 * (heads + shape.num_key_value_heads);
        if g.weights {
            out.per_token += w.e * (qd + kd);
        }
    }
    if hints.dsa_indexer_heads > 0 && cx.kernel != AttnKernel::Eager {
        // DSA folds the indexer's top-k into a materialised `[B, 1, S, T]` mask
        // (modeling_deepseek_v32.py: `attention_mask & ~index_mask`); SDPA turns a bool
        // mask into an additive bias of the query's dtype and its backward keeps it
        out.per_token_ctx += w.e;
    }
    if cx.kernel == AttnKernel::Eager {
        let rep = if shape.num_key_value_heads == heads { kd } else { qd };
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
        // q, k, v (GQA passed natively), output, fp32 logsumexp per head
        out.per_token += w.e * (2 * qd + 2 * kd) + 4 * heads;
        if cx.kernel == AttnKernel::Cudnn {
            // cuDNN keeps its layout-normalised copies of q, k, v and an output in
            // [b, s, h, d] layout (measured on fake-H100 SDPA, benches/truth)
            out.per_token += w.e * (qd + 2 * kd) + w.e * qd;
        }
    }
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
/// the shared expert's MLP; `act` = [`act_saved_bytes`].
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
    // per routed token: gathered input (if experts train), gate_up output, act output,
    // product (if experts train), expert output kept by the routing-weight multiply
    let per_route = (if g.weights { w.e * h } else { 0 })
        + w.e * 2 * mi
        + act * mi
        + (if g.weights { w.e * mi } else { 0 })
        + w.e * h
        + 8;
    per_token += k * per_route;
    if let Some(si) = info.shared_inter {
        per_token += (act + 2 * w.e) * si + if g.weights { 2 * w.e * si.max(h) } else { 0 } + 2 * w.e * h;
    }
    per_token
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
/// intermediate tensors; the residual gradient in and out).
pub fn layer_backward_transient(shape: &ModelShape, info: &LayerInfo, plan: &Plan) -> Saved {
    let w = Widths::of(plan.dtype);
    let h = shape.hidden_size;
    let inter = info.mlp_inter.unwrap_or(shape.intermediate_size);
    // the residual's gradient in and out (n streams with hyper-connections)
    let mut per_token = 2 * w.r * h * shape.hints.hyper_connection_streams.max(1) + if shape.gated_mlp { 3 * w.e * inter } else { 2 * w.e * inter };
    if info.moe {
        per_token += shape.num_experts_per_tok * 3 * w.e * shape.moe_intermediate_size;
    }
    let mut per_token_ctx = 0;
    if plan.attn_implementation == Attention::Eager || shape.hints.eager_only {
        per_token_ctx = (2 * w.e + 4) * shape.num_attention_heads;
    }
    Saved { per_token, per_token_ctx, constant: 0 }
}
