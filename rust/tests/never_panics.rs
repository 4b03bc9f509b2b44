//! Property test: any shape and plan the JSON boundary can carry gives an estimate or an
//! error — never a panic, never a silent overflow (peaks stay below 2^62).

use forge_core::{Estimator, GpuSpec, Plan};
use proptest::prelude::*;

fn shape_json(hidden: u64, layers: u64, heads: u64, kv: u64, inter: u64, vocab: u64, experts: u64) -> String {
    let head_dim = (hidden / heads.max(1)).max(1);
    let moe = experts > 1;
    let mlp = if moe {
        format!(
            r#"{{"name":"mlp.experts.gate_up_proj","in_features":{hidden},"out_features":{},"bias":false,"count":{experts},"role":"expert","lora_targetable":false}},
               {{"name":"mlp.experts.down_proj","in_features":{inter},"out_features":{hidden},"bias":false,"count":{experts},"role":"expert","lora_targetable":false}}"#,
            2 * inter
        )
    } else {
        format!(
            r#"{{"name":"mlp.gate_proj","in_features":{hidden},"out_features":{inter},"bias":false,"role":"mlp"}},
               {{"name":"mlp.up_proj","in_features":{hidden},"out_features":{inter},"bias":false,"role":"mlp"}},
               {{"name":"mlp.down_proj","in_features":{inter},"out_features":{hidden},"bias":false,"role":"mlp"}}"#
        )
    };
    let q = heads * head_dim;
    let k = kv * head_dim;
    let layers_list = vec!["0"; layers as usize].join(",");
    format!(
        r#"{{"name":"p","model_type":"llama","hidden_size":{hidden},"num_hidden_layers":{layers},"num_attention_heads":{heads},
            "num_key_value_heads":{kv},"head_dim":{head_dim},"intermediate_size":{inter},"vocab_size":{vocab},
            "tie_word_embeddings":false,"norm":"rms_norm","gated_mlp":true,"num_experts":{e},"num_experts_per_tok":{topk},
            "moe_intermediate_size":{mi},
            "layer_types":[{{"stack":"decoder","moe":{moe},"other_parameters":{},"linears":[
               {{"name":"self_attn.q_proj","in_features":{hidden},"out_features":{q},"bias":false,"role":"attention"}},
               {{"name":"self_attn.k_proj","in_features":{hidden},"out_features":{k},"bias":false,"role":"attention"}},
               {{"name":"self_attn.v_proj","in_features":{hidden},"out_features":{k},"bias":false,"role":"attention"}},
               {{"name":"self_attn.o_proj","in_features":{q},"out_features":{hidden},"bias":false,"role":"attention"}},
               {mlp}]}}],
            "layers":[{layers_list}],
            "params":[{{"name":"model.embed_tokens.weight","numel":{},"role":"embedding"}},{{"name":"lm_head.weight","numel":{},"role":"lm_head"}}]}}"#,
        2 * hidden,
        vocab.saturating_mul(hidden),
        vocab.saturating_mul(hidden),
        e = if moe { experts } else { 0 },
        topk = if moe { 2.min(experts) } else { 0 },
        mi = if moe { inter } else { 0 },
    )
}

const METHODS: &[&str] = &["full", "lora", "qlora", "lora_8bit"];
const DTYPES: &[&str] = &["bf16", "fp16", "amp-bf16", "amp-fp16", "fp32"];
const OPTIMS: &[&str] = &["adamw_torch", "adamw_torch_fused", "adamw_8bit", "paged_adamw_8bit", "paged_adamw_32bit", "adafactor", "sgd"];
const DIST: &[&str] = &["none", "ddp", "fsdp", "zero2", "zero3"];

fn plan_json(
    method: usize, dpo: bool, dtype: usize, r: u64, dropout: f64, all_linear: bool, batch: u64, accum: u64,
    seq: u64, freeze: f64, ckpt: bool, eager: bool, optim: usize, gpus: u64, dist: usize,
) -> String {
    format!(
        r#"{{"method":"{}","trainer":"{}","dtype":"{}","lora_r":{r},"lora_alpha":16,"lora_dropout":{dropout},
            "lora_target_modules":{},"bnb_4bit_use_double_quant":true,"per_device_train_batch_size":{batch},
            "gradient_accumulation_steps":{accum},"max_length":{seq},"freeze_ratio":{freeze},"gradient_checkpointing":{ckpt},
            "attn_implementation":"{}","optim":"{}","num_gpus":{gpus},"distributed":"{}"}}"#,
        METHODS[method], if dpo { "dpo" } else { "sft" }, DTYPES[dtype],
        if all_linear { "\"all-linear\"" } else { "null" },
        if eager { "eager" } else { "sdpa" }, OPTIMS[optim], DIST[dist],
    )
}

