"""`train` on vision-language models: tiny random Qwen2.5-VL and Gemma 3 built from configs,
a few PNG images made here, trl-style records. Real transformers/peft/trl, CPU."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoModelForImageTextToText, AutoProcessor, TrainerCallback

from forge_advisor.cli.main import main
from forge_advisor.presets import get_preset
from forge_advisor.presets.io import save_preset
from forge_advisor.train import run
from forge_advisor.train.demo import build_tokenizer

TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>\n{% if m['content'] is string %}{{ m['content'] }}{% else %}"
            "{% for c in m['content'] %}{% if c['type'] == 'image' %}IMAGE{% elif c['type'] == 'text' %}{{ c['text'] }}"
            "{% endif %}{% endfor %}{% endif %}<|eos|>\n{% endfor %}")
SIZES = [(64, 48), (120, 90), (40, 40), (200, 60)]  # (width, height) of the test images
FAST = {"per_device_train_batch_size": 1, "gradient_accumulation_steps": 1, "logging_steps": 1, "save_steps": 1000,
        "gradient_checkpointing": False, "bf16": False, "fp16": False, "learning_rate": 5e-2, "max_length": 512,
        "lora_dropout": 0.0}


def _tokenizer(tokens: list[str], **named: str):
    """The demo's byte-level tokenizer plus the model's image tokens (``named``: the attributes
    its processor reads, e.g. Gemma 3's ``boi_token``, saved with the tokenizer)."""
    tok = build_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": tokens})
    if named:
        tok._set_model_specific_special_tokens(special_tokens=named)
    return tok, {t: tok.convert_tokens_to_ids(t) for t in tokens}


def build_qwen25_vl(folder, vision_depth: int = 2) -> str:
    from transformers import AutoConfig
    from transformers.models.qwen2_5_vl.processing_qwen2_5_vl import Qwen2_5_VLProcessor
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    tok, ids = _tokenizer(["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"])
    cfg = AutoConfig.for_model(
        "qwen2_5_vl",
        text_config=dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, bos_token_id=1, eos_token_id=2, pad_token_id=0,
                         rope_parameters={"rope_type": "default", "mrope_section": [2, 2, 4], "rope_theta": 10000.0}),
        vision_config=dict(depth=vision_depth, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                           fullatt_block_indexes=[vision_depth - 1], window_size=56),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"], tie_word_embeddings=False)
    torch.manual_seed(0)
    AutoModelForImageTextToText.from_config(cfg).save_pretrained(folder)
    template = TEMPLATE.replace("IMAGE", "<|vision_start|><|image_pad|><|vision_end|>")
    Qwen2_5_VLProcessor(image_processor=Qwen2VLImageProcessor(), tokenizer=tok, video_processor=Qwen2VLVideoProcessor(),
                        chat_template=template).save_pretrained(folder)
    return str(folder)


def build_gemma3(folder) -> str:
    from transformers import AutoConfig
    from transformers.models.gemma3.image_processing_gemma3 import Gemma3ImageProcessor
    from transformers.models.gemma3.processing_gemma3 import Gemma3Processor

    tok, ids = _tokenizer(["<start_of_image>", "<end_of_image>", "<image_soft_token>"], boi_token="<start_of_image>",
                          eoi_token="<end_of_image>", image_token="<image_soft_token>")
    cfg = AutoConfig.for_model(
        "gemma3",
        text_config=dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16, bos_token_id=1, eos_token_id=2,
                         pad_token_id=0, sliding_window=64, query_pre_attn_scalar=16),
        # 56 px / 14 px patches = 4 × 4 patches, pooled 2 × 2 into mm_tokens_per_image = 4 tokens per image
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=56, patch_size=14, vision_use_head=False),
        mm_tokens_per_image=4, image_token_index=ids["<image_soft_token>"], boi_token_index=ids["<start_of_image>"],
        eoi_token_index=ids["<end_of_image>"], tie_word_embeddings=True)
    torch.manual_seed(0)
    AutoModelForImageTextToText.from_config(cfg).save_pretrained(folder)
    Gemma3Processor(image_processor=Gemma3ImageProcessor(size={"height": 56, "width": 56}), tokenizer=tok,
                    chat_template=TEMPLATE.replace("IMAGE", "<start_of_image>"), image_seq_length=4).save_pretrained(folder)
    return str(folder)


