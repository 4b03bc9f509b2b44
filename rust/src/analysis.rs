//! Plan-independent facts about a shape, computed once per model so that each estimate
//! is straight-line arithmetic (the advisor evaluates millions of plans).

use crate::error::{Error, Result};
use crate::shape::{LayerType, Linear, Mixer, MixerKind, ModelShape, NormKind, ParamRole, Role, Stack};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Reads the block's input (q/k/v, gate/up, c_attn, fc1…).
    In,
    /// Writes back to the residual stream (o_proj, down_proj, c_proj, fc2…).
    Out,
}

#[derive(Debug, Clone)]
pub struct Lin {
    /// Bit of the leaf name in the target mask.
    pub bit: u32,
    pub in_f: u64,
    pub out_f: u64,
    pub count: u64,
    pub bias: bool,
    /// What the linear belongs to (the shape's role).
    pub block: Role,
    pub side: Side,
    pub targetable: bool,
    pub params: u64,
    /// A tied weight owned by an earlier layer (`Linear::shared`): stored once, run here.
    pub shared: bool,
    /// Index of the block/side group it belongs to (`GROUP_*`), or `GROUP_OTHER`.
    pub group: usize,
}

impl Lin {
    /// A routed expert tensor that is not an `nn.Linear` (transformers 5's fused
    /// `nn.Parameter [E, out, in]`): peft adapts it only through `target_parameters`.
    pub fn is_fused_expert(&self) -> bool {
        self.block == Role::Expert && !self.targetable
    }
}

/// The linear groups the activation rules read: attention in/out, MLP in/out.
pub const GROUP_ATTN_IN: usize = 0;
pub const GROUP_ATTN_OUT: usize = 1;
pub const GROUP_MLP_IN: usize = 2;
pub const GROUP_MLP_OUT: usize = 3;
/// Shared experts, routed experts and anything else outside the four groups.
pub const GROUP_OTHER: usize = 4;

/// What the MLP activation saves for backward (see `activations::act_saved_bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    /// `gelu_new`, `gelu_fast`, `gelu_python`: transformers' python tanh-GELU.
    GeluTanh,
    QuickGelu,
    Relu,
    /// SiLU, exact GELU and the rest: their input alone.
    Other,
}

impl Act {
    pub fn of(hidden_act: &str) -> Self {
        match hidden_act {
            "gelu_new" | "gelu_fast" | "gelu_python" => Act::GeluTanh,
            "quick_gelu" => Act::QuickGelu,
            "relu" => Act::Relu,
            _ => Act::Other,
        }
    }
}

/// The LoRA-adapted linears of one layer type under one target mask, summed once per
/// plan so the activation and FLOP rules are products instead of loops.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoraSums {
    /// Per group (`GROUP_*`, the four groups): Σ in_features of the adapted linears…
    pub in_f: [u64; 4],
    /// …and how many there are.
    pub n: [u64; 4],
    /// Any linear of the layer is adapted.
    pub any: bool,
    /// Adapter parameters per unit of rank: Σ (in + out) · count (lora_A r×in, lora_B out×r).
    pub params_per_rank: u64,
    /// Σ (in + out) over the adapted linears (the LoRA matmuls' FLOPs per unit of rank / 2).
    pub in_plus_out: u64,
    /// peft `target_parameters` on fused expert tensors (`ParamWrapper`): Σ and largest
    /// `in · out · count` of the adapted tensors (the merged weight each forward builds),
    /// their adapter parameters per unit of rank `Σ (in + out) · count` (also inside
    /// `params_per_rank`), and Σ `in · out` of one expert each (the weight gradient's
    /// matmuls per routed token).
    pub expert_merged: u64,
    /// `in · out · count` of the largest adapted tensor on each side (input side: gate_up,
    /// first in forward; output side: down), and Σ on the output side.
    pub expert_merged_max_in: u64,
    pub expert_merged_max_out: u64,
    pub expert_merged_out: u64,
    pub expert_params_per_rank: u64,
    pub expert_in_out: u64,
    /// Which side of the routed experts is adapted: the input projection (gate_up, whose
    /// weight gradient needs the gathered input) and the output one (down, needs the product).
    pub expert_in: bool,
    pub expert_out: bool,
}