/// (hidden as a power of two, layers, heads as a power of two, kv divisor as a shift,
/// intermediate multiple, vocab, experts)
type ShapeDraw = (u32, u64, u32, u32, u64, u64, u64);
/// (method, dpo, dtype, rank, dropout, all-linear, batch, accumulation, length as a power of
/// two, freeze ratio, checkpointing, eager, optimizer, GPUs, sharding)
type PlanDraw = (usize, bool, usize, u64, f64, bool, u64, u64, u32, f64, bool, bool, usize, u64, usize);

/// A shape and a plan in the valid domain, from the drawn values.
fn valid_case(shape: ShapeDraw, plan: PlanDraw) -> (Estimator, Plan) {
    let (hidden_pow, layers, heads_pow, kv_div, inter_mul, vocab, experts) = shape;
    let (method, dpo, dtype, r, dropout, all_linear, batch, accum, seq_pow, freeze, ckpt, eager, optim, gpus, dist) = plan;
    let hidden = 1u64 << hidden_pow;
    let heads = (1u64 << heads_pow).min(hidden);
    let kv = (heads >> kv_div).max(1);
    let est = Estimator::from_json(&shape_json(hidden, layers, heads, kv, hidden * inter_mul, vocab, experts))
        .expect("a well-formed shape");
    // documented restrictions: QLoRA computes in half precision; a rank fits the narrowest
    // targeted linear (k/v project to kv·head_dim ≥ hidden/8 here)
    let r = r.min(hidden / 8).max(1);
    let dtype = if METHODS[method] == "qlora" && dtype >= 2 { 0 } else { dtype };
    let plan = Plan::from_json(&plan_json(method, dpo, dtype, r, dropout, all_linear, batch, accum, 1 << seq_pow,
                                          freeze, ckpt, eager, optim, gpus, dist)).expect("a valid plan");
    (est, plan)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, .. ProptestConfig::default() })]

    /// In the valid domain every plan is priced, and the terms add up.
    #[test]
    fn valid_plans_are_priced_consistently(
        hidden_pow in 6u32..14, layers in 1u64..96, heads_pow in 0u32..6, kv_div in 0u32..4, inter_mul in 1u64..6,
        vocab in 1000u64..260_000, experts in 0u64..12,
        method in 0usize..4, dtype in 0usize..5, optim in 0usize..7, dist in 0usize..5,
        r in 1u64..64, batch in 1u64..64, accum in 1u64..32, seq_pow in 4u32..15,
        freeze in 0.0f64..0.95, ckpt: bool, eager: bool, dpo: bool, gpus in 1u64..9,
        dropout in 0.0f64..0.5, all_linear: bool,
    ) {
        let (est, plan) = valid_case((hidden_pow, layers, heads_pow, kv_div, inter_mul, vocab, experts),
                                     (method, dpo, dtype, r, dropout, all_linear, batch, accum, seq_pow, freeze, ckpt, eager, optim, gpus, dist));
        let e = est.estimate(&plan, None).expect("the valid domain is priced");
        prop_assert!(e.peak_allocated_bytes > 0 && e.peak_allocated_bytes < u64::MAX / 4);
        prop_assert!(e.peak_reserved_bytes >= e.peak_allocated_bytes);
        prop_assert_eq!(e.breakdown.total(), e.peak_allocated_bytes);
        prop_assert!(e.trainable_parameters <= e.total_parameters || plan.method != forge_core::plan::Method::Full);
    }

    /// Anything the JSON boundary can carry: an estimate or an error, never a panic.
    #[test]
    fn any_input_estimates_or_errors(
        hidden in 0u64..(1u64 << 40), layers in 0u64..200, heads in 0u64..200, kv in 0u64..200, inter in 0u64..(1u64 << 40),
        vocab in 0u64..(1u64 << 40), experts in 0u64..300,
        method in 0usize..4, dtype in 0usize..5, optim in 0usize..7, dist in 0usize..5,
        r in 0u64..(1u64 << 20), batch in 0u64..(1u64 << 20), accum in 0u64..(1u64 << 18), seq in 0u64..(1u64 << 26),
        freeze in -0.5f64..1.5, ckpt: bool, eager: bool, dpo: bool, gpus in 0u64..5000,
        dropout in -0.1f64..1.1, all_linear: bool,
    ) {
        let Ok(est) = Estimator::from_json(&shape_json(hidden.max(1), layers, heads.max(1), kv.max(1), inter, vocab, experts)) else {
            return Ok(());
        };
        if let Ok(plan) = Plan::from_json(&plan_json(method, dpo, dtype, r, dropout, all_linear, batch, accum, seq,
                                                     freeze, ckpt, eager, optim, gpus, dist)) {
            if let Ok(e) = est.estimate(&plan, None) {
                prop_assert!(e.peak_allocated_bytes < u64::MAX / 4);
                prop_assert_eq!(e.breakdown.total(), e.peak_allocated_bytes);
            }
            // the search's evaluation (affine lines, exact up to a token limit) agrees with
            // the phase walk everywhere, overflow errors included
            if let Ok(prepared) = est.prepare(&plan, None) {
                let (b, a) = (plan.per_device_train_batch_size, plan.gradient_accumulation_steps);
                match (prepared.finish(b, a), prepared.evaluate(b, a)) {
                    (Ok(f), Ok(ev)) => {
                        prop_assert_eq!(f.peak_allocated_bytes, ev.peak_allocated_bytes);
                        prop_assert_eq!(f.peak_reserved_bytes, ev.peak_reserved_bytes);
                    }
                    (Err(x), Err(y)) => prop_assert_eq!(x.to_string(), y.to_string()),
                    (f, ev) => prop_assert!(false, "finish {:?} but evaluate ok={}", f.map(|e| e.peak_allocated_bytes), ev.is_ok()),
                }
            }
        }
    }

    /// `Prepared::evaluate` (what the search ranks by) gives the very peak memory and speed
    /// of `Prepared::finish` for every batch and accumulation of a prepared plan.
    #[test]
    fn search_evaluation_matches_the_full_estimate(
        hidden_pow in 6u32..14, layers in 1u64..96, heads_pow in 0u32..6, kv_div in 0u32..4, inter_mul in 1u64..6,
        vocab in 1000u64..260_000, experts in 0u64..12,
        method in 0usize..4, dtype in 0usize..5, optim in 0usize..7, dist in 0usize..5,
        r in 1u64..64, seq_pow in 4u32..15,
        freeze in 0.0f64..0.95, ckpt: bool, eager: bool, dpo: bool, gpus in 1u64..9,
        dropout in 0.0f64..0.5, all_linear: bool,
        batches in proptest::collection::vec((1u64..65_536, 1u64..65_536), 1..6),
    ) {
        let (est, plan) = valid_case((hidden_pow, layers, heads_pow, kv_div, inter_mul, vocab, experts),
                                     (method, dpo, dtype, r, dropout, all_linear, 1, 1, seq_pow, freeze, ckpt, eager, optim, gpus, dist));
        let gpu = GpuSpec::from_json(r#"{"name": "H100", "memory_bytes": 85520809984, "peak_tflops": {"bf16": 989, "tf32": 494},
                                         "bandwidth_bytes_per_s": 3.35e12, "compute_capability": "9.0"}"#).expect("gpu");
        let prepared = est.prepare(&plan, Some(&gpu)).expect("the valid domain is priced");
        for (b, a) in batches.into_iter().chain([(1, 1), (1, 2)]) {
            match (prepared.finish(b, a), prepared.evaluate(b, a)) {
                (Ok(f), Ok(ev)) => {
                    prop_assert_eq!(f.peak_allocated_bytes, ev.peak_allocated_bytes);
                    prop_assert_eq!(f.peak_reserved_bytes, ev.peak_reserved_bytes);
                    prop_assert_eq!(f.tokens_per_second, ev.tokens_per_second);
                    prop_assert_eq!(f.step_seconds, ev.step_seconds);
                }
                (Err(x), Err(y)) => prop_assert_eq!(x.to_string(), y.to_string()),
                (f, ev) => prop_assert!(false, "finish {:?} but evaluate ok={}", f.map(|e| e.peak_allocated_bytes), ev.is_ok()),
            }
        }
    }
}

#[test]
fn out_of_range_plans_are_rejected() {
    for bad in [
        plan_json(1, false, 0, 0, 0.05, false, 1, 1, 512, 0.0, true, false, 0, 1, 0),  // rank 0
        plan_json(1, false, 0, 8, 0.05, false, 0, 1, 512, 0.0, true, false, 0, 1, 0),  // batch 0
        plan_json(1, false, 0, 8, 0.05, false, 1, 1, 512, 1.0, true, false, 0, 1, 0),  // freeze 1
        plan_json(2, false, 4, 8, 0.05, false, 1, 1, 512, 0.0, true, false, 0, 1, 0),  // qlora + fp32
        plan_json(1, false, 0, 8, 1.0, false, 1, 1, 512, 0.0, true, false, 0, 1, 0),   // dropout 1
    ] {
        let err = Plan::from_json(&bad).expect_err(&bad);
        assert!(!err.to_string().contains('\n'), "one line: {err}");
    }
}
