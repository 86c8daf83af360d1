"""examples/run_defect_detection.py and examples/run_clone_detection.py, end to end on tiny models and toy data.

The data are the test snippets with a learnable signal: a defect is a double ``free`` inserted into a C-family
function (a single ``free`` followed by ``buffer = NULL`` otherwise); a clone pair is one snippet twice with its
identifiers renamed differently (a non-clone pair: two different snippets, renamed too).
"""

import json
import os
import random
import re
import shutil
import sys
import textwrap

import pytest
import torch
from transformers import RobertaConfig, RobertaModel, Trainer

from conftest import WITHOUT_SASA, read_snippet, run_fresh_process, tiny_config
from sasa import SasaForSequenceClassification, SasaModel, SasaTokenizer
from sasa.block_layout import PATTERN_CODES
from sasa.frequency import identifier_vocabulary

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples"))
import common  # noqa: E402
import run_clone_detection  # noqa: E402
import run_defect_detection  # noqa: E402

SCRIPTS = {"defect": run_defect_detection, "clone": run_clone_detection}
NAMES = ["result", "values", "value", "total"]  # the identifiers of the snippets that get renamed
NEW_NAMES = ["acc", "out", "res", "tally", "items", "xs", "data", "elem", "item", "n", "count", "buf", "node", "cur"]
DEFECT_SNIPPETS = ["example.c", "example.cpp", "Example.java", "example.js", "example.go"]
CLONE_SNIPPETS = ["Example.java", "example.py"]
# Small enough to train in seconds; a wide initialisation lets the pair head find its signal in a few dozen steps.
TINY = dict(initializer_range=0.2)
EPOCHS = {"defect": 10, "clone": 8}  # epochs until the signal is found (the snippets grew helper functions)
COMMON_FLAGS = ["--max_source_length", "256", "--report_to", "none", "--use_cpu", "--seed", "0",
                "--lr_scheduler_type", "constant", "--disable_tqdm", "true"]


# --- toy data -------------------------------------------------------------------------------------------------------

def rename(code: str, rng: random.Random) -> str:
    """The same code with its identifiers renamed."""
    mapping = dict(zip(NAMES, rng.sample(NEW_NAMES, len(NAMES))))
    return re.sub(r"\b(" + "|".join(NAMES) + r")\b", lambda match: mapping[match.group(1)], code)


def defect_rows(count: int, seed: int) -> list[dict]:
    """Devign-shaped rows; ``target`` is True for a double free before the function's ``return``."""
    rng = random.Random(seed)
    rows = []
    for index in range(count):
        lines = rename(read_snippet(rng.choice(DEFECT_SNIPPETS)), rng).splitlines()
        at = next(number for number, line in enumerate(lines) if "return" in line)
        target = index % 2 == 1
        inserted = ["    strcpy(buffer, input);" if target else "    strncpy(buffer, input, sizeof(buffer) - 1);"]
        rows.append({"id": 1000 + index, "func": "\n".join(lines[:at] + inserted + lines[at:]) + "\n",
                     "target": target, "project": "toy"})
    return rows


def clone_rows(count: int, seed: int) -> list[dict]:
    """BigCloneBench-shaped rows; ``label`` is True when both functions are one snippet, renamed."""
    rng = random.Random(seed)
    rows = []
    for index in range(count):
        first = rng.choice(CLONE_SNIPPETS)
        label = index % 2 == 1
        second = first if label else next(name for name in CLONE_SNIPPETS if name != first)
        rows.append({"id": index, "id1": 2 * index, "id2": 2 * index + 1, "func1": rename(read_snippet(first), rng),
                     "func2": rename(read_snippet(second), rng), "label": label})
    return rows


def write_jsonl(path, rows: list[dict]) -> str:
    with open(path, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in rows)
    return str(path)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def checkpoint(bpe_dir, tmp_path_factory) -> str:
    """A tiny SASA checkpoint with its tokenizer, as `sasa convert` leaves one (base model, no head)."""
    directory = tmp_path_factory.mktemp("sasa-checkpoint")
    tokenizer = SasaTokenizer.from_pretrained(bpe_dir)
    torch.manual_seed(0)
    SasaModel(tiny_config(vocab_size=len(tokenizer), **TINY)).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, dict[str, str]]:
    """Local JSONL files by task and split."""
    directory = tmp_path_factory.mktemp("data")
    make = {"defect": defect_rows, "clone": clone_rows}
    return {task: {split: write_jsonl(directory / f"{task}-{split}.jsonl", rows(count, seed))
                   for split, count, seed in (("train", 128, 0), ("validation", 32, 1), ("test", 32, 2))}
            for task, rows in make.items()}


