//! Speed of the Rust estimator (a target, not a test: nothing here asserts a time).
//!
//! Target: ≥ 10 million plan evaluations per second on one core for the batch API
//! (`evaluate_many` and the exhaustive search), ≤ 100 ns per plan. Run pinned to one core
//! for the single-core figure:
//!
//! ```text
//! taskset -c 1 cargo bench --bench estimator_speed
//! ```
//!
//! `benches/speed.py` runs this and reads `target/criterion/**/new/estimates.json`.
//! Inputs are the committed files in `benches/data/`: the Llama-3.1-8B shape as
//! `forge_advisor.shapes.load_shape(...).to_json()` writes it, the RTX 4090 spec and the
//! advisor's search space for that pair (`forge_advisor.advisor.search.build_space`).

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use forge_core::plan::{Attention, Distributed, Dtype, Method, Optim, Targets, Trainer};
use forge_core::search::Space;
use forge_core::{Estimator, GpuSpec, Plan};

fn data(name: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/data").join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A deterministic xorshift so the batch is the same on every run.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<T: Clone>(&mut self, xs: &[T]) -> T {
        xs[(self.next() % xs.len() as u64) as usize].clone()
    }
}

/// `n` varied plans over the axes the advisor searches, plus dtype, trainer, attention,
/// sequence length and multi-GPU sharding; about 1 in 50 targets modules by name.
pub fn varied_plans(n: usize) -> Vec<Plan> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let targets = [None, Some(Targets::Keyword("all-linear".into()))];
    (0..n)
        .map(|_| {
            let method = rng.pick(&[Method::Full, Method::Lora, Method::Lora, Method::Qlora, Method::Lora8bit]);
            let dtype = match method {
                Method::Qlora => rng.pick(&[Dtype::Bf16, Dtype::Fp16]),
                Method::Full => rng.pick(&[Dtype::AmpBf16, Dtype::Bf16, Dtype::AmpFp16, Dtype::Fp32]),
                _ => rng.pick(&[Dtype::Bf16, Dtype::Fp16, Dtype::AmpBf16, Dtype::Fp32]),
            };
            let (num_gpus, distributed) = rng.pick(&[
                (1, Distributed::None),
                (1, Distributed::None),
                (1, Distributed::None),
                (2, Distributed::Ddp),
                (4, Distributed::Fsdp),
                (8, Distributed::Zero2),
                (8, Distributed::Zero3),
            ]);
            let lora_target_modules = if rng.next() % 50 == 0 {
                Some(Targets::Names(vec!["q_proj".into(), "v_proj".into(), "mlp.down_proj".into()]))
            } else {
                rng.pick(&targets)
            };
            Plan {
                method,
                trainer: rng.pick(&[Trainer::Sft, Trainer::Sft, Trainer::Sft, Trainer::Dpo]),
                dtype,
                lora_r: rng.pick(&[4, 8, 16, 32, 64, 128, 256]),
                lora_dropout: rng.pick(&[0.0, 0.05, 0.1]),
                lora_target_modules,
                bnb_4bit_use_double_quant: rng.next() % 2 == 0,
                per_device_train_batch_size: rng.pick(&[1, 2, 4, 8, 16, 32, 64]),
                gradient_accumulation_steps: rng.pick(&[1, 2, 4, 8, 16]),
                max_length: rng.pick(&[512, 1024, 2048, 4096, 8192]),
                freeze_ratio: rng.pick(&[0.0, 0.1, 0.25, 0.5, 0.75, 0.9]),
                gradient_checkpointing: rng.next() % 2 == 0,
                attn_implementation: rng.pick(&[Attention::Sdpa, Attention::Sdpa, Attention::FlashAttention2, Attention::Eager]),
                optim: rng.pick(&[
                    Optim::AdamwTorchFused,
                    Optim::AdamwTorch,
                    Optim::Adamw8bit,
                    Optim::PagedAdamw8bit,
                    Optim::PagedAdamw32bit,
                    Optim::Adafactor,
                    Optim::Sgd,
                ]),
                num_gpus,
                distributed,
                ..Plan::default()
            }
        })
        .collect()
}