#[derive(Debug, Clone)]
pub struct LayerInfo {
    /// Forward runs with autograd per step (`LayerType::passes`).
    pub passes: u64,
    pub stack: Stack,
    pub lins: Vec<Lin>,
    pub other_params: u64,
    pub params: u64,
    /// Parameters in linear weights, fused expert tensors included; biases excluded.
    /// (Autocast casts all of them; see `quantizable_weight_params` for bitsandbytes.)
    pub linear_weight_params: u64,
    /// The part of `linear_weight_params` in `nn.Linear` modules: what bitsandbytes
    /// quantises. transformers 5's `replace_with_bnb_linear` swaps `nn.Linear` / `Conv1D`
    /// modules only, so fused expert tensors (`nn.Parameter [E, out, in]`, not LoRA
    /// targetable) and `TopKRouter` weights stay in the compute dtype, and peft's
    /// `prepare_model_for_kbit_training` then casts them, like every other non-4-bit
    /// half parameter, to fp32.
    pub quantizable_weight_params: u64,
    /// Output rows of those `nn.Linear` modules (LLM.int8 keeps a scale per row).
    pub quantizable_rows: u64,
    pub moe: bool,
    pub cross_attention: bool,
    /// The linears by block and side, grouped once so estimates allocate nothing.
    pub attn_in: Vec<Lin>,
    pub attn_out: Vec<Lin>,
    pub mlp_in: Vec<Lin>,
    pub mlp_out: Vec<Lin>,
    pub shared_expert: Vec<Lin>,
    /// Per group: Σ in_features, and the first linear's in_features (0 when empty).
    pub group_in_sum: [u64; 4],
    pub group_first_in: [u64; 4],
    /// The widest input of the attention output projections (`None`: there are none).
    pub attn_out_in: Option<u64>,
    /// The MLP output projection's input width: the intermediate size of this layer.
    pub mlp_inter: Option<u64>,
    /// The shared expert's intermediate width, when there is a shared expert.
    pub shared_inter: Option<u64>,
    /// 2 · Σ in·out per token forward over the linears (routed experts: `top_k` of them).
    pub fwd_flops_linear: u128,
    /// `lora_sums` of the usual masks (none, the attention projections, all-linear),
    /// summed once.
    pub common_lora: [(u64, LoraSums); 3],
    /// The layer has softmax self-attention.
    pub attention: bool,
    /// Its linear-attention / state-space / convolution mixer, if any.
    pub mixer: Option<Mixer>,
    /// It has an MLP or experts (a Nemotron-H mixer or attention layer has neither).
    pub has_ffn: bool,
    /// Forward FLOPs per token of the mixer's scan and convolution (`mixer_flops`).
    pub mixer_fwd_flops: u128,
    /// The layer's sliding window (0: full attention).
    pub sliding_window: u64,
}

impl LayerInfo {
    /// The adapted linears of this layer type under `mask` (peft: targetable and named).
    pub fn lora_sums(&self, mask: u64) -> LoraSums {
        if let Some((_, sums)) = self.common_lora.iter().find(|(m, _)| *m == mask) {
            return *sums;
        }
        self.sum_lora(mask)
    }

