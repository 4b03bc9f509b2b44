//! The training plan, mirrored from `forge_advisor/plan.py` (Hugging Face field names).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The names of an enum's values, in declaration order, and the lookups both ways. The
/// names equal the serde names (a unit test checks), so JSON and Python agree.
macro_rules! names {
    ($ty:ident { $($variant:ident = $name:literal),* $(,)? }) => {
        impl $ty {
            pub const NAMES: &'static [&'static str] = &[$($name),*];
            pub fn name(self) -> &'static str {
                match self { $($ty::$variant => $name),* }
            }
            /// The value named `name`, or an error naming `field` and the allowed names.
            pub fn from_name(field: &str, name: &str) -> Result<Self> {
                match name {
                    $($name => Ok($ty::$variant),)*
                    _ => Err(Error::field(field, format!("{name:?}"), Self::NAMES.join(", "))),
                }
            }
        }
    };
}
pub(crate) use names;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    Full,
    Lora,
    Qlora,
    #[serde(rename = "lora_8bit")]
    Lora8bit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trainer {
    Sft,
    Dpo,
}

/// `bf16`/`fp16`: weights, grads and optimizer states in half precision (transformers 5
/// loads a bf16 checkpoint as bf16 and trains it as is). `amp-*`: fp32 master weights with
/// autocast. `fp32`: no autocast.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Dtype {
    #[serde(rename = "bf16")]
    Bf16,
    #[serde(rename = "fp16")]
    Fp16,
    #[serde(rename = "amp-bf16")]
    AmpBf16,
    #[serde(rename = "amp-fp16")]
    AmpFp16,
    #[serde(rename = "fp32")]
    Fp32,
}

