"""examples/run_mlm.py end to end on a converted tiny RoBERTa (the masking itself: test_masking.py).

The data are the test snippets, several renamed copies of one snippet per row (600-900 tokens, so both position
buckets have tokens), each row in its own language.
"""

import contextlib
import io
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import RobertaConfig, RobertaForMaskedLM

from conftest import WITHOUT_SASA, read_snippet
from sasa import SasaForMaskedLM, SasaTokenizer
from sasa.cli import main as sasa_main
from sasa.masking import MaskingVocabulary, evaluation_mask, far_tokens

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples"))
import run_mlm  # noqa: E402

SNIPPETS = {"example.py": "python", "Example.java": "java", "example.c": "c", "example.js": "javascript"}
NAMES = ["result", "values", "value", "total"]
NEW_NAMES = ["acc", "out", "res", "tally", "items", "xs", "data", "elem", "item", "count", "buf", "node", "cur"]
FLAGS = ["--max_source_length", "1024", "--report_to", "none", "--use_cpu", "--seed", "0", "--disable_tqdm", "true",
         "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "4", "--learning_rate", "3e-3",
         "--lr_scheduler_type", "constant", "--logging_steps", "1"]


pytestmark = pytest.mark.usefixtures("one_thread")


def rows(count: int, seed: int) -> list[dict]:
    """JSON-lines rows ``{"code", "language"}``: 3-4 renamed copies of one snippet each."""
    rng = random.Random(seed)
    result = []
    for _ in range(count):
        name = rng.choice(sorted(SNIPPETS))
        copies = []
        for _ in range(rng.choice([3, 4])):
            mapping = dict(zip(NAMES, rng.sample(NEW_NAMES, len(NAMES))))
            copies.append(re.sub(r"\b(" + "|".join(NAMES) + r")\b", lambda m, names=mapping: names[m.group(1)],
                                 read_snippet(name)))
        result.append({"code": "\n".join(copies), "language": SNIPPETS[name]})
    return result


def write_jsonl(path, data: list[dict]) -> str:
    with open(path, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in data)
    return str(path)


def tiny_roberta(vocab_size: int) -> RobertaForMaskedLM:
    torch.manual_seed(0)
    return RobertaForMaskedLM(RobertaConfig(
        vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=514, type_vocab_size=1, pad_token_id=1, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0, initializer_range=0.1)).eval()


@pytest.fixture(scope="module")
def converted(bpe_dir, tmp_path_factory) -> str:
    """A tiny RobertaForMaskedLM with its tokenizer, converted by ``sasa convert`` to 1024 tokens."""
    directory = tmp_path_factory.mktemp("mlm")
    tokenizer = SasaTokenizer.from_pretrained(bpe_dir)
    tiny_roberta(len(tokenizer)).save_pretrained(directory / "roberta")
    tokenizer.save_pretrained(directory / "roberta")
    with contextlib.redirect_stdout(io.StringIO()):
        assert sasa_main(["convert", str(directory / "roberta"), str(directory / "sasa"),
                          "--max-position-embeddings", "1026"]) == 0
    return str(directory / "sasa")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, str]:
    directory = tmp_path_factory.mktemp("mlm-data")
    return {split: write_jsonl(directory / f"{split}.jsonl", rows(count, seed))
            for split, count, seed in (("train", 48, 0), ("validation", 8, 1), ("test", 4, 2))}


def data_flags(data: dict[str, str]) -> list[str]:
    return [flag for split, path in data.items() for flag in (f"--{split}_file", path)]


def log_history(output_dir) -> list[dict]:
    with open(os.path.join(output_dir, "trainer_state.json"), encoding="utf-8") as handle:
        return json.load(handle)["log_history"]


@pytest.fixture(scope="module")
def trained(converted, data, tmp_path_factory) -> tuple[str, dict]:
    """24 steps from the converted checkpoint, evaluated before and after."""
    output_dir = tmp_path_factory.mktemp("mlm-out")
    results = run_mlm.main(["--model_name_or_path", converted, *data_flags(data), "--output_dir", str(output_dir),
                            "--do_train", "--do_eval", "--do_predict", "--max_steps", "24", "--eval_strategy", "steps",
                            "--eval_steps", "24", "--eval_on_start", "--save_strategy", "no", *FLAGS])
    return str(output_dir), results


# --- the script -----------------------------------------------------------------------------------------------------

def test_masked_lm_from_a_converted_roberta_learns(trained):
    output_dir, results = trained
    evaluations = [entry for entry in log_history(output_dir) if "eval_masked_loss" in entry]
    assert [entry["step"] for entry in evaluations] == [0, 24]
    before, after = evaluations[0], evaluations[-1]
    assert after["eval_masked_loss"] < before["eval_masked_loss"] - 0.5, (before, after)
    assert after["eval_masked_loss_after_512"] < before["eval_masked_loss_after_512"], (before, after)
    losses = [entry["loss"] for entry in log_history(output_dir) if "loss" in entry]
    assert np.mean(losses[-6:]) < np.mean(losses[:6]) - 0.5, losses
    eval_metrics = results["eval"]
    assert eval_metrics["eval_tokens_first_512"] > 0 and eval_metrics["eval_tokens_after_512"] > 0
    assert eval_metrics["eval_far_tokens"] > 0
    assert eval_metrics["eval_tokens"] == eval_metrics["eval_tokens_first_512"] + eval_metrics["eval_tokens_after_512"]
    assert results["test"]["test_tokens"] > 0 and results["test"]["test_masked_loss"] < before["eval_masked_loss"]