    fn sum_lora(&self, mask: u64) -> LoraSums {
        let mut s = LoraSums::default();
        if mask == 0 {
            return s;
        }
        for l in &self.lins {
            if l.is_fused_expert() && mask & (1 << l.bit) != 0 {
                // peft ParamWrapper on a [E, ·, ·] tensor: lora_A = Linear(in, r·E),
                // lora_B = Linear(r·E, out) (peft/tuners/lora/layer.py `update_layer`)
                s.any = true;
                s.params_per_rank += (l.in_f + l.out_f) * l.count;
                s.expert_params_per_rank += (l.in_f + l.out_f) * l.count;
                let merged = l.in_f * l.out_f * l.count;
                s.expert_merged += merged;
                s.expert_in_out += l.in_f * l.out_f;
                match l.side {
                    Side::In => {
                        s.expert_in = true;
                        s.expert_merged_max_in = s.expert_merged_max_in.max(merged);
                    }
                    Side::Out => {
                        s.expert_out = true;
                        s.expert_merged_out += merged;
                        s.expert_merged_max_out = s.expert_merged_max_out.max(merged);
                    }
                }
            } else if l.targetable && mask & (1 << l.bit) != 0 {
                s.any = true;
                s.params_per_rank += (l.in_f + l.out_f) * l.count;
                s.in_plus_out += l.in_f + l.out_f;
                if l.group < GROUP_OTHER {
                    s.in_f[l.group] += l.in_f;
                    s.n[l.group] += 1;
                }
            }
        }
        s
    }
}

#[derive(Debug, Clone)]
pub struct Analysis {
    /// Leaf names of targetable linears, indexed by bit.
    pub names: Vec<String>,
    /// Full names (``self_attn.q_proj``) for suffix matching, with their bit.
    pub full_names: Vec<(String, u32)>,
    pub attention_mask: u64,
    pub all_linear_mask: u64,
    /// Bits of the fused expert tensors (peft `target_parameters`; their own bits, apart
    /// from any `nn.Linear` of the same leaf name).
    pub expert_mask: u64,
    /// Names peft refuses to adapt here (Mamba-based models' `out_proj`).
    pub excluded_mask: u64,
    pub types: Vec<LayerInfo>,
    pub layers: Vec<u32>,
    pub embedding_params: u64,
    pub position_params: u64,
    pub head_params: u64,
    pub norm_params: u64,
    pub other_params: u64,
    pub total_params: u64,
    /// Largest single tensor (Adafactor works tensor by tensor).
    pub largest_tensor: u64,
    /// Number of parameter tensors (per-tensor optimizer bookkeeping).
    pub num_tensors: u64,
    /// `layers` as runs of consecutive layers of one type: `(type, start, end)`, so that an
    /// estimate prices each distinct layer once instead of once per layer.
    pub runs: Vec<(u32, usize, usize)>,
    /// Σ over layers of `quantizable_weight_params` (what bitsandbytes quantises).
    pub layers_linear_weight_params: u64,
    /// Σ over layers of `quantizable_rows` (LLM.int8 keeps a scale per row).
    pub layers_linear_rows: u64,
    /// The largest layer type's parameters (FSDP / ZeRO-3 gather one at a time).
    pub largest_layer_params: u64,
    /// Per target bit, the smallest side of the targetable linears with that leaf name
    /// (the largest LoRA rank they take); `u64::MAX` for unused bits.
    pub min_side_by_bit: [u64; 64],
    /// What the MLP activation saves (from `hints.hidden_act`).
    pub act: Act,
    /// Norms per block that keep their input: 2 for Gemma 2/3 (pre and post norms), else 1.
    pub norms_per_block: u64,
    /// The vision tower of a vision-language model, analysed as a stack of its own.
    pub vision: Option<Box<VisionAnalysis>>,
    /// Some layer lacks attention or has a mixer: layers are priced by the blocks they have
    /// (without, every layer is an attention block and an MLP block, as before mixers).
    pub mixed_blocks: bool,
}

/// A vision tower read once (vision.rs): its blocks as a shape and analysis of their own
/// (their widths, target names and masks), and its parameter sums.
#[derive(Debug, Clone)]
pub struct VisionAnalysis {
    pub tower: crate::vision::VisionTower,
    pub shape: ModelShape,
    pub an: Analysis,
    /// Parameters of the tower alone (blocks, embeddings, post norm, head).
    pub tower_params: u64,
    pub projector_params: u64,
    /// 2 · Σ in·out of the projector's linears: its forward FLOPs per language-model image token.
    pub projector_fwd_flops: u128,
}

