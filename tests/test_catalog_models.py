"""The embedded model catalog (forge_advisor/catalog/models.json) and ``--model`` errors.

Exact counts against transformers are in test_shapes_meta.py; here: the catalog is big
and varied enough, well formed, parses without torch-side help, and agrees with the
parameter counts the model cards publish.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from forge_advisor.catalog import load_catalog
from forge_advisor.shapes import shape_from_config, supported_model_types
from forge_advisor.shapes.catalog import catalog_models, find_catalog_model

MODELS = catalog_models()
RAW = {m["id"]: m for m in load_catalog("models")["models"]}

REQUIRED = [
    "meta-llama/Llama-2-7b-hf", "meta-llama/Llama-2-13b-hf", "meta-llama/Llama-2-70b-hf",
    "meta-llama/Meta-Llama-3-8B", "meta-llama/Llama-3.1-8B", "meta-llama/Llama-3.1-70B", "meta-llama/Llama-3.1-405B",
    "meta-llama/Llama-3.2-1B", "meta-llama/Llama-3.2-3B", "meta-llama/Llama-3.3-70B-Instruct",
    "mistralai/Mistral-7B-v0.1", "mistralai/Mistral-7B-v0.3", "mistralai/Mistral-Nemo-Base-2407", "mistralai/Mixtral-8x7B-v0.1",
    "Qwen/Qwen2.5-0.5B", "Qwen/Qwen2.5-7B", "Qwen/Qwen2.5-14B", "Qwen/Qwen2.5-72B",
    "Qwen/Qwen3-0.6B", "Qwen/Qwen3-8B", "Qwen/Qwen3-32B", "Qwen/Qwen1.5-MoE-A2.7B", "Qwen/Qwen3-30B-A3B",
    "google/gemma-2b", "google/gemma-7b", "google/gemma-2-2b", "google/gemma-2-9b", "google/gemma-2-27b",
    "google/gemma-3-1b-pt", "google/gemma-3-4b-pt",
    "microsoft/phi-2", "microsoft/Phi-3-mini-4k-instruct", "microsoft/phi-4",
    "openai-community/gpt2", "openai-community/gpt2-xl",
    "facebook/opt-125m", "facebook/opt-350m", "facebook/opt-1.3b", "facebook/opt-6.7b",
    "tiiuae/falcon-7b", "tiiuae/falcon-40b",
    "EleutherAI/pythia-160m", "EleutherAI/pythia-6.9b", "EleutherAI/pythia-12b", "EleutherAI/gpt-neox-20b",
    "google/flan-t5-base", "bigscience/mt0-base",
]
MODEL_TYPES = {
    "llama", "mistral", "mixtral", "qwen2", "qwen3", "qwen2_moe", "qwen3_moe", "gemma", "gemma2", "gemma3_text",
    "gemma3", "phi", "phi3", "gpt2", "opt", "falcon", "gpt_neox", "t5", "mt5",
}


def published(text: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([MB])", text)
    assert m, f"published_parameters {text!r} is not like '8.03B' or '124M'"
    return float(m[1]) * (1e6 if m[2] == "M" else 1e9)


def rounding(text: str) -> float:
    """Half a unit in the last published digit: "7B" stands for 6.5B-7.5B, "6.74B" for 6.735B-6.745B."""
    m = re.fullmatch(r"\d+(?:\.(\d+))?([MB])", text)
    assert m
    decimals = len(m[1] or "")
    return 0.5 * 10.0 ** -decimals * (1e6 if m[2] == "M" else 1e9)


def test_catalog_is_big_and_unique() -> None:
    assert len(MODELS) >= 80
    ids = [m.id for m in MODELS]
    assert len(ids) == len(set(ids))
    keys = [k.lower() for m in MODELS for k in (m.id, *m.aliases)]
    assert len(keys) == len(set(keys)), "an alias collides with another model"
    for m in MODELS:
        assert m.source == f"https://huggingface.co/{m.id}/blob/main/config.json"
        # a config read from a faithful copy (a mirror repo or a derivative with the same
        # architecture fields) says where it was read
        assert set(RAW[m.id]) <= {"id", "aliases", "family", "published_parameters", "source", "transcribed_from", "config"}
        assert m.family and m.aliases
        assert find_catalog_model(m.id) is m and find_catalog_model(m.aliases[0]) is m


def test_required_models_and_families_present() -> None:
    ids = {m.id for m in MODELS}
    assert not set(REQUIRED) - ids
    assert MODEL_TYPES <= {m.config["model_type"] for m in MODELS}
    # every catalog model parses without transformers (the advisor path stays torch-free)
    assert {m.config["model_type"] for m in MODELS} <= set(supported_model_types())


@pytest.mark.parametrize("entry", MODELS, ids=[m.id for m in MODELS])
def test_published_parameters_agree_with_count(entry) -> None:  # type: ignore[no-untyped-def]
    shape = shape_from_config(dict(entry.config), entry.id)
    count = shape.num_parameters
    # transformers 5 ties T5/mT5's lm_head to `shared` whatever the config says
    # (configuration_t5.py / configuration_mt5.py __post_init__: tie_word_embeddings = True),
    # while Flan-T5 / mT0 checkpoints, which the model cards count, store their own head.
    if entry.config["model_type"] in ("t5", "mt5") and entry.config.get("tie_word_embeddings") is False:
        count += shape.vocab_size * shape.hidden_size
    card = published(entry.published_parameters)
    # within the published figure's own rounding, plus 2% for what cards leave out
    assert abs(count - card) <= rounding(entry.published_parameters) + 0.02 * card, (
        f"{entry.id}: counted {count:,} vs card {entry.published_parameters}"
    )


def test_sizes_span_the_range() -> None:
    counts = [shape_from_config(dict(m.config), m.id).num_parameters for m in MODELS]
    assert min(counts) < 0.15e9 and max(counts) > 400e9


def test_catalog_configs_keep_published_quirks() -> None:
    opt350 = RAW["facebook/opt-350m"]["config"]
    assert opt350["word_embed_proj_dim"] == 512 and opt350["hidden_size"] == 1024 and not opt350["do_layer_norm_before"]
    shape = shape_from_config(dict(opt350), "opt-350m")
    assert {p.name for p in shape.params} >= {"model.decoder.project_in.weight", "model.decoder.project_out.weight"}
    assert RAW["tiiuae/falcon-40b"]["config"]["new_decoder_architecture"] is True
    assert RAW["tiiuae/falcon-7b"]["config"]["multi_query"] is True
    assert shape_from_config(dict(RAW["tiiuae/falcon-7b"]["config"]), "f").num_key_value_heads == 1


# -- `forge-advisor inspect --model X`: bad inputs exit 2 with one line -------------------------


def run_inspect(model: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "forge_advisor.cli.main", "inspect", "--model", model],
        capture_output=True, text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )


def assert_one_line_error(res: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "Traceback" not in res.stderr
    for f in fragments:
        assert f in lines[0]


def test_cli_bad_path(tmp_path: Path) -> None:
    assert_one_line_error(run_inspect(str(tmp_path / "nope" / "config.json")), "no such file")


def test_cli_malformed_json(tmp_path: Path) -> None:
    bad = tmp_path / "config.json"
    bad.write_text('{"model_type": "llama", "hidden_size": 4096,,}')
    assert_one_line_error(run_inspect(str(bad)), "malformed JSON")


def test_cli_unknown_model_suggests() -> None:
    assert_one_line_error(run_inspect("meta-llama/Llama-3.1-8C"), "unknown model", "did you mean", "Llama-3.1-8B")


def test_cli_negative_field(tmp_path: Path) -> None:
    cfg = dict(RAW["meta-llama/Llama-3.2-1B"]["config"], hidden_size=-2048)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    assert_one_line_error(run_inspect(str(path)), "hidden_size", "-2048")


def test_cli_inspect_catalog_model_json() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "forge_advisor.cli.main", "inspect", "--model", "gpt2", "--json"],
        capture_output=True, text=True, timeout=120,
    )
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["num_parameters"] == 124_439_808  # GPT2LMHeadModel on the meta device (test_shapes_meta.py)
    assert {lin["name"] for lin in report["linear_modules"]} == {"attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"}