def build_llava(folder) -> str:
    from transformers import AutoConfig
    from transformers.models.llava.image_processing_llava import LlavaImageProcessor
    from transformers.models.llava.processing_llava import LlavaProcessor

    tok, ids = _tokenizer(["<image>"])
    cfg = AutoConfig.for_model(
        "llava",
        text_config=dict(model_type="llama", vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, bos_token_id=1,
                         eos_token_id=2, pad_token_id=0),
        # CLIP at 28 px / 14 px patches: 2·2 patch tokens + CLS; the "default" strategy drops CLS -> 4 per image
        vision_config=dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, image_size=28, patch_size=14, projection_dim=32),
        image_token_index=ids["<image>"], vision_feature_layer=-1, vision_feature_select_strategy="default",
        tie_word_embeddings=False)
    torch.manual_seed(0)
    AutoModelForImageTextToText.from_config(cfg).save_pretrained(folder)
    LlavaProcessor(image_processor=LlavaImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28}),
                   tokenizer=tok, patch_size=14, vision_feature_select_strategy="default", num_additional_image_tokens=1,
                   chat_template=TEMPLATE.replace("IMAGE", "<image>")).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    return build_qwen25_vl(tmp_path_factory.mktemp("qwen") / "model")


@pytest.fixture(scope="module")
def gemma(tmp_path_factory):
    return build_gemma3(tmp_path_factory.mktemp("gemma") / "model")


