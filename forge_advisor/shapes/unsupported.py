"""Why a ``model_type`` has no torch-free parser: the mechanism the parsers do not model.

``reason_for`` gives the one line that ``UnsupportedArchitecture`` prints (and that the
architecture sweep, benches/arch_sweep.py, records). Types transformers does not know at
all get the generic line.
"""

from __future__ import annotations

__all__ = ["REASONS", "reason_for"]

_SSM = "state-space (Mamba) mixer layers"
_SEQ2SEQ_DECODER = "decoder of an encoder-decoder model (cross-attention layers, learned positions)"
# fairseq.py parses these as the decoder-only causal LM (is_encoder_decoder: false); the
# encoder-decoder checkpoint itself goes to the meta-device count
_SEQ2SEQ = "encoder-decoder model: only its decoder-only causal LM (is_encoder_decoder: false) is parsed without torch"
_VISION = "a vision or audio tower besides the language model"

REASONS: dict[str, str] = {
    # decoders of seq2seq models
    "prophetnet": _SEQ2SEQ,
    "bart": _SEQ2SEQ, "mbart": _SEQ2SEQ, "blenderbot": _SEQ2SEQ, "blenderbot-small": _SEQ2SEQ, "marian": _SEQ2SEQ,
    "mvp": _SEQ2SEQ, "pegasus": _SEQ2SEQ, "plbart": _SEQ2SEQ, "bigbird_pegasus": _SEQ2SEQ, "whisper": _SEQ2SEQ,
    "musicgen": _SEQ2SEQ_DECODER, "musicgen_melody": _SEQ2SEQ_DECODER,
    # multimodal causal LMs
    "got_ocr2": _VISION, "phi4_multimodal": _VISION,
    "moss_transcribe_diarize": _VISION, "moshi": "audio codebook streams (Moshi depth decoder)",
    # other mechanisms
    "blt": "byte-latent patching (local encoder/decoder around a global transformer)",
    "doge": "Doge's CDMoE (is_moe: true): retrieval experts held as embedding rows",
    # buildable once the sweep keeps one period of the layer pattern (benches/arch_sweep.py new_depth)
    "gemma3n_text": "AltUp parallel residual streams and LAuReL low-rank blocks (Gemma 3n)",
    "dory": "looped depth: the recurrent block runs n_recurrent_loops times with per-loop caches",
    "dots3_note_text": "per-layer MLA widths (per_layer_config) with indexed (DSA) and sliding layers (dots.3)",
}
_DEFAULT = "no built-in parser for this model_type"


def reason_for(model_type: str) -> str:
    return REASONS.get(model_type, _DEFAULT)