def test_bucket_metrics_equal_a_direct_computation(trained, data):
    """The Trainer's evaluation (batches of 4, padded, gathered) against one example at a time, by hand."""
    output_dir, results = trained
    tokenizer = SasaTokenizer.from_pretrained(output_dir)
    model = SasaForMaskedLM.from_pretrained(output_dir).eval()
    vocabulary = MaskingVocabulary.from_tokenizer(tokenizer)
    losses, hits, positions, far = [], [], [], []
    with open(data["validation"], encoding="utf-8") as handle:
        examples = [json.loads(line) for line in handle]
    for example in examples:
        encoded = tokenizer(example["code"], language=example["language"], truncation=True, max_length=1024)
        inputs, labels = evaluation_mask(encoded["input_ids"], vocabulary, "tokens", 0.15, seed=0)
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([inputs]), ast_links=torch.tensor([encoded["ast_links"]])).logits[0]
        labels = torch.tensor(labels)
        hidden = (labels != -100).nonzero()[:, 0]
        losses += F.cross_entropy(logits[hidden], labels[hidden], reduction="none").tolist()
        hits += (logits[hidden].argmax(-1) == labels[hidden]).tolist()
        positions += hidden.tolist()
        far += far_tokens(torch.tensor(encoded["input_ids"]), labels != -100, vocabulary.identifier,
                          model.config.block_size, model.config.window_radius,
                          model.config.num_global_blocks)[hidden].tolist()
    losses, hits, positions, far = map(np.array, (losses, hits, positions, far))
    metrics = results["eval"]
    for name, where in (("", positions >= 0), ("_first_512", positions < 512), ("_after_512", positions >= 512)):
        assert metrics[f"eval_tokens{name}"] == where.sum()
        assert metrics[f"eval_masked_loss{name}"] == pytest.approx(losses[where].mean(), rel=1e-4)
        assert metrics[f"eval_accuracy{name}"] == pytest.approx(hits[where].mean())
    assert metrics["eval_far_tokens"] == far.sum() > 0
    assert metrics["eval_far_masked_loss"] == pytest.approx(losses[far].mean(), rel=1e-4)
    assert metrics["eval_perplexity"] == pytest.approx(np.exp(losses.mean()), rel=1e-4)


FRESH_PROCESS = WITHOUT_SASA + textwrap.dedent(
    """
    import json, sys

    import torch
    import transformers

    case = json.loads(sys.argv[1])
    tokenizer = transformers.AutoTokenizer.from_pretrained(case["path"], trust_remote_code=True)
    model = transformers.AutoModelForMaskedLM.from_pretrained(case["path"], trust_remote_code=True).eval()
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    inputs = tokenizer(case["code"], language=case["language"], return_tensors="pt")
    assert (inputs["ast_links"] >= 0).any() and inputs["input_ids"].shape[1] > 512
    with torch.no_grad():
        logits = model(**inputs).logits
    expected = torch.load(case["expected"])
    assert torch.equal(logits, expected), (logits - expected).abs().max()
    print("identical")
    """
)