impl VisionAnalysis {
    fn new(tower: &crate::vision::VisionTower) -> Result<Self> {
        let shape = tower.stack_shape();
        let an = Analysis::new(&shape)?;
        let projector_fwd_flops = tower.projector.linears.iter().map(|l| 2 * l.in_features as u128 * l.out_features as u128 * l.count as u128).sum();
        Ok(VisionAnalysis {
            tower: tower.clone(),
            tower_params: shape.num_parameters()?,
            projector_params: tower.projector.num_parameters()?,
            projector_fwd_flops,
            shape,
            an,
        })
    }

    /// The tower's LoRA target mask for the plan's targets, leniently: peft matches names
    /// across the whole model, so a name the tower lacks adapts nothing there (the
    /// language model's own check is `Analysis::target_mask`).
    pub fn lenient_mask(&self, targets: Option<&crate::plan::Targets>) -> u64 {
        use crate::plan::Targets;
        match targets {
            None => self.an.attention_mask,
            Some(Targets::Keyword(k)) if k == "all-linear" => self.an.all_linear_mask,
            Some(Targets::Keyword(k)) => self.an.names_mask(std::slice::from_ref(k)).unwrap_or(0),
            Some(Targets::Names(list)) => {
                list.iter().filter_map(|n| self.an.names_mask(std::slice::from_ref(n)).ok()).fold(0, |a, m| a | m)
            }
        }
    }
}

const OUT_NAMES: &[&str] =
    &["o_proj", "out_proj", "dense", "c_proj", "o", "wo", "down_proj", "fc2", "dense_4h_to_h", "w2", "proj"];

/// The linears' target names as the layer types are read: a bit per distinct leaf name
/// (at most 64, the width of a target mask), the full names for suffix matching, and the
/// masks of peft's `all-linear` and of the attention projections.
#[derive(Default)]
struct TargetNames {
    names: Vec<String>,
    full_names: Vec<(String, u32)>,
    attention_mask: u64,
    all_linear_mask: u64,
    expert_mask: u64,
    excluded_mask: u64,
}

impl TargetNames {
    /// The bit of `lin`'s leaf name (the part after the last `.`), new if unseen, and the
    /// leaf; records the full name and, for a LoRA-targetable linear, its mask bits.
    fn register(&mut self, lin: &Linear) -> Result<(u32, String)> {
        let leaf = lin.name.rsplit('.').next().unwrap_or(&lin.name).to_string();
        // a fused expert tensor takes its own bit, keyed `experts.<leaf>` (the tensor's
        // parameter name under its module), so `down_proj` the module and `experts.down_proj`
        // the tensor are targeted apart
        let fused = lin.role == Role::Expert && !lin.lora_targetable;
        let key = if fused { format!("experts.{leaf}") } else { leaf.clone() };
        let bit = match self.names.iter().position(|n| *n == key) {
            Some(i) => i as u32,
            None => {
                if self.names.len() >= 64 {
                    return Err(Error::field("linear module names", self.names.len() + 1, "at most 64 distinct names"));
                }
                self.names.push(key);
                (self.names.len() - 1) as u32
            }
        };
        if !self.full_names.iter().any(|(n, _)| *n == lin.name) {
            self.full_names.push((lin.name.clone(), bit));
        }
        if lin.peft_excluded {
            self.excluded_mask |= 1 << bit;
        } else if lin.lora_targetable {
            self.all_linear_mask |= 1 << bit;
            if lin.role == Role::Attention {
                self.attention_mask |= 1 << bit;
            }
        }
        if fused {
            self.expert_mask |= 1 << bit;
        }
        Ok((bit, leaf))
    }
}

