//! The discrete search space, the one fit rule, and the exact ranking of the whole space.
//!
//! A plan is an "outer" choice (method, rank, targets, freeze ratio, optimizer, attention,
//! sharding) plus an "inner" one (per-device batch, accumulation, checkpointing). For every
//! outer choice [`Estimator::rank`] solves the inner one exactly — the fitting inner choice
//! with the most tokens/s, which is the best for every objective, since the quality score
//! does not depend on the inner knobs and each objective rises with tokens/s at fixed
//! quality (objective.rs) — and then ranks the outer choices: the top N per objective, the
//! Pareto front of tokens/s against quality, and, when nothing fits, the leanest plan and
//! how far over it is.

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::device::reserved_upper;
use crate::estimator::{Estimate, Estimator};
use crate::gpu::GpuSpec;
use crate::objective::{objective_value, Objective};
use crate::plan::{Attention, Batching, Distributed, Dtype, Method, Optim, Plan, Targets, Trainer};
#[cfg(test)]
use crate::plan::QuantStorage;
use crate::timeline::{Evaluation, Prepared};

/// The one fit rule: a plan fits when its peak reserved memory is at most the usable bytes.
/// `rank`, `estimate`, `fit` and the TUI all ask this function (the Python side through
/// `_native.fits`), so no two commands can disagree about a verdict.
pub fn fits(reserved: u64, usable: u64) -> bool {
    reserved <= usable
}

/// GPU memory minus the headroom kept free: 24 GiB × (1 − 0.08) = 22.08 GiB usable
/// (truncated to whole bytes). Headroom is a fraction in [0, 0.9).
pub fn usable_bytes(memory_bytes: u64, headroom: f64) -> Result<u64> {
    if !(0.0..0.9).contains(&headroom) {
        return Err(Error::field("headroom", headroom, "[0, 0.9) (a fraction of GPU memory)"));
    }
    Ok((memory_bytes as f64 * (1.0 - headroom)) as u64)
}

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
    /// A plan fits when its peak reserved memory is at most this ([`fits`]).
    pub usable_bytes: u64,
    pub objective: Objective,
    /// A device calibration's measured/estimated allocator reserve (calibration.py): the
    /// reserve a plan is judged by is `allocator_reserve × reserve_factor`. 1 without one.
    #[serde(default = "one")]
    pub reserve_factor: f64,
    /// The memory levers as inner knobs (levers.rs; forge_advisor/levers.py states their
    /// cost): each a list of values tried for every outer choice, like checkpointing; empty
    /// (the default) = the base plan's value. None changes the quality score, so the inner
    /// optimum (the fastest fitting variant) stays the best for every objective: a lever is
    /// chosen exactly when the plan without it does not fit, or fits only a slower batch.
    #[serde(default)]
    pub use_liger_kernel: Vec<bool>,
    #[serde(default)]
    pub activation_offloading: Vec<bool>,
    /// Only where the outer choice's sharding offloads: zero2/zero3 (optimizer), fsdp/zero3 (params).
    #[serde(default)]
    pub offload_optimizer: Vec<bool>,
    #[serde(default)]
    pub offload_params: Vec<bool>,
    /// FSDP-QLoRA in the space: a QLoRA outer choice under fsdp/zero3 stores its 4-bit
    /// weights in the compute dtype ([`Plan::compute_storage`]) when the base stores uint8
    /// (false: a pinned storage is kept, and uint8 keeps sharded QLoRA out of the space).
    #[serde(default = "yes")]
    pub shard_quantized: bool,
    /// The batching modes (plan.rs [`Batching`]) as an outer axis; empty (the default) = the
    /// base plan's. Flattened modes are skipped for DPO (its batches pad).
    #[serde(default)]
    pub batching: Vec<Batching>,
    /// From the user's data (forge_advisor/dataplan `simulate`): `(mode, per-device batch,
    /// real tokens / processed tokens)` over an epoch. The search ranks by REAL tokens/s,
    /// the estimate's tokens/s × this fraction (padding is work that trains nothing); a
    /// missing entry is 1 (no padding, or no data given).
    #[serde(default)]
    pub real_token_fraction: Vec<(Batching, u64, f64)>,
}

fn yes() -> bool {
    true
}

/// One inner variant besides batch: checkpointing and the memory levers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Variant {
    pub gradient_checkpointing: bool,
    pub use_liger_kernel: bool,
    pub activation_offloading: bool,
    pub offload_optimizer: bool,
    pub offload_params: bool,
}

impl Variant {
    /// `outer` with this variant's knobs.
    pub fn apply(&self, outer: &Plan) -> Plan {
        Plan {
            gradient_checkpointing: self.gradient_checkpointing,
            use_liger_kernel: self.use_liger_kernel,
            activation_offloading: self.activation_offloading,
            offload_optimizer: self.offload_optimizer,
            offload_params: self.offload_params,
            ..outer.clone()
        }
    }

    /// Whether the outer choice's sharding can offload what this variant offloads.
    pub fn runs_with(&self, distributed: Distributed) -> bool {
        (!self.offload_optimizer || matches!(distributed, Distributed::Zero2 | Distributed::Zero3))
            && (!self.offload_params || matches!(distributed, Distributed::Fsdp | Distributed::Zero3))
    }
}

fn one() -> f64 {
    1.0
}

/// One plan, estimated and scored.
#[derive(Debug, Clone)]
pub struct Scored {
    pub plan: Plan,
    pub estimate: Estimate,
    pub value: f64,
    pub fits: bool,
}

/// One outer choice with its best inner choice: the plan, its estimate and its value
/// under each objective.
#[derive(Debug, Clone)]
pub struct Ranked {
    pub plan: Plan,
    pub estimate: Estimate,
    /// Peak reserved memory the fit was judged by (with the calibrated reserve).
    pub reserved_bytes: u64,
    pub fits: bool,
    /// Real tokens / processed tokens of the plan's batching on the user's data
    /// ([`Space::real_fraction`]; 1 without data).
    pub real_fraction: f64,
}

impl Ranked {
    pub fn tokens_per_second(&self) -> Option<f64> {
        self.estimate.tokens_per_second
    }
    /// What the ranking compares: tokens/s that train something (padding excluded).
    pub fn real_tokens_per_second(&self) -> Option<f64> {
        self.estimate.tokens_per_second.map(|t| t * self.real_fraction)
    }
    pub fn quality(&self) -> f64 {
        self.estimate.quality
    }
    pub fn value(&self, objective: Objective) -> f64 {
        objective_value(objective, self.real_tokens_per_second(), self.estimate.quality)
    }
}