fn benches(c: &mut Criterion) {
    let est = Estimator::from_json(&data("llama-3.1-8b.shape.json")).expect("shape");
    let gpu = GpuSpec::from_json(&data("rtx-4090.gpu.json")).expect("gpu");
    let space = Space::from_json(&data("llama-3.1-8b.rtx-4090.space.json")).expect("space");

    // ---- one estimate ----------------------------------------------------------------
    let mut g = c.benchmark_group("estimate");
    g.throughput(Throughput::Elements(1));
    let singles = [
        ("lora_default", Plan::default()),
        ("qlora_all_linear", Plan { method: Method::Qlora, lora_target_modules: Some(Targets::Keyword("all-linear".into())), ..Plan::default() }),
        ("full_amp_no_ckpt", Plan { method: Method::Full, dtype: Dtype::AmpBf16, gradient_checkpointing: false, ..Plan::default() }),
    ];
    for (name, plan) in &singles {
        est.estimate(plan, Some(&gpu)).expect("valid plan");
        g.bench_function(*name, |b| b.iter(|| est.estimate(black_box(plan), black_box(Some(&gpu)))));
    }
    g.finish();

    // ---- the batch API ---------------------------------------------------------------
    let plans = varied_plans(10_000);
    let ok = est.estimate_many(&plans, Some(&gpu)).iter().filter(|r| r.is_ok()).count();
    eprintln!("estimate_many batch: {} plans, {ok} valid", plans.len());
    let mut g = c.benchmark_group("estimate_many");
    g.throughput(Throughput::Elements(plans.len() as u64));
    g.measurement_time(Duration::from_secs(8));
    g.bench_function("varied_10000", |b| b.iter(|| est.estimate_many(black_box(&plans), black_box(Some(&gpu)))));
    g.finish();

    // The advisor's space as one array, in the order a search walks it: each outer choice
    // × checkpointing × its (batch, accumulation) options. Consecutive plans share a
    // structure, as in a search's batch.
    let mut search_plans = Vec::new();
    for outer in space.outer_plans() {
        for &ckpt in &space.gradient_checkpointing {
            for (b, accum) in space.batch_options(outer.num_gpus) {
                search_plans.push(Plan {
                    gradient_checkpointing: ckpt,
                    per_device_train_batch_size: b,
                    gradient_accumulation_steps: accum,
                    ..outer.clone()
                });
            }
        }
    }
    let ok = est.evaluate_many(&search_plans, Some(&gpu)).iter().filter(|r| r.is_ok()).count();
    eprintln!("evaluate_many batch: {} plans, {ok} valid", search_plans.len());
    let mut g = c.benchmark_group("evaluate_many");
    g.throughput(Throughput::Elements(search_plans.len() as u64));
    g.measurement_time(Duration::from_secs(8));
    g.bench_function("search_space_8700", |b| b.iter(|| est.evaluate_many(black_box(&search_plans), black_box(Some(&gpu)))));
    g.throughput(Throughput::Elements(plans.len() as u64));
    g.bench_function("varied_10000", |b| b.iter(|| est.evaluate_many(black_box(&plans), black_box(Some(&gpu)))));
    g.finish();
    let mut g = c.benchmark_group("estimate_many");
    g.throughput(Throughput::Elements(search_plans.len() as u64));
    g.measurement_time(Duration::from_secs(8));
    g.bench_function("search_space_8700", |b| b.iter(|| est.estimate_many(black_box(&search_plans), black_box(Some(&gpu)))));
    g.finish();

    // ---- exhaustive search over the advisor's space -----------------------------------
    let (_, evaluated) = est.brute_force(&space, Some(&gpu)).expect("search");
    eprintln!("brute_force: {evaluated} plans evaluated per search");
    let mut g = c.benchmark_group("brute_force");
    g.throughput(Throughput::Elements(evaluated));
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(8));
    g.bench_function("llama-3.1-8b_rtx-4090", |b| b.iter(|| est.brute_force(black_box(&space), black_box(Some(&gpu)))));
    g.finish();
}

criterion_group!(estimator_speed, benches);
criterion_main!(estimator_speed);
