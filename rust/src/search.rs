//! The discrete search space and the exhaustive search over it.
//!
//! The advisor's Optuna study chooses the "outer" knobs (method, rank, targets, freeze
//! ratio, optimizer, attention, sharding); for each outer choice [`Estimator::best_inner`]
//! solves the per-device batch × checkpointing sub-problem exactly. [`Estimator::brute_force`]
//! enumerates the whole space: the benchmark's ground truth for search quality.

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::estimator::{Estimate, Estimator};
use crate::timeline::Prepared;
use crate::gpu::GpuSpec;
use crate::objective::{objective_value, Objective};
use crate::plan::{Attention, Distributed, Dtype, Method, Optim, Plan, Targets};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Space {
    /// Values of every field no axis sets (trainer, dtype, max_length, LoRA alpha…).
    pub base: Plan,
    pub methods: Vec<Method>,
    pub lora_r: Vec<u64>,
    /// `null` = the attention projections.
    pub targets: Vec<Option<Targets>>,
    pub batch: Vec<u64>,
    pub freeze: Vec<f64>,
    pub gradient_checkpointing: Vec<bool>,
    pub optim: Vec<Optim>,
    pub attn: Vec<Attention>,
    pub distributed: Vec<Distributed>,
    /// Sequences per optimizer step over all GPUs: batch × accumulation × GPUs.
    pub global_batch: u64,
    /// A plan fits when its peak reserved memory is at most this.
    pub usable_bytes: u64,
    pub objective: Objective,
}

#[derive(Debug, Clone)]
pub struct Scored {
    pub plan: Plan,
    pub estimate: Estimate,
    pub value: f64,
    pub fits: bool,
}

impl Space {
    pub fn from_json(text: &str) -> Result<Self> {
        let space: Space =
            serde_json::from_str(text).map_err(|e| Error::Decode { message: format!("bad search space: {e}") })?;
        if space.global_batch == 0 {
            return Err(Error::field("global_batch", 0, "at least 1 sequence per step"));
        }
        for (name, empty) in [
            ("methods", space.methods.is_empty()),
            ("batch", space.batch.is_empty()),
            ("freeze", space.freeze.is_empty()),
            ("gradient_checkpointing", space.gradient_checkpointing.is_empty()),
            ("optim", space.optim.is_empty()),
            ("attn", space.attn.is_empty()),
            ("distributed", space.distributed.is_empty()),
        ] {
            if empty {
                return Err(Error::field(name, "[]", "at least one value"));
            }
        }
        Ok(space)
    }

    /// Per-device batches that divide the global batch exactly, with their accumulation.
    pub fn batch_options(&self, num_gpus: u64) -> Vec<(u64, u64)> {
        self.batch
            .iter()
            .filter_map(|&b| {
                let per_step = b.checked_mul(num_gpus)?;
                (per_step > 0 && self.global_batch % per_step == 0).then(|| (b, self.global_batch / per_step))
            })
            .collect()
    }

    /// Full fine-tuning trains fp32 master weights under autocast, as the runtime's `sft`
    /// preset does (forge_advisor/presets/planning.py); adapters train on a half base.
    pub fn normalize(&self, plan: Plan) -> Plan {
        let dtype = match (plan.method, plan.dtype) {
            (Method::Full, Dtype::Bf16) => Dtype::AmpBf16,
            (Method::Full, Dtype::Fp16) => Dtype::AmpFp16,
            (_, d) => d,
        };
        Plan { dtype, ..plan }
    }

    /// Every outer choice (method, r, targets, freeze, optim, attn, distributed) as a plan
    /// with the base's batch; full fine-tuning ignores rank and targets.
    pub fn outer_plans(&self) -> Vec<Plan> {
        let mut out = Vec::new();
        for &method in &self.methods {
            let ranks: Vec<u64> = if method == Method::Full { vec![self.base.lora_r] } else { self.lora_r.clone() };
            let targets: Vec<Option<Targets>> =
                if method == Method::Full { vec![None] } else { self.targets.clone() };
            for &r in &ranks {
                for t in &targets {
                    for &f in &self.freeze {
                        for &o in &self.optim {
                            for &a in &self.attn {
                                for &d in &self.distributed {
                                    out.push(self.normalize(Plan {
                                        method,
                                        lora_r: r,
                                        lora_target_modules: t.clone(),
                                        freeze_ratio: f,
                                        optim: o,
                                        attn_implementation: a,
                                        distributed: d,
                                        ..self.base.clone()
                                    }));
                                }
                            }
                        }
                    }
                }
            }
        }
        out
    }
}

impl Estimator {
    /// Estimate and score one plan.
    pub fn score(&self, plan: &Plan, gpu: Option<&GpuSpec>, objective: Objective, usable: u64) -> Result<Scored> {
        self.score_owned(plan.clone(), gpu, objective, usable)
    }

    /// [`Estimator::score`] of a plan the caller gives away (no second copy of it).
    fn score_owned(&self, plan: Plan, gpu: Option<&GpuSpec>, objective: Objective, usable: u64) -> Result<Scored> {
        let estimate = self.estimate(&plan, gpu)?;
        let value = objective_value(objective, estimate.tokens_per_second, estimate.quality);
        let fits = estimate.peak_reserved_bytes <= usable;
        Ok(Scored { plan, estimate, value, fits })
    }