impl Dtype {
    /// Bytes of one stored weight of the base model (and of its grads and Adam states).
    pub fn param_bytes(self) -> u64 {
        match self {
            Dtype::Bf16 | Dtype::Fp16 => 2,
            Dtype::AmpBf16 | Dtype::AmpFp16 | Dtype::Fp32 => 4,
        }
    }
    /// Bytes of one activation element that matmuls produce (autocast computes in half).
    pub fn compute_bytes(self) -> u64 {
        match self {
            Dtype::Fp32 => 4,
            _ => 2,
        }
    }
    /// Bytes of the residual stream between layers (autocast keeps it in fp32: the
    /// embedding output is fp32 and `fp32 + bf16` promotes to fp32).
    pub fn residual_bytes(self) -> u64 {
        self.param_bytes()
    }
    pub fn is_amp(self) -> bool {
        matches!(self, Dtype::AmpBf16 | Dtype::AmpFp16)
    }
    /// Peak-throughput column of the GPU this dtype runs on.
    pub fn compute_kind(self) -> ComputeKind {
        match self {
            Dtype::Bf16 | Dtype::AmpBf16 => ComputeKind::Bf16,
            Dtype::Fp16 | Dtype::AmpFp16 => ComputeKind::Fp16,
            Dtype::Fp32 => ComputeKind::Tf32,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ComputeKind {
    Bf16,
    Fp16,
    Tf32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Optim {
    AdamwTorch,
    AdamwTorchFused,
    #[serde(rename = "adamw_8bit")]
    Adamw8bit,
    #[serde(rename = "paged_adamw_8bit")]
    PagedAdamw8bit,
    #[serde(rename = "paged_adamw_32bit")]
    PagedAdamw32bit,
    Adafactor,
    Sgd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Attention {
    Sdpa,
    #[serde(rename = "flash_attention_2")]
    FlashAttention2,
    Eager,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Distributed {
    None,
    Ddp,
    Fsdp,
    Zero2,
    Zero3,
}

names!(Method { Full = "full", Lora = "lora", Qlora = "qlora", Lora8bit = "lora_8bit" });
names!(Trainer { Sft = "sft", Dpo = "dpo" });
names!(Dtype { Bf16 = "bf16", Fp16 = "fp16", AmpBf16 = "amp-bf16", AmpFp16 = "amp-fp16", Fp32 = "fp32" });
names!(Optim {
    AdamwTorch = "adamw_torch",
    AdamwTorchFused = "adamw_torch_fused",
    Adamw8bit = "adamw_8bit",
    PagedAdamw8bit = "paged_adamw_8bit",
    PagedAdamw32bit = "paged_adamw_32bit",
    Adafactor = "adafactor",
    Sgd = "sgd",
});
names!(Attention { Sdpa = "sdpa", FlashAttention2 = "flash_attention_2", Eager = "eager" });
names!(Distributed { None = "none", Ddp = "ddp", Fsdp = "fsdp", Zero2 = "zero2", Zero3 = "zero3" });
names!(Batching { Longest = "longest", MaxLength = "max_length", Packing = "packing", PaddingFree = "padding_free" });
names!(QuantStorage { Uint8 = "uint8", Bfloat16 = "bfloat16", Float16 = "float16", Float32 = "float32" });

/// The plan's choice fields and their allowed names: the one list (Python reads it as
/// `_native.PLAN_CHOICES`).
pub const CHOICES: [(&str, &[&str]); 8] = [
    ("method", Method::NAMES),
    ("trainer", Trainer::NAMES),
    ("dtype", Dtype::NAMES),
    ("optim", Optim::NAMES),
    ("attn_implementation", Attention::NAMES),
    ("distributed", Distributed::NAMES),
    ("bnb_4bit_quant_storage", QuantStorage::NAMES),
    ("batching", Batching::NAMES),
];

/// Integer fields and their inclusive ranges: the one definition (Python reads it as
/// `_native.PLAN_INT_RANGES`). 2^16 sequences per device or steps of accumulation, 2^24 =
/// 16M tokens (beyond any published context window), 4096 GPUs; LoRA's rank and alpha are
/// checked only when the plan trains adapters. Vision-language plans: 0–1024 images per
/// sample (0: text-only samples), and `max_pixels` from 28·28 = 784 (one merged Qwen2-VL
/// token, the smallest image a processor makes) to 2^28 px (16384 × 16384), checked when set.
/// Videos (vision.rs `VideoRule`): 0–1024 per sample, 1–768 frames each (the Qwen video
/// processors' `max_frames` = 768), `video_max_pixels` from 784 to 2^32 (Qwen3-VL's budget
/// spans every frame of a video: 768 frames of 2^22 px), checked when set.
pub const INT_RANGES: [(&str, u64, u64); 11] = [
    ("per_device_train_batch_size", 1, 1 << 16),
    ("gradient_accumulation_steps", 1, 1 << 16),
    ("max_length", 1, 1 << 24),
    ("num_gpus", 1, 4096),
    ("lora_r", 1, 1 << 16),
    ("lora_alpha", 1, 1 << 20),
    ("images_per_sample", 0, 1024),
    ("max_pixels", 28 * 28, 1 << 28),
    ("videos_per_sample", 0, 1024),
    ("num_frames", 1, 768),
    ("video_max_pixels", 28 * 28, 1 << 32),
];

/// Fractions and their half-open ranges `[lo, hi)` (`_native.PLAN_FLOAT_RANGES`).
pub const FLOAT_RANGES: [(&str, f64, f64); 2] = [("lora_dropout", 0.0, 1.0), ("freeze_ratio", 0.0, 1.0)];

/// bitsandbytes' `bnb_4bit_quant_storage`: the dtype the packed 4-bit weights are stored
/// in. `uint8` (bitsandbytes' default) cannot be sharded: FSDP (accelerate excludes such
/// Params4bit from `fully_shard`) and ZeRO-3 keep them whole on every GPU. A float storage
/// equal to the compute dtype (`bfloat16`) is FSDP-QLoRA (peft/accelerate FSDP-QLoRA
/// guides): the packed weights shard like any other parameter, 4 values per bf16 element.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuantStorage {
    #[default]
    Uint8,
    Bfloat16,
    Float16,
    Float32,
}

impl QuantStorage {
    pub fn is_float(self) -> bool {
        self != QuantStorage::Uint8
    }
}

/// How the runtime forms a micro-batch of `B` records (forge_advisor/train/data.py; the
/// preset's trl/transformers fields `padding`, `packing`, `padding_free` map to it once, in
/// forge_advisor/dataplan/batching.py). The plan prices its WORST micro-batch: `B` records of
/// `max_length` tokens (the longest records together, or `B` full packed rows).
///
/// * `longest`: transformers' `DataCollatorForLanguageModeling` pads each batch to its
///   longest record, so lengths vary from step to step;
/// * `max_length`: the same collator with `pad_to_multiple_of=max_length`: every step has
///   one shape;
/// * `packing`: trl `pack_dataset(strategy="bfd")` rows of at most `max_length`, collated by
///   trl's `DataCollatorForLanguageModeling(padding_free=True)`, which concatenates the `B`
///   rows into ONE row with `position_ids` restarting per record (trl 1.16
///   `sft_trainer.py`, `torch_call`: "flatten everything into a single sequence"); the
///   rows' totals fall short of `max_length` by best-fit gaps, so the flattened length
///   still varies between steps (the allocator replay, `python -m
///   benches.truth.allocator_study`, "packed rows": a flattened step of 4 × 248 tokens
///   before one of 4 × 256 leaves 1.71 GiB reserved, 0.29 GiB at one length);
/// * `padding_free`: transformers' `DataCollatorWithFlattening`: the `B` records as one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Batching {
    #[default]
    Longest,
    MaxLength,
    Packing,
    PaddingFree,
}

impl Batching {
    /// The collator concatenates the micro-batch into one row (`position_ids` restart at
    /// each record, no `attention_mask`).
    pub fn flattened(self) -> bool {
        matches!(self, Batching::Packing | Batching::PaddingFree)
    }
    /// Whether consecutive steps differ in length (the allocator reserve's second term,
    /// `device::allocator_reserve`): only padding to `max_length` fixes the shape.
    pub fn lengths_vary(self) -> bool {
        self != Batching::MaxLength
    }
}

impl Attention {
    /// Keeps the records of a flattened row apart without a mask: flash-attention's varlen
    /// kernel with `cu_seq_lens` derived from `position_ids` (transformers 5
    /// `modeling_flash_attention_utils._flash_attention_forward`, packed-sequence path).
    /// sdpa and eager get a block-diagonal mask over the whole row instead (transformers 5
    /// `masking_utils.find_packed_sequence_indices` + `packed_sequence_mask_function`), so
    /// their attention spans the whole flattened row.
    pub fn varlen(self) -> bool {
        self == Attention::FlashAttention2
    }
}

/// The attention implementations that keep a flattened row's records apart without a mask
/// ([`Attention::varlen`]; Python reads it as `_native.VARLEN_ATTENTION`).
pub const VARLEN_ATTENTION: [&str; 1] = ["flash_attention_2"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Targets {
    /// `"all-linear"`: every targetable linear but the output head (peft's rule).
    Keyword(String),
    Names(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub method: Method,
    pub trainer: Trainer,
    pub dtype: Dtype,
    pub lora_r: u64,
    pub lora_alpha: u64,
    pub lora_dropout: f64,
    /// `None`: the attention projections, as the `lora` preset does.
    pub lora_target_modules: Option<Targets>,
    /// peft `LoraConfig(target_parameters=…)`: fused expert tensors (`nn.Parameter [E, out,
    /// in]`) that peft's `ParamWrapper` adapts; `"experts"`: every routed expert tensor;
    /// `None`: none (analysis.rs `param_mask`, activations.rs `expert_lora_fixed`).
    #[serde(default)]
    pub lora_target_parameters: Option<Targets>,
    pub bnb_4bit_use_double_quant: bool,
    pub per_device_train_batch_size: u64,
    pub gradient_accumulation_steps: u64,
    pub max_length: u64,
    pub freeze_ratio: f64,
    pub gradient_checkpointing: bool,
    pub attn_implementation: Attention,
    pub optim: Optim,
    #[serde(default = "default_beta")]
    pub dpo_beta: f64,
    pub num_gpus: u64,
    pub distributed: Distributed,
    /// See [`QuantStorage`]; only read for `method=qlora`.
    #[serde(default)]
    pub bnb_4bit_quant_storage: QuantStorage,
    /// TrainingArguments `use_liger_kernel`: Liger-Kernel's fused linear cross-entropy (the
    /// logits never exist) and its RMSNorm/SwiGLU/RoPE kernels (levers.rs).
    #[serde(default)]
    pub use_liger_kernel: bool,
    /// trl `activation_offloading`: saved activations move to pinned host memory in forward
    /// and come back one layer ahead in backward (levers.rs).
    #[serde(default)]
    pub activation_offloading: bool,
    /// DeepSpeed `offload_optimizer` (ZeRO-2/3): optimizer states and the fp32 master copy
    /// live in host memory and the step runs on the CPU (levers.rs).
    #[serde(default)]
    pub offload_optimizer: bool,
    /// FSDP `offload_params` / DeepSpeed ZeRO-3 `offload_param`: the parameter shards (FSDP:
    /// also their grads and optimizer states) live in host memory (levers.rs).
    #[serde(default)]
    pub offload_params: bool,
    /// See [`Batching`]; the default is today's collator (pad to the batch's longest).
    #[serde(default)]
    pub batching: Batching,
    /// Vision-language models: the largest image of a sample in pixels after the
    /// processor's resize (Qwen2-VL image processor `max_pixels`; `None`: the processor's
    /// default, vision.rs `ImageRule`). Ignored by text-only models and fixed-size processors.
    #[serde(default)]
    pub max_pixels: Option<u64>,
    /// Images per training sample (vision-language models; 0: text-only samples).
    #[serde(default = "one_image")]
    pub images_per_sample: u64,
    /// The vision tower's weights stay frozen (LLaMA-Factory's `freeze_vision_tower`): no
    /// gradients, no adapters on it; the projector and language model follow `method`.
    #[serde(default = "yes")]
    pub freeze_vision_tower: bool,
    /// Videos per training sample (0: none; Qwen2-VL, Qwen2.5-VL, Qwen3-VL take them).
    #[serde(default)]
    pub videos_per_sample: u64,
    /// Frames of each video as the video processor gets them after sampling (its
    /// `num_frames`); vision.rs `VideoRule` groups them by `temporal_patch_size`.
    #[serde(default = "sixteen_frames")]
    pub num_frames: u64,
    /// The video processor's `max_pixels` (`size["longest_edge"]`; `None`: its default),
    /// per frame (Qwen2-VL, Qwen2.5-VL) or per video (Qwen3-VL): vision.rs `VideoRule`.
    #[serde(default)]
    pub video_max_pixels: Option<u64>,
}

fn sixteen_frames() -> u64 {
    16
}

fn one_image() -> u64 {
    1
}

fn yes() -> bool {
    true
}

fn default_beta() -> f64 {
    0.1
}

impl Default for Plan {
    fn default() -> Self {
        Plan {
            method: Method::Lora,
            trainer: Trainer::Sft,
            dtype: Dtype::Bf16,
            lora_r: 16,
            lora_alpha: 32,
            lora_dropout: 0.05,
            lora_target_modules: None,
            lora_target_parameters: None,
            bnb_4bit_use_double_quant: true,
            per_device_train_batch_size: 4,
            gradient_accumulation_steps: 4,
            max_length: 1024,
            freeze_ratio: 0.0,
            gradient_checkpointing: true,
            attn_implementation: Attention::Sdpa,
            optim: Optim::AdamwTorchFused,
            dpo_beta: 0.1,
            num_gpus: 1,
            distributed: Distributed::None,
            bnb_4bit_quant_storage: QuantStorage::Uint8,
            use_liger_kernel: false,
            activation_offloading: false,
            offload_optimizer: false,
            offload_params: false,
            max_pixels: None,
            images_per_sample: 1,
            freeze_vision_tower: true,
            videos_per_sample: 0,
            num_frames: 16,
            video_max_pixels: None,
            batching: Batching::Longest,
        }
    }
}

impl Plan {
    pub fn from_json(text: &str) -> Result<Self> {
        let plan: Plan = serde_json::from_str(text).map_err(|e| Error::Decode { message: format!("bad plan: {e}") })?;
        plan.validate()?;
        Ok(plan)
    }

    /// Whether `other` differs from this plan in per-device batch and accumulation only:
    /// then one prepared structure prices both (`Estimator::estimate_many`). Floats compare
    /// by bits; every field is named, so a new field cannot be forgotten here.
    pub fn same_structure(&self, other: &Plan) -> bool {
        let Plan {
            method,
            trainer,
            dtype,
            lora_r,
            lora_alpha,
            lora_dropout,
            lora_target_modules,
            lora_target_parameters,
            bnb_4bit_use_double_quant,
            per_device_train_batch_size: _,
            gradient_accumulation_steps: _,
            max_length,
            freeze_ratio,
            gradient_checkpointing,
            attn_implementation,
            optim,
            dpo_beta,
            num_gpus,
            distributed,
            bnb_4bit_quant_storage,
            use_liger_kernel,
            activation_offloading,
            offload_optimizer,
            offload_params,
            max_pixels,
            images_per_sample,
            freeze_vision_tower,
            videos_per_sample,
            num_frames,
            video_max_pixels,
            batching,
        } = self;
        *method == other.method
            && *trainer == other.trainer
            && *dtype == other.dtype
            && *lora_r == other.lora_r
            && *lora_alpha == other.lora_alpha
            && lora_dropout.to_bits() == other.lora_dropout.to_bits()
            && *lora_target_modules == other.lora_target_modules
            && *lora_target_parameters == other.lora_target_parameters
            && *bnb_4bit_use_double_quant == other.bnb_4bit_use_double_quant
            && *max_length == other.max_length
            && freeze_ratio.to_bits() == other.freeze_ratio.to_bits()
            && *gradient_checkpointing == other.gradient_checkpointing
            && *attn_implementation == other.attn_implementation
            && *optim == other.optim
            && dpo_beta.to_bits() == other.dpo_beta.to_bits()
            && *num_gpus == other.num_gpus
            && *distributed == other.distributed
            && *bnb_4bit_quant_storage == other.bnb_4bit_quant_storage
            && *use_liger_kernel == other.use_liger_kernel
            && *activation_offloading == other.activation_offloading
            && *offload_optimizer == other.offload_optimizer
            && *offload_params == other.offload_params
            && *max_pixels == other.max_pixels
            && *images_per_sample == other.images_per_sample
            && *freeze_vision_tower == other.freeze_vision_tower
            && *videos_per_sample == other.videos_per_sample
            && *num_frames == other.num_frames
            && *video_max_pixels == other.video_max_pixels
            && *batching == other.batching
            // a flattened row under a masked attention is one sequence of batch × max_length
            // tokens: its context, hence its structure, changes with the batch
            && (!self.context_follows_batch() || self.per_device_train_batch_size == other.per_device_train_batch_size)
    }

    /// Whether attention spans the whole flattened micro-batch ([`Batching::flattened`]
    /// without a [`Attention::varlen`] kernel): then its context is `batch × max_length`.
    pub fn context_follows_batch(&self) -> bool {
        self.batching.flattened() && !self.attn_implementation.varlen()
    }

    /// The context length attention sees in a micro-batch of `batch` records at the worst
    /// case: `max_length` per record, or the whole flattened row when a mask joins the
    /// records (e.g. 4 × 1024 tokens padding-free under sdpa: one sequence of 4,096).
    pub fn attention_context(&self, batch: u64) -> u64 {
        if self.context_follows_batch() {
            batch.saturating_mul(self.max_length)
        } else {
            self.max_length
        }
    }

    /// Why the training runtime cannot run this plan, or `None`. Today: a bitsandbytes-
    /// quantized base (QLoRA, 8-bit LoRA) sharded by FSDP or ZeRO-3 — the runner loads the
    /// quantized base on every device and cannot shard its packed weights. The advisor
    /// never ranks such a plan (search.rs `Space::outer_plans`).
    pub fn unsupported(&self) -> Option<&'static str> {
        let sharded = self.num_gpus > 1 && matches!(self.distributed, Distributed::Fsdp | Distributed::Zero3);
        match self.method {
            // an int8 base has no float storage: FSDP / ZeRO-3 cannot shard it
            Method::Lora8bit if sharded => Some("sharding an 8-bit bitsandbytes base (FSDP / ZeRO-3) is not supported"),
            // FSDP-QLoRA (peft's guide): only a float `bnb_4bit_quant_storage` shards
            Method::Qlora if sharded && !self.bnb_4bit_quant_storage.is_float() => {
                Some("sharding a 4-bit base (FSDP / ZeRO-3) needs a float bnb_4bit_quant_storage (the compute dtype)")
            }
            _ => None,
        }
    }

    /// The float storage FSDP-QLoRA uses: the compute dtype's (peft's FSDP-QLoRA guide sets
    /// `bnb_4bit_quant_storage=torch.bfloat16` next to `bnb_4bit_compute_dtype=torch.bfloat16`).
    pub fn compute_storage(&self) -> QuantStorage {
        match self.dtype {
            Dtype::Fp16 | Dtype::AmpFp16 => QuantStorage::Float16,
            Dtype::Fp32 => QuantStorage::Float32,
            Dtype::Bf16 | Dtype::AmpBf16 => QuantStorage::Bfloat16,
        }
    }

    pub fn uses_lora(&self) -> bool {
        self.method != Method::Full
    }

    /// The ranges of [`INT_RANGES`] and [`FLOAT_RANGES`] (LoRA's only with adapters).
    pub fn validate(&self) -> Result<()> {
        for (field, lo, hi) in INT_RANGES {
            let v = match field {
                "per_device_train_batch_size" => self.per_device_train_batch_size,
                "gradient_accumulation_steps" => self.gradient_accumulation_steps,
                "max_length" => self.max_length,
                "num_gpus" => self.num_gpus,
                "lora_r" if self.uses_lora() => self.lora_r,
                "lora_alpha" if self.uses_lora() => self.lora_alpha,
                "images_per_sample" => self.images_per_sample,
                "max_pixels" => match self.max_pixels {
                    Some(px) => px,
                    None => continue,
                },
                "videos_per_sample" => self.videos_per_sample,
                "num_frames" => self.num_frames,
                "video_max_pixels" => match self.video_max_pixels {
                    Some(px) => px,
                    None => continue,
                },
                _ => continue,
            };
            if v < lo || v > hi {
                return Err(Error::field(field, v, format!("[{lo}, {hi}]")));
            }
        }
        for (field, lo, hi) in FLOAT_RANGES {
            let v = match field {
                "lora_dropout" if self.uses_lora() => self.lora_dropout,
                "freeze_ratio" => self.freeze_ratio,
                _ => continue,
            };
            if !(lo..hi).contains(&v) {
                return Err(Error::field(field, v, format!("[{lo}, {hi})")));
            }
        }
        if self.offload_optimizer && !matches!(self.distributed, Distributed::Zero2 | Distributed::Zero3) {
            return Err(Error::field(
                "offload_optimizer",
                true,
                "distributed=zero2 or zero3 (DeepSpeed offloads the optimizer; FSDP does it with offload_params)",
            ));
        }
        if self.offload_params && !matches!(self.distributed, Distributed::Fsdp | Distributed::Zero3) {
            return Err(Error::field("offload_params", true, "distributed=fsdp or zero3 (only sharded parameters are offloaded)"));
        }
        // peft's ParamWrapper: "does not work with lora_dropout != 0" (it cannot factor x
        // out of lora_B(lora_A(dropout(x))), peft/tuners/lora/layer.py)
        if self.uses_lora() && self.lora_target_parameters.is_some() && self.lora_dropout != 0.0 {
            return Err(Error::field("lora_dropout", self.lora_dropout, "0 with lora_target_parameters (peft's ParamWrapper has no dropout)"));
        }
        if self.trainer == Trainer::Dpo && self.batching.flattened() {
            return Err(Error::field("batching", format!("{:?}", self.batching.name()), "longest or max_length with trainer=dpo (DPO batches pad)"));
        }
        if self.method == Method::Qlora && !matches!(self.dtype, Dtype::Bf16 | Dtype::Fp16) {
            return Err(Error::field("dtype", format!("{:?}", self.dtype), "bf16 or fp16 with method=qlora"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names of `names!` are serde's, for every value of every enum.
    #[test]
    fn names_equal_serde_names() {
        fn check<T: Serialize + Copy>(values: &[T], name: impl Fn(T) -> &'static str) {
            for &v in values {
                assert_eq!(serde_json::to_value(v).unwrap(), serde_json::Value::String(name(v).into()));
            }
        }
        check(&[Method::Full, Method::Lora, Method::Qlora, Method::Lora8bit], Method::name);
        check(&[Trainer::Sft, Trainer::Dpo], Trainer::name);
        check(&[Dtype::Bf16, Dtype::Fp16, Dtype::AmpBf16, Dtype::AmpFp16, Dtype::Fp32], Dtype::name);
        check(
            &[Optim::AdamwTorch, Optim::AdamwTorchFused, Optim::Adamw8bit, Optim::PagedAdamw8bit, Optim::PagedAdamw32bit, Optim::Adafactor, Optim::Sgd],
            Optim::name,
        );
        check(&[Attention::Sdpa, Attention::FlashAttention2, Attention::Eager], Attention::name);
        check(&[Distributed::None, Distributed::Ddp, Distributed::Fsdp, Distributed::Zero2, Distributed::Zero3], Distributed::name);
        check(&[Batching::Longest, Batching::MaxLength, Batching::Packing, Batching::PaddingFree], Batching::name);
        let varlen: Vec<&str> = [Attention::Sdpa, Attention::FlashAttention2, Attention::Eager].into_iter().filter(|a| a.varlen()).map(Attention::name).collect();
        assert_eq!(varlen, VARLEN_ATTENTION);
        assert_eq!(Optim::from_name("optim", "adamw_8bit").unwrap(), Optim::Adamw8bit);
        let err = Method::from_name("method", "qlora4").unwrap_err();
        assert_eq!(err, Error::field("method", "\"qlora4\"", "full, lora, qlora, lora_8bit"));
    }

    #[test]
    fn ranges_reject_their_bounds_plus_one() {
        for (field, lo, hi) in INT_RANGES {
            let below = lo.checked_sub(1).map(|v| (v, false));
            for (v, ok) in [(lo, true), (hi, true), (hi + 1, false)].into_iter().chain(below) {
                let mut p = Plan::default();
                match field {
                    "per_device_train_batch_size" => p.per_device_train_batch_size = v,
                    "gradient_accumulation_steps" => p.gradient_accumulation_steps = v,
                    "max_length" => p.max_length = v,
                    "num_gpus" => p.num_gpus = v,
                    "lora_r" => p.lora_r = v,
                    "lora_alpha" => p.lora_alpha = v,
                    "images_per_sample" => p.images_per_sample = v,
                    "max_pixels" => p.max_pixels = Some(v),
                    "videos_per_sample" => p.videos_per_sample = v,
                    "num_frames" => p.num_frames = v,
                    "video_max_pixels" => p.video_max_pixels = Some(v),
                    _ => unreachable!(),
                }
                assert_eq!(p.validate().is_ok(), ok, "{field}={v}");
            }
        }
        let p = Plan { freeze_ratio: 1.0, ..Plan::default() };
        assert!(matches!(p.validate(), Err(Error::InvalidField { ref field, .. }) if field == "freeze_ratio"));
    }

    #[test]
    fn batching_modes_say_how_steps_are_shaped() {
        assert!(Batching::Longest.lengths_vary() && Batching::Packing.lengths_vary() && Batching::PaddingFree.lengths_vary());
        assert!(!Batching::MaxLength.lengths_vary());
        let p = Plan { batching: Batching::PaddingFree, per_device_train_batch_size: 4, max_length: 1024, ..Plan::default() };
        assert_eq!(p.attention_context(4), 4096); // sdpa: one masked row of 4 × 1024
        let fa = Plan { attn_implementation: Attention::FlashAttention2, ..p.clone() };
        assert_eq!(fa.attention_context(4), 1024);
        assert_eq!(Plan::default().attention_context(4), 1024);
        // the batch is part of the structure only where the context follows it
        let p8 = Plan { per_device_train_batch_size: 8, ..p.clone() };
        assert!(!p.same_structure(&p8));
        assert!(fa.same_structure(&Plan { per_device_train_batch_size: 8, ..fa.clone() }));
        let dpo = Plan { trainer: Trainer::Dpo, batching: Batching::Packing, ..Plan::default() };
        assert!(matches!(dpo.validate(), Err(Error::InvalidField { ref field, .. }) if field == "batching"));
        let json = serde_json::to_string(&Plan::default()).unwrap();
        assert!(json.contains(r#""batching":"longest""#));
    }
}