def data_flags(files: dict[str, str]) -> list[str]:
    return [flag for split, path in files.items() for flag in (f"--{split}_file", path)]


def log_history(output_dir: str) -> list[dict]:
    with open(os.path.join(output_dir, "trainer_state.json"), encoding="utf-8") as handle:
        return json.load(handle)["log_history"]


def run(task: str, checkpoint: str, data: dict, output_dir, *flags: str) -> dict:
    """One training run of a task's script on the toy data: epochs of 16 steps, evaluated after each."""
    return SCRIPTS[task].main([
        "--model_name_or_path", checkpoint, *data_flags(data[task]), "--output_dir", str(output_dir),
        "--do_train", "--do_eval", "--do_predict", "--num_train_epochs", str(EPOCHS[task]), "--learning_rate", "1e-3",
        "--eval_strategy", "epoch", "--save_strategy", "epoch", "--save_total_limit", "1",
        "--load_best_model_at_end", "--logging_steps", "4", *COMMON_FLAGS, *flags])


@pytest.fixture(scope="module")
def defect_run(checkpoint, data, tmp_path_factory) -> tuple[str, dict]:
    output_dir = tmp_path_factory.mktemp("defect-out")
    # micro-batches of 4 accumulated to the batch of 8
    return str(output_dir), run("defect", checkpoint, data, output_dir, "--per_device_train_batch_size", "4",
                                "--gradient_accumulation_steps", "2")


@pytest.fixture(scope="module")
def clone_run(checkpoint, data, tmp_path_factory) -> tuple[str, dict]:
    output_dir = tmp_path_factory.mktemp("clone-out")
    return str(output_dir), run("clone", checkpoint, data, output_dir, "--per_device_train_batch_size", "8",
                                "--preprocessing_num_workers", "2")


# --- training runs --------------------------------------------------------------------------------------------------

def assert_learned(task: str, output_dir: str, results: dict, metric: str, best: float, test: float) -> None:
    """The loss falls, the metric beats chance, and the model kept is the best evaluation's.

    The thresholds leave a margin: over ten seeds (of the checkpoint and of the run), every run met them.
    """
    losses = [entry["loss"] for entry in log_history(output_dir) if "loss" in entry]
    assert len(losses) == EPOCHS[task] * 4  # 16 steps an epoch, logged every 4
    assert sum(losses[-6:]) / 6 < 0.6 * sum(losses[:6]) / 6, losses
    evaluations = [entry[f"eval_{metric}"] for entry in log_history(output_dir) if f"eval_{metric}" in entry]
    assert len(evaluations) == EPOCHS[task]
    # best-model selection on the task metric (the default when --metric_for_best_model is not given)
    with open(os.path.join(output_dir, "trainer_state.json"), encoding="utf-8") as handle:
        state = json.load(handle)
    assert state["best_metric"] == max(evaluations)
    assert results["eval"][f"eval_{metric}"] == max(evaluations) >= best, evaluations
    assert results["test"][f"test_{metric}"] >= test
    assert results["train"]["train_samples"] == 128 and results["test"]["test_samples"] == 32


def test_defect_detection_learns_the_toy_defect(defect_run):
    output_dir, results = defect_run
    # chance: 0.5 (the held-out functions are other snippets' renamings: since the snippets grew helper functions, 9
    # of the 32 stay wrong however long it trains)
    assert_learned("defect", output_dir, results, "accuracy", best=0.9, test=0.7)
    lines = open(os.path.join(output_dir, "predictions.txt"), encoding="utf-8").read().splitlines()
    assert len(lines) == 32 and lines[0].split("\t")[0] == "1000" and lines[0].split("\t")[1] in {"0", "1"}


def test_clone_detection_learns_renamed_copies(clone_run):
    output_dir, results = clone_run
    assert_learned("clone", output_dir, results, "f1", best=0.9, test=0.8)  # "clone" for every pair: F1 2/3
    assert {"test_precision", "test_recall"} <= set(results["test"])
    lines = open(os.path.join(output_dir, "predictions.txt"), encoding="utf-8").read().splitlines()
    assert len(lines) == 32 and lines[1].split("\t")[:2] == ["2", "3"] and lines[1].split("\t")[2] in {"0", "1"}