    /// The best fitting (batch, accumulation, checkpointing) for one outer choice, or the
    /// leanest non-fitting one (for the constraint's violation) when none fits.
    pub fn best_inner(&self, outer: &Plan, space: &Space, gpu: Option<&GpuSpec>) -> Result<Option<Scored>> {
        let plan = space.normalize(outer.clone());
        let options = space.batch_options(outer.num_gpus);
        let mut slots = Slots::new(self, space);
        Ok(self.inner_search(&plan, &options, space, gpu, &mut slots)?.map(|w| w.scored(plan)))
    }

    /// [`Estimator::best_inner`] over the given (batch, accumulation) options: each
    /// checkpointing choice is priced once ([`Estimator::prepare`], into a reused slot) and
    /// each batch is a product of per-token terms ([`Prepared::evaluate`]); only the
    /// winner's full estimate is built.
    fn inner_search<'a>(
        &'a self,
        plan: &Plan,
        options: &[(u64, u64)],
        space: &Space,
        gpu: Option<&GpuSpec>,
        slots: &mut Slots<'a>,
    ) -> Result<Option<Winner>> {
        let mut variant = plan.clone();
        for (i, &ckpt) in space.gradient_checkpointing.iter().enumerate() {
            variant.gradient_checkpointing = ckpt;
            slots.ok[i] = match self.prepare_in(&variant, gpu, &mut slots.prepared[i], true) {
                Ok(()) => true,
                Err(Error::InvalidField { .. }) => false, // e.g. rank above a layer's width
                Err(e) => return Err(e),
            };
        }
        // (value, peak reserved, variant, batch, accumulation); batch-major order, the first
        // of equals wins
        type Pick = (f64, u64, usize, u64, u64);
        let mut best: Option<Pick> = None;
        let mut leanest: Option<Pick> = None;
        for &(b, accum) in options {
            for (i, prep) in slots.prepared.iter().enumerate() {
                if !slots.ok[i] {
                    continue;
                }
                let ev = match prep.evaluate(b, accum) {
                    Ok(e) => e,
                    Err(Error::InvalidField { .. }) => continue,
                    Err(e) => return Err(e),
                };
                let value = objective_value(space.objective, ev.tokens_per_second, prep.quality());
                let reserved = ev.peak_reserved_bytes;
                if reserved <= space.usable_bytes {
                    if best.is_none_or(|cur| value > cur.0) {
                        best = Some((value, reserved, i, b, accum));
                    }
                } else if leanest.is_none_or(|cur| reserved < cur.1) {
                    leanest = Some((value, reserved, i, b, accum));
                }
            }
        }
        let fits = best.is_some();
        let Some((value, _, i, b, accum)) = best.or(leanest) else { return Ok(None) };
        Ok(Some(Winner {
            estimate: slots.prepared[i].finish(b, accum)?,
            value,
            fits,
            gradient_checkpointing: space.gradient_checkpointing[i],
            batch: b,
            accumulation: accum,
        }))
    }

    /// Exhaustive search: the best fitting plan of the whole space and how many plans
    /// were evaluated.
    pub fn brute_force(&self, space: &Space, gpu: Option<&GpuSpec>) -> Result<(Option<Scored>, u64)> {
        let mut best: Option<Scored> = None;
        let mut evaluated = 0u64;
        let options = space.batch_options(space.base.num_gpus);
        let n_inner = (options.len() * space.gradient_checkpointing.len()) as u64;
        let mut slots = Slots::new(self, space);
        for outer in space.outer_plans() {
            evaluated += n_inner;
            if let Some(w) = self.inner_search(&outer, &options, space, gpu, &mut slots)? {
                if w.fits && best.as_ref().is_none_or(|cur| w.value > cur.value) {
                    best = Some(w.scored(outer));
                }
            }
        }
        Ok((best, evaluated))
    }
}

/// One prepared plan per checkpointing choice, reused from one outer plan to the next.
struct Slots<'a> {
    prepared: Vec<Prepared<'a>>,
    /// Whether `prepared[i]` holds a valid plan for the current outer choice.
    ok: Vec<bool>,
}

impl<'a> Slots<'a> {
    fn new(est: &'a Estimator, space: &Space) -> Self {
        let n = space.gradient_checkpointing.len();
        Slots { prepared: (0..n).map(|_| Prepared::empty(est)).collect(), ok: vec![false; n] }
    }
}

/// The best (or leanest) inner choice of one outer plan.
struct Winner {
    estimate: Estimate,
    value: f64,
    fits: bool,
    gradient_checkpointing: bool,
    batch: u64,
    accumulation: u64,
}

impl Winner {
    fn scored(self, outer: Plan) -> Scored {
        Scored {
            plan: Plan {
                gradient_checkpointing: self.gradient_checkpointing,
                per_device_train_batch_size: self.batch,
                gradient_accumulation_steps: self.accumulation,
                ..outer
            },
            estimate: self.estimate,
            value: self.value,
            fits: self.fits,
        }
    }
}