/// One linear of a layer type: its target bit, and its side — `Out` when its leaf is an
/// output projection's name (`OUT_NAMES`) or it maps another width into `hidden_size`,
/// else `In` — which with its role picks its `GROUP_*`.
fn lin_of(shape: &ModelShape, lin: &Linear, reg: &mut TargetNames) -> Result<Lin> {
    let (bit, leaf) = reg.register(lin)?;
    let block = lin.role;
    let side = if OUT_NAMES.contains(&leaf.as_str()) || (lin.out_features == shape.hidden_size && lin.in_features != shape.hidden_size) {
        Side::Out
    } else {
        Side::In
    };
    Ok(Lin {
        bit,
        in_f: lin.in_features,
        out_f: lin.out_features,
        count: lin.count,
        bias: lin.bias,
        block,
        side,
        targetable: lin.lora_targetable,
        params: lin.num_parameters()?,
        shared: lin.shared,
        group: match (block, side) {
            (Role::Attention, Side::In) => GROUP_ATTN_IN,
            (Role::Attention, Side::Out) => GROUP_ATTN_OUT,
            (Role::Mlp, Side::In) => GROUP_MLP_IN,
            (Role::Mlp, Side::Out) => GROUP_MLP_OUT,
            _ => GROUP_OTHER,
        },
    })
}

/// One layer type read once: its linears ([`lin_of`]) grouped by block and side, their
/// weight sums (`Σ in · out · count`; bitsandbytes' share: the targetable `nn.Linear`s),
/// and the forward FLOPs per token `Σ 2 · in · out · count` (routed experts: `top_k`
/// instead of `count`).
fn layer_info(shape: &ModelShape, lt: &LayerType, reg: &mut TargetNames) -> Result<LayerInfo> {
    let mut lins = Vec::with_capacity(lt.linears.len());
    let mut linear_weight_params = 0u64;
    let (mut quantizable_weight_params, mut quantizable_rows) = (0u64, 0u64);
    for lin in &lt.linears {
        // an idle linear (another invocation's adapter) is not run here: no activations,
        // no FLOPs; its parameters are in `lt.num_parameters()`
        if !lin.idle {
            lins.push(lin_of(shape, lin, reg)?);
        }
        // a tied weight (`shared`) is stored, cast and quantised once, at its owner
        if lin.shared {
            continue;
        }
        linear_weight_params += lin.in_features * lin.out_features * lin.count;
        if lin.lora_targetable {
            quantizable_weight_params += lin.in_features * lin.out_features * lin.count;
            quantizable_rows += lin.out_features * lin.count;
        }
    }
    let group = |block: Role, side: Option<Side>| -> Vec<Lin> {
        lins.iter().filter(|l| l.block == block && side.is_none_or(|sd| l.side == sd)).cloned().collect()
    };
    let (attn_in, attn_out) = (group(Role::Attention, Some(Side::In)), group(Role::Attention, Some(Side::Out)));
    let (mlp_in, mlp_out) = (group(Role::Mlp, Some(Side::In)), group(Role::Mlp, Some(Side::Out)));
    let shared_expert = group(Role::SharedExpert, None);
    let mlp_in_empty = mlp_in.is_empty();
    let groups = [&attn_in, &attn_out, &mlp_in, &mlp_out];
    let group_in_sum = groups.map(|g| g.iter().map(|l| l.in_f).sum());
    let group_first_in = groups.map(|g| g.first().map_or(0, |l| l.in_f));
    let top_k = shape.num_experts_per_tok.max(1) as u128;
    // each token visits top_k of the `count` routed experts
    let fwd_flops_linear = lins
        .iter()
        .map(|l| 2 * l.in_f as u128 * l.out_f as u128 * if l.block == Role::Expert { top_k } else { l.count as u128 })
        .sum();
    Ok(LayerInfo {
        group_in_sum,
        group_first_in,
        attn_out_in: attn_out.iter().map(|l| l.in_f).max(),
        mlp_inter: mlp_out.first().map(|l| l.in_f),
        shared_inter: if shared_expert.is_empty() {
            None
        } else {
            Some(shared_expert.iter().find(|l| l.side == Side::Out).map_or(shape.moe_intermediate_size.max(1), |l| l.in_f))
        },
        fwd_flops_linear,
        common_lora: [(0, LoraSums::default()); 3],
        stack: lt.stack,
        attn_in,
        attn_out,
        mlp_in,
        mlp_out,
        shared_expert,
        lins,
        other_params: lt.other_parameters,
        params: lt.num_parameters()?,
        linear_weight_params,
        quantizable_weight_params,
        quantizable_rows,
        moe: lt.moe,
        cross_attention: lt.cross_attention,
        attention: lt.attention,
        mixer: lt.mixer,
        has_ffn: !mlp_in_empty || lt.moe,
        mixer_fwd_flops: lt.mixer.as_ref().map_or(0, mixer_flops),
        passes: lt.passes.max(1),
        sliding_window: lt.sliding_window,
    })
}

