//! Golden outputs of `Estimator::estimate`: the guard for performance work on the
//! estimator.
//!
//! `rust/tests/data/estimator_outputs.json` was generated from the estimator *before* the
//! speed work of `benches/estimator_speed.rs` touched it. Every optimisation of
//! `estimate` (precomputed per-shape aggregates, no per-call allocation…) must return the
//! very same numbers, so this test compares, for ~30 varied plans on Llama-3.1-8B and a
//! handful on other layouts (tied embeddings, LayerNorm/GELU, MoE with shared experts,
//! Gemma-2, Falcon's parallel attention, T5), the whole serialised `Estimate` — in
//! particular every `peak_allocated_bytes`, `peak_reserved_bytes` and
//! `trainable_parameters` — or the error message, against that file, bit for bit.
//!
//! History: generated before the speed work on the per-layer estimator; the memory model
//! then changed under it (SDPA kernel choice, LayerNorm/GELU under autocast, ReLU sharing),
//! so it was regenerated after a differential run of the per-layer original against the
//! segment-wise `estimate` on that same model (384,000 random plans over the 48 catalog
//! shapes, every output field equal).
//!
//! A deliberate change of the memory model (not a refactoring) changes the golden numbers:
//! regenerate them with `FORGE_BLESS_GOLDEN=1 cargo test --test estimator_outputs` and
//! review the diff of the JSON file.
//!
//! The file also holds plain unit tests of the error paths: they must be `Err`, never a
//! panic.

use std::collections::BTreeMap;
use std::path::PathBuf;

use forge_core::plan::{Attention, Distributed, Dtype, Method, Optim, Targets, Trainer};
use forge_core::{Error, Estimator, GpuSpec, Plan};
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    let p = root().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn llama() -> Estimator {
    Estimator::from_json(&read("benches/data/llama-3.1-8b.shape.json")).expect("Llama-3.1-8B shape")
}

fn shape(name: &str) -> Estimator {
    Estimator::from_json(&read(&format!("rust/tests/data/shapes/{name}.shape.json"))).expect(name)
}

fn gpu() -> GpuSpec {
    GpuSpec::from_json(&read("benches/data/rtx-4090.gpu.json")).expect("gpu")
}

fn names(list: &[&str]) -> Option<Targets> {
    Some(Targets::Names(list.iter().map(|s| s.to_string()).collect()))
}

fn all_linear() -> Option<Targets> {
    Some(Targets::Keyword("all-linear".into()))
}

