"""``forge-advisor train --demo``: a tiny random model, an offline tokenizer, shipped text.

The model is Llama-3.1-8B's published config (from the embedded catalog) scaled down:
hidden 4096 -> 64, 32 layers -> 2, 32/8 heads -> 4/2 of dim 16, intermediate 14336 -> 128,
and the vocabulary replaced by a 256-byte tokenizer + 3 specials = 259 entries. Per layer:
attention 64·64 + 64·32 + 64·32 + 64·64 = 12,288, MLP 3 · 64·128 = 24,576, norms 128, so
36,992; in all 259·64 (embeddings) + 2 × 36,992 + 64 (norm) + 259·64 (head) = 107,200 parameters:
it trains on a CPU in seconds, enough to watch the loss fall and the callbacks report.
"""

from __future__ import annotations

import json
import random
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = ["DEMO_BASE_MODEL", "demo_data_path", "build_tokenizer", "build_demo_model", "write_demo_dpo", "DEMO_OVERRIDES"]

DEMO_BASE_MODEL = "meta-llama/Llama-3.1-8B"
SPECIALS = ("<|pad|>", "<|bos|>", "<|eos|>")
# small and quick: 30 optimizer steps of 8 sequences × ≤ 128 tokens
DEMO_OVERRIDES: dict[str, Any] = {
    "max_steps": 30,
    "per_device_train_batch_size": 8,
    "gradient_accumulation_steps": 1,
    "learning_rate": 3e-3,
    "max_length": 128,
    "max_prompt_length": 64,
    "logging_steps": 5,
    "save_steps": 10,
    "gradient_checkpointing": False,
    "bf16": False,
    "fp16": False,
}
SCALE = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "vocab_size": 256 + len(SPECIALS),
    "pad_token_id": 0,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "tie_word_embeddings": False,
    "dtype": "float32",
}


def demo_data_path() -> Path:
    return Path(str(resources.files("forge_advisor") / "data" / "demo.jsonl"))


def build_tokenizer() -> Any:
    """A byte-level tokenizer with no merges: ids 0–2 specials, 3–258 the 256 bytes. Offline."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for ch in pre_tokenizers.ByteLevel.alphabet():
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=SPECIALS[0], bos_token=SPECIALS[1], eos_token=SPECIALS[2])
    fast.chat_template = (
        "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}" + SPECIALS[2] + "\n{% endfor %}"
    )
    return fast


def build_demo_model(directory: str | Path, *, seed: int = 0) -> Path:
    """Write a random-initialised scaled-down Llama and its tokenizer to ``directory``."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from forge_advisor.shapes.catalog import find_catalog_model

    entry = find_catalog_model(DEMO_BASE_MODEL)
    assert entry is not None, "the catalog ships Llama-3.1-8B"
    cfg = {k: v for k, v in entry.config.items() if k not in ("torch_dtype",)}
    cfg.update(SCALE)
    config = AutoConfig.for_model(**cfg)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    build_tokenizer().save_pretrained(directory)
    return directory


def write_demo_dpo(path: str | Path, *, seed: int = 0) -> Path:
    """Preference pairs from the demo text: prompt = a line's first words, chosen = its true
    ending, rejected = another line's ending."""
    rng = random.Random(seed)
    lines = [json.loads(x)["text"] for x in demo_data_path().read_text(encoding="utf-8").splitlines() if x.strip()]
    path = Path(path)
    with path.open("w", encoding="utf-8") as fh:
        for i, line in enumerate(lines):
            words = line.split()
            cut = max(1, len(words) // 2)
            other = lines[(i + rng.randrange(1, len(lines))) % len(lines)].split()
            rec = {
                "prompt": " ".join(words[:cut]),
                "chosen": " " + " ".join(words[cut:]),
                "rejected": " " + " ".join(other[len(other) // 2:]),
            }
            fh.write(json.dumps(rec) + "\n")
    return path