FRESH_PROCESS = WITHOUT_SASA + textwrap.dedent(
    """
    import json, sys

    import torch
    import transformers

    for case in json.loads(sys.argv[1]):
        tokenizer = transformers.AutoTokenizer.from_pretrained(case["path"], trust_remote_code=True)
        model = transformers.AutoModelForSequenceClassification.from_pretrained(case["path"], trust_remote_code=True)
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        inputs = tokenizer(case["code"], padding=True, return_tensors="pt")  # the saved default language
        assert (inputs["ast_links"] >= 0).any()
        if len(case["code"]) == 2:  # a pair: [1, 2, L]
            inputs = {key: value.unsqueeze(0) for key, value in inputs.items()}
        with torch.no_grad():
            logits = model.eval()(**inputs).logits
        assert torch.equal(logits, torch.load(case["expected"])), (case["path"], logits)
        print("identical", model.config.id2label[int(logits.argmax())])
    """
)


def test_outputs_reload_as_remote_code_without_the_package_to_identical_logits(defect_run, clone_run, tmp_path):
    cases = []
    for task, (output_dir, _), code in (("defect", defect_run, [read_snippet("example.c")]),
                                        ("clone", clone_run, [read_snippet("Example.java")] * 2)):
        shipped = set(os.listdir(output_dir))
        assert {"modeling_sasa.py", "configuration_sasa.py", "tokenization_sasa.py", "ast_relations.py",
                "ast_languages.py", "config.json", "model.safetensors", "tokenizer_config.json"} <= shipped
        tokenizer = SasaTokenizer.from_pretrained(output_dir)
        assert tokenizer.language == {"defect": "c", "clone": "java"}[task]
        model = SasaForSequenceClassification.from_pretrained(output_dir).eval()
        assert model.config.classify_pairs == (task == "clone")
        inputs = tokenizer(code, padding=True, return_tensors="pt")
        if task == "clone":
            inputs = {key: value.unsqueeze(0) for key, value in inputs.items()}
        with torch.no_grad():
            torch.save(model(**inputs).logits, tmp_path / f"{task}.pt")
        cases.append(dict(path=output_dir, code=code, expected=str(tmp_path / f"{task}.pt")))
    result = run_fresh_process(FRESH_PROCESS, json.dumps(cases), cwd=tmp_path)
    assert result.stdout.count("identical") == 2


def test_push_to_hub_uploads_the_saved_checkpoint_at_the_end(checkpoint, data, tmp_path, monkeypatch):
    """The wiring only: Trainer.push_to_hub itself (what it uploads, offline) is tested in test_hub_upload.py."""
    pushed = []
    monkeypatch.setattr(Trainer, "init_hf_repo", lambda self, *args, **kwargs: None)  # would create the repository
    monkeypatch.setattr(Trainer, "push_to_hub",
                        lambda self, **kwargs: pushed.append((set(os.listdir(self.args.output_dir)), kwargs)))
    run_clone_detection.main([
        "--model_name_or_path", checkpoint, "--train_file", data["clone"]["train"], "--output_dir", str(tmp_path),
        "--do_train", "--max_steps", "1", "--save_strategy", "no", "--push_to_hub", "--hub_model_id",
        "someone/sasa-clone", *COMMON_FLAGS])
    files, card = pushed[-1]  # trainer.save_model() pushes too ("Model save"); the last push carries the card
    assert {"model.safetensors", "modeling_sasa.py", "tokenization_sasa.py", "tokenizer_config.json"} <= files
    assert card["finetuned_from"] == checkpoint and card["tasks"] == "text-classification"
    assert "clone-detection" in card["tags"]


# --- resuming -------------------------------------------------------------------------------------------------------