/// ~30 plans that walk every branch of `estimate` on a dense decoder.
fn llama_plans() -> Vec<(&'static str, Plan)> {
    let lora = Plan::default();
    let full = Plan { method: Method::Full, dtype: Dtype::AmpBf16, ..Plan::default() };
    let qlora = Plan { method: Method::Qlora, ..Plan::default() };
    vec![
        ("lora_default", lora.clone()),
        ("lora_no_ckpt", Plan { gradient_checkpointing: false, ..lora.clone() }),
        ("lora_all_linear_r64", Plan { lora_r: 64, lora_target_modules: all_linear(), ..lora.clone() }),
        ("lora_names_qv", Plan { lora_target_modules: names(&["q_proj", "v_proj"]), ..lora.clone() }),
        ("lora_names_mlp_no_ckpt", Plan { lora_target_modules: names(&["mlp.down_proj", "up_proj"]), gradient_checkpointing: false, ..lora.clone() }),
        ("lora_keyword_single", Plan { lora_target_modules: Some(Targets::Keyword("o_proj".into())), ..lora.clone() }),
        ("lora_freeze_half", Plan { freeze_ratio: 0.5, ..lora.clone() }),
        ("lora_freeze_090_no_ckpt", Plan { freeze_ratio: 0.9, gradient_checkpointing: false, ..lora.clone() }),
        ("lora_fp16_eager", Plan { dtype: Dtype::Fp16, attn_implementation: Attention::Eager, max_length: 512, ..lora.clone() }),
        ("lora_amp_bf16_no_ckpt", Plan { dtype: Dtype::AmpBf16, gradient_checkpointing: false, ..lora.clone() }),
        ("lora_fp32_sgd", Plan { dtype: Dtype::Fp32, optim: Optim::Sgd, per_device_train_batch_size: 1, ..lora.clone() }),
        ("lora_adamw_torch_accum1", Plan { optim: Optim::AdamwTorch, gradient_accumulation_steps: 1, ..lora.clone() }),
        ("lora_adafactor_b16_s4096", Plan { optim: Optim::Adafactor, per_device_train_batch_size: 16, max_length: 4096, ..lora.clone() }),
        ("lora_no_dropout_fa2", Plan { lora_dropout: 0.0, attn_implementation: Attention::FlashAttention2, ..lora.clone() }),
        ("lora_8bit_adamw8bit", Plan { method: Method::Lora8bit, optim: Optim::Adamw8bit, ..lora.clone() }),
        ("qlora_default", qlora.clone()),
        ("qlora_all_linear_paged8", Plan { lora_target_modules: all_linear(), optim: Optim::PagedAdamw8bit, lora_r: 128, ..qlora.clone() }),
        ("qlora_no_dq_paged32_no_ckpt", Plan { bnb_4bit_use_double_quant: false, optim: Optim::PagedAdamw32bit, gradient_checkpointing: false, ..qlora.clone() }),
        ("full_amp_default", full.clone()),
        ("full_amp_no_ckpt_accum1", Plan { gradient_checkpointing: false, gradient_accumulation_steps: 1, ..full.clone() }),
        ("full_bf16_adamw_torch", Plan { dtype: Dtype::Bf16, optim: Optim::AdamwTorch, ..full.clone() }),
        ("full_freeze_025", Plan { freeze_ratio: 0.25, ..full.clone() }),
        ("full_fp32_adafactor", Plan { dtype: Dtype::Fp32, optim: Optim::Adafactor, per_device_train_batch_size: 1, ..full.clone() }),
        ("full_ddp_4", Plan { num_gpus: 4, distributed: Distributed::Ddp, ..full.clone() }),
        ("full_fsdp_8", Plan { num_gpus: 8, distributed: Distributed::Fsdp, ..full.clone() }),
        ("full_zero2_2", Plan { num_gpus: 2, distributed: Distributed::Zero2, ..full.clone() }),
        ("full_zero3_8_no_ckpt", Plan { num_gpus: 8, distributed: Distributed::Zero3, gradient_checkpointing: false, ..full.clone() }),
        ("lora_fsdp_4", Plan { num_gpus: 4, distributed: Distributed::Fsdp, ..lora.clone() }),
        ("dpo_lora", Plan { trainer: Trainer::Dpo, ..lora.clone() }),
        ("dpo_full_amp", Plan { trainer: Trainer::Dpo, ..full.clone() }),
        ("dpo_qlora_eager", Plan { trainer: Trainer::Dpo, attn_implementation: Attention::Eager, max_length: 256, ..qlora.clone() }),
        ("lora_b64_s8192", Plan { per_device_train_batch_size: 64, max_length: 8192, ..lora.clone() }),
        ("lora_r_too_big", Plan { lora_r: 2048, ..lora.clone() }),
        ("lora_target_missing", Plan { lora_target_modules: names(&["nope_proj"]), ..lora.clone() }),
    ]
}

