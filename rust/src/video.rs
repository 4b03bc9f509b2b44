//! Videos in a vision-language model (Qwen2-VL, Qwen2.5-VL, Qwen3-VL): how a video of
//! `num_frames` frames becomes encoder patches and language-model tokens.
//!
//! The video processors (video_processing_qwen2_vl.py, video_processing_qwen3_vl.py) resize
//! every frame of a video to one `h × w` (`smart_resize` to multiples of `factor = patch ·
//! merge`), pad the frames to a multiple of `temporal_patch_size` T = 2 by repeating the last
//! (`patchify`: `pad = -num_frames % T`) and cut `grid_t = frames / T` temporal groups of
//! `grid_h · grid_w = (h/patch)(w/patch)` patches each (`video_grid_thw`). The language model
//! gets `grid_t · grid_h · grid_w / merge²` video tokens (processing_qwen2_vl.py
//! `replace_video_token`: `video_grid_thw.prod() // merge_length`), inside `max_length` as image
//! tokens are (vision.rs `image_plan`). Worked example, Qwen2.5-VL at the video processor's
//! default `max_pixels` = 28·28·768 = 602,112 px per frame and 16 frames: 8 groups × 768
//! tokens = 6,144 tokens, 8 × 3,072 = 24,576 patches.
//!
//! The tower attends per temporal group: `get_vision_cu_seqlens` (vision_utils.py) repeats
//! `grid_h · grid_w` `grid_t` times (`merge_temporal=False`, the qwen2_vl convention), so a
//! video's attention span is one group's patches; Qwen2.5-VL's windowed blocks split each
//! group further (`get_vision_window_index` per group).
//!
//! Qwen3-VL differs twice. Its `max_pixels` (`size["longest_edge"]` = 32·32·768 = 786,432)
//! bounds all frames together: its `smart_resize(num_frames, h, w)` keeps `t̄·h̄·w̄ ≤ max_pixels`
//! with `t̄ = round(num_frames / T)·T` (and, when it shrinks, `h̄·w̄ ≤ max_pixels / num_frames`).
//! And processing_qwen3_vl.py `replace_video_token` writes each group as
//! `"<{t:.1f} seconds>" + <|vision_start|> + tokens + <|vision_end|>`, `t` the mean time of the
//! group's first and last frame (`_calculate_timestamps`).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::vision::{ImageRule, VisionTower};

/// How a video becomes patches and tokens; the spatial `patch_size`/`merge_size` are the
/// image rule's (the Qwen video processors use the image processor's: 14/2, 16/2 in Qwen3-VL).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VideoRule {
    /// Frames per temporal patch (the vision config's `temporal_patch_size`, 2).
    pub temporal_patch_size: u64,
    /// The video processor's `size` = {shortest_edge: min_pixels, longest_edge: max_pixels}
    /// (Qwen2-VL: 128·28·28 and 768·28·28; Qwen3-VL: 128·32·32 and 768·32·32).
    pub min_pixels: u64,
    pub max_pixels: u64,
    /// `max_pixels` bounds all frames of a video together (Qwen3-VL) instead of each frame.
    #[serde(default)]
    pub pixels_span_frames: bool,
    /// Frames per second the timestamps count (Qwen3-VL's video processor samples at
    /// `fps = 2`); 0: no timestamps (Qwen2-VL, Qwen2.5-VL).
    #[serde(default)]
    pub timestamp_fps: u64,
}

/// Text tokens of one group's `"<{t:.1f} seconds>"` with `t`'s integer part of `digits`
/// digits, plus the group's <|vision_start|> and <|vision_end|>: the Qwen2 tokenizer's
/// pre-tokenizer splits every digit (`\p{N}` alone in its pattern) and the punctuation runs
/// `<`, `.`, `>` (`?[^\s\p{L}\p{N}]+`), and ` seconds` is one word token: `<`, the integer
/// digits, `.`, one decimal, ` seconds`, `>` = digits + 5, + 2 = digits + 7.
fn timestamp_tokens(digits: u64) -> u64 {
    digits + 7
}

fn decimal_digits(x: u64) -> u64 {
    x.checked_ilog10().map_or(1, |d| d as u64 + 1)
}

/// Python's `round(frames / t) * t` (ties to even), Qwen3-VL's `t_bar`.
fn round_half_even(frames: u64, t: u64) -> u64 {
    let (q, r) = (frames / t, frames % t);
    let up = 2 * r > t || (2 * r == t && q % 2 == 1);
    (q + up as u64) * t
}

