"""The data plan: length x memory model x batching x price, in one answer.

* :func:`price_mode` — one batching mode at one max_length: the worst micro-batch priced by
  the estimator with the plan's ``batching`` (does it fit?) and the epoch priced on the tokens
  the mode really processes: time = processed tokens / the estimator's tokens/s at the mode's
  mean row length; steps =
  ceil(micro-batches / accumulation); cost = hours x GPUs x $/GPU-hour.
* :func:`choose_max_length` — candidates from the distribution (p50/p90/p99/max rounded up to
  a multiple of 64, powers of two between), each with what it truncates (records, tokens)
  and what it costs (worst-case memory, epoch time). Recommended: the shortest length that
  truncates nothing, if its worst micro-batch fits; otherwise the longest that fits.
* :func:`rent` — GPU type x count x batching mode ranked by cost per epoch and by time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from forge_advisor.dataplan.batching import FLATTENED, MODES, VARLEN_ATTENTION, BatchSim, simulate, steps_per_epoch
from forge_advisor.dataplan.lengths import LengthReport
from forge_advisor.errors import ForgeError
from forge_advisor.plan import MAX_LENGTH, Plan

if TYPE_CHECKING:
    from forge_advisor.estimate import EstimateResult
    from forge_advisor.gpus import GPU
    from forge_advisor.shapes import ModelShape

__all__ = ["data_advice", "real_token_fractions", "ModePrice", "LengthChoice", "RentOption", "price_mode", "choose_max_length", "rent", "round_up",
           "modes_for"]

ALIGN = 64  # candidate lengths are multiples of 64 tokens (tensor-core friendly, as trl pads)


def round_up(n: int, step: int = ALIGN) -> int:
    return max(step, -(-n // step) * step)


def modes_for(plan: Plan) -> tuple[str, ...]:
    """The runtime implements packing and padding-free batches for SFT; DPO pads."""
    return MODES if plan.trainer == "sft" else ("longest", "max_length")


@dataclass(frozen=True)
class ModePrice:
    sim: BatchSim
    worst: EstimateResult  # the worst micro-batch
    speed: EstimateResult  # the shape whose tokens/s prices the epoch
    scale: float  # records / sampled records
    grad_accum: int
    usd_per_gpu_hour: float | None = None

    @property
    def fits(self) -> bool | None:
        return self.worst.fits

    @property
    def tokens_per_second(self) -> float | None:
        return self.speed.tokens_per_second

    @property
    def epoch_seconds(self) -> float | None:
        tps = self.tokens_per_second
        return None if not tps else self.sim.processed_tokens * self.scale / tps

    @property
    def real_tokens_per_second(self) -> float | None:
        e = self.epoch_seconds
        return None if not e else self.sim.real_tokens * self.scale / e

    @property
    def steps_per_epoch(self) -> int:
        return steps_per_epoch(math.ceil(self.sim.micro_batches * self.scale), self.grad_accum)

    @property
    def usd_per_epoch(self) -> float | None:
        e = self.epoch_seconds
        if e is None or self.usd_per_gpu_hour is None:
            return None
        return e / 3600 * self.worst.plan.num_gpus * self.usd_per_gpu_hour

    @property
    def note(self) -> str | None:
        if self.sim.mode in FLATTENED and self.worst.plan.attn_implementation not in VARLEN_ATTENTION:
            return ("flattened rows with attn_implementation=" + self.worst.plan.attn_implementation +
                    ": a block-diagonal mask over the whole row (flash_attention_2 keeps each record apart for less)")
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.sim.mode, "max_length": self.sim.max_length, "simulation": self.sim.to_dict(),
            "worst_case": {"per_device_train_batch_size": self.worst.plan.per_device_train_batch_size,
                           "length": self.worst.plan.max_length, "batching": self.worst.plan.batching, "peak_reserved_bytes": self.worst.peak_reserved_bytes,
                           "fits": self.fits},
            "tokens_per_second": self.tokens_per_second, "real_tokens_per_second": self.real_tokens_per_second,
            "epoch_seconds": self.epoch_seconds, "steps_per_epoch": self.steps_per_epoch,
            "usd_per_gpu_hour": self.usd_per_gpu_hour, "usd_per_epoch": self.usd_per_epoch, "note": self.note,
        }


def _at(plan: Plan, mode: str, length: int) -> Plan:
    return plan.with_(batching=mode, max_length=min(length, MAX_LENGTH))


_SIMS: dict[tuple[Any, ...], BatchSim] = {}


def _simulate(report: LengthReport, mode: str, max_length: int, batch: int, gpus: int) -> BatchSim:
    """simulate() on the report's lengths (with the longest record added when sampled), cached
    per report: rent() prices the same simulation on every GPU."""
    key = (id(report), report.longest, len(report.lengths), mode, max_length, batch, gpus)
    sim = _SIMS.get(key)
    if sim is None:
        lengths = report.lengths + ((report.longest,) if report.sampled else ())
        sim = simulate(lengths, mode, max_length=max_length, batch_size=batch, num_gpus=gpus)
        if len(_SIMS) > 4096:
            _SIMS.clear()
        _SIMS[key] = sim
    return sim


def price_mode(report: LengthReport, shape: ModelShape, plan: Plan, gpu: GPU | None, mode: str, max_length: int,
               *, usd_per_gpu_hour: float | None = None) -> ModePrice:
    from forge_advisor.estimate import estimate

    sim = _simulate(report, mode, max_length, plan.per_device_train_batch_size, plan.num_gpus)
    worst = estimate(shape, _at(plan, mode, sim.worst_length), gpu)
    speed = worst if sim.speed_length == sim.worst_length else estimate(shape, _at(plan, mode, sim.speed_length), gpu)
    return ModePrice(sim, worst, speed, report.scale, plan.gradient_accumulation_steps, usd_per_gpu_hour)


def data_advice(report: LengthReport, shape: ModelShape, plan: Plan, gpu: GPU | None, *, mode: str | None = None,
                fixed: int | None = None, usd_per_gpu_hour: float | None = None) -> dict[str, Any]:
    """The data plan for one plan and GPU (the ``data`` command and the TUI's data screen):
    the length report, the max_length choice (priced in ``mode``, default padding to the
    longest), every batching mode the trainer runs priced at that length, and the fastest
    fitting mode (or ``mode`` when given)."""
    choice = choose_max_length(report, shape, plan, gpu, mode=mode or "longest", fixed=fixed)
    out: dict[str, Any] = {"lengths": report.to_dict(), "max_length": choice.to_dict(), "batching": [],
                           "recommended_batching": None}
    if choice.chosen is None:
        return out
    length = choice.chosen.max_length
    prices = [price_mode(report, shape, plan, gpu, m, length, usd_per_gpu_hour=usd_per_gpu_hour) for m in modes_for(plan)]
    out["batching"] = [m.to_dict() for m in prices]
    fitting = [m for m in prices if m.fits is not False and m.epoch_seconds]
    best = min(fitting, key=lambda m: m.epoch_seconds or math.inf) if fitting else None
    out["recommended_batching"] = mode or (best.sim.mode if best else None)
    return out


def real_token_fractions(report: LengthReport, trainer: str, max_length: int, batches: tuple[int, ...],
                         num_gpus: int = 1) -> tuple[tuple[str, int, float], ...]:
    """(mode, per-device batch, real / processed tokens over an epoch) for every mode the
    trainer runs and every batch: what the search multiplies tokens/s by to rank batching
    modes on the data (rust/src/search.rs ``Space::real_token_fraction``)."""
    modes = MODES if trainer == "sft" else ("longest", "max_length")
    return tuple((m, b, _simulate(report, m, max_length, b, num_gpus).efficiency) for m in modes for b in batches)


@dataclass(frozen=True)
class LengthCandidate:
    max_length: int
    truncated_records: float  # fraction
    truncated_tokens: float  # fraction
    price: ModePrice

    def to_dict(self) -> dict[str, Any]:
        return {"max_length": self.max_length, "truncated_records": self.truncated_records,
                "truncated_tokens": self.truncated_tokens, **{k: v for k, v in self.price.to_dict().items()
                                                              if k not in ("max_length", "simulation")}}


@dataclass(frozen=True)
class LengthChoice:
    candidates: tuple[LengthCandidate, ...]
    chosen: LengthCandidate | None  # None: no candidate's worst micro-batch fits
    fixed: bool  # the user fixed max_length
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"recommended": None if self.chosen is None else self.chosen.max_length, "fixed": self.fixed,
                "reason": self.reason, "candidates": [c.to_dict() for c in self.candidates]}


def candidate_lengths(report: LengthReport, limit: int | None) -> list[int]:
    top = round_up(report.longest)
    marks = {round_up(report.p(q)) for q in (50, 90, 99)} | {top}
    k = round_up(report.p(50)).bit_length()
    marks |= {1 << e for e in range(max(6, k - 1), top.bit_length() + 1) if (1 << e) <= top}
    out = sorted(m for m in marks if m <= (limit or MAX_LENGTH))
    return out or [min(top, limit or top)]


def choose_max_length(report: LengthReport, shape: ModelShape, plan: Plan, gpu: GPU | None, *,
                      mode: str = "longest", fixed: int | None = None) -> LengthChoice:
    """Weigh truncation against memory and time (see the module docstring)."""
    limit = shape.max_position_embeddings
    lengths = candidate_lengths(report, limit)
    if fixed is not None:
        if isinstance(fixed, bool) or not isinstance(fixed, int) or not 1 <= fixed <= MAX_LENGTH:
            raise ForgeError(f"max_length={fixed!r} must be an integer in [1, {MAX_LENGTH}]")
        lengths = sorted(set(lengths) | {fixed})
    cands = []
    for n in lengths:
        recs, toks = report.truncated(n)
        cands.append(LengthCandidate(n, recs, toks, price_mode(report, shape, plan, gpu, mode, n)))
    by_len = {c.max_length: c for c in cands}
    if fixed is not None:
        _check_holdable(report, shape, plan, fixed)
        return LengthChoice(tuple(cands), by_len[fixed], True, f"max_length {fixed} fixed by the user")
    full = round_up(report.longest)
    cap_note = ""
    if limit is not None and full > limit:
        cap_note = f"; the model's context is {limit:,} tokens, so records beyond it are cut"
    fitting = [c for c in cands if c.price.fits is not False]
    if not fitting:
        return LengthChoice(tuple(cands), None, False,
                            f"no candidate length fits {gpu.name if gpu else 'the GPU'} at batch "
                            f"{plan.per_device_train_batch_size}: lower the batch size or use a lighter method")
    whole = [c for c in fitting if c.truncated_records == 0]
    if whole:
        return LengthChoice(tuple(cands), whole[0], False, "the shortest length that truncates no record" + cap_note)
    best = fitting[-1]
    return LengthChoice(tuple(cands), best, False,
                        "the longest length whose worst micro-batch fits" +
                        ("" if gpu is None else f" {gpu.name}") + f" (truncates {best.truncated_records:.1%} of records)" + cap_note)


def _check_holdable(report: LengthReport, shape: ModelShape, plan: Plan, max_length: int) -> None:
    """A record that at batch 1 needs more memory than the largest GPU in the catalog: bad input."""
    from forge_advisor.estimate import estimate
    from forge_advisor.gpus import gpu_catalog

    need = min(report.longest, max_length)
    biggest = max(gpu_catalog(), key=lambda g: g.memory_bytes)
    res = estimate(shape, plan.with_(per_device_train_batch_size=1, max_length=min(need, MAX_LENGTH)), biggest)
    if not res.fits:
        from forge_advisor.units import fmt_bytes

        raise ForgeError(f"{report.longest_where}: a record of {report.longest:,} tokens; at max_length {max_length:,} "
                         f"even one needs {fmt_bytes(res.peak_reserved_bytes)} with this plan, more than any GPU holds "
                         f"(largest: {biggest.name}, {fmt_bytes(biggest.memory_bytes)}); lower --max-length")


@dataclass(frozen=True)
class RentOption:
    gpu: str
    num_gpus: int
    price: ModePrice

    def to_dict(self) -> dict[str, Any]:
        p = self.price
        return {"gpu": self.gpu, "num_gpus": self.num_gpus, "mode": p.sim.mode, "max_length": p.sim.max_length,
                "epoch_seconds": p.epoch_seconds, "usd_per_epoch": p.usd_per_epoch,
                "usd_per_gpu_hour": p.usd_per_gpu_hour, "peak_reserved_bytes": p.worst.peak_reserved_bytes,
                "steps_per_epoch": p.steps_per_epoch}


@dataclass(frozen=True)
class RentReport:
    options: tuple[RentOption, ...]  # every fitting option, cheapest first
    skipped: tuple[str, ...] = field(default=())  # priced GPUs where nothing fits

    @property
    def cheapest(self) -> RentOption | None:
        return self.options[0] if self.options else None

    @property
    def fastest(self) -> RentOption | None:
        return min(self.options, key=lambda o: o.price.epoch_seconds or math.inf, default=None)

    def to_dict(self) -> dict[str, Any]:
        return {"cheapest": None if self.cheapest is None else self.cheapest.to_dict(),
                "fastest": None if self.fastest is None else self.fastest.to_dict(),
                "options": [o.to_dict() for o in self.options], "nothing_fits": list(self.skipped)}


def rent(report: LengthReport, shape: ModelShape, plan: Plan, max_length: int, *, counts: tuple[int, ...] = (1, 2, 4, 8),
         modes: tuple[str, ...] | None = None, prices: dict[str, Any] | None = None) -> RentReport:
    """Every priced GPU x count x mode whose worst micro-batch fits, ranked by $ per epoch."""
    from forge_advisor.dataplan.prices import gpu_prices
    from forge_advisor.gpus import find_gpu

    table = prices if prices is not None else gpu_prices()
    modes = modes or modes_for(plan)
    options: list[RentOption] = []
    skipped = []
    for name, price in table.items():
        gpu = find_gpu(name)
        found = False
        for n in counts:
            p = plan.with_(num_gpus=n, distributed="ddp" if n > 1 else "none")
            for mode in modes:
                mp = price_mode(report, shape, p, gpu, mode, max_length, usd_per_gpu_hour=price.usd_per_hour)
                if mp.fits and mp.usd_per_epoch is not None:
                    options.append(RentOption(gpu.name, n, mp))
                    found = True
        if not found:
            skipped.append(name)
    options.sort(key=lambda o: (o.price.usd_per_epoch, o.price.epoch_seconds))
    return RentReport(tuple(options), tuple(skipped))