/// A few plans per other layout (tied head, LayerNorm, MoE, softcapping, parallel attn).
fn other_plans() -> Vec<(&'static str, Plan)> {
    let lora = Plan::default();
    let full = Plan { method: Method::Full, dtype: Dtype::AmpBf16, ..Plan::default() };
    vec![
        ("lora_default", lora.clone()),
        ("lora_all_linear_no_ckpt", Plan { lora_target_modules: all_linear(), gradient_checkpointing: false, ..lora.clone() }),
        ("qlora_eager", Plan { method: Method::Qlora, attn_implementation: Attention::Eager, max_length: 512, ..lora.clone() }),
        ("full_amp", full.clone()),
        ("full_amp_no_ckpt_accum1", Plan { gradient_checkpointing: false, gradient_accumulation_steps: 1, ..full.clone() }),
        ("full_bf16_freeze_05", Plan { dtype: Dtype::Bf16, freeze_ratio: 0.5, ..full.clone() }),
        ("full_zero3_4", Plan { num_gpus: 4, distributed: Distributed::Zero3, ..full.clone() }),
        ("dpo_lora", Plan { trainer: Trainer::Dpo, ..lora.clone() }),
    ]
}

const OTHER_SHAPES: &[&str] = &["qwen2.5-0.5b", "gpt2", "qwen1.5-moe-a2.7b", "gemma-2-2b", "falcon-7b", "t5-base"];

/// Every case as `"shape/plan/gpu|nogpu" → estimate JSON or {"error": message}`.
fn outputs() -> BTreeMap<String, Value> {
    let g = gpu();
    let mut out = BTreeMap::new();
    let mut run = |est: &Estimator, shape_name: &str, plans: Vec<(&'static str, Plan)>| {
        for (name, plan) in plans {
            for (gname, gpu) in [("rtx4090", Some(&g)), ("nogpu", None)] {
                let v = match est.estimate(&plan, gpu) {
                    Ok(e) => serde_json::to_value(&e).expect("serialise"),
                    Err(e) => serde_json::json!({ "error": e.to_string() }),
                };
                out.insert(format!("{shape_name}/{name}/{gname}"), v);
            }
        }
    };
    run(&llama(), "llama-3.1-8b", llama_plans());
    for s in OTHER_SHAPES {
        run(&shape(s), s, other_plans());
    }
    out
}

#[test]
fn estimates_match_the_golden_outputs() {
    let path = root().join("rust/tests/data/estimator_outputs.json");
    let now = outputs();
    if std::env::var_os("FORGE_BLESS_GOLDEN").is_some() {
        let text = serde_json::to_string_pretty(&now).expect("json");
        std::fs::write(&path, text + "\n").expect("write golden");
        return;
    }
    let golden: BTreeMap<String, Value> =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("golden file")).expect("golden JSON");
    // serde_json's parser may be off by one ulp on floats; put today's outputs through the
    // same print-and-parse so equal shortest representations (equal f64 bits) compare equal
    let now: BTreeMap<String, Value> = serde_json::from_str(&serde_json::to_string(&now).expect("json")).expect("reparse");
    assert_eq!(golden.keys().collect::<Vec<_>>(), now.keys().collect::<Vec<_>>(), "the set of cases changed");
    let mut diffs = Vec::new();
    for (k, want) in &golden {
        let got = &now[k];
        for field in ["peak_allocated_bytes", "peak_reserved_bytes", "trainable_parameters"] {
            if want.get(field) != got.get(field) {
                diffs.push(format!("{k}: {field} {:?} != golden {:?}", got.get(field), want.get(field)));
            }
        }
        if want != got {
            diffs.push(format!("{k}: estimate differs\n  got    {got}\n  golden {want}"));
        }
    }
    assert!(diffs.is_empty(), "{} differences:\n{}", diffs.len(), diffs.join("\n"));
}

#[test]
fn golden_cases_cover_enough_successful_plans() {
    let now = outputs();
    let ok = now.values().filter(|v| v.get("error").is_none()).count();
    assert!(ok >= 60, "only {ok} successful cases");
    assert!(now.contains_key("llama-3.1-8b/dpo_full_amp/rtx4090"));
}

// ---- error paths: Err, never a panic ---------------------------------------------------

fn err_of(est: &Estimator, plan: &Plan) -> Error {
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| est.estimate(plan, Some(&gpu()))));
    match r {
        Ok(Ok(e)) => panic!("expected an error, got peak {}", e.peak_allocated_bytes),
        Ok(Err(e)) => e,
        Err(_) => panic!("estimate panicked"),
    }
}