/// Why nothing fits: the leanest plan of the space and how far over the usable memory it is.
#[derive(Debug, Clone)]
pub struct Shortfall {
    /// `None` when no plan of the space could be priced at all (e.g. no per-device batch
    /// divides the global batch).
    pub leanest: Option<Ranked>,
    pub usable_bytes: u64,
    /// `leanest.reserved_bytes − usable_bytes`.
    pub over_bytes: Option<u64>,
}

/// Everything [`Estimator::rank`] finds, in one value.
#[derive(Debug, Clone)]
pub struct Ranking {
    /// Every fitting outer choice with its best inner choice, in the space's order.
    pub fitting: Vec<Ranked>,
    /// Indices into `fitting`: the best N per objective, one per (method, rank, targets,
    /// freeze ratio) so the list shows real alternatives; ties keep the space's order.
    pub balanced: Vec<usize>,
    pub fastest: Vec<usize>,
    pub quality: Vec<usize>,
    /// Indices into `fitting`: plans no other plan beats on both tokens/s and quality, one
    /// per point (the leanest), fastest first.
    pub pareto: Vec<usize>,
    /// Set exactly when `fitting` is empty.
    pub nothing_fits: Option<Shortfall>,
    /// Outer choices in the space, and plans (outer × inner) priced.
    pub outer: u64,
    pub evaluated: u64,
}

impl Ranking {
    pub fn top(&self, objective: Objective) -> &[usize] {
        match objective {
            Objective::Balanced => &self.balanced,
            Objective::Fastest => &self.fastest,
            Objective::Quality => &self.quality,
        }
    }
}

impl Space {
    pub fn from_json(text: &str) -> Result<Self> {
        let space: Space =
            serde_json::from_str(text).map_err(|e| Error::Decode { message: format!("bad search space: {e}") })?;
        space.validate()?;
        Ok(space)
    }

    pub fn validate(&self) -> Result<()> {
        if self.global_batch == 0 {
            return Err(Error::field("global_batch", 0, "at least 1 sequence per step"));
        }
        if !(self.reserve_factor.is_finite() && self.reserve_factor > 0.0) {
            return Err(Error::field("reserve_factor", self.reserve_factor, "a positive number"));
        }
        if let Some(&(_, _, f)) = self.real_token_fraction.iter().find(|(_, _, f)| !(*f > 0.0 && *f <= 1.0)) {
            return Err(Error::field("real_token_fraction", f, "(0, 1]"));
        }
        for (name, empty) in [
            ("methods", self.methods.is_empty()),
            ("batch", self.batch.is_empty()),
            ("freeze", self.freeze.is_empty()),
            ("gradient_checkpointing", self.gradient_checkpointing.is_empty()),
            ("optim", self.optim.is_empty()),
            ("attn", self.attn.is_empty()),
            ("distributed", self.distributed.is_empty()),
        ] {
            if empty {
                return Err(Error::field(name, "[]", "at least one value"));
            }
        }
        Ok(())
    }

