"""The runtime's Trainer: transformers' ``Trainer`` (or trl's ``DPOTrainer``) with three changes.

* **Checkpoints are complete or absent.** ``_save_checkpoint`` lets the base class write
  ``checkpoint-N`` into a hidden staging folder ``.checkpoint-N.tmp/``; then the extra writers
  (the EMA's ``ema_state.pt``) add their files, and one ``rename`` publishes the folder. Old
  checkpoints are rotated rename-first (:mod:`forge_advisor.train.saving`).
* **Gradients are inspected before clipping.** ``_clip_grad_norm`` calls the pre-clip hooks
  first, so the monitor sees the true norm (after clipping it reads ``max_grad_norm``, i.e. 1).
* **The longest batch comes first** (preflight): the sampler yields the indices of the
  ``first_n`` longest samples, then the rest in a seeded shuffle, so an OOM shows at step 1.
"""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from forge_advisor.train.saving import remove_dir, rotate_checkpoints

__all__ = ["LongestFirstSampler", "forge_trainer_class", "longest_first"]


def longest_first(lengths: Sequence[int], first_n: int) -> list[int]:
    """Indices of the ``first_n`` longest samples, longest first (ties: lower index first)."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return order[: max(0, min(first_n, len(lengths)))]


class LongestFirstSampler:
    """Epoch 0: the ``first`` indices, then every other index shuffled; later epochs: a shuffle.
    Deterministic per (seed, epoch), so a resumed run skips exactly the batches it saw."""

    def __init__(self, n: int, first: list[int], seed: int) -> None:
        self.n = n
        self.first = list(first)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        rng = random.Random(self.seed * 1_000_003 + self.epoch)
        if self.epoch == 0:
            head = set(self.first)
            rest = [i for i in range(self.n) if i not in head]
            rng.shuffle(rest)
            return iter(self.first + rest)
        order = list(range(self.n))
        rng.shuffle(order)
        return iter(order)


def forge_trainer_class(base: type) -> type:
    """``base`` (Trainer or DPOTrainer) with atomic checkpoints, pre-clip hooks and the sampler."""

    class ForgeTrainer(base):  # type: ignore[misc, valid-type]
        forge_checkpoint_writers: list[Callable[[Path, Any], None]]
        forge_pre_clip: list[Callable[[Any, Any, Any], None]]
        forge_first: list[int] | None

        def __init__(self, *args: Any, checkpoint_writers: Sequence[Callable[[Path, Any], None]] = (),
                     pre_clip: Sequence[Callable[[Any, Any, Any], None]] = (), first: list[int] | None = None,
                     activation_offloading: bool = False, **kwargs: Any) -> None:
            self.forge_activation_offloading = activation_offloading
            self.forge_offload_context: Any = None
            self.forge_checkpoint_writers = list(checkpoint_writers)
            self.forge_pre_clip = list(pre_clip)
            self.forge_first = first
            super().__init__(*args, **kwargs)

        def training_step(self, *args: Any, **kwargs: Any) -> Any:
            """trl's ``activation_offloading`` (SFTTrainer.training_step does the same): saved
            activations go to host memory in forward and come back in backward."""
            if not self.forge_activation_offloading:
                return super().training_step(*args, **kwargs)
            if self.forge_offload_context is None:
                import torch
                from trl.models.activation_offloading import get_act_offloading_ctx_manager

                cuda = torch.cuda.is_available()  # streams and pinned memory need a CUDA device
                self.forge_offload_context = get_act_offloading_ctx_manager(self.model, use_pin_memory=cuda,
                                                                            use_streams=cuda)
            with self.forge_offload_context:
                return super().training_step(*args, **kwargs)

        def _get_train_sampler(self, train_dataset: Any = None) -> Any:
            dataset = train_dataset if train_dataset is not None else self.train_dataset
            if self.forge_first is None or dataset is None or not hasattr(dataset, "__len__"):
                return super()._get_train_sampler(train_dataset)
            return LongestFirstSampler(len(dataset), self.forge_first, self.args.seed)

        def _clip_grad_norm(self, model: Any) -> Any:
            for hook in self.forge_pre_clip:
                hook(model, self.state, self.control)
            return super()._clip_grad_norm(model)

        def _save_checkpoint(self, model: Any, trial: Any) -> None:
            # the base class writes into run_dir/checkpoint-N with run_dir = _get_output_dir(trial);
            # pointing _get_output_dir at a hidden staging folder for the call makes it write there
            run_dir = Path(self._get_output_dir(trial=trial))  # type: ignore[has-type]
            step = self.state.global_step
            final = run_dir / f"checkpoint-{step}"
            # one staging name for every rank: under DDP each rank adds its rng_state_R.pth
            staging = run_dir / f".checkpoint-{step}.tmp"
            if self.args.should_save:
                shutil.rmtree(staging, ignore_errors=True)
            self.accelerator.wait_for_everyone()
            self._get_output_dir = lambda trial=None: str(staging)  # type: ignore[method-assign,has-type]
            limit = self.args.save_total_limit
            self.args.save_total_limit = None  # the base class rotates nothing; we rotate after publishing
            try:
                super()._save_checkpoint(model, trial)
            finally:
                del self._get_output_dir
                self.args.save_total_limit = limit
            self.accelerator.wait_for_everyone()
            if not self.args.should_save:
                return
            staged = staging / final.name
            for write in self.forge_checkpoint_writers:
                write(staged, self.state)
            _fsync_tree(staged)
            remove_dir(final)  # a checkpoint of the same step from an earlier attempt
            os.replace(staged, final)  # the publishing step: complete under its real name, or absent
            shutil.rmtree(staging, ignore_errors=True)
            rotate_checkpoints(run_dir, self.args.save_total_limit)
            if self.state.best_model_checkpoint and Path(self.state.best_model_checkpoint).parent == staging:
                self.state.best_model_checkpoint = str(run_dir / Path(self.state.best_model_checkpoint).name)

    ForgeTrainer.__name__ = f"Forge{base.__name__}"
    ForgeTrainer.__qualname__ = ForgeTrainer.__name__
    return ForgeTrainer


def _fsync_tree(folder: Path) -> None:
    # the files' data reach the disk before the rename publishes them (a power cut, not only kill -9)
    for p in folder.iterdir():
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