/// Forward FLOPs per token of a mixer's scan, convolution and gating (its linears are in
/// `fwd_flops_linear`). A depthwise causal convolution costs 2·K per channel. Per kind:
///
/// * Gated DeltaNet, chunked over C tokens (modeling_qwen3_next.py
///   `torch_chunk_gated_delta_rule`; fla's `chunk_gated_delta_rule` does the same products),
///   per value head: `k_beta·kᵀ` and `q·kᵀ` within the chunk (2·2·C·dk), the two unit-
///   triangular solves against v_beta and the decayed keys (C·(dk + dv): half of a C×C
///   matrix times dk + dv columns, 2 FLOPs per multiply-add), the intra-chunk output
///   `attn·v_new` (2·C·dv) and three state products `k_cumdecay·S`, `q·S`, `kᵀ·v_new`
///   (3·2·dk·dv);
/// * Mamba-1 selective scan (modeling_mamba.py `mamba_selective_scan`), per channel and
///   state: exp(A·dt), dt·B, ·u, the update a·s + b and the read s·C: 7 FLOPs;
/// * Mamba-2 SSD, chunked (modeling_nemotron_h.py `torch_forward`), per head: C·Bᵀ within
///   the chunk (2·C·N), its product with x (2·C·hd), the chunk states B·x (2·N·hd), the
///   states' read C·S (2·N·hd) and their decay between chunks (N·hd);
/// * short convolution (modeling_lfm2.py `Lfm2ShortConv`): two gating products per channel.
pub fn mixer_flops(m: &Mixer) -> u128 {
    let conv = 2 * m.conv_dim as u128 * m.conv_kernel as u128;
    let (c, n) = (m.chunk_size as u128, m.d_state as u128);
    conv + match m.kind {
        MixerKind::GatedDeltaNet => {
            let (dk, dv) = (m.key_head_dim as u128, m.head_dim as u128);
            m.heads as u128 * (4 * c * dk + c * (dk + dv) + 2 * c * dv + 6 * dk * dv)
        }
        MixerKind::Mamba => 7 * m.d_inner as u128 * n,
        MixerKind::Mamba2 => {
            let hd = m.head_dim as u128;
            m.heads as u128 * (2 * c * n + 2 * c * hd + 5 * n * hd)
        }
        MixerKind::ShortConv => 2 * m.d_inner as u128,
    }
}

/// The parameters outside the layers, summed by role.
struct TopParams {
    embedding: u64,
    position: u64,
    head: u64,
    norm: u64,
    other: u64,
}

impl TopParams {
    fn of(shape: &ModelShape) -> Self {
        let mut top = TopParams { embedding: 0, position: 0, head: 0, norm: 0, other: 0 };
        for p in &shape.params {
            match p.role {
                ParamRole::Embedding => top.embedding += p.numel,
                ParamRole::Position => top.position += p.numel,
                ParamRole::LmHead => top.head += p.numel,
                ParamRole::Norm => top.norm += p.numel,
                ParamRole::Other => top.other += p.numel,
            }
        }
        top
    }
}

/// (largest tensor, number of tensors): the linear weights of each layer type
/// (`in · out · count`, + a bias tensor) and the top-level parameters, plus the norms
/// inside the layers, 1-2 tensors each (LayerNorm: 4 per layer, RMSNorm: 2).
fn tensor_counts(shape: &ModelShape, types: &[LayerInfo]) -> (u64, u64) {
    let mut largest = 0u64;
    let mut num_tensors = 0u64;
    for l in types.iter().flat_map(|t| t.lins.iter()).filter(|l| !l.shared) {
        largest = largest.max(l.in_f * l.out_f * l.count);
        num_tensors += if l.bias { 2 } else { 1 };
    }
    for p in &shape.params {
        largest = largest.max(p.numel);
        num_tensors += 1;
    }
    // norms inside layers: 1-2 tensors each, a handful per layer
    num_tensors += shape.layers.len() as u64 * if shape.norm == NormKind::LayerNorm { 4 } else { 2 };
    (largest, num_tensors)
}