def test_a_run_resumed_from_a_checkpoint_repeats_the_uninterrupted_losses(bpe_dir, data, tmp_path, monkeypatch):
    """Killed after checkpoint-3 of 6: resumed (by flag, or found in the output directory), it runs steps 4-6 only
    and logs the same losses as the uninterrupted run. From scratch with dropout on, so the random state counts."""
    overrides = ("hidden_size=32,num_hidden_layers=2,num_attention_heads=4,intermediate_size=64,"
                 "max_position_embeddings=514,block_size=8,hidden_dropout_prob=0.1,attention_probs_dropout_prob=0.1")
    steps_run = []
    training_step = Trainer.training_step

    def counted_training_step(self, *args, **kwargs):
        steps_run.append(self.state.global_step + 1)
        return training_step(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "training_step", counted_training_step)

    def train(output_dir, *flags):
        steps_run.clear()
        run_defect_detection.main([
            "--from_scratch", "--tokenizer_name", bpe_dir, "--config_overrides", overrides,
            "--train_file", data["defect"]["train"], "--output_dir", str(output_dir), "--do_train",
            "--max_steps", "6", "--save_steps", "3", "--logging_steps", "1", "--per_device_train_batch_size", "4",
            "--learning_rate", "1e-3", *COMMON_FLAGS, *flags])
        return {entry["step"]: entry["loss"] for entry in log_history(output_dir) if "loss" in entry}

    uninterrupted = train(tmp_path / "full")
    assert sorted(uninterrupted) == steps_run == [1, 2, 3, 4, 5, 6]
    resumed = train(tmp_path / "resumed", "--resume_from_checkpoint", str(tmp_path / "full" / "checkpoint-3"))
    assert steps_run == [4, 5, 6]
    shutil.copytree(tmp_path / "full" / "checkpoint-3", tmp_path / "killed" / "checkpoint-3")
    found = train(tmp_path / "killed")  # the same command again, after the kill
    assert steps_run == [4, 5, 6]
    for step in (4, 5, 6):
        assert resumed[step] == pytest.approx(uninterrupted[step], rel=1e-5), (step, resumed, uninterrupted)
        assert found[step] == pytest.approx(uninterrupted[step], rel=1e-5), (step, found, uninterrupted)
    assert len({uninterrupted[step] for step in (4, 5, 6)}) == 3  # the losses do differ step to step

    # --from_scratch gives the model a working top-k block: its input source matches the tokenizer's identifiers.
    model = SasaForSequenceClassification.from_pretrained(tmp_path / "full" / "checkpoint-6")
    tokenizer = SasaTokenizer.from_pretrained(bpe_dir)
    assert torch.equal(model.sasa.frequency_table.matchable_tokens, identifier_vocabulary(tokenizer))
    code = read_snippet("example.c")
    encoding = tokenizer(code, language="c", truncation=True, max_length=256, return_tensors="pt")
    layout = model.sasa.layout(encoding["input_ids"], encoding["attention_mask"], encoding["ast_links"])
    assert (layout.sources == PATTERN_CODES["top-k"]).any()


# --- arguments and defaults -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("task, metric", [("defect", "accuracy"), ("clone", "f1")])
def test_best_model_metric_and_ddp_defaults_yield_to_the_user(task, metric, tmp_path):
    def parse(argv):
        return common.parse_arguments(argv, SCRIPTS[task].TASK_DEFAULTS)

    base = ["--model_name_or_path", "ckpt", "--output_dir", str(tmp_path)]
    _, _, args = parse(base + ["--load_best_model_at_end", "--eval_strategy", "epoch", "--save_strategy", "epoch"])
    assert (args.metric_for_best_model, args.greater_is_better, args.ddp_find_unused_parameters) == (metric, True,
                                                                                                       False)
    _, _, args = parse(base + ["--metric_for_best_model", "loss", "--ddp_find_unused_parameters", "true"])
    assert (args.metric_for_best_model, args.greater_is_better, args.ddp_find_unused_parameters) == ("loss", False,
                                                                                                       True)
    (tmp_path / "args.json").write_text(json.dumps({"model_name_or_path": "ckpt", "output_dir": str(tmp_path),
                                                    "gradient_accumulation_steps": 4, "long_only": True}))
    model_args, data_args, args = parse([str(tmp_path / "args.json")])
    assert (model_args.model_name_or_path, data_args.long_only, args.gradient_accumulation_steps) == ("ckpt", True, 4)
    assert (args.metric_for_best_model, args.ddp_find_unused_parameters) == (metric, False)