    /// Real tokens / processed tokens of `mode` at `batch` ([`Space::real_token_fraction`]).
    pub fn real_fraction(&self, mode: Batching, batch: u64) -> f64 {
        self.real_token_fraction.iter().find(|(m, b, _)| *m == mode && *b == batch).map_or(1.0, |&(_, _, f)| f)
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

    /// Every inner variant (checkpointing × levers), checkpointing outermost, each lever's
    /// values in the space's order (so `false` first: equals keep the lever off).
    pub fn variants(&self) -> Vec<Variant> {
        let axis = |v: &Vec<bool>, base: bool| if v.is_empty() { vec![base] } else { v.clone() };
        let b = &self.base;
        let mut out = Vec::new();
        for &gradient_checkpointing in &self.gradient_checkpointing {
            for use_liger_kernel in axis(&self.use_liger_kernel, b.use_liger_kernel) {
                for activation_offloading in axis(&self.activation_offloading, b.activation_offloading) {
                    for offload_optimizer in axis(&self.offload_optimizer, b.offload_optimizer) {
                        for offload_params in axis(&self.offload_params, b.offload_params) {
                            out.push(Variant {
                                gradient_checkpointing,
                                use_liger_kernel,
                                activation_offloading,
                                offload_optimizer,
                                offload_params,
                            });
                        }
                    }
                }
            }
        }
        out
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
    /// with the base's batch; full fine-tuning ignores rank and targets. Plans the training
    /// runtime cannot run ([`Plan::unsupported`]) are not part of the space.
    pub fn outer_plans(&self) -> Vec<Plan> {
        let mut out = Vec::new();
        for &method in &self.methods {
            let full = method == Method::Full;
            let ranks: &[u64] = if full { std::slice::from_ref(&self.base.lora_r) } else { &self.lora_r };
            let targets: &[Option<Targets>] = if full { &[None] } else { &self.targets };
            for &r in ranks {
                for t in targets {
                    for &f in &self.freeze {
                        for &o in &self.optim {
                            for &a in &self.attn {
                                for &d in &self.distributed {
                                    for &batching in self.batching_axis() {
                                        if batching.flattened() && self.base.trainer == Trainer::Dpo {
                                            continue;
                                        }
                                        let mut plan = self.normalize(Plan {
                                            method,
                                            lora_r: r,
                                            lora_target_modules: t.clone(),
                                            freeze_ratio: f,
                                            optim: o,
                                            attn_implementation: a,
                                            distributed: d,
                                            batching,
                                            ..self.base.clone()
                                        });
                                        let sharded = plan.num_gpus > 1 && matches!(d, Distributed::Fsdp | Distributed::Zero3);
                                        if self.shard_quantized && method == Method::Qlora && sharded && !plan.bnb_4bit_quant_storage.is_float() {
                                            plan.bnb_4bit_quant_storage = plan.compute_storage(); // FSDP-QLoRA
                                        }
                                        if plan.unsupported().is_none() {
                                            out.push(plan);
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        out
    }

    /// The batching axis: the space's modes, or the base plan's.
    fn batching_axis(&self) -> &[Batching] {
        if self.batching.is_empty() {
            std::slice::from_ref(&self.base.batching)
        } else {
            &self.batching
        }
    }

    /// The memory a plan is judged by: the fit bound (`Evaluation::peak_reserved_upper_bytes`,
    /// see `device::reserved_upper`), with the allocator reserve scaled by a calibration's
    /// factor (`int(reserve × factor)`, as calibration.py does) when one is stored.
    fn judged_reserved(&self, ev: &Evaluation) -> u64 {
        if self.reserve_factor == 1.0 {
            return ev.peak_reserved_upper_bytes;
        }
        let device = ev.device();
        let scaled = (device.allocator_reserve as f64 * self.reserve_factor) as u64;
        let calibrated = ev.peak_reserved_bytes.saturating_sub(device.allocator_reserve).saturating_add(scaled);
        reserved_upper(calibrated, device.cuda_context)
    }
}

/// The inner search's best fit and leanest plan so far, each with its place in the space's
/// order (batch index, variant index) to keep the first of equals.
#[derive(Default)]
struct Inner {
    best: Option<(Winner, f64, (usize, usize))>,
    leanest: Option<(Winner, (usize, usize))>,
}

/// The inner choice that won for one outer plan.
struct Winner {
    /// Index of the inner variant (`space.variants()[i]`).
    variant: usize,
    batch: u64,
    accumulation: u64,
    reserved: u64,
    fits: bool,
}

impl Estimator {
    /// Estimate and score one plan.
    pub fn score(&self, plan: &Plan, gpu: Option<&GpuSpec>, objective: Objective, usable: u64) -> Result<Scored> {
        let estimate = self.estimate(plan, gpu)?;
        let value = objective_value(objective, estimate.tokens_per_second, estimate.quality);
        let fits = fits(estimate.peak_reserved_upper_bytes, usable);
        Ok(Scored { plan: plan.clone(), estimate, value, fits })
    }

    /// Rank the whole space exactly: see [`Ranking`]. `top` is N of the top N per objective.
    pub fn rank(&self, space: &Space, gpu: Option<&GpuSpec>, top: usize) -> Result<Ranking> {
        self.rank_pruned(space, gpu, top, true)
    }

    /// [`Estimator::rank`], skipping the variants that can change nothing when `prune` (see
    /// `Slots::prepare`; the tests compare both).
    fn rank_pruned(&self, space: &Space, gpu: Option<&GpuSpec>, top: usize, prune: bool) -> Result<Ranking> {
        space.validate()?;
        let outers = space.outer_plans();
        let options = space.batch_options(space.base.num_gpus);
        let mut slots = Slots::new(self, space);
        slots.prune = prune;
        let mut fitting = Vec::new();
        let mut leanest: Option<Ranked> = None;
        for outer in &outers {
            // A variant that cannot fit (its floor is over the usable bytes) matters only as
            // the leanest plan: not once something fits, nor when it is no leaner than the
            // leanest so far (see `Slots::prepare`).
            let no_leaner_than = if !fitting.is_empty() { Some(0) } else { leanest.as_ref().map(|l| l.reserved_bytes) };
            slots.skip_from = no_leaner_than.filter(|_| prune && space.reserve_factor == 1.0);
            let Some(w) = self.inner_search(outer, &options, space, gpu, &mut slots)? else { continue };
            if !w.fits && leanest.as_ref().is_some_and(|l| l.reserved_bytes <= w.reserved) {
                continue; // neither fits nor is leaner than the leanest so far
            }
            let ranked = w.ranked(outer, &slots, space)?;
            if ranked.fits {
                fitting.push(ranked);
            } else {
                leanest = Some(ranked);
            }
        }
        let evaluated = (outers.len() * options.len() * slots.variants.len()) as u64;
        let nothing_fits = fitting.is_empty().then(|| Shortfall {
            over_bytes: leanest.as_ref().map(|l| l.reserved_bytes - space.usable_bytes),
            leanest,
            usable_bytes: space.usable_bytes,
        });
        Ok(Ranking {
            balanced: top_n(&fitting, Objective::Balanced, top),
            fastest: top_n(&fitting, Objective::Fastest, top),
            quality: top_n(&fitting, Objective::Quality, top),
            pareto: pareto(&fitting),
            fitting,
            nothing_fits,
            outer: outers.len() as u64,
            evaluated,
        })
    }

    /// The best fitting (batch, accumulation, variant) for one outer choice — the most
    /// tokens/s, the first of equals in the space's order (batch, then variant) — or, when
    /// none fits, the one with the least reserved memory. `None` when no inner choice can be
    /// priced. Each variant is priced once ([`Estimator::prepare`], into a reused slot) and
    /// each batch is a product of per-token terms ([`Prepared::evaluate`]).
    ///
    /// The plain variants (every lever at its axis' first value) go first. A lever never
    /// raises tokens/s (fused CE prices no speed change, offloading adds PCIe and CPU time:
    /// the test `levers_never_raise_tokens_per_second`), so a lever variant can only win
    /// where its plain twin — same batch and checkpointing — does not fit yet is faster than
    /// the best plain fit. Only then are the lever variants priced; equals keep levers off.
    fn inner_search<'a>(
        &'a self,
        outer: &Plan,
        options: &[(u64, u64)],
        space: &Space,
        gpu: Option<&GpuSpec>,
        slots: &mut Slots<'a>,
    ) -> Result<Option<Winner>> {
        let mut acc = Inner::default();
        let skipped = slots.prepare(self, outer, gpu, true, space.usable_bytes)?;
        let faster_unfit = Self::scan(options, space, slots, true, outer.batching, &mut acc)?;
        // a skipped plain variant's speed is unknown: its lever twins are priced (where they
        // cannot win, pricing them changes nothing: a lever never raises tokens/s)
        let may_gain = skipped || acc.best.as_ref().is_none_or(|(_, tps, _)| faster_unfit.is_some_and(|t| t > *tps));
        if slots.has_levers && may_gain {
            // with a plain fit, a lever variant can win only where its own twin does not fit
            // yet is faster than that fit: the others are not priced
            let best = acc.best.as_ref().map(|(_, tps, _)| *tps);
            for i in 0..slots.variants.len() {
                slots.need[i] = match (best, slots.twin[i]) {
                    (Some(best), Some(j)) if slots.prune && slots.ok[j] => slots.unfit_tps[j] > best,
                    _ => true,
                };
            }
            slots.prepare(self, outer, gpu, false, space.usable_bytes)?;
            Self::scan(options, space, slots, false, outer.batching, &mut acc)?;
        }
        Ok(acc.best.map(|(w, _, _)| w).or(acc.leanest.map(|(w, _)| w)))
    }

    /// Evaluate the prepared variants of one phase (plain or lever) at every batch into
    /// `acc`; returns the most tokens/s among the plans that do not fit. The plain phase
    /// also keeps that most per variant in `slots.unfit_tps` (∞ where a batch could not be
    /// priced: unknown).
    fn scan(options: &[(u64, u64)], space: &Space, slots: &mut Slots<'_>, plain: bool, mode: Batching, acc: &mut Inner) -> Result<Option<f64>> {
        let mut faster_unfit: Option<f64> = None;
        if plain {
            slots.unfit_tps.iter_mut().for_each(|t| *t = f64::NEG_INFINITY);
        }
        for (bi, &(batch, accumulation)) in options.iter().enumerate() {
            for variant in 0..slots.variants.len() {
                if !(slots.ok[variant] && slots.plain[variant] == plain) {
                    continue;
                }
                let ev: Evaluation = match slots.prepared[variant].evaluate(batch, accumulation) {
                    Ok(e) => e,
                    Err(Error::InvalidField { .. }) => {
                        slots.unfit_tps[variant] = f64::INFINITY;
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                let reserved = space.judged_reserved(&ev);
                // real tokens/s: padding trains nothing (1 without data)
                let tps = ev.tokens_per_second.unwrap_or(0.0) * space.real_fraction(mode, batch);
                let key = (bi, variant);
                let w = Winner { variant, batch, accumulation, reserved, fits: fits(reserved, space.usable_bytes) };
                if w.fits {
                    // a lever variant must be strictly faster: equals keep the levers off
                    if acc.best.as_ref().is_none_or(|(_, cur, k)| tps > *cur || (plain && tps == *cur && key < *k)) {
                        acc.best = Some((w, tps, key));
                    }
                } else {
                    faster_unfit = Some(faster_unfit.map_or(tps, |t| t.max(tps)));
                    // (NaN tokens/s: unknown, as if faster)
                    let t = &mut slots.unfit_tps[variant];
                    *t = if tps.is_nan() { f64::INFINITY } else { t.max(tps) };
                    if acc.leanest.as_ref().is_none_or(|(cur, k)| reserved < cur.reserved || (reserved == cur.reserved && key < *k)) {
                        acc.leanest = Some((w, key));
                    }
                }
            }
        }
        Ok(faster_unfit)
    }

    /// Exhaustive search for one objective: the best fitting plan of the whole space and
    /// how many plans were priced ([`Estimator::rank`]'s first plan for that objective).
    pub fn brute_force(&self, space: &Space, gpu: Option<&GpuSpec>) -> Result<(Option<Scored>, u64)> {
        let ranking = self.rank(space, gpu, 1)?;
        let best = ranking.top(space.objective).first().map(|&i| {
            let r = &ranking.fitting[i];
            Scored { plan: r.plan.clone(), estimate: r.estimate.clone(), value: r.value(space.objective), fits: true }
        });
        Ok((best, ranking.evaluated))
    }
}

impl Winner {
    /// The winning plan with its full estimate (only winners get a breakdown).
    fn ranked(&self, outer: &Plan, slots: &Slots<'_>, space: &Space) -> Result<Ranked> {
        let estimate = slots.prepared[self.variant].finish(self.batch, self.accumulation)?;
        Ok(Ranked {
            plan: Plan {
                per_device_train_batch_size: self.batch,
                gradient_accumulation_steps: self.accumulation,
                ..slots.variants[self.variant].apply(outer)
            },
            estimate,
            reserved_bytes: self.reserved,
            fits: self.fits,
            real_fraction: space.real_fraction(outer.batching, self.batch),
        })
    }
}

/// The plans a top list shows as one alternative: same method, rank, targets and freezing.
fn alternative(p: &Plan) -> (Method, Option<u64>, Option<&Option<Targets>>, u64) {
    let lora = p.uses_lora();
    (p.method, lora.then_some(p.lora_r), lora.then_some(&p.lora_target_modules), p.freeze_ratio.to_bits())
}

/// The best `n` distinct alternatives by `objective`, best first; ties keep the space's order.
fn top_n(fitting: &[Ranked], objective: Objective, n: usize) -> Vec<usize> {
    let values: Vec<f64> = fitting.iter().map(|r| r.value(objective)).collect();
    let mut order: Vec<usize> = (0..fitting.len()).collect();
    order.sort_by(|&a, &b| values[b].total_cmp(&values[a])); // stable: equals keep their order
    let mut seen = Vec::new();
    let mut out = Vec::new();
    for i in order {
        if out.len() == n {
            break;
        }
        let key = alternative(&fitting[i].plan);
        if !seen.contains(&key) {
            seen.push(key);
            out.push(i);
        }
    }
    out
}

/// The Pareto front of tokens/s (none counts as 0) against quality, one plan per point
/// (the leanest, then the first), fastest first. Sorted by tokens/s falling and quality
/// falling, a plan is on the front exactly when it is the first of its tokens/s and its
/// quality beats every faster plan's.
fn pareto(fitting: &[Ranked]) -> Vec<usize> {
    let tps = |i: usize| fitting[i].real_tokens_per_second().unwrap_or(0.0);
    let mut order: Vec<usize> = (0..fitting.len()).collect();
    order.sort_by(|&a, &b| {
        tps(b)
            .total_cmp(&tps(a))
            .then(fitting[b].quality().total_cmp(&fitting[a].quality()))
            .then(fitting[a].reserved_bytes.cmp(&fitting[b].reserved_bytes))
    });
    let mut front = Vec::new();
    let mut best_quality = f64::NEG_INFINITY;
    let mut prev_tps: Option<f64> = None;
    for i in order {
        let t = tps(i);
        if prev_tps == Some(t) {
            continue; // not the first of its speed: a lower or equal quality at equal speed
        }
        prev_tps = Some(t);
        let q = fitting[i].quality();
        if q > best_quality {
            front.push(i);
            best_quality = q;
        }
    }
    front
}

/// One prepared plan per inner variant (checkpointing × levers), reused from one outer plan
/// to the next.
struct Slots<'a> {
    variants: Vec<Variant>,
    /// Whether `variants[i]` has every lever at its axis' first value.
    plain: Vec<bool>,
    /// Whether any variant is not plain.
    has_levers: bool,
    prepared: Vec<Prepared<'a>>,
    /// Whether `prepared[i]` holds a valid plan for the current outer choice.
    ok: Vec<bool>,
    /// Skip a variant whose reserved floor is over the usable bytes and at least this: it
    /// can neither fit nor be leaner than the leanest plan so far (`None`: skip none).
    skip_from: Option<u64>,
    /// The plain variant with the same checkpointing as `variants[i]` (its twin).
    twin: Vec<Option<usize>>,
    /// Per plain variant, the most tokens/s of a batch that does not fit (`Estimator::scan`).
    unfit_tps: Vec<f64>,
    /// Whether a lever variant is priced in the lever phase (`Estimator::inner_search`).
    need: Vec<bool>,
    /// Whether variants that can change nothing are skipped (`skip_from`, `need`).
    prune: bool,
}

impl<'a> Slots<'a> {
    fn new(est: &'a Estimator, space: &Space) -> Self {
        let variants = space.variants();
        let first = variants.first().copied();
        let plain: Vec<bool> = variants
            .iter()
            .map(|v| {
                first.is_some_and(|f| {
                    v.use_liger_kernel == f.use_liger_kernel
                        && v.activation_offloading == f.activation_offloading
                        && v.offload_optimizer == f.offload_optimizer
                        && v.offload_params == f.offload_params
                })
            })
            .collect();
        let n = variants.len();
        let has_levers = plain.iter().any(|p| !p);
        let twin = variants
            .iter()
            .map(|v| (0..n).find(|&j| plain[j] && variants[j].gradient_checkpointing == v.gradient_checkpointing))
            .collect();
        Slots {
            variants,
            plain,
            has_levers,
            prepared: (0..n).map(|_| Prepared::empty(est)).collect(),
            ok: vec![false; n],
            skip_from: None,
            twin,
            unfit_tps: vec![f64::NEG_INFINITY; n],
            need: vec![true; n],
            prune: true,
        }
    }

    /// Prepare `outer` under each variant of one phase (`plain` or lever); a variant the
    /// plan rejects (e.g. a rank above a layer's width, an offload its sharding cannot do)
    /// is marked invalid. Preparing the plain phase marks every lever variant invalid.
    ///
    /// A variant whose reserved floor ([`crate::estimator::Params::reserved_floor`], its
    /// batch-independent terms) is over `usable` and at least [`Slots::skip_from`] is
    /// skipped (marked invalid) before its layers are priced: at every batch it would not
    /// fit, and its reserved bytes would be no less than the leanest plan's so far (which
    /// `rank` keeps on equals), so it changes nothing `rank` returns. So is a lever variant
    /// that `need` leaves out. Returns whether one was skipped by its floor.
    fn prepare(&mut self, est: &'a Estimator, outer: &Plan, gpu: Option<&GpuSpec>, plain: bool, usable: u64) -> Result<bool> {
        let mut skipped = false;
        for i in 0..self.variants.len() {
            if self.plain[i] != plain {
                if plain {
                    self.ok[i] = false;
                }
                continue;
            }
            let v = self.variants[i];
            if !v.runs_with(outer.distributed) || !(plain || self.need[i]) {
                self.ok[i] = false;
                continue;
            }
            let variant = v.apply(outer);
            let params = match est.params(&variant) {
                Ok(p) => p,
                Err(Error::InvalidField { .. }) => {
                    self.ok[i] = false;
                    continue;
                }
                Err(e) => return Err(e),
            };
            if let Some(from) = self.skip_from {
                let floor = params.reserved_floor(gpu);
                if !params.overflows() && !fits(floor, usable) && floor >= from {
                    self.ok[i] = false;
                    skipped = true;
                    continue;
                }
            }
            est.prepare_params(&variant, gpu, &mut self.prepared[i], true, params);
            self.ok[i] = true;
        }
        Ok(skipped)
    }

}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(name: &str) -> String {
        std::fs::read_to_string(format!("{}/benches/data/{name}", env!("CARGO_MANIFEST_DIR"))).expect("bench data")
    }

    fn fixture() -> (Estimator, GpuSpec, Space) {
        let est = Estimator::from_json(&data("llama-3.1-8b.shape.json")).expect("shape");
        let gpu = GpuSpec::from_json(&data("rtx-4090.gpu.json")).expect("gpu");
        let space = Space::from_json(&data("llama-3.1-8b.rtx-4090.space.json")).expect("space");
        (est, gpu, space)
    }

    /// Every plan of the space (outer × batch × checkpointing), each through the plain
    /// `Estimator::estimate` (the phase walk, not the search's affine lines).
    fn every_plan(est: &Estimator, space: &Space, gpu: &GpuSpec) -> Vec<(Plan, Estimate)> {
        let mut out = Vec::new();
        for outer in space.outer_plans() {
            for (b, a) in space.batch_options(outer.num_gpus) {
                for v in space.variants() {
                    let plan = Plan { per_device_train_batch_size: b, gradient_accumulation_steps: a, ..v.apply(&outer) };
                    if let Ok(e) = est.estimate(&plan, Some(gpu)) {
                        out.push((plan, e));
                    }
                }
            }
        }
        out
    }

    /// The outer choice of a plan: the inner knobs (batch, checkpointing, levers) reset.
    fn outer_of(p: &Plan) -> Plan {
        let inner = Variant {
            gradient_checkpointing: true,
            use_liger_kernel: false,
            activation_offloading: false,
            offload_optimizer: false,
            offload_params: false,
        };
        Plan { per_device_train_batch_size: 1, gradient_accumulation_steps: 1, ..inner.apply(p) }
    }

    fn check_against_brute_force(space: &Space) -> Ranking {
        let (est, gpu, _) = fixture();
        let ranking = est.rank(space, Some(&gpu), 5).expect("rank");
        let all = every_plan(&est, space, &gpu);
        let fit: Vec<&(Plan, Estimate)> = all.iter().filter(|(_, e)| fits(e.peak_reserved_upper_bytes, space.usable_bytes)).collect();
        for objective in [Objective::Balanced, Objective::Fastest, Objective::Quality] {
            let value = |e: &Estimate| objective_value(objective, e.tokens_per_second, e.quality);
            let best = fit.iter().map(|(_, e)| value(e)).fold(f64::NEG_INFINITY, f64::max);
            match ranking.top(objective).first() {
                Some(&i) => assert_eq!(ranking.fitting[i].value(objective), best, "{objective:?}"),
                None => assert!(fit.is_empty(), "{objective:?}: rank found nothing, brute force {}", fit.len()),
            }
            // the top list is sorted and every shown plan is what estimate says of it
            let tops = ranking.top(objective);
            for w in tops.windows(2) {
                assert!(ranking.fitting[w[0]].value(objective) >= ranking.fitting[w[1]].value(objective));
            }
        }
        // every fitting outer choice is there, with the most tokens/s its inner choices allow
        let mut distinct_outer = 0;
        for r in &ranking.fitting {
            let same_outer: Vec<&&(Plan, Estimate)> = fit
                .iter()
                .filter(|(p, _)| outer_of(p) == outer_of(&r.plan))
                .collect();
            let best_tps = same_outer.iter().map(|(_, e)| e.tokens_per_second.unwrap_or(0.0)).fold(f64::NEG_INFINITY, f64::max);
            assert_eq!(r.tokens_per_second().unwrap_or(0.0), best_tps, "{:?}", r.plan);
            assert_eq!(est.estimate(&r.plan, Some(&gpu)).expect("estimate").peak_reserved_bytes, r.estimate.peak_reserved_bytes);
            distinct_outer += 1;
        }
        let mut outers: Vec<Plan> = fit
            .iter()
            .map(|(p, _)| outer_of(p))
            .collect();
        outers.dedup();
        let mut unique = Vec::new();
        for p in outers {
            if !unique.contains(&p) {
                unique.push(p);
            }
        }
        assert_eq!(distinct_outer, unique.len(), "every fitting outer choice is ranked");
        // Pareto: no plan of the brute force dominates a front plan, and every fitting plan
        // is matched or beaten by one on the front
        let point = |e: &Estimate| (e.tokens_per_second.unwrap_or(0.0), e.quality);
        for &i in &ranking.pareto {
            let (t, q) = point(&ranking.fitting[i].estimate);
            assert!(!fit.iter().any(|(_, e)| {
                let (t2, q2) = point(e);
                t2 >= t && q2 >= q && (t2 > t || q2 > q)
            }));
        }
        for (_, e) in &fit {
            let (t, q) = point(e);
            assert!(ranking.pareto.iter().any(|&i| {
                let (t2, q2) = point(&ranking.fitting[i].estimate);
                t2 >= t && q2 >= q
            }));
        }
        match &ranking.nothing_fits {
            None => assert!(!fit.is_empty()),
            Some(s) => {
                assert!(fit.is_empty());
                let lean = all.iter().map(|(_, e)| e.peak_reserved_upper_bytes).min().expect("some plan");
                let l = s.leanest.as_ref().expect("leanest");
                assert_eq!(l.reserved_bytes, lean);
                assert_eq!(s.over_bytes, Some(lean - space.usable_bytes));
            }
        }
        ranking
    }

    #[test]
    fn rank_equals_brute_force() {
        let (_, _, space) = fixture();
        let r = check_against_brute_force(&space);
        assert!(r.balanced.len() == 5 && r.pareto.len() >= 2);
    }

    #[test]
    fn rank_equals_brute_force_on_a_tight_gpu() {
        let (_, _, space) = fixture();
        let r = check_against_brute_force(&Space { usable_bytes: 16 << 30, ..space });
        assert!(!r.fitting.is_empty() && r.fitting.iter().any(|p| p.plan.method == Method::Qlora));
    }

    #[test]
    fn rank_says_how_far_over_when_nothing_fits() {
        let (_, _, space) = fixture();
        let r = check_against_brute_force(&Space { usable_bytes: 3 << 30, ..space });
        let s = r.nothing_fits.expect("nothing fits in 3 GiB");
        assert_eq!(s.leanest.expect("leanest").plan.method, Method::Qlora);
    }

    #[test]
    fn rank_equals_brute_force_with_sharding() {
        let (_, _, space) = fixture();
        let base = Plan { num_gpus: 4, distributed: Distributed::Ddp, ..space.base.clone() };
        let space = Space {
            base,
            lora_r: vec![8, 64],
            freeze: vec![0.0, 0.5],
            distributed: vec![Distributed::Ddp, Distributed::Fsdp, Distributed::Zero2, Distributed::Zero3],
            usable_bytes: 14 << 30,
            ..space
        };
        let r = check_against_brute_force(&space);
        assert!(r.fitting.iter().any(|p| p.plan.distributed == Distributed::Zero3));
    }

    #[test]
    fn sharded_qlora_stores_4bit_in_the_compute_dtype_and_int8_is_never_sharded() {
        let (_, _, space) = fixture();
        let base = Plan { num_gpus: 8, distributed: Distributed::Ddp, ..space.base.clone() };
        let space = Space {
            base,
            methods: vec![Method::Qlora, Method::Lora8bit, Method::Full],
            distributed: vec![Distributed::Ddp, Distributed::Fsdp, Distributed::Zero3],
            ..space
        };
        let outers = space.outer_plans();
        let storage = |m: Method, d: Distributed| -> Vec<QuantStorage> {
            outers.iter().filter(|p| p.method == m && p.distributed == d).map(|p| p.bnb_4bit_quant_storage).collect()
        };
        assert!(storage(Method::Qlora, Distributed::Ddp).iter().all(|&s| s == QuantStorage::Uint8));
        for d in [Distributed::Fsdp, Distributed::Zero3] {
            let s = storage(Method::Qlora, d);
            assert!(!s.is_empty() && s.iter().all(|&s| s == QuantStorage::Bfloat16), "{d:?}"); // the base computes in bf16
            assert!(storage(Method::Lora8bit, d).is_empty(), "an int8 base has no float storage");
        }
        assert!(outers.iter().any(|p| p.method == Method::Full && p.distributed == Distributed::Zero3));
        // a pinned uint8 storage (shard_quantized off) keeps sharded QLoRA out, as the runtime refuses it
        let pinned = Space { shard_quantized: false, ..space }.outer_plans();
        assert!(!pinned.iter().any(|p| p.method == Method::Qlora && p.distributed == Distributed::Fsdp));
        assert!(Plan { method: Method::Qlora, num_gpus: 2, distributed: Distributed::Fsdp, ..Plan::default() }.unsupported().is_some());
    }

    #[test]
    fn rank_equals_brute_force_with_lever_axes() {
        let (est, gpu, space) = fixture();
        // a tight single GPU: the levers decide what fits
        let levers = Space {
            use_liger_kernel: vec![false, true],
            activation_offloading: vec![false, true],
            lora_r: vec![16],
            freeze: vec![0.0],
            usable_bytes: 12 << 30,
            ..space.clone()
        };
        let r = check_against_brute_force(&levers);
        assert!(r.fitting.iter().any(|p| p.plan.use_liger_kernel || p.plan.activation_offloading));
        // levers only where they pay: without the axes fewer plans fit, and none of the plain
        // fitting plans gains a lever (equal speed keeps the lever off)
        let plain = est.rank(&Space { use_liger_kernel: vec![], activation_offloading: vec![], ..levers.clone() }, Some(&gpu), 5).unwrap();
        assert!(plain.fitting.len() < r.fitting.len());
        // sharded: the offloads as axes, each only with the sharding that can do it
        let base = Plan { num_gpus: 2, distributed: Distributed::Ddp, ..space.base.clone() };
        let sharded = Space {
            base,
            methods: vec![Method::Full, Method::Qlora],
            lora_r: vec![16],
            freeze: vec![0.0],
            distributed: vec![Distributed::Ddp, Distributed::Fsdp, Distributed::Zero2, Distributed::Zero3],
            offload_optimizer: vec![false, true],
            offload_params: vec![false, true],
            usable_bytes: 40 << 30, // full 8B on 2 GPUs: 16 B/param sharded is ~60 GiB each without offload
            ..space
        };
        let r = check_against_brute_force(&sharded);
        for p in r.fitting.iter().map(|p| &p.plan) {
            assert!(!p.offload_optimizer || matches!(p.distributed, Distributed::Zero2 | Distributed::Zero3));
            assert!(!p.offload_params || matches!(p.distributed, Distributed::Fsdp | Distributed::Zero3));
        }
        let offloaded: Vec<&Plan> = r.fitting.iter().map(|p| &p.plan).filter(|p| p.offload_optimizer || p.offload_params).collect();
        assert!(offloaded.iter().any(|p| p.method == Method::Full), "full fine-tuning fits only with an offload");
    }

    /// The inner search prices lever variants only where a plain twin does not fit: exact
    /// because no lever raises tokens/s. Checked plan by plan on single- and multi-GPU spaces.
    #[test]
    fn levers_never_raise_tokens_per_second() {
        let (est, gpu, space) = fixture();
        let one = Space { use_liger_kernel: vec![false, true], activation_offloading: vec![false, true], freeze: vec![0.0, 0.5], ..space.clone() };
        let base = Plan { num_gpus: 4, distributed: Distributed::Ddp, ..space.base.clone() };
        let multi = Space {
            base,
            distributed: vec![Distributed::Ddp, Distributed::Fsdp, Distributed::Zero2, Distributed::Zero3],
            offload_optimizer: vec![false, true],
            offload_params: vec![false, true],
            lora_r: vec![16],
            ..one.clone()
        };
        let mut compared = 0;
        for sp in [&one, &multi] {
            for (plan, e) in every_plan(&est, sp, &gpu) {
                let plain = Plan {
                    use_liger_kernel: false,
                    activation_offloading: false,
                    offload_optimizer: false,
                    offload_params: false,
                    ..plan.clone()
                };
                if plain == plan {
                    continue;
                }
                let p = est.estimate(&plain, Some(&gpu)).expect("the plain twin prices");
                let (t, tp) = (e.tokens_per_second.unwrap_or(0.0), p.tokens_per_second.unwrap_or(0.0));
                assert!(t <= tp, "{plan:?}: {t} > {tp}");
                compared += 1;
            }
        }
        assert!(compared > 1000);
    }

    #[test]
    fn the_fit_rule_is_inclusive_and_usable_memory_truncates() {
        assert!(fits(100, 100));
        assert!(!fits(101, 100));
        // 24 GiB × 0.92 = 23,708,219,473.92 → 23,708,219,473 bytes
        assert_eq!(usable_bytes(25_769_803_776, 0.08).unwrap(), 23_708_219_473);
        assert!(usable_bytes(1, 0.95).is_err());
    }

    /// The batching axis: every mode is an outer choice, the ranking compares real tokens/s
    /// (padding excluded), and an equal fraction keeps the base's mode (the first).
    #[test]
    fn batching_is_an_outer_knob_ranked_by_real_tokens() {
        let (est, gpu, space) = fixture();
        let modes = vec![Batching::Longest, Batching::MaxLength, Batching::Packing, Batching::PaddingFree];
        let plain = est.rank(&Space { batching: modes.clone(), ..space.clone() }, Some(&gpu), 5).expect("rank");
        let outer = est.rank(&space, Some(&gpu), 5).expect("rank").outer;
        assert_eq!(plain.outer, 4 * outer);
        // without data a flattened row is never faster than a padded batch of the same
        // tokens (equal at best, and equals keep the padded mode, first in the axis); padding
        // to max_length may fit a larger batch (no stranded loss blocks)
        let best = &plain.fitting[plain.top(Objective::Fastest)[0]];
        assert!(!best.plan.batching.flattened(), "{:?}", best.plan.batching);
        // padding costs 40% of the tokens at every batch of `longest`, 50% of `max_length`'s:
        // a flattened mode wins
        let fractions: Vec<(Batching, u64, f64)> = space
            .batch
            .iter()
            .flat_map(|&b| [(Batching::Longest, b, 0.6), (Batching::MaxLength, b, 0.5)])
            .collect();
        let data = Space { batching: modes, real_token_fraction: fractions, ..space.clone() };
        let ranked = est.rank(&data, Some(&gpu), 5).expect("rank");
        let best = &ranked.fitting[ranked.top(Objective::Fastest)[0]];
        assert!(best.plan.batching.flattened(), "{:?}", best.plan.batching);
        let longest = ranked.fitting.iter().find(|r| r.plan.batching == Batching::Longest).expect("a longest plan fits");
        assert_eq!(longest.real_fraction, 0.6);
        assert_eq!(longest.real_tokens_per_second(), longest.tokens_per_second().map(|t| t * 0.6));
        // DPO pads: no flattened mode in its space
        let dpo = Space { base: Plan { trainer: Trainer::Dpo, ..space.base.clone() }, ..data.clone() };
        assert!(dpo.outer_plans().iter().all(|p| !p.batching.flattened()));
        let bad = Space { real_token_fraction: vec![(Batching::Longest, 4, 1.5)], ..space };
        assert!(bad.validate().is_err());
    }

    /// A flattened row under sdpa is one sequence of batch × max_length tokens: the prepared
    /// plan prices another batch exactly as a fresh estimate at that batch does, and
    /// flash-attention's varlen kernel keeps the records apart (the padded plan's memory).
    #[test]
    fn flattened_rows_price_their_context_at_every_batch() {
        let (est, gpu, space) = fixture();
        let base = Plan { max_length: 1024, gradient_checkpointing: false, ..space.base.clone() };
        for attn in [Attention::Sdpa, Attention::Eager, Attention::FlashAttention2] {
            let flat = Plan { batching: Batching::PaddingFree, attn_implementation: attn, per_device_train_batch_size: 1, ..base.clone() };
            let prepared = est.prepare(&flat, Some(&gpu)).expect("prepare");
            for b in [1, 2, 4, 8] {
                let at_b = Plan { per_device_train_batch_size: b, ..flat.clone() };
                let fresh = est.estimate(&at_b, Some(&gpu)).expect("estimate");
                let via = prepared.finish(b, 4).expect("finish");
                assert_eq!(via.peak_allocated_bytes, fresh.peak_allocated_bytes, "{attn:?} b={b}");
                assert_eq!(via.tokens_per_second, fresh.tokens_per_second);
                let ev = prepared.evaluate(b, 4).expect("evaluate");
                assert_eq!(ev.peak_reserved_upper_bytes, fresh.peak_reserved_upper_bytes);
                let padded = est.estimate(&Plan { batching: Batching::Longest, ..at_b.clone() }, Some(&gpu)).expect("padded");
                if attn == Attention::Eager && b > 1 {
                    // eager's scores span the whole row: (b·T)² instead of b·T²
                    assert!(fresh.peak_allocated_bytes > padded.peak_allocated_bytes, "{attn:?} b={b}");
                }
                if attn == Attention::FlashAttention2 || (attn == Attention::Eager && b == 1) {
                    assert_eq!(fresh.peak_allocated_bytes, padded.peak_allocated_bytes, "{attn:?} b={b}");
                }
                if attn == Attention::Sdpa {
                    // the row's bool mask, (b·T)² bytes, kept from forward through backward
                    let row = b * base.max_length;
                    assert!(fresh.peak_allocated_bytes >= padded.peak_allocated_bytes + row * row, "b={b}");
                }
                if attn != Attention::FlashAttention2 && b > 1 {
                    assert!(fresh.tokens_per_second < padded.tokens_per_second, "{attn:?} b={b}: attention over the whole row");
                }
            }
        }
    }

    /// Padding to max_length fixes the step's shape: the allocator reserve drops the loss
    /// forward's stranded blocks, `(e + 4 + 4)·B·T·V` (device.rs), and nothing else moves.
    #[test]
    fn fixed_length_batches_drop_the_stranded_loss_blocks() {
        let (est, gpu, space) = fixture();
        let vary = est.estimate(&space.base, Some(&gpu)).expect("estimate");
        let fixed = est.estimate(&Plan { batching: Batching::MaxLength, ..space.base.clone() }, Some(&gpu)).expect("estimate");
        let tv = space.base.per_device_train_batch_size * space.base.max_length * est.shape.vocab_size;
        assert_eq!(vary.device.allocator_reserve - fixed.device.allocator_reserve, 10 * tv); // bf16: 2 + 4 + 4
        assert_eq!(vary.peak_allocated_bytes, fixed.peak_allocated_bytes);
        assert_eq!(vary.tokens_per_second, fixed.tokens_per_second);
    }

    /// Skipping the variants whose floor can neither fit nor be leaner than the leanest so
    /// far, and the lever variants whose plain twin has no unfit batch faster than the best
    /// plain fit, returns the very ranking (every plan, estimate and index, compared through their
    /// `Debug` text) of pricing them all: on the spaces of `recommend`'s suggestions (one
    /// GPU at shorter lengths, more GPUs with sharding and offloading) for hybrid and dense
    /// models, where nothing fits, some plans fit and everything fits.
    #[test]
    fn skipping_unfit_variants_changes_no_ranking() {
        let shapes = ["rust/tests/data/shapes/nemotron-3-super.shape.json", "rust/tests/data/shapes/qwen3-coder-next.shape.json",
                      "rust/tests/data/shapes/jamba-v0.1.shape.json", "benches/data/llama-3.1-8b.shape.json"];
        let h100 = GpuSpec::from_json(r#"{"name": "H100 SXM", "memory_bytes": 85899345920, "peak_tflops": {"bf16": 989.5, "tf32": 494.5},
                                          "bandwidth_bytes_per_s": 3.35e12, "compute_capability": "9.0"}"#).expect("gpu");
        let (_, rtx, base) = fixture();
        let mut skipped_some = false;
        for path in shapes {
            let est = Estimator::from_json(&std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).expect(path)).expect(path);
            for (gpu, usable) in [(&h100, 84_181_359_001u64), (&rtx, 23_708_219_473)] {
                for (gpus, length) in [(1, 2048), (1, 256), (2, 2048), (8, 1024)] {
                    let mut space = Space {
                        lora_r: vec![4, 64],
                        freeze: vec![0.0, 0.5, 0.9],
                        optim: vec![Optim::AdamwTorchFused, Optim::Adamw8bit],
                        use_liger_kernel: vec![false, true],
                        activation_offloading: vec![false, true],
                        usable_bytes: usable,
                        base: Plan { max_length: length, num_gpus: gpus, ..base.base.clone() },
                        ..base.clone()
                    };
                    if gpus > 1 {
                        space.distributed = vec![Distributed::Ddp, Distributed::Fsdp, Distributed::Zero2, Distributed::Zero3];
                        space.base.distributed = Distributed::Ddp;
                        space.offload_optimizer = vec![false, true];
                        space.offload_params = vec![false, true];
                    }
                    let all = est.rank_pruned(&space, Some(gpu), 3, false).expect("rank");
                    let pruned = est.rank_pruned(&space, Some(gpu), 3, true).expect("rank");
                    assert_eq!(format!("{pruned:?}"), format!("{all:?}"), "{path} on {gpus} × {} at {length}", gpu.name);
                    skipped_some |= all.nothing_fits.is_some() || all.fitting.len() < all.outer as usize;
                }
            }
        }
        assert!(skipped_some, "some space has plans that do not fit");
    }
}