/// One video of the plan: patches, tokens, and patches per temporal group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PerVideo {
    pub patches: u64,
    pub tokens: u64,
    pub group_patches: u64,
}

impl VideoRule {
    pub fn validate(&self, images: &ImageRule) -> Result<()> {
        if !matches!(images, ImageRule::Dynamic { .. }) {
            return Err(Error::field("vision.videos", "a fixed image rule", "videos need a dynamic (Qwen) image rule"));
        }
        if self.temporal_patch_size == 0 || self.max_pixels == 0 {
            return Err(Error::field("vision.videos", format!("temporal {}, max_pixels {}", self.temporal_patch_size, self.max_pixels), "positive"));
        }
        Ok(())
    }

    /// The largest video of `frames` frames at `max_pixels` (`None`: the processor's), its
    /// language-model tokens per group capped at `cap_tokens` (when given) — the upper bound
    /// `smart_resize` allows, as for images (vision.rs `ImageRule::per_image`):
    ///
    /// * groups `grid_t = ⌈frames / T⌉` (patchify pads with the last frame);
    /// * pixels per frame: `max_pixels` (Qwen2-VL), or `max_pixels / min(frames, t̄)`
    ///   (Qwen3-VL, the larger of its two bounds in the module docs), at least the processor's
    ///   `min_pixels` (per frame, or per video over `t̄` frames) lowered to `max_pixels`;
    /// * tokens per group `⌊px / factor²⌋` (≥ 1), patches per group `tokens · merge²`;
    /// * Qwen3-VL adds [`timestamp_tokens`] per group, `t_g = (2gT + T − 1) / (2·fps)` s.
    pub fn per_video(&self, images: &ImageRule, frames: u64, max_pixels: Option<u64>, cap_tokens: Option<u64>) -> Result<PerVideo> {
        let ImageRule::Dynamic { patch_size, merge_size, .. } = *images else {
            return Err(Error::field("vision.videos", "a fixed image rule", "videos need a dynamic (Qwen) image rule"));
        };
        let t = self.temporal_patch_size;
        let groups = frames.div_ceil(t);
        let cap = max_pixels.unwrap_or(self.max_pixels);
        // a cap below the processor's min_pixels lowers it (the runtime rebuilds the video
        // processor so, forge_advisor/train/video.py `apply_video_max_pixels`; else smart_resize
        // would grow a small frame past the cap)
        let min_pixels = self.min_pixels.min(cap);
        let per_frame = if self.pixels_span_frames {
            // Qwen3-VL's smart_resize raises "t:{num_frames} must be larger than temporal_factor"
            if frames < t {
                return Err(Error::field("num_frames", frames, format!("at least {t}: Qwen3-VL's video processor needs a whole temporal patch")));
            }
            let t_bar = round_half_even(frames, t);
            (cap / frames.min(t_bar)).max(min_pixels.div_ceil(t_bar))
        } else {
            cap.max(min_pixels)
        };
        let factor = patch_size * merge_size;
        let mut tokens = (per_frame / (factor * factor)).max(1);
        if let Some(c) = cap_tokens {
            tokens = tokens.min(c.max(1));
        }
        let text = self.text_tokens(frames);
        let group_patches = tokens * merge_size * merge_size;
        Ok(PerVideo { patches: groups * group_patches, tokens: groups * tokens + text, group_patches })
    }

    /// The text tokens a video of `frames` frames adds around its groups (Qwen3-VL's
    /// timestamps, [`timestamp_tokens`] per group; 0 for Qwen2-VL and Qwen2.5-VL).
    pub fn text_tokens(&self, frames: u64) -> u64 {
        if self.timestamp_fps == 0 {
            return 0;
        }
        let t = self.temporal_patch_size;
        (0..frames.div_ceil(t)).map(|g| timestamp_tokens(decimal_digits((2 * g * t + t - 1) / (2 * self.timestamp_fps)))).sum()
    }
}

/// The videos of one sample: encoder patches, language-model tokens, and the attention span.
#[derive(Debug, Clone, Copy, Default)]
pub struct VideoPlan {
    pub patches: u64,
    pub tokens: u64,
    /// Patches of one temporal group (each attends within itself, module docs); 0: no videos.
    pub context: u64,
}