@pytest.mark.parametrize("classify_pairs", [False, True])
def test_every_parameter_of_the_classifier_gets_a_gradient(classify_pairs):
    """Why ddp_find_unused_parameters=False is right: no parameter (no pooler in the heads) is left out."""
    tokenizer_free_ids = torch.randint(5, 120, (2, 2, 20) if classify_pairs else (2, 20))
    model = SasaForSequenceClassification(tiny_config(num_labels=2, classify_pairs=classify_pairs))
    model(input_ids=tokenizer_free_ids, labels=torch.tensor([0, 1])).loss.backward()
    unused = [name for name, parameter in model.named_parameters() if parameter.grad is None]
    assert not unused


# --- the long-code filter -------------------------------------------------------------------------------------------

def test_long_only_keeps_and_counts_the_long_examples(checkpoint, data, tmp_path, caplog):
    tokenizer = SasaTokenizer.from_pretrained(checkpoint)
    rows = [json.loads(line) for line in open(data["clone"]["train"], encoding="utf-8")]
    lengths = sorted(max(len(tokenizer(row[column], language=None)["input_ids"]) for column in ("func1", "func2"))
                     for row in rows)
    distinct = sorted(set(lengths))
    threshold = distinct[len(distinct) // 2]
    expected = sum(length > threshold for length in lengths)
    assert 0 < expected < len(rows)
    caplog.set_level("INFO")
    results = run_clone_detection.main([
        "--model_name_or_path", checkpoint, "--train_file", data["clone"]["train"], "--output_dir", str(tmp_path),
        "--do_train", "--max_steps", "1", "--long_only", "--long_threshold", str(threshold), *COMMON_FLAGS])
    assert results["train"]["train_samples"] == expected
    assert f"train split: kept {expected} of 128 examples longer than {threshold} tokens" in caplog.text


# --- bad input stops before training --------------------------------------------------------------------------------

@pytest.fixture
def no_training(monkeypatch):
    def train(*args, **kwargs):
        raise AssertionError("training started despite bad input")

    monkeypatch.setattr(Trainer, "train", train)


def bad_input_case(case: str, task: str, checkpoint: str, data: dict, tmp_path) -> tuple[list[str], str]:
    """The arguments of one bad-input case and the message expected."""
    files = dict(data[task])
    if case == "missing column":
        column = {"defect": "func", "clone": "func2"}[task]
        rows = [{key: value for key, value in row.items() if key != column}
                for row in (defect_rows if task == "defect" else clone_rows)(4, 0)]
        files["validation"] = write_jsonl(tmp_path / "no-column.jsonl", rows)
        return data_flags(files), (r"split 'validation' \(--validation_file .*no-column.jsonl\) lacks the column\(s\) "
                                   rf"\['{column}'\]")
    flags = data_flags(files)
    if case == "nothing long":
        return flags + ["--long_only"], r"no example is longer than 512 tokens .*Run without --long_only"
    if case == "unknown language":
        return flags + ["--language", "cobol"], r"--language cobol: unsupported language 'cobol'; supported: python"
    if case == "too long for the model":
        return flags + ["--max_source_length", "1024"], (r"--max_source_length 1024 exceeds the model's 512 "
                                                          r"positions: lower it, .*--max-position-embeddings 1026")
    raise AssertionError(case)


@pytest.mark.parametrize("task", ["defect", "clone"])
@pytest.mark.parametrize("case", ["missing column", "nothing long", "unknown language", "too long for the model"])
def test_bad_input_stops_before_training_saying_what_to_fix(case, task, checkpoint, data, tmp_path, no_training):
    flags, message = bad_input_case(case, task, checkpoint, data, tmp_path)
    # the last --max_source_length given wins, so the case's 1024 overrides COMMON_FLAGS' 256
    argv = ["--model_name_or_path", checkpoint, "--output_dir", str(tmp_path / "out"), "--do_train", "--do_eval",
            *COMMON_FLAGS, *flags]
    with pytest.raises(ValueError, match=message):
        SCRIPTS[task].main(argv)


@pytest.mark.parametrize("task", ["defect", "clone"])
def test_a_roberta_checkpoint_is_pointed_at_sasa_convert(task, data, tmp_path, no_training):
    RobertaModel(RobertaConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=37)).save_pretrained(tmp_path / "roberta")
    with pytest.raises(ValueError, match=r"is a 'roberta' checkpoint.*sasa convert .*roberta <out_dir>"):
        SCRIPTS[task].main(["--model_name_or_path", str(tmp_path / "roberta"), *data_flags(data[task]),
                            "--output_dir", str(tmp_path / "out"), "--do_train", *COMMON_FLAGS])