/// `layers` as runs of consecutive layers of one type, `(type, start, end)`.
fn runs_of(layers: &[u32]) -> Vec<(u32, usize, usize)> {
    let mut runs: Vec<(u32, usize, usize)> = Vec::new();
    for (i, &t) in layers.iter().enumerate() {
        match runs.last_mut() {
            Some((rt, _, end)) if *rt == t => *end = i + 1,
            _ => runs.push((t, i, i + 1)),
        }
    }
    runs
}

impl Analysis {
    /// The plan-independent facts of `shape`: each layer type read once ([`layer_info`],
    /// which registers the linears' target names, [`TargetNames`]), the top-level
    /// parameters by role ([`TopParams`]), tensor counts ([`tensor_counts`]), the runs of
    /// identical layers ([`runs_of`]) and the sums the estimator reads per plan.
    pub fn new(shape: &ModelShape) -> Result<Self> {
        shape.validate()?;
        let mut reg = TargetNames::default();
        let mut types = Vec::with_capacity(shape.layer_types.len());
        for lt in &shape.layer_types {
            types.push(layer_info(shape, lt, &mut reg)?);
        }
        let top = TopParams::of(shape);
        let (largest, num_tensors) = tensor_counts(shape, &types);
        for t in &mut types {
            t.common_lora = [0, reg.attention_mask, reg.all_linear_mask].map(|m| (m, t.sum_lora(m)));
        }
        let runs = runs_of(&shape.layers);
        // the same sums the estimator used to take per call (no overflow: the shape is
        // validated to at most MAX_PARAMETERS parameters)
        // a vision tower and projector stay out of 4-bit / 8-bit: the runtime passes them as
        // `llm_int8_skip_modules` (HF's bitsandbytes guide for multimodal models), and
        // `prepare_model_for_kbit_training` then holds them in fp32 with the other non-quantised weights
        let vision = shape.vision.as_ref().map(VisionAnalysis::new).transpose()?.map(Box::new);
        let layers_linear_weight_params: u64 = shape.layers.iter().map(|&t| types[t as usize].quantizable_weight_params).sum();
        let layers_linear_rows: u64 = shape.layers.iter().map(|&t| types[t as usize].quantizable_rows).sum();
        let largest_layer_params = types.iter().map(|t| t.params).max().unwrap_or(0);
        let mut min_side_by_bit = [u64::MAX; 64];
        for l in types.iter().flat_map(|t| t.lins.iter()).filter(|l| l.targetable) {
            let m = &mut min_side_by_bit[l.bit as usize];
            *m = (*m).min(l.in_f.min(l.out_f));
        }
        Ok(Analysis {
            names: reg.names,
            full_names: reg.full_names,
            attention_mask: reg.attention_mask,
            all_linear_mask: reg.all_linear_mask,
            expert_mask: reg.expert_mask,
            excluded_mask: reg.excluded_mask,
            types,
            layers: shape.layers.clone(),
            embedding_params: top.embedding,
            position_params: top.position,
            head_params: top.head,
            norm_params: top.norm,
            other_params: top.other,
            total_params: shape.num_parameters()?,
            largest_tensor: largest,
            num_tensors,
            runs,
            layers_linear_weight_params,
            layers_linear_rows,
            largest_layer_params,
            min_side_by_bit,
            act: Act::of(&shape.hints.hidden_act),
            // gemma2/3: four norms per layer (pre and post, attention and MLP)
            norms_per_block: if ["gemma2", "gemma3", "gemma4"].iter().any(|g| shape.model_type.starts_with(g)) { 2 } else { 1 },
            vision,
            mixed_blocks: shape.layer_types.iter().any(|lt| !lt.attention || lt.mixer.is_some()),
        })
    }