def write_data(folder, n: int = 4) -> str:
    """n records: one or two images each (relative paths), content-list messages; one plain-string record."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "img").mkdir(exist_ok=True)
    for i, (w, h) in enumerate(SIZES):
        Image.new("RGB", (w, h), (40 * i, 255 - 50 * i, 90)).save(folder / "img" / f"{i}.png")
    rows = []
    for i in range(n):
        two = i % 2 == 1
        images = [f"img/{i % len(SIZES)}.png"] + ([f"img/{(i + 1) % len(SIZES)}.png"] if two else [])
        content = [{"type": "image"}] * len(images) + [{"type": "text", "text": f"what is in picture {i}?"}]
        rows.append({"messages": [{"role": "user", "content": content},
                                  {"role": "assistant", "content": [{"type": "text", "text": f"colour {i}"}]}],
                     "images": images})
    path = folder / "vlm.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


class Watch(TrainerCallback):
    """Counts the vision tower's forward calls (pixel_values reached it) and keeps its grid
    argument and the final number of input tokens the Trainer saw."""

    def __init__(self) -> None:
        self.calls, self.grids, self.tokens_seen = 0, [], None

    def on_train_begin(self, args, state, control, model=None, **kw):
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        tower = base.get_encoder(modality="image")

        def hook(module, a, k):
            self.calls += 1
            grid = k.get("grid_thw", a[1] if len(a) > 1 else None)
            if grid is not None:
                self.grids.append(grid.detach().clone())

        tower.register_forward_pre_hook(hook, with_kwargs=True)

    def on_train_end(self, args, state, control, **kw):
        self.tokens_seen = state.num_input_tokens_seen


def expected_lengths(model_dir: str, data: str, max_pixels: int | None = None) -> list[int]:
    """Each record's input_ids length as transformers' processor builds it (text + image tokens)."""
    from pathlib import Path

    proc = AutoProcessor.from_pretrained(model_dir)
    kwargs = {"processor_kwargs": {"images_kwargs": {"max_pixels": max_pixels}}} if max_pixels else {}
    out = []
    for line in Path(data).read_text().splitlines():
        rec = json.loads(line)
        images = iter([Image.open(Path(data).parent / p).convert("RGB") for p in rec["images"]])
        msgs = [{**m, "content": [{**c, "image": next(images)} if c["type"] == "image" else c for c in m["content"]]}
                for m in rec["messages"]]
        ids = proc.apply_chat_template(msgs, tokenize=True, return_dict=True, **kwargs)["input_ids"]
        out.append(len(ids[0]) if isinstance(ids[0], list) else len(ids))
    return out


def _tower_state(model_dir: str) -> tuple[dict[str, torch.Tensor], str]:
    model = AutoModelForImageTextToText.from_pretrained(model_dir)
    tower = model.get_encoder(modality="image")
    prefix = next(n for n, m in model.named_modules() if m is tower)
    return {k: v.clone() for k, v in model.state_dict().items() if k.startswith(prefix + ".")}, prefix


def _changed(before: dict[str, torch.Tensor], after_dir: str) -> set[str]:
    after = AutoModelForImageTextToText.from_pretrained(after_dir).state_dict()
    return {k for k, v in before.items() if not torch.equal(v, after[k])}


@pytest.mark.parametrize("freeze", [True, False])
def test_qwen25_vl_full_finetune_trains_the_tower_only_when_asked(qwen, tmp_path, freeze):
    data = write_data(tmp_path / "d")
    before, prefix = _tower_state(qwen)
    watch = Watch()
    r = run(qwen, data, "sft", tmp_path / "out", overrides={**FAST, "max_steps": 4, "freeze_vision_tower": freeze},
            callbacks=[watch], quiet=True)
    assert r.status == "completed" and r.global_step == 4 and r.final_loss is not None
    assert torch.isfinite(torch.tensor(r.final_loss))
    assert watch.calls >= 4  # every step's pixel_values went through the vision tower
    assert watch.tokens_seen == sum(expected_lengths(qwen, data))  # image placeholder tokens included
    changed = _changed(before, str(tmp_path / "out" / "model"))
    merger = {k for k in before if k.startswith(prefix + ".merger.")}
    if freeze:
        # the tower is frozen; the projector (Qwen's merger, inside the tower) trains with the language model
        assert changed and changed <= merger
    else:
        assert changed - merger  # the tower's own blocks trained


def test_qwen25_vl_lora_keeps_adapters_off_a_frozen_tower(qwen, tmp_path):
    data = write_data(tmp_path / "d")
    r = run(qwen, data, "lora", tmp_path / "out",
            overrides={**FAST, "max_steps": 2, "lora_target_modules": "all-linear"}, quiet=True)
    keys = load_file(str(tmp_path / "out" / "adapter" / "adapter_model.safetensors")).keys()
    assert r.global_step == 2 and torch.isfinite(torch.tensor(r.final_loss))
    assert any(".language_model." in k for k in keys)
    assert not any(".visual." in k for k in keys)  # neither the tower nor its merger has adapters
    r = run(qwen, data, "lora", tmp_path / "out2", quiet=True,
            overrides={**FAST, "max_steps": 1, "lora_target_modules": "all-linear", "freeze_vision_tower": False})
    keys = load_file(str(tmp_path / "out2" / "adapter" / "adapter_model.safetensors")).keys()
    assert any(".visual.blocks." in k for k in keys) and not any(".visual.merger." in k for k in keys)


def test_max_pixels_shrinks_the_image_grid(qwen, tmp_path):
    data = write_data(tmp_path / "d")
    grids = {}
    for max_pixels in (None, 56 * 56):
        watch = Watch()
        run(qwen, data, "lora", tmp_path / f"out-{max_pixels}", callbacks=[watch], quiet=True,
            overrides={**FAST, "max_steps": 4, "max_pixels": max_pixels})
        grids[max_pixels] = torch.cat(watch.grids)
        assert watch.tokens_seen == sum(expected_lengths(qwen, data, max_pixels))
    small, default = grids[56 * 56].prod(-1), grids[None].prod(-1)
    # smart_resize keeps h·w ≤ max_pixels: at most 56²/14² = 16 patches per image (4 tokens after the 2×2 merge);
    # by default the 200×60 image is 196×56 px = 14·4 = 56 patches
    assert (small <= 16).all() and default.max() == 56 and small.sum() < default.sum()


def test_gemma3_trains_with_images_and_says_max_pixels_does_not_apply(gemma, tmp_path, capsys):
    data = write_data(tmp_path / "d")
    before, _ = _tower_state(gemma)
    watch = Watch()
    events = tmp_path / "events.jsonl"
    r = run(gemma, data, "sft", tmp_path / "out", callbacks=[watch], events=events,
            overrides={**FAST, "max_steps": 4, "max_pixels": 50_000})
    out = capsys.readouterr().out
    assert r.global_step == 4 and torch.isfinite(torch.tensor(r.final_loss)) and watch.calls >= 4
    assert out.count("max_pixels=50,000 does not apply to Gemma3ImageProcessor") == 1
    assert not _changed(before, str(tmp_path / "out" / "model"))  # frozen tower
    # 4 records with 1, 2, 1, 2 images: each image is 4 soft tokens (mm_tokens_per_image)
    start = json.loads(events.read_text().splitlines()[0])
    assert start["event"] == "start" and start["vision"]["images"] == 6 and start["vision"]["image_tokens"] == 24
    assert watch.tokens_seen == sum(expected_lengths(gemma, data))


def test_text_only_data_on_a_vlm_still_trains(gemma, tmp_path):
    chat = tmp_path / "chat.jsonl"
    # string contents and trl's text blocks mixed (one Arrow type after flattening)
    blocks = [{"type": "text", "text": "hel"}, {"type": "text", "text": "lo"}]
    chat.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"hi {i}"},
                                                     {"role": "assistant", "content": blocks if i % 2 else "hello"}]})
                            + "\n" for i in range(4)))
    r = run(gemma, str(chat), "lora", tmp_path / "out", overrides={**FAST, "max_steps": 2}, quiet=True)
    assert r.global_step == 2
    from forge_advisor.train.data import load_dataset_for
    from forge_advisor.train.data import inspect_data

    rows = load_dataset_for(inspect_data(chat))["messages"]
    assert rows[1][1] == {"role": "assistant", "content": "hello"} == rows[0][1]


def _cli(capsys, *argv):
    code = main(["train", *argv])
    return code, capsys.readouterr().err.strip()


def test_bad_vision_inputs_exit_2_with_one_line(qwen, tmp_path, capsys):
    from forge_advisor.train.demo import build_demo_model

    text_model = str(build_demo_model(tmp_path / "text-model"))
    good = write_data(tmp_path / "d")
    folder = tmp_path / "d"
    (folder / "broken.png").write_bytes(b"not an image at all")
    rec = json.loads(open(good).readline())

    def variant(name: str, **change) -> str:
        path = folder / f"{name}.jsonl"
        path.write_text(json.dumps(rec) + "\n" + json.dumps({**rec, **change}) + "\n")
        return str(path)

    missing = variant("missing", images=["img/nope.png"])
    unreadable = variant("unreadable", images=["broken.png"])
    user = {"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "two?"}]}
    too_many = variant("placeholders", messages=[user, rec["messages"][1]])
    preset_file = tmp_path / "plan.json"
    save_preset(get_preset("lora", **FAST, max_steps=1), preset_file)
    out = str(tmp_path / "out")
    capsys.readouterr()  # building the text model's progress bar
    cases = [
        ([qwen, missing], "missing.jsonl:2: image file", "not found"),
        ([qwen, unreadable], "unreadable.jsonl:2: cannot read image", "broken.png"),
        ([qwen, too_many], "placeholders.jsonl:2: 2 {\"type\": \"image\"} placeholder(s) but 1 image(s)", "images"),
        ([text_model, good], "vlm.jsonl:1: the record has images but", "text-only model"),
    ]
    for (model, data), message, also in cases:
        code, err = _cli(capsys, "--model", model, "--data", data, "--output", out, "--preset-file", str(preset_file))
        assert code == 2, err
        assert len(err.splitlines()) == 1 and err.startswith("error: ") and message in err and also in err, err
        assert "Traceback" not in err
    assert not (tmp_path / "out").exists()  # nothing written


def test_data_report_counts_images_per_sample(tmp_path, capsys):
    data = write_data(tmp_path / "d", n=5)  # 1, 2, 1, 2, 1 images
    assert main(["data", "--model", "meta-llama/Llama-3.1-8B", "--data", data, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["lengths"]["images_per_sample"] == {"max": 2, "p50": 1, "total": 7}
    assert main(["data", "--model", "meta-llama/Llama-3.1-8B", "--data", data]) == 0
    assert "images per sample: max 2 · typical (p50) 1 · 7 in all" in capsys.readouterr().out


def test_qlora_keeps_the_vision_tower_out_of_4bit(qwen, tmp_path):
    import bitsandbytes as bnb

    seen = {}

    class Kinds(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kw):
            for name, mod in model.named_modules():
                if isinstance(mod, torch.nn.Linear):
                    seen[name] = isinstance(mod, bnb.nn.Linear4bit)

    data = write_data(tmp_path / "d")
    r = run(qwen, data, "qlora", tmp_path / "out", overrides={**FAST, "max_steps": 1}, callbacks=[Kinds()], quiet=True)
    assert r.global_step == 1 and torch.isfinite(torch.tensor(r.final_loss))
    tower = {n: q for n, q in seen.items() if ".visual." in n}
    language = {n: q for n, q in seen.items() if ".language_model." in n and n.endswith(("mlp.up_proj", "mlp.down_proj"))}
    assert tower and not any(tower.values())  # blocks and merger in the compute dtype
    assert language and all(language.values())  # the language model's linears are NF4
    assert not seen.get("base_model.model.lm_head", True)  # the head stays unquantised, as transformers' default


def test_freeze_ratio_counts_the_language_models_layers(tmp_path):
    # 12 vision blocks of ~10k parameters outweigh the 2 language layers of ~37k: the block list with the
    # most parameters is the tower's, but freeze_ratio is about the language model's layers
    model = build_qwen25_vl(tmp_path / "deep-tower", vision_depth=12)
    data = write_data(tmp_path / "d")
    r = run(model, data, "lora", tmp_path / "out", overrides={**FAST, "max_steps": 1, "freeze_ratio": 0.5}, quiet=True)
    assert r.global_step == 1 and r.frozen_layers == (0,)
    # LoRA r 16 on q/k/v/o of the one trainable layer: 16·(64+64)·2 + 16·(64+32)·2 = 7,168
    assert r.trainable_parameters == 7168


def test_max_length_that_would_cut_an_image_is_one_line(qwen, tmp_path, capsys):
    data = write_data(tmp_path / "d")
    # by default the 120×90 image of record 2 is 112×84 px = 8·6 patches = 12 tokens, after ~12 text tokens
    code, err = _cli(capsys, "--model", qwen, "--data", data, "--output", str(tmp_path / "out"), "--preset", "lora",
                     "--max-length", "16", "--max-steps", "1", "--bf16", "false")
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert "vlm.jsonl:" in err and "past max_length 16" in err and "--max-pixels" in err
    # a max_length that cuts only text after the images: it trains, and says what was truncated
    lengths = expected_lengths(qwen, data)
    cut = max(lengths) - 3  # the longest record's last tokens: its assistant turn, after its images
    r = run(qwen, data, "lora", tmp_path / "ok", overrides={**FAST, "max_steps": 1, "max_length": cut})
    out = capsys.readouterr().out
    longer = sum(n > cut for n in lengths)
    assert r.global_step == 1 and f"data: {longer} of 4 records truncated at max_length {cut}" in out


def test_llava_trains_its_projector_with_a_frozen_tower(tmp_path):
    model = build_llava(tmp_path / "llava")
    data = write_data(tmp_path / "d")
    before = AutoModelForImageTextToText.from_pretrained(model).state_dict()
    watch = Watch()
    r = run(model, data, "sft", tmp_path / "out", callbacks=[watch], quiet=True, overrides={**FAST, "max_steps": 4})
    assert r.global_step == 4 and torch.isfinite(torch.tensor(r.final_loss)) and watch.calls >= 4
    assert watch.tokens_seen == sum(expected_lengths(model, data))
    after = AutoModelForImageTextToText.from_pretrained(str(tmp_path / "out" / "model")).state_dict()
    changed = {k for k, v in before.items() if not torch.equal(v, after[k])}
    assert not any(k.startswith("model.vision_tower.") for k in changed)
    assert any(k.startswith("model.multi_modal_projector.") for k in changed)
    assert any(k.startswith("model.language_model.") for k in changed)


def build_mllama(folder) -> str:
    """A tiny Llama 3.2 Vision: cross-attention layer 1 of 3, a tower of 2 local + 1 global
    blocks at 56 px tiles of 14 px patches (17 positions per tile, 4 tiles per image)."""
    from transformers import AutoConfig
    from transformers.models.mllama.image_processing_mllama import MllamaImageProcessor
    from transformers.models.mllama.processing_mllama import MllamaProcessor

    tok, ids = _tokenizer(["<|image|>", "<|python_tag|>"])
    cfg = AutoConfig.for_model(
        "mllama",
        text_config=dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2, cross_attention_layers=[1], bos_token_id=1,
                         eos_token_id=2, pad_token_id=0),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_global_layers=1,
                           attention_heads=2, image_size=56, patch_size=14, vision_output_dim=96,
                           intermediate_layers_indices=[0, 1]),
        image_token_index=ids["<|image|>"])
    torch.manual_seed(0)
    AutoModelForImageTextToText.from_config(cfg).save_pretrained(folder)
    MllamaProcessor(image_processor=MllamaImageProcessor(size={"height": 56, "width": 56}, max_image_tiles=4),
                    tokenizer=tok, chat_template=TEMPLATE.replace("IMAGE", "<|image|>")).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def mllama(tmp_path_factory):
    return build_mllama(tmp_path_factory.mktemp("mllama") / "model")


@pytest.mark.parametrize("freeze", [True, False])
def test_mllama_full_finetune_trains_the_tower_only_when_asked(mllama, tmp_path, freeze):
    """Llama 3.2 Vision: each image is one <|image|> token in the text (the pixels reach the
    decoder through its cross-attention layers); the tower trains only when unfrozen, the
    projector and the cross-attention layers always in full fine-tuning."""
    data = write_data(tmp_path / "d")
    before = AutoModelForImageTextToText.from_pretrained(mllama).state_dict()
    watch = Watch()
    events = tmp_path / "events.jsonl"
    r = run(mllama, data, "sft", tmp_path / "out", callbacks=[watch], events=events, quiet=True,
            overrides={**FAST, "max_steps": 4, "freeze_vision_tower": freeze})
    assert r.status == "completed" and r.global_step == 4 and torch.isfinite(torch.tensor(r.final_loss))
    assert watch.calls >= 4
    assert watch.tokens_seen == sum(expected_lengths(mllama, data))
    start = json.loads(events.read_text().splitlines()[0])
    assert start["vision"]["images"] == 6 and start["vision"]["image_tokens"] == 6  # one token per image
    after = AutoModelForImageTextToText.from_pretrained(str(tmp_path / "out" / "model")).state_dict()
    changed = {k for k, v in before.items() if not torch.equal(v, after[k])}
    tower = {k for k in changed if k.startswith("model.vision_model.")}
    assert bool(tower) == (not freeze)
    assert any(k.startswith("model.multi_modal_projector.") for k in changed)
    assert any(k.startswith("model.language_model.layers.1.cross_attn.") for k in changed)


def test_mllama_lora_keeps_adapters_off_a_frozen_tower(mllama, tmp_path):
    data = write_data(tmp_path / "d")
    r = run(mllama, data, "lora", tmp_path / "out", quiet=True,
            overrides={**FAST, "max_steps": 2, "lora_target_modules": "all-linear"})
    keys = load_file(str(tmp_path / "out" / "adapter" / "adapter_model.safetensors")).keys()
    assert r.global_step == 2 and torch.isfinite(torch.tensor(r.final_loss))
    assert any(".cross_attn.k_proj." in k for k in keys)  # the cross-attention layers are adapted
    assert not any(".vision_model." in k or "multi_modal_projector" in k for k in keys)
    r = run(mllama, data, "lora", tmp_path / "out2", quiet=True,
            overrides={**FAST, "max_steps": 1, "lora_target_modules": "all-linear", "freeze_vision_tower": False,
                       "gradient_checkpointing": True})
    keys = load_file(str(tmp_path / "out2" / "adapter" / "adapter_model.safetensors")).keys()
    assert r.global_step == 1 and any(".vision_model.global_transformer.layers." in k for k in keys)
    assert not any("multi_modal_projector" in k for k in keys)
