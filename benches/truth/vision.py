"""Images for the fake-tensor harness: what a vision-language training step feeds the model.

A case whose config has a ``vision_config`` builds the real ``AutoModelForImageTextToText``
class and feeds, besides ``input_ids``/``labels``, what the model's processor would make for
``images_per_sample`` images per sample at ``max_pixels`` (plan fields, rust/src/vision.rs):

* Qwen2-VL / Qwen2.5-VL: ``pixel_values [patches, C·T·p·p]`` and ``image_grid_thw`` rows
  ``(1, gh, gw)`` with ``gh·gw = 4·tokens`` (``tokens = max_pixels // 28²``, the largest image
  ``smart_resize`` allows, laid out as close to square as the merge grid permits); each image's
  ``tokens`` placeholder ids (``image_token_id``) sit at the start of the sample.
* Gemma 3: ``pixel_values [images, 3, S, S]`` at the SigLIP ``image_size`` and
  ``mm_tokens_per_image`` placeholders per image, ``token_type_ids`` 1 on them (the
  bidirectional image mask Gemma 3 builds in training).

Fake tensors have no values, so the data-dependent helpers are answered from the values the
harness chose: the per-image vision bookkeeping (``cu_seqlens``, rotary position ids, window
index; ``transformers.vision_utils`` lets a caller precompute them) is computed on the CPU
from the real ``image_grid_thw`` and handed in as fake tensors, and the one ``.tolist()`` in
the SDPA path of the Qwen vision attention (the split into images / windows) is answered with
those lengths. The placeholder-count check (``get_placeholder_mask``'s ``torch_compilable_check``)
cannot read fake values and is skipped; the mask itself is computed as the model does.
The language model's 3-D rotary ``position_ids`` are passed (values do not change memory).
* Llama 3.2 Vision (``mllama``): what ``MllamaProcessor`` makes — one ``<|image|>`` id
  (``image_token_index``) per image at the start of the sample, ``pixel_values [B, images,
  max_num_tiles, C, S, S]`` (``pad_batches_and_tiles`` pads every image to the tile limit),
  ``aspect_ratio_ids [B, images]``, ``aspect_ratio_mask [B, images, tiles]`` and
  ``cross_attention_mask [B, T, images, tiles]`` (every text token attending to every tile:
  values do not change memory). No placeholder mask: the images reach the text through the
  cross-attention layers only.

Freezing (plan ``freeze_vision_tower``, default true): the tower's parameters do not train
(full fine-tuning) and get no LoRA adapters; LoRA never adapts the projector (peft
``exclude_modules``), full fine-tuning trains it.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

# module paths of the towers and projectors (modeling_qwen2_5_vl.py `model.visual`, with its
# `merger`; llava/gemma3 `model.vision_tower` and `model.multi_modal_projector`)
TOWER = r"(visual|vision_tower|vision_model)"
# the Qwen-VL model types the harness feeds patches and grids to
QWEN = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")
PROJECTOR = r"(merger|deepstack_merger_list|multi_modal_projector)"


def is_vlm(cfg: Any) -> bool:
    return getattr(cfg, "vision_config", None) is not None


def in_tower(module_name: str) -> bool:
    import re  # noqa: PLC0415

    return re.search(r"(^|\.)" + TOWER + r"(\.|$)", module_name) is not None


def lora_exclude(p: dict[str, Any]) -> str:
    """peft ``exclude_modules`` regex: the projector always, the tower when frozen."""
    parts = [PROJECTOR] + ([TOWER] if p.get("freeze_vision_tower", True) else [])
    return r".*(" + "|".join(parts) + r").*"


def freeze_tower(model: Any) -> None:
    import re  # noqa: PLC0415

    tower = re.compile(r"(^|\.)" + TOWER + r"\.")
    projector = re.compile(r"(^|\.)" + PROJECTOR + r"(\.|$)")
    for name, prm in model.named_parameters():
        if tower.search(name) and not projector.search(name):
            prm.requires_grad_(False)


@contextlib.contextmanager
def no_truncated_init():
    """SigLIP's ``lecun_normal_`` draws a truncated normal by rejection (data-dependent, which
    fake tensors cannot run); weight values do not change memory, so it leaves them as built."""
    from transformers import initialization  # noqa: PLC0415

    orig = initialization.trunc_normal_
    initialization.trunc_normal_ = lambda tensor, *a, **k: tensor
    try:
        yield
    finally:
        initialization.trunc_normal_ = orig


def _grid(tokens: int) -> tuple[int, int]:
    """Merge-grid (h, w) with h·w = tokens, as square as divisors allow."""
    h = int(math.isqrt(tokens))
    while tokens % h:
        h -= 1
    return h, tokens // h


class Images:
    """The forward kwargs for one micro-batch and the patches the harness installs."""

    def __init__(self, model: Any, cfg: Any, p: dict[str, Any], batch: int, length: int) -> None:
        self.model, self.cfg, self.p, self.B, self.S = model, cfg, p, batch, length
        self.kind = cfg.model_type
        self.images = int(p.get("images_per_sample", 1))
        self.videos = int(p.get("videos_per_sample", 0))
        if self.videos and self.images:
            raise NotImplementedError("images and videos in one case (the tower runs twice with other bookkeeping)")
        self.lengths: dict[tuple[int, str], list[int]] = {}

    # -- the placeholder tokens -------------------------------------------------------------
    def tokens_per_image(self) -> int:
        if self.kind in ("qwen2_vl", "qwen2_5_vl"):
            merge = self.cfg.vision_config.spatial_merge_size
            factor = self.cfg.vision_config.patch_size * merge
            return self.p["max_pixels"] // (factor * factor)
        if self.kind == "gemma3":
            return self.cfg.mm_tokens_per_image
        if self.kind == "mllama":
            return 1
        raise NotImplementedError(f"images for model_type {self.kind!r}")

    def forward_kwargs(self, input_ids: Any) -> dict[str, Any]:
        import torch  # noqa: PLC0415

        if self.videos:
            return self._qwen_videos(input_ids)
        n = self.tokens_per_image() * self.images
        if n > self.S:
            raise ValueError(f"{n} image tokens do not fit max_length={self.S}")
        input_ids[:, :n] = self.cfg.image_token_id
        if self.kind == "mllama":
            return self._mllama()
        if self.kind == "gemma3":
            v = self.cfg.vision_config
            pixel_values = torch.randn(self.B * self.images, v.num_channels, v.image_size, v.image_size, device="cuda")
            token_type_ids = torch.zeros_like(input_ids)
            token_type_ids[:, :n] = 1
            return {"pixel_values": pixel_values, "token_type_ids": token_type_ids}
        return self._qwen(input_ids)

    def _mllama(self) -> dict[str, Any]:
        import torch  # noqa: PLC0415

        v = self.cfg.vision_config
        tiles, n = v.max_num_tiles, self.images
        pixel_values = torch.randn(self.B, n, tiles, v.num_channels, v.image_size, v.image_size, device="cuda")
        # id of the largest supported canvas (ids count from 1; 0 is padding)
        ratio_ids = torch.full((self.B, n), len(v.supported_aspect_ratios), dtype=torch.long, device="cuda")
        ratio_mask = torch.ones(self.B, n, tiles, dtype=torch.long, device="cuda")
        cross_mask = torch.ones(self.B, self.S, n, tiles, dtype=torch.long, device="cuda")
        return {"pixel_values": pixel_values, "aspect_ratio_ids": ratio_ids, "aspect_ratio_mask": ratio_mask,
                "cross_attention_mask": cross_mask}

    def _qwen_videos(self, input_ids: Any) -> dict[str, Any]:
        """Videos (plan ``videos_per_sample``, ``num_frames``, ``video_max_pixels``; Qwen2-VL and
        Qwen2.5-VL): what the video processor makes for ``num_frames`` frames at the per-frame
        cap — ``grid_t = ⌈frames / T⌉`` groups (patchify pads with the last frame) of the largest
        ``smart_resize`` grid, ``tokens = video_max_pixels // factor²`` per group —
        ``pixel_values_videos [patches, C·T·p·p]``, ``video_grid_thw`` rows ``(grid_t, gh, gw)`` and
        the ``video_token_id`` placeholders."""
        if self.kind not in QWEN:
            raise NotImplementedError(f"videos for model_type {self.kind!r}")
        v = self.cfg.vision_config
        factor = v.patch_size * v.spatial_merge_size
        frames = int(self.p.get("num_frames", 16))
        # Qwen3-VL's budget spans the frames (video_processing_qwen3_vl.py smart_resize(num_frames, …))
        per_frame = self.p["video_max_pixels"] // (frames if self.kind == "qwen3_vl" else 1)
        per_group = per_frame // (factor * factor)
        grid_t = -(-frames // v.temporal_patch_size)
        n = per_group * grid_t * self.videos
        if n > self.S:
            raise ValueError(f"{n} video tokens do not fit max_length={self.S}")
        input_ids[:, :n] = self.cfg.video_token_id
        self.placeholders = n
        kw = self._qwen(input_ids, per_group, grid_t, self.videos)
        return {"pixel_values_videos": kw.pop("pixel_values"), "video_grid_thw": kw.pop("image_grid_thw"), **kw}

    def _qwen(self, input_ids: Any, tokens: int | None = None, grid_t: int = 1, count: int | None = None) -> dict[str, Any]:
        import torch  # noqa: PLC0415
        from torch._subclasses.fake_tensor import unset_fake_temporarily  # noqa: PLC0415
        from transformers import vision_utils  # noqa: PLC0415

        v = self.cfg.vision_config
        merge, patch, t = v.spatial_merge_size, v.patch_size, v.temporal_patch_size
        gh, gw = _grid(self.tokens_per_image() if tokens is None else tokens)
        n_img = self.B * (self.images if count is None else count)
        with unset_fake_temporarily():
            grid = torch.tensor([[grid_t, gh * merge, gw * merge]] * n_img, dtype=torch.long)
            cu = vision_utils.get_vision_cu_seqlens(grid)
            pos = vision_utils.get_vision_position_ids(grid, merge)
            self.lengths[(len(cu) - 1, str(cu.dtype))] = (cu[1:] - cu[:-1]).tolist()
            extra: dict[str, Any] = {}
            if self.kind == "qwen3_vl":  # the learned position grid resampled to each grid (its indices and weights)
                idx, w = vision_utils.get_vision_interpolation_indices_and_weights(
                    grid, num_grid_per_side=int(v.num_position_embeddings**0.5), mode="bilinear", align_corners=True,
                    spatial_merge_size=merge)
                extra = {"interp_indices": idx, "interp_weights": w}
            if self.kind == "qwen2_5_vl":
                win, cu_win = vision_utils.get_vision_window_index(grid, merge, v.window_size, patch)
                self.lengths[(len(cu_win) - 1, str(cu_win.dtype))] = (cu_win[1:] - cu_win[:-1]).tolist()
                extra = {"window_index": win, "cu_window_seqlens": cu_win}
        if len(self.lengths) < (2 if self.kind == "qwen2_5_vl" else 1):
            raise ValueError("image and window counts coincide: choose another max_pixels")  # keys must differ
        fake = {k: torch.empty(x.shape, dtype=x.dtype, device="cuda") for k, x in {"cu_seqlens": cu, "position_ids": pos, **extra}.items()}
        self.fake_vision = fake
        patches = n_img * grid_t * gh * merge * gw * merge
        pixel_values = torch.randn(patches, v.in_channels * t * patch * patch, device="cuda")
        image_grid_thw = torch.empty(grid.shape, dtype=grid.dtype, device="cuda")
        self.real_grid = grid
        position_ids = torch.arange(self.S, device="cuda").view(1, 1, -1).expand(3, self.B, -1)
        return {"pixel_values": pixel_values, "image_grid_thw": image_grid_thw, "position_ids": position_ids}

    def _deepstack_by_slice(self, inner: Any) -> tuple[Any, str, Any]:
        """Qwen3-VL adds the deepstack features at the visual positions of the first decoder
        layers by boolean indexing (``_deepstack_process``: ``hidden[mask] + embeds`` written back),
        a shape fake tensors cannot know; the placeholders are the first ``n`` tokens of every
        sample here, so the same clone, add and write go through a slice (the boolean mask's
        bytes aside, the same tensors)."""
        text_cls = type(inner.language_model)
        orig = text_cls._deepstack_process
        n = self.placeholders

        def by_slice(self_, hidden_states, visual_pos_masks, visual_embeds):
            visual_embeds = visual_embeds.to(hidden_states.device, hidden_states.dtype)
            hidden_states = hidden_states.clone()
            b = hidden_states.shape[0]
            hidden_states[:, :n, :] = hidden_states[:, :n, :] + visual_embeds.view(b, n, -1)
            return hidden_states

        text_cls._deepstack_process = by_slice
        return (text_cls, "_deepstack_process", orig)

    # -- the data-dependent spots, answered from the chosen values --------------------------------
    @contextlib.contextmanager
    def patched(self):
        import torch  # noqa: PLC0415
        from torch._subclasses.fake_tensor import FakeTensor  # noqa: PLC0415

        if self.kind == "mllama":  # no placeholder mask, no data-dependent vision helpers
            yield
            return
        inner = self.model.get_base_model().model if hasattr(self.model, "get_base_model") else self.model.model
        cls = type(inner)
        orig_mask = cls.get_placeholder_mask
        orig_tolist = FakeTensor.tolist

        def placeholder_mask(self_, input_ids, inputs_embeds, image_features=None, video_features=None, **kw):
            mask = (input_ids == self_.config.image_token_id).unsqueeze(-1).to(inputs_embeds.device)
            if self.kind in QWEN:
                return mask.expand_as(inputs_embeds), (input_ids == self_.config.video_token_id).unsqueeze(-1).expand_as(inputs_embeds)
            return mask

        lengths = self.lengths

        def tolist(t):
            key = (t.numel(), str(t.dtype))
            if t.dim() == 1 and key in lengths:
                return list(lengths[key])
            return orig_tolist(t)

        restore: list[tuple[Any, str, Any]] = []
        if self.kind in QWEN:
            import importlib  # noqa: PLC0415

            mod = importlib.import_module(type(inner).__module__)
            fake = self.fake_vision
            real_grid = self.real_grid
            replacements = {
                "get_vision_position_ids": lambda *a, **k: fake["position_ids"],
                "get_vision_attention_seqlens": lambda *a, **k: (fake["cu_seqlens"], None),
                "get_vision_window_index": lambda *a, **k: (fake["window_index"], fake["cu_window_seqlens"]),
                "get_max_seqlen": lambda *a, **k: None,
                "get_vision_interpolation_indices_and_weights": lambda *a, **k: (fake["interp_indices"], fake["interp_weights"]),
            }
            for name, fn in replacements.items():
                if hasattr(mod, name):
                    restore.append((mod, name, getattr(mod, name)))
                    setattr(mod, name, fn)
            # Qwen2_5_VLModel.get_image_features splits the merged features per image by
            # `image_grid_thw.prod(-1) // merge²`: answer with the real grid's values
            from torch._subclasses.fake_tensor import unset_fake_temporarily  # noqa: PLC0415

            with unset_fake_temporarily():
                tokens = (real_grid.prod(-1) // self.cfg.vision_config.spatial_merge_size**2).tolist()
            lengths[(len(tokens), str(real_grid.dtype))] = tokens
        if self.kind == "qwen3_vl":
            restore.append(self._deepstack_by_slice(inner))
        cls.get_placeholder_mask = placeholder_mask
        FakeTensor.tolist = tolist  # type: ignore[method-assign]
        try:
            yield
        finally:
            cls.get_placeholder_mask = orig_mask
            FakeTensor.tolist = orig_tolist  # type: ignore[method-assign]
            for mod, name, fn in restore:
                setattr(mod, name, fn)
        del torch
