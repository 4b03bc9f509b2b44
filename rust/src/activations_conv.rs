//! Attention with short convolutions around it and a dense relative position bias
//! (Inkling: transformers 5's modeling_inkling.py, modeling_inkling2.py): what autograd
//! keeps beyond the attention and MLP rules of activations.rs.
//!
//! * **fp32 short convolutions** (`Hints::fp32_short_conv_channels`, c = their channels
//!   summed: keys and values kv·hd each, the attention output and the MLP output H each).
//!   `InklingShortConvolution.forward` casts its input `.float()` and runs
//!   `F.conv1d(x.to(weight.dtype), weight, groups=c)` on fp32 weights
//!   (`_keep_in_fp32_modules_strict`); derivatives.yaml `convolution` keeps its input and
//!   weight. Under autocast `conv1d` is on the lower-precision cast list, so the kept input
//!   is autocast's half copy (e · c); without autocast the fp32 input (4 · c). The residual
//!   add and the casts back keep nothing.
//! * **dense position bias** (`Hints::dense_position_bias`): `InklingRelativeLogits.forward`
//!   gathers per-distance logits into `position_bias [B, heads, S, S]` (compute dtype);
//!   under SDPA, sdpa_attention.py `create_position_bias_mask` folds it with the causal mask
//!   into `torch.where(causal, bias, min)`, the float `attn_mask` the memory-efficient
//!   kernel keeps for its backward (it returns the bias's gradient): e · heads per (token,
//!   context). Under eager attention the bias is added to the scores (`add` keeps nothing).
//!   Its efficient kernel has no GQA: SDPA repeats k and v to the query heads and keeps
//!   the copies (2 · e · (heads − kv heads) · head_dim per token beyond activations.rs').
//!   Batch-independent (per layer, S × S, [`position_bias_fixed`]): `gather` keeps its
//!   int64 index (`distance.clamp(...)`, expanded, 8 bytes), `masked_fill` its bool mask
//!   (1 byte), and under SDPA `torch.where` its bool causal condition (1 byte).
//!   While the layer back-propagates, the efficient kernel's bias gradient and `where`'s
//!   gradient of the bias are alive together (2 · e · heads per (token, context),
//!   [`position_bias_backward`]).

use crate::activations::{AttnKernel, PlanCtx, Saved, Widths};
use crate::shape::ModelShape;

/// The per-token and per-(token, context) bytes the convolutions and the dense bias keep,
/// added to `out` (see the module docs for the modeling lines behind each term).
pub fn conv_bias_saved(shape: &ModelShape, cx: &PlanCtx, out: &mut Saved) {
    let hints = &shape.hints;
    // conv1d keeps its input: autocast's half copy (e) or the fp32 cast (4) per channel
    let per_channel = if cx.w.autocast { cx.w.e } else { 4 };
    out.per_token += per_channel * hints.fp32_short_conv_channels;
    if hints.dense_position_bias && cx.kernel != AttnKernel::Eager {
        // the float attn_mask [B, heads, S, S] SDPA's efficient kernel keeps: e · heads
        out.per_token_ctx += cx.w.e * shape.num_attention_heads;
        // sdpa_attention.py asks for `enable_gqa` (no mask yet when `use_gqa_in_sdpa` runs);
        // the efficient kernel has no GQA, so SDPA repeats k and v to the query heads and
        // the kernel keeps the repeated copies: 2 · e · (heads − kv heads) · head_dim more
        let (qd, kd) = (shape.num_attention_heads * shape.head_dim, shape.num_key_value_heads * shape.head_dim);
        out.per_token += 2 * cx.w.e * qd.saturating_sub(kd);
    }
}

/// Batch-independent bytes one layer with a dense position bias keeps at `seq` tokens per
/// row and attention context `ctx`: gather's int64 index (8) and masked_fill's bool mask
/// (1) over [S, ctx], and under SDPA `torch.where`'s bool causal condition (1).
/// 0 without the bias.
pub fn position_bias_fixed(shape: &ModelShape, cx: &PlanCtx, seq: u64, ctx: u64) -> u64 {
    if !shape.hints.dense_position_bias {
        return 0;
    }
    let per = 8 + 1 + u64::from(cx.kernel != AttnKernel::Eager);
    per.saturating_mul(seq).saturating_mul(ctx)
}

/// Per (token, context), the position bias's gradients alive while the layer
/// back-propagates under SDPA: the efficient kernel's bias gradient and `where`'s gradient
/// of `position_bias` (2 · e · heads); eager's score gradients are activations.rs'.
/// (Called for non-eager attention only.)
pub fn position_bias_backward(shape: &ModelShape, w: Widths) -> u64 {
    if !shape.hints.dense_position_bias {
        return 0;
    }
    2 * w.e * shape.num_attention_heads
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Dtype;
    use crate::shape::Hints;

    fn tiny_shape(hints: Hints, heads: u64) -> ModelShape {
        let json = format!(
            r#"{{"name":"t","model_type":"inkling_text","hidden_size":64,"num_hidden_layers":1,"num_attention_heads":{heads},
            "num_key_value_heads":2,"head_dim":16,"intermediate_size":96,"vocab_size":128,"tie_word_embeddings":false,
            "norm":"rms_norm","gated_mlp":true,"layer_types":[{{"stack":"decoder","linears":[]}}],"layers":[0],"params":[]}}"#
        );
        let mut shape = ModelShape::from_json(&json).expect("tiny shape");
        shape.hints = hints;
        shape
    }

    fn ctx(kernel: AttnKernel, dtype: Dtype) -> PlanCtx {
        PlanCtx { w: Widths::of(dtype), kernel, lora_r: 16, lora_dropout: false, hidden_dropout: false, attention_dropout: false, cross: None, max_length: 2048, sdpa_half_hopper: None }
    }

    #[test]
    fn convolutions_keep_their_input_at_the_autocast_width() {
        let hints = Hints { fp32_short_conv_channels: 3072, dense_position_bias: true, ..Hints::default() };
        let shape = tiny_shape(hints, 8);
        let mut out = Saved::default();
        conv_bias_saved(&shape, &ctx(AttnKernel::Efficient, Dtype::Bf16), &mut out);
        // bf16 under autocast: 2 bytes × 3,072 channels and k, v repeated from 2 to 8 heads
        // of 16 (2 · 2 · 96); the mask: 2 bytes × 8 heads
        assert_eq!((out.per_token, out.per_token_ctx), (2 * 3072 + 2 * 2 * 96, 2 * 8));
        let mut fp32 = Saved::default();
        conv_bias_saved(&shape, &ctx(AttnKernel::Efficient, Dtype::Fp32), &mut fp32);
        assert_eq!(fp32.per_token, 4 * 3072 + 2 * 4 * 96);
        // eager adds the bias to the scores: no mask kept, no where condition
        let mut eager = Saved::default();
        conv_bias_saved(&shape, &ctx(AttnKernel::Eager, Dtype::Bf16), &mut eager);
        assert_eq!(eager.per_token_ctx, 0);
        assert_eq!(position_bias_fixed(&shape, &ctx(AttnKernel::Eager, Dtype::Bf16), 1024, 1024), 9 << 20);
        assert_eq!(position_bias_fixed(&shape, &ctx(AttnKernel::Efficient, Dtype::Bf16), 1024, 1024), 10 << 20);
    }
}
