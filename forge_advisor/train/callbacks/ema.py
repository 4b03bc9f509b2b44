"""`EMACallback`: an exponential moving average of the trainable parameters.

After every optimizer step, for each trainable tensor θ (the adapters under PEFT)::

    ema ← decay · ema + (1 − decay) · θ        e.g. decay 0.999: a ~1,000-step memory

The average is kept in float32 (on CPU with ``cpu_offload=True``), saved as
``ema_state.pt`` inside every ``checkpoint-N`` and picked up again when training resumes
from that checkpoint. :meth:`apply_ema` / :meth:`restore` swap the averaged weights into the
live model in place and back, bit-exact, keeping no copy once restored.
"""

from __future__ import annotations

import logging
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from forge_advisor.errors import ForgeError
from forge_advisor.train.saving import atomic_save_pretrained

__all__ = ["EMACallback", "EMA_STATE_FILE"]

logger = logging.getLogger(__name__)
EMA_STATE_FILE = "ema_state.pt"


def _key(name: str) -> str:
    # DDP/compile wrappers prefix names; the average is keyed by the bare name
    for prefix in ("module.", "_orig_mod."):
        while name.startswith(prefix):
            name = name[len(prefix):]
    return name


class EMACallback(TrainerCallback):
    def __init__(
        self,
        decay: float = 0.999,
        *,
        cpu_offload: bool = False,
        update_every: int = 1,
        warmup: bool = False,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0.0 < decay < 1.0:
            raise ForgeError(f"decay={decay!r} is out of range: allowed (0, 1)")
        if isinstance(update_every, bool) or not isinstance(update_every, int) or update_every < 1:
            raise ForgeError(f"update_every={update_every!r} must be an integer >= 1")
        self.decay = float(decay)
        self.cpu_offload = cpu_offload
        self.update_every = update_every
        self.warmup = warmup  # decay_t = min(decay, (1 + t) / (10 + t)): early steps follow the weights
        self.dtype = dtype
        self.shadow: dict[str, torch.Tensor] = {}
        self.num_updates = 0
        self._backup: dict[str, torch.Tensor] | None = None
        self._saved_step: int | None = None  # the checkpoint the runtime's Trainer already wrote us into

    # -- state ------------------------------------------------------------------------------------
    def _trainable(self, model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
        return {_key(n): p for n, p in model.named_parameters() if p.requires_grad}

    def _params(self, model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
        named = {_key(n): p for n, p in model.named_parameters()}
        missing = [k for k in self.shadow if k not in named]
        if missing:
            raise ForgeError(f"EMA: the model has no parameter '{missing[0]}' (a different model than the one trained?)")
        return {k: named[k] for k in self.shadow}

    def initialize(self, model: torch.nn.Module) -> None:
        """Start the average from the current trainable weights."""
        device = "cpu" if self.cpu_offload else None
        self.shadow = {
            k: p.detach().to(device=device or p.device, dtype=self.dtype, copy=True)
            for k, p in self._trainable(model).items()
        }
        self.num_updates = 0
        if not self.shadow:
            raise ForgeError("EMA: the model has no trainable parameters")

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        t = self.num_updates
        return min(self.decay, (1 + t) / (10 + t))

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        d = self.current_decay()
        for k, p in self._params(model).items():
            s = self.shadow[k]
            # s = d·s + (1−d)·θ, computed as s += (1−d)·(θ − s): one fused op, same value
            s.lerp_(p.detach().to(device=s.device, dtype=s.dtype), 1.0 - d)
        self.num_updates += 1

    def state_dict(self) -> dict[str, Any]:
        return {
            "decay": self.decay,
            "num_updates": self.num_updates,
            "warmup": self.warmup,
            "shadow": {k: v.detach().cpu() for k, v in self.shadow.items()},
        }

    def load_state_dict(self, state: dict[str, Any], model: torch.nn.Module | None = None) -> None:
        self.num_updates = int(state["num_updates"])
        self.warmup = bool(state.get("warmup", self.warmup))
        shadow = state["shadow"]
        if model is not None:
            params = self._trainable(model)
            if set(params) != set(shadow):
                extra = sorted(set(shadow) ^ set(params))[:1]
                raise ForgeError(f"EMA state does not match the model's trainable parameters (e.g. '{extra[0]}')")
            self.shadow = {
                k: v.to(device="cpu" if self.cpu_offload else params[k].device, dtype=self.dtype)
                for k, v in shadow.items()
            }
        else:
            self.shadow = {k: v.to(dtype=self.dtype) for k, v in shadow.items()}

    def save(self, directory: str | Path) -> Path:
        """Write ``ema_state.pt`` into ``directory`` atomically (temp file, then rename)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / EMA_STATE_FILE
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".ema.", suffix=".tmp")
        os.close(fd)
        try:
            torch.save(self.state_dict(), tmp)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target

    def load(self, directory: str | Path, model: torch.nn.Module | None = None) -> None:
        path = Path(directory) / EMA_STATE_FILE
        if not path.is_file():
            raise ForgeError(f"{path}: no EMA state in this checkpoint")
        self.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), model)

    # -- swapping ---------------------------------------------------------------------------------
    @torch.no_grad()
    def apply_ema(self, model: torch.nn.Module) -> None:
        """Put the averaged weights into ``model`` (in place); :meth:`restore` undoes it exactly."""
        if self._backup is not None:
            raise ForgeError("EMA weights are already applied: call restore(model) first")
        if not self.shadow:
            raise ForgeError("EMA has no state yet: train first or load a checkpoint")
        params = self._params(model)
        # the backup lives where the average lives (CPU with cpu_offload), in the weights' own dtype
        self._backup = {k: p.detach().to(self.shadow[k].device, copy=True) for k, p in params.items()}
        for k, p in params.items():
            p.copy_(self.shadow[k])

    @torch.no_grad()
    def restore(self, model: torch.nn.Module) -> None:
        if self._backup is None:
            raise ForgeError("EMA weights are not applied: nothing to restore")
        for k, p in self._params(model).items():
            p.copy_(self._backup[k])
        self._backup = None  # no copy outlives the swap

    @contextmanager
    def average_parameters(self, model: torch.nn.Module) -> Any:
        self.apply_ema(model)
        try:
            yield model
        finally:
            self.restore(model)

    def save_ema_weights(self, model: torch.nn.Module, directory: str | Path, **save_kwargs: Any) -> Path:
        """Save the model with EMA weights swapped in (``save_pretrained``: an adapter under PEFT),
        atomically: written to a temp folder, then renamed over ``directory``."""
        directory = Path(directory)
        with self.average_parameters(model):
            return atomic_save_pretrained(model, directory, **save_kwargs)

    # -- Trainer events ---------------------------------------------------------------------------
    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
        if model is None:
            return
        if state.global_step > 0:  # resuming: Trainer loaded trainer_state.json of checkpoint-N
            ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if (ckpt / EMA_STATE_FILE).is_file():
                self.load(ckpt, model)
                logger.info("EMA restored from %s (%d updates)", ckpt, self.num_updates)
                return
            logger.warning("resuming at step %d without %s: EMA restarts from the current weights",
                           state.global_step, ckpt / EMA_STATE_FILE)
        if not self.shadow:
            self.initialize(model)

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
        if model is not None and self.shadow and state.global_step % self.update_every == 0:
            self.update(model)

    def write_checkpoint(self, directory: Path, state: Any) -> None:
        """The runtime's Trainer calls this on the staged ``checkpoint-N`` before it renames the
        folder into place, so the EMA is part of the checkpoint's one atomic publication."""
        if self.shadow:
            self.save(directory)
            self._saved_step = state.global_step

    def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        # a plain Trainer: add ema_state.pt to the folder it just wrote (not atomic with it)
        if self.shadow and state.is_world_process_zero and self._saved_step != state.global_step:
            ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if ckpt.is_dir():
                self.save(ckpt)