/// The videos of a sample under `plan`. A model whose tower takes no videos refuses
/// `videos_per_sample > 0`. As for images (vision.rs `image_plan`), trl truncates inside
/// the video tokens when they exceed `max_length`, so such a plan is refused — unless
/// `video_max_pixels` is unset: the largest video trl can train is then the one whose tokens
/// fit `max_length` less the `reserved` tokens (images of a set size), and that is what is
/// priced.
pub fn video_plan(tower: &VisionTower, plan: &crate::plan::Plan, reserved: u64) -> Result<VideoPlan> {
    let n = plan.videos_per_sample;
    if n == 0 {
        return Ok(VideoPlan::default());
    }
    let Some(rule) = &tower.videos else {
        return Err(Error::field("videos_per_sample", n, "0: this model's processor takes no videos"));
    };
    let frames = plan.num_frames;
    let mut one = rule.per_video(&tower.images, frames, plan.video_max_pixels, None)?;
    let budget = plan.max_length.saturating_sub(reserved) / n;
    if one.tokens > budget {
        let groups = frames.div_ceil(rule.temporal_patch_size);
        let room = budget.saturating_sub(rule.text_tokens(frames)) / groups;
        if plan.video_max_pixels.is_some() || room == 0 {
            return Err(Error::field(
                "max_length",
                plan.max_length,
                format!(
                    "at least {} tokens: {n} video(s) of {frames} frames per sample take {} tokens each, and trl truncates \
                     inside them (\"Video features and video tokens do not match\"); lower video_max_pixels, num_frames or videos_per_sample",
                    one.tokens.saturating_mul(n),
                    one.tokens
                ),
            ));
        }
        one = rule.per_video(&tower.images, frames, None, Some(room))?;
    }
    Ok(VideoPlan { patches: one.patches * n, tokens: one.tokens * n, context: one.group_patches })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qwen2() -> (ImageRule, VideoRule) {
        (
            ImageRule::Dynamic { patch_size: 14, merge_size: 2, min_pixels: 3136, max_pixels: 1_003_520 },
            VideoRule { temporal_patch_size: 2, min_pixels: 128 * 784, max_pixels: 768 * 784, pixels_span_frames: false, timestamp_fps: 0 },
        )
    }

    /// Qwen2-VL at its video default 768·28² px per frame: 16 frames = 8 groups × 768 tokens;
    /// 15 frames pad to 16; 1 frame pads to 2 (one group).
    #[test]
    fn qwen2_counts_groups_of_two_frames() {
        let (img, v) = qwen2();
        assert_eq!(v.per_video(&img, 16, None, None).unwrap(), PerVideo { patches: 8 * 3072, tokens: 8 * 768, group_patches: 3072 });
        assert_eq!(v.per_video(&img, 15, None, None).unwrap().tokens, 8 * 768);
        assert_eq!(v.per_video(&img, 1, None, None).unwrap().tokens, 768);
        // a cap below the video min_pixels (128 tokens) lowers it: one token per group
        assert_eq!(v.per_video(&img, 4, Some(784), None).unwrap().tokens, 2);
    }

    /// Qwen3-VL: 786,432 px over all frames at factor 32: 8 frames → 98,304 px per frame = 96
    /// tokens per group, 4 groups; timestamps at 2 fps: groups at 0.25, 1.25, 2.25, 3.25 s,
    /// one integer digit each → 8 text tokens per group.
    #[test]
    fn qwen3_budget_spans_frames_and_adds_timestamps() {
        let img = ImageRule::Dynamic { patch_size: 16, merge_size: 2, min_pixels: 65_536, max_pixels: 16_777_216 };
        let v = VideoRule { temporal_patch_size: 2, min_pixels: 128 * 1024, max_pixels: 768 * 1024, pixels_span_frames: true, timestamp_fps: 2 };
        let one = v.per_video(&img, 8, None, None).unwrap();
        assert_eq!(one.group_patches, 96 * 4);
        assert_eq!(one.tokens, 4 * 96 + 4 * 8);
        // 40 frames: 20 groups at (4g + 1)/4 s → t ≥ 10 s from g = 10 on: 10 groups of 2 digits
        assert_eq!(v.per_video(&img, 40, None, None).unwrap().tokens, 20 * (786_432 / 40 / 1024) + 10 * 8 + 10 * 9);
        assert!(v.per_video(&img, 1, None, None).is_err());
        assert_eq!(round_half_even(5, 2), 4);
        assert_eq!(round_half_even(3, 2), 4);
    }
}