def test_output_reloads_as_remote_code_without_the_package_to_identical_logits(trained, data, tmp_path):
    output_dir, _ = trained
    example = rows(1, seed=5)[0]
    tokenizer = SasaTokenizer.from_pretrained(output_dir)
    model = SasaForMaskedLM.from_pretrained(output_dir).eval()
    with torch.no_grad():
        logits = model(**tokenizer(example["code"], language=example["language"], return_tensors="pt")).logits
    torch.save(logits, tmp_path / "expected.pt")
    case = dict(path=output_dir, code=example["code"], language=example["language"],
                expected=str(tmp_path / "expected.pt"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=tempfile.mkdtemp(prefix="fresh-hf-home-"))
    result = subprocess.run([sys.executable, "-c", FRESH_PROCESS, json.dumps(case)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "identical" in result.stdout


def test_a_resumed_run_ends_where_the_uninterrupted_one_does(converted, data, tmp_path):
    """Killed after checkpoint-3 of 6: resumed, it repeats steps 4-6 (fresh masks from the restored generator) and
    ends with the same weights."""
    def train(output_dir, *flags):
        run_mlm.main(["--model_name_or_path", converted, "--train_file", data["train"], "--output_dir",
                      str(output_dir), "--do_train", "--max_steps", "6", "--save_strategy", "steps", "--save_steps",
                      "3", "--masking", "identifiers", *FLAGS, *flags])
        return {entry["step"]: entry["loss"] for entry in log_history(output_dir) if "loss" in entry}

    uninterrupted = train(tmp_path / "full")
    resumed = train(tmp_path / "resumed", "--resume_from_checkpoint", str(tmp_path / "full" / "checkpoint-3"))
    assert sorted(resumed) == list(range(1, 7))  # steps 1-3 from the checkpoint's state, 4-6 run again
    for step in range(4, 7):
        assert resumed[step] == pytest.approx(uninterrupted[step], rel=1e-5), (step, resumed, uninterrupted)
    full = SasaForMaskedLM.from_pretrained(tmp_path / "full").state_dict()
    again = SasaForMaskedLM.from_pretrained(tmp_path / "resumed").state_dict()
    for name, tensor in full.items():
        assert torch.allclose(tensor, again[name], atol=1e-6), name


@pytest.mark.parametrize("case", ["no code column", "bad language", "bad masking", "bad probability",
                                  "default length beyond the model's"])
def test_bad_input_stops_before_training_saying_what_to_fix(case, converted, data, tmp_path):
    flags = ["--model_name_or_path", converted, "--output_dir", str(tmp_path / "out"), "--do_train", *FLAGS]
    if case == "no code column":
        bad = write_jsonl(tmp_path / "train.jsonl", [{"func": "int f() { return 1; }", "language": "c"}])
        with pytest.raises(ValueError, match=r"lacks the column\(s\) \['code'\]"):
            run_mlm.main([*flags, "--train_file", bad])
    elif case == "bad language":
        bad = write_jsonl(tmp_path / "train.jsonl", [{"code": "x = 1", "language": "cobol"}])
        with pytest.raises(ValueError, match="cobol"):
            run_mlm.main([*flags, "--train_file", bad])
    elif case == "bad masking":
        with pytest.raises(SystemExit), contextlib.redirect_stderr(io.StringIO()) as stderr:
            run_mlm.main([*flags, "--train_file", data["train"], "--masking", "spans"])
        assert "--masking" in stderr.getvalue() and "identifiers" in stderr.getvalue()
    elif case == "bad probability":
        with pytest.raises(ValueError, match="--mlm_probability must be between 0 and 1, got 1.5"):
            run_mlm.main([*flags, "--train_file", data["train"], "--mlm_probability", "1.5"])
    else:  # the task's default --max_source_length, 2048, and a model of 1024 positions
        flags = [flag for flag in flags if flag not in ("--max_source_length", "1024")]
        with pytest.raises(ValueError, match="--max_source_length 2048 exceeds the model's 1024 positions"):
            run_mlm.main([*flags, "--train_file", data["train"]])
    assert not os.path.exists(tmp_path / "out" / "model.safetensors")


def test_a_roberta_checkpoint_is_pointed_at_sasa_convert(converted, data, tmp_path):
    roberta = os.path.join(os.path.dirname(converted), "roberta")
    with pytest.raises(ValueError, match="sasa convert"):
        run_mlm.main(["--model_name_or_path", roberta, "--train_file", data["train"], "--output_dir",
                      str(tmp_path / "out"), "--do_train", *FLAGS])


def test_sasa_convert_prints_the_next_step(converted, capsys):
    roberta = os.path.join(os.path.dirname(converted), "roberta")
    output_dir = os.path.join(os.path.dirname(converted), "printed")
    assert sasa_main(["convert", roberta, output_dir, "--max-position-embeddings", "1026"]) == 0
    printed = capsys.readouterr().out
    assert f"saved SasaForMaskedLM (1024 tokens) to {output_dir}" in printed
    assert "examples/run_mlm.py" in printed and f"--model_name_or_path {output_dir}" in printed
    assert "--max_source_length 1024" in printed and "docs/continued-pretraining.md" in printed


def test_the_benchmark_reads_long_code_in_windows_of_s_and_511_tokens():
    """benchmarks/quality/continued_pretraining.py's 512-token reference: each window is <s> + 511 tokens, read on its own,
    and every token's logits come from the window that holds it (<s>'s from the first)."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "quality"))
    import continued_pretraining

    class PositionEcho(torch.nn.Module):
        """Logits one-hot at the token's position inside the window it was given; <s> must start every window."""

        config = type("Config", (), {"vocab_size": 600})()

        def forward(self, input_ids, attention_mask):
            assert input_ids.shape[1] <= 512 and (input_ids[:, 0] == 0).all()
            positions = torch.arange(input_ids.shape[1]).expand_as(input_ids)
            return type("Output", (), {"logits": F.one_hot(positions, 600).float()})()

    length = 1400
    input_ids = torch.randint(5, 50, (2, length))
    input_ids[:, 0] = 0
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 700:] = 0  # the second sequence is shorter: its last window is padding only
    logits = continued_pretraining._windowed_logits(PositionEcho(), input_ids, attention_mask, cut=512)
    assert logits.shape == (2, length, 600)
    expected = [0] + [(p - 1) % 511 + 1 for p in range(1, length)]
    assert logits[0].argmax(-1).tolist() == expected
    assert logits[1, :700].argmax(-1).tolist() == expected[:700]