#[test]
fn rank_zero_is_rejected() {
    let e = err_of(&llama(), &Plan { lora_r: 0, ..Plan::default() });
    assert!(matches!(&e, Error::InvalidField { field, .. } if field == "lora_r"), "{e}");
}

#[test]
fn rank_above_a_targeted_width_is_rejected() {
    let e = err_of(&llama(), &Plan { lora_r: 4097, lora_target_modules: all_linear(), ..Plan::default() });
    assert!(e.to_string().contains("lora_r"), "{e}");
}

#[test]
fn freeze_ratio_one_is_rejected() {
    for method in [Method::Lora, Method::Full] {
        let e = err_of(&llama(), &Plan { method, freeze_ratio: 1.0, ..Plan::default() });
        assert!(matches!(&e, Error::InvalidField { field, .. } if field == "freeze_ratio"), "{e}");
    }
}

#[test]
fn missing_target_is_rejected_with_the_available_names() {
    let e = err_of(&llama(), &Plan { lora_target_modules: names(&["q_proj", "c_attn"]), ..Plan::default() });
    let msg = e.to_string();
    assert!(msg.contains("lora_target_modules") && msg.contains("c_attn") && msg.contains("q_proj"), "{msg}");
}

#[test]
fn qlora_needs_a_half_dtype() {
    let e = err_of(&llama(), &Plan { method: Method::Qlora, dtype: Dtype::Fp32, ..Plan::default() });
    assert!(e.to_string().contains("dtype"), "{e}");
}

#[test]
fn dpo_on_encoder_decoder_is_rejected() {
    let e = err_of(&shape("t5-base"), &Plan { trainer: Trainer::Dpo, ..Plan::default() });
    assert!(e.to_string().contains("dpo"), "{e}");
}

#[test]
fn absurd_sizes_overflow_into_an_error() {
    // the largest batch and context the plan allows, eager attention: the score matrices
    // alone are beyond 64 bits
    let plan = Plan {
        per_device_train_batch_size: 1 << 16,
        max_length: 1 << 24,
        attn_implementation: Attention::Eager,
        gradient_checkpointing: false,
        ..Plan::default()
    };
    let e = err_of(&llama(), &plan);
    assert!(matches!(e, Error::Overflow { .. }), "{e}");
    // every method and optimizer at the same sizes: Err, no panic
    for method in [Method::Full, Method::Lora, Method::Qlora, Method::Lora8bit] {
        for optim in [Optim::AdamwTorch, Optim::Adafactor, Optim::PagedAdamw8bit] {
            let p = Plan { method, optim, num_gpus: 4096, distributed: Distributed::Zero3, ..plan.clone() };
            let _ = err_of(&llama(), &p);
        }
    }
}

#[test]
fn absurd_shapes_are_rejected_not_panicking() {
    let text = read("benches/data/llama-3.1-8b.shape.json")
        .replace("\"vocab_size\":128256", "\"vocab_size\":18446744073709551615")
        .replace("\"in_features\":14336", "\"in_features\":9223372036854775807");
    let r = std::panic::catch_unwind(|| Estimator::from_json(&text));
    assert!(matches!(r, Ok(Err(_))), "expected Err from an absurd shape");
}

#[test]
fn out_of_range_plan_fields_are_rejected() {
    for plan in [
        Plan { per_device_train_batch_size: 0, ..Plan::default() },
        Plan { max_length: (1 << 24) + 1, ..Plan::default() },
        Plan { num_gpus: 0, ..Plan::default() },
        Plan { lora_dropout: 1.0, ..Plan::default() },
        Plan { freeze_ratio: -0.1, ..Plan::default() },
    ] {
        let _ = err_of(&llama(), &plan);
    }
}