    /// Resolve peft-style `target_modules` to a bit mask; a name matches a module whose
    /// full name equals it or ends with `.name` (peft `check_target_module_exists`).
    pub fn target_mask(&self, targets: Option<&crate::plan::Targets>) -> Result<u64> {
        use crate::plan::Targets;
        match targets {
            None => Ok(self.attention_mask),
            Some(Targets::Keyword(k)) if k == "all-linear" => Ok(self.all_linear_mask),
            Some(Targets::Keyword(k)) => self.names_mask(std::slice::from_ref(k)),
            Some(Targets::Names(list)) => self.names_mask(list),
        }
    }

    /// Resolve peft-style `target_parameters` to a bit mask of fused expert tensors:
    /// `"experts"` is every one of them; a name matches a tensor whose parameter path
    /// (`mlp.experts.gate_up_proj`) equals it or ends with `.name` (peft `_inject_parameters`).
    pub fn param_mask(&self, targets: Option<&crate::plan::Targets>) -> Result<u64> {
        use crate::plan::Targets;
        let list = match targets {
            None => return Ok(0),
            Some(Targets::Keyword(k)) if k == "experts" => {
                if self.expert_mask == 0 {
                    return Err(Error::field("lora_target_parameters", "experts", "a model with fused expert tensors (this one has none)"));
                }
                return Ok(self.expert_mask);
            }
            Some(Targets::Keyword(k)) => std::slice::from_ref(k),
            Some(Targets::Names(list)) => list.as_slice(),
        };
        let mut mask = 0u64;
        for want in list {
            let before = mask;
            for (full, bit) in &self.full_names {
                let suffix = full.len() > want.len() && full.ends_with(want.as_str()) && full.as_bytes()[full.len() - want.len() - 1] == b'.';
                if self.expert_mask & (1 << bit) != 0 && (full == want || suffix) {
                    mask |= 1 << bit;
                }
            }
            if mask == before {
                let have: Vec<&str> = self.names.iter().enumerate().filter(|(i, _)| self.expert_mask & (1 << i) != 0).map(|(_, n)| n.as_str()).collect();
                let allowed = if have.is_empty() { "a model with fused expert tensors (this one has none)".to_string() } else { format!("'experts' or one of the model's fused expert tensors: {}", have.join(", ")) };
                return Err(Error::field("lora_target_parameters", want, allowed));
            }
        }
        Ok(mask)
    }

    pub(crate) fn names_mask(&self, list: &[String]) -> Result<u64> {
        let mut mask = 0u64;
        for want in list {
            let mut hit = false;
            // a name that also matches an nn.Linear (`down_proj`) targets that module only
            let matches = |full: &str| {
                // `full == want || full.ends_with(&format!(".{want}"))`, without the String
                full == want
                    || (full.len() > want.len() && full.ends_with(want.as_str()) && full.as_bytes()[full.len() - want.len() - 1] == b'.')
            };
            let module_hit = self.full_names.iter().any(|(full, bit)| self.all_linear_mask & (1 << bit) != 0 && matches(full));
            for (full, bit) in &self.full_names {
                if matches(full) {
                    if module_hit && self.expert_mask & (1 << bit) != 0 {
                        continue;
                    }
                    if self.excluded_mask & (1 << bit) != 0 {
                        return Err(Error::field(
                            "lora_target_modules",
                            want,
                            "a module peft adapts (peft refuses LoRA on out_proj and conv1d of Mamba-based models)",
                        ));
                    }
                    if self.all_linear_mask & (1 << bit) == 0 {
                        return Err(Error::field(
                            "lora_target_modules",
                            want,
                            "nn.Linear modules (fused expert tensors take LoRA through lora_target_parameters)",
                        ));
                    }
                    mask |= 1 << bit;
                    hit = true;
                }
            }
            if !hit {
                let have: Vec<&str> = self
                    .names
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| self.all_linear_mask & (1 << i) != 0)
                    .map(|(_, n)| n.as_str())
                    .collect();
                return Err(Error::field("lora_target_modules", want, format!("one of the model's linear modules: {}", have.join(", "))));
            }
        }
        Ok(mask)
    }
}