/// The batch APIs reuse one prepared structure for consecutive plans that differ in batch
/// and accumulation only: every result, errors included, is what `estimate` gives for that
/// plan alone.
#[test]
fn batch_apis_equal_one_plan_at_a_time() {
    let est = llama();
    let gpu = gpu();
    let mut plans = Vec::new();
    for (_, p) in llama_plans() {
        let own = (p.per_device_train_batch_size, p.gradient_accumulation_steps);
        for (b, a) in [own, (1, 1), (0, 4), (8, 2), (65_536, 1), (2, 0), (3, 1 << 16)] {
            plans.push(Plan { per_device_train_batch_size: b, gradient_accumulation_steps: a, ..p.clone() });
        }
    }
    // then pairs of plans that differ in one structural field only (each field chosen
    // where it changes the estimate)
    let base = Plan::default();
    let qlora = Plan { method: Method::Qlora, ..base.clone() };
    let zero3 = Plan { num_gpus: 4, distributed: Distributed::Zero3, ..base.clone() };
    let pairs = [
        (base.clone(), qlora.clone()),
        (base.clone(), Plan { trainer: Trainer::Dpo, ..base.clone() }),
        (base.clone(), Plan { dtype: Dtype::AmpBf16, ..base.clone() }),
        (base.clone(), Plan { lora_r: 64, ..base.clone() }),
        (Plan { gradient_checkpointing: false, ..base.clone() }, Plan { gradient_checkpointing: false, lora_dropout: 0.0, ..base.clone() }),
        (base.clone(), Plan { lora_target_modules: all_linear(), ..base.clone() }),
        (qlora.clone(), Plan { bnb_4bit_use_double_quant: false, ..qlora.clone() }),
        (base.clone(), Plan { max_length: 4096, ..base.clone() }),
        (base.clone(), Plan { freeze_ratio: 0.5, ..base.clone() }),
        (base.clone(), Plan { gradient_checkpointing: false, ..base.clone() }),
        (base.clone(), Plan { attn_implementation: Attention::Eager, ..base.clone() }),
        (base.clone(), Plan { optim: Optim::Adamw8bit, ..base.clone() }),
        (zero3.clone(), Plan { num_gpus: 8, ..zero3.clone() }),
        (zero3.clone(), Plan { distributed: Distributed::Zero2, ..zero3.clone() }),
    ];
    for (before, after) in pairs {
        assert_ne!(est.estimate(&before, Some(&gpu)).ok(), est.estimate(&after, Some(&gpu)).ok(), "{after:?}");
        plans.push(before);
        plans.push(after);
    }
    let many = est.estimate_many(&plans, Some(&gpu));
    let evaluated = est.evaluate_many(&plans, Some(&gpu));
    assert_eq!((many.len(), evaluated.len()), (plans.len(), plans.len()));
    let mut ok = 0;
    for (i, plan) in plans.iter().enumerate() {
        match (est.estimate(plan, Some(&gpu)), &many[i], &evaluated[i]) {
            (Ok(one), Ok(m), Ok(ev)) => {
                assert_eq!(&one, m, "plan {i}");
                assert_eq!(one.peak_allocated_bytes, ev.peak_allocated_bytes, "plan {i}");
                assert_eq!(one.peak_reserved_bytes, ev.peak_reserved_bytes, "plan {i}");
                assert_eq!(one.tokens_per_second, ev.tokens_per_second, "plan {i}");
                ok += 1;
            }
            (Err(one), Err(m), Err(ev)) => {
                assert_eq!(one.to_string(), m.to_string(), "plan {i}");
                assert_eq!(one.to_string(), ev.to_string(), "plan {i}");
            }
            (one, m, ev) => panic!("plan {i}: estimate ok={} many ok={} evaluate ok={}", one.is_ok(), m.is_ok(), ev.is_ok()),
        }
    }
    // most plans are priced (the zero batches and accumulations are the errors)
    assert!(ok * 2 > plans.len(), "{ok} of {}", plans.len());
}
