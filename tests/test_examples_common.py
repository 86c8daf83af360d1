"""examples/common.py: arguments, data loading, the long-code filter and checkpoint checks the task scripts share."""

import json
import os
import sys

import datasets
import pytest
from transformers import HfArgumentParser, RobertaConfig, RobertaModel, TrainingArguments

import sasa
from conftest import tiny_config

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples"))
import common  # noqa: E402

DEFECT = "defect"  # the task whose columns (func, target) these tests read


def write_jsonl(path, rows: list[dict]) -> str:
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
    return str(path)


def defect_rows(count: int) -> list[dict]:
    return [{"id": i, "func": f"int f{i}(int x) {{ return x + {i}; }}", "target": bool(i % 2)} for i in range(count)]


# --- arguments ------------------------------------------------------------------------------------------------------

def test_arguments_parse_next_to_training_arguments(tmp_path):
    parser = HfArgumentParser((common.ModelArguments, common.DataArguments, TrainingArguments))
    model_args, data_args, training_args = parser.parse_args_into_dataclasses([
        "--model_name_or_path", "ckpt", "--train_file", "train.jsonl", "--long_only",
        "--output_dir", str(tmp_path), "--learning_rate", "2e-5"])
    assert model_args.model_name_or_path == "ckpt" and not model_args.from_scratch
    assert data_args.long_only and data_args.long_threshold == 512 and data_args.max_source_length == 1024
    assert data_args.data_files() == {"train": "train.jsonl"}
    assert training_args.learning_rate == 2e-5


def test_model_arguments_say_what_is_missing_or_inconsistent():
    with pytest.raises(ValueError, match="--model_name_or_path"):
        common.ModelArguments()
    with pytest.raises(ValueError, match="--tokenizer_name"):
        common.ModelArguments(from_scratch=True)
    with pytest.raises(ValueError, match="only --from_scratch"):
        common.ModelArguments(model_name_or_path="ckpt", config_overrides="hidden_size=128")
    common.ModelArguments(tokenizer_name="tok", from_scratch=True, config_overrides="hidden_size=128")


def test_data_arguments_reject_unknown_formats_and_two_sources():
    with pytest.raises(ValueError, match=r"--train_file data.csv: expected one of \['.json', '.jsonl', '.parquet'\]"):
        common.DataArguments(train_file="data.csv")
    with pytest.raises(ValueError, match="not both"):
        common.DataArguments(dataset_name="google/code_x_glue_cc_defect_detection", test_file="t.jsonl")


# --- loading data ---------------------------------------------------------------------------------------------------

def test_load_raw_datasets_reads_jsonl_and_parquet_files_by_split(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", defect_rows(5))
    validation = write_jsonl(tmp_path / "valid.jsonl", defect_rows(3))
    test = str(tmp_path / "test.parquet")
    datasets.Dataset.from_list(defect_rows(4)).to_parquet(test)
    data_args = common.DataArguments(train_file=train, validation_file=validation, test_file=test)
    raw = common.load_raw_datasets(data_args, DEFECT)
    assert {split: len(dataset) for split, dataset in raw.items()} == {"train": 5, "validation": 3, "test": 4}
    assert raw["test"][1]["func"] == "int f1(int x) { return x + 1; }"


def test_load_raw_datasets_reads_a_json_array(tmp_path):
    path = tmp_path / "train.json"
    path.write_text(json.dumps(defect_rows(2)), encoding="utf-8")
    raw = common.load_raw_datasets(common.DataArguments(train_file=str(path)), DEFECT)
    assert len(raw["train"]) == 2


def test_a_missing_column_names_the_split_the_missing_and_the_present_columns(tmp_path):
    rows = [{"id": 0, "code": "int f() { return 0; }", "target": False}]
    data_args = common.DataArguments(validation_file=write_jsonl(tmp_path / "valid.jsonl", rows))
    with pytest.raises(ValueError, match=r"split 'validation'.*\['func'\].*needs \['func', 'target'\].*"
                                         r"has \['id', 'code', 'target'\]"):
        common.load_raw_datasets(data_args, DEFECT)


def test_no_data_and_missing_files_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="no data: give --dataset_name"):
        common.load_raw_datasets(common.DataArguments(), DEFECT)
    with pytest.raises(FileNotFoundError, match="--test_file .*nope.jsonl: no such file"):
        common.load_raw_datasets(common.DataArguments(test_file=str(tmp_path / "nope.jsonl")), DEFECT)


def test_select_split_cuts_to_max_samples_and_names_the_splits_there_are(tmp_path):
    raw = common.load_raw_datasets(
        common.DataArguments(train_file=write_jsonl(tmp_path / "train.jsonl", defect_rows(5))), DEFECT)
    assert len(common.select_split(raw, "train", max_samples=2)) == 2
    assert len(common.select_split(raw, "train", max_samples=50)) == 5
    with pytest.raises(ValueError, match=r"needs a 'test' split, but the data has \['train'\]: give --test_file"):
        common.select_split(raw, "test")


# --- the long-code filter -------------------------------------------------------------------------------------------

def token_count(tokenizer, text: str) -> int:
    return len(tokenizer(text, language=None)["input_ids"])  # special tokens included, no truncation, no parsing


def test_keep_long_examples_keeps_only_rows_over_the_threshold(bpe_dir):
    tokenizer = sasa.SasaTokenizer.from_pretrained(bpe_dir)
    texts = ["x = 1", "def f(x):\n    return x\n" * 3, "def f(x):\n    return x\n" * 6]
    lengths = [token_count(tokenizer, text) for text in texts]
    assert lengths[0] < lengths[1] < lengths[2]
    dataset = datasets.Dataset.from_dict({"func": texts, "target": [0, 1, 0]})
    # an example of exactly `threshold` tokens is not longer than it: dropped
    kept, report = common.keep_long_examples(dataset, tokenizer, "func", threshold=lengths[1])
    assert kept["func"] == [texts[2]]
    assert report == f"kept 1 of 3 examples longer than {lengths[1]} tokens (in 'func')"
    kept, _ = common.keep_long_examples(dataset, tokenizer, "func", threshold=lengths[1] - 1)
    assert kept["target"] == [1, 0]


def test_keep_long_examples_on_pairs_keeps_a_row_when_either_function_is_long(bpe_dir):
    tokenizer = sasa.SasaTokenizer.from_pretrained(bpe_dir)
    short, long = "x = 1", "def f(x):\n    return x\n" * 6
    threshold = token_count(tokenizer, short)
    dataset = datasets.Dataset.from_dict({"func1": [short, long, short], "func2": [short, short, long],
                                          "label": [0, 1, 1]})
    kept, report = common.keep_long_examples(dataset, tokenizer, ["func1", "func2"], threshold=threshold, num_proc=2)
    assert kept["label"] == [1, 1]
    assert report.endswith("(in 'func1' or 'func2')")


def test_keep_long_examples_does_not_parse_the_code(bpe_dir, monkeypatch):
    # A tokenizer whose default language is set would parse each text for AST links; lengths do not need them.
    import sasa.tokenization_sasa

    def fail(*args, **kwargs):
        raise AssertionError("keep_long_examples parsed the code for AST links")

    monkeypatch.setattr(sasa.tokenization_sasa, "token_links", fail)
    tokenizer = sasa.SasaTokenizer.from_pretrained(bpe_dir, language="python")
    text = "def f(x):\n    return x\n" * 3
    dataset = datasets.Dataset.from_dict({"func": [text]})
    kept, _ = common.keep_long_examples(dataset, tokenizer, "func", threshold=token_count(tokenizer, text) - 1)
    assert len(kept) == 1


def test_keep_long_examples_with_nothing_long_says_how_many_it_looked_at(bpe_dir):
    tokenizer = sasa.SasaTokenizer.from_pretrained(bpe_dir)
    dataset = datasets.Dataset.from_dict({"func": ["x = 1", "y = 2"]})
    with pytest.raises(ValueError, match=r"no example is longer than 512 tokens \(in 'func'\): looked at 2\. "
                                         r"Run without --long_only, or with a lower --long_threshold"):
        common.keep_long_examples(dataset, tokenizer, "func")


# --- checkpoints ----------------------------------------------------------------------------------------------------

def test_check_sasa_checkpoint_accepts_a_sasa_checkpoint(tmp_path):
    sasa.SasaModel(tiny_config()).save_pretrained(tmp_path)
    common.check_sasa_checkpoint(str(tmp_path))


def test_check_sasa_checkpoint_points_a_roberta_checkpoint_at_sasa_convert(tmp_path):
    RobertaModel(RobertaConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=37)).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=rf"is a 'roberta' checkpoint.*sasa convert {tmp_path} <out_dir>"):
        common.check_sasa_checkpoint(str(tmp_path))


def test_check_sasa_checkpoint_on_a_directory_without_config(tmp_path):
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(ValueError, match=r"without config.json.*\['notes.txt'\]"):
        common.check_sasa_checkpoint(str(tmp_path))


def test_load_config_from_scratch_applies_overrides_and_task_fields():
    model_args = common.ModelArguments(tokenizer_name="tok", from_scratch=True,
                                       config_overrides="hidden_size=64,num_hidden_layers=2")
    config = common.load_config(model_args, num_labels=1)
    assert (config.model_type, config.hidden_size, config.num_hidden_layers, config.num_labels) == ("sasa", 64, 2, 1)


def test_load_config_from_a_checkpoint_checks_it_is_sasa(tmp_path):
    sasa.SasaModel(tiny_config()).save_pretrained(tmp_path / "sasa")
    config = common.load_config(common.ModelArguments(model_name_or_path=str(tmp_path / "sasa")), num_labels=2)
    assert (config.hidden_size, config.num_labels) == (32, 2)
    RobertaModel(RobertaConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=37)).save_pretrained(tmp_path / "roberta")
    with pytest.raises(ValueError, match="sasa convert"):
        common.load_config(common.ModelArguments(model_name_or_path=str(tmp_path / "roberta")))


@pytest.mark.parametrize("from_scratch", [True, False])
def test_attention_kernel_and_dropout_flags_reach_the_model(tmp_path, bpe_dir, from_scratch):
    """--attn_implementation picks the kernel (default sasa_auto: flex on CUDA); --attention_probs_dropout_prob
    overrides the checkpoint's (0 lets sasa_auto train with FlexAttention)."""
    tokenizer = sasa.SasaTokenizer.from_pretrained(bpe_dir)
    sasa.SasaModel(tiny_config(vocab_size=len(tokenizer), attention_probs_dropout_prob=0.1)).save_pretrained(tmp_path)
    source = dict(tokenizer_name=bpe_dir, from_scratch=True) if from_scratch else dict(model_name_or_path=str(tmp_path))
    for kernel, dropout in ((None, None), ("eager", 0.0)):
        model_args = common.ModelArguments(**source, attn_implementation=kernel, attention_probs_dropout_prob=dropout)
        config = common.load_config(model_args, vocab_size=len(tokenizer)) if from_scratch else \
            common.load_config(model_args)
        model = common.load_model(sasa.SasaModel, model_args, config, tokenizer)
        assert model.config._attn_implementation == (kernel or "sasa_auto")
        assert model.config.attention_probs_dropout_prob == (0.1 if dropout is None else dropout)  # 0.1: both defaults


def test_last_checkpoint_resumes_from_the_highest_step(tmp_path):
    assert common.last_checkpoint(str(tmp_path / "missing")) is None
    assert common.last_checkpoint(str(tmp_path)) is None  # empty: start afresh
    for step in (5, 12, 9):
        (tmp_path / f"checkpoint-{step}").mkdir()
    assert common.last_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint-12")
    assert common.last_checkpoint(str(tmp_path), overwrite_output_dir=True) is None
    assert common.last_checkpoint(str(tmp_path), do_train=False) is None


def test_last_checkpoint_refuses_a_non_empty_directory_without_checkpoints(tmp_path):
    (tmp_path / "results.json").write_text("{}")
    with pytest.raises(ValueError, match=r"not empty and holds no checkpoint-N.*--overwrite_output_dir"):
        common.last_checkpoint(str(tmp_path))
    assert common.last_checkpoint(str(tmp_path), overwrite_output_dir=True) is None


# --- shared by the task scripts (proposed with run_defect_detection.py / run_clone_detection.py) --------------------

def test_parse_arguments_puts_task_defaults_under_the_users_flags_and_json(tmp_path):
    defaults = {"metric_for_best_model": "f1", "ddp_find_unused_parameters": False}
    base = ["--model_name_or_path", "ckpt", "--output_dir", str(tmp_path)]
    _, _, args = common.parse_arguments(base, defaults)
    assert (args.metric_for_best_model, args.greater_is_better, args.ddp_find_unused_parameters) == ("f1", True, False)
    _, _, args = common.parse_arguments(base + ["--metric_for_best_model", "loss"], defaults)
    assert (args.metric_for_best_model, args.greater_is_better) == ("loss", False)
    (tmp_path / "args.json").write_text(json.dumps({"model_name_or_path": "ckpt", "output_dir": str(tmp_path),
                                                    "max_predict_samples": 7}))
    _, data_args, args = common.parse_arguments([str(tmp_path / "args.json")], defaults)
    assert (data_args.max_predict_samples, args.metric_for_best_model) == (7, "f1")


def test_an_unknown_language_is_refused_with_the_arguments():
    with pytest.raises(ValueError, match=r"--language cobol: unsupported language 'cobol'; supported: python"):
        common.DataArguments(language="cobol")
    assert common.DataArguments(language="Java").language == "Java"  # aliases and case are the tokenizer's business


def test_select_split_with_a_seed_samples_at_random(tmp_path):
    raw = common.load_raw_datasets(
        common.DataArguments(train_file=write_jsonl(tmp_path / "train.jsonl", defect_rows(50))), DEFECT)
    sample = common.select_split(raw, "train", max_samples=10, seed=0)
    assert len(sample) == 10 and sample["id"] != list(range(10))
    assert sample["id"] == common.select_split(raw, "train", max_samples=10, seed=0)["id"]
    assert len(common.select_split(raw, "train", max_samples=80, seed=0)) == 50


def test_check_model_fits_names_the_flag_to_change(bpe_dir):
    tokenizer = sasa.SasaTokenizer.from_pretrained(bpe_dir)
    config = tiny_config(vocab_size=len(tokenizer))  # 512 positions
    common.check_model_fits(config, tokenizer, 512)
    with pytest.raises(ValueError, match=r"--max_source_length 1024 exceeds the model's 512 positions.*1026"):
        common.check_model_fits(config, tokenizer, 1024)
    with pytest.raises(ValueError, match=rf"the tokenizer has {len(tokenizer)} ids but the model only 100"):
        common.check_model_fits(tiny_config(vocab_size=100), tokenizer, 512)


def test_check_sasa_tokenizer_refuses_what_is_not_a_byte_level_bpe(bpe_dir, tmp_path):
    common.check_sasa_tokenizer(sasa.SasaTokenizer.from_pretrained(bpe_dir), bpe_dir)
    # from_pretrained does not fail on an empty directory: five special tokens, every input <unk>
    empty = sasa.SasaTokenizer.from_pretrained(str(tmp_path))
    with pytest.raises(ValueError, match=r"--model_name_or_path .* is not a SASA tokenizer: .* loads as 5 tokens, "
                                         r"without 256 of the 256 byte symbols \(the directory holds \[\]\)"):
        common.check_sasa_tokenizer(empty, str(tmp_path), "--model_name_or_path")


def test_check_length_fits_names_the_flag_and_the_positions():
    config = tiny_config()  # 512 positions
    common.check_length_fits(config, "--max_query_length", 512)
    with pytest.raises(ValueError, match=r"--max_target_length 512 needs 513 positions, but the model has 512: "
                                         r"lower --max_target_length"):
        common.check_length_fits(config, "--max_target_length", 512, positions=513)


def test_bad_rows_takes_stop_or_skip():
    assert common.DataArguments().bad_rows == "stop"
    with pytest.raises(ValueError, match=r"--bad_rows must be 'stop' or 'skip', got 'ignore'"):
        common.DataArguments(bad_rows="ignore")


# --- compact AST links in the datasets cache ------------------------------------------------------------------------

def leaf_type(feature) -> str:
    while not isinstance(feature, datasets.Value):
        feature = feature.feature
    return feature.dtype


def test_link_dtype_is_int16_up_to_32768_tokens():
    assert common.link_dtype(1024) == common.link_dtype(32768) == "int16"
    assert common.link_dtype(32769) == "int32"


@pytest.mark.parametrize("pairs", [False, True], ids=["code", "clone pairs"])
def test_ast_links_are_stored_as_int16_and_collate_to_the_same_tensors(bpe_dir, pairs):
    """tokenize_splits (all four scripts) stores the links as int16; batches read from it are the tensors an int64
    (datasets' default) copy of the same data gives, through a DataLoader with the scripts' collator."""
    import torch
    from torch.utils.data import DataLoader

    from conftest import read_snippet

    tokenizer = sasa.SasaTokenizer.from_pretrained(bpe_dir, language="python")
    code = [read_snippet("example.py"), "def f(x):\n    return x\n", read_snippet("example.py")[:300], "x = 1"]
    raw = datasets.Dataset.from_dict({"func1": code, "func2": code[::-1], "label": [0, 1, 1, 0]})

    def tokenize(batch: dict[str, list]) -> dict[str, list]:
        first = tokenizer(batch["func1"], truncation=True, max_length=128)
        if not pairs:
            return {**first, "labels": batch["label"]}
        second = tokenizer(batch["func2"], truncation=True, max_length=128)
        return {**{key: [list(pair) for pair in zip(first[key], second[key])] for key in first},
                "labels": batch["label"]}

    compact = common.tokenize_splits({"train": raw}, tokenize, common.DataArguments(max_source_length=128),
                                     "Tokenizing")["train"]
    wide = raw.map(tokenize, batched=True, remove_columns=raw.column_names)  # what the scripts stored before
    assert (leaf_type(compact.features["ast_links"]), leaf_type(wide.features["ast_links"])) == ("int16", "int64")
    per_token = compact.features["ast_links"].feature.feature if pairs else compact.features["ast_links"].feature
    assert per_token.length == len(tokenizer.ast_relations)  # a fixed-size list: no offset per token
    assert {name: feature for name, feature in compact.features.items() if name != "ast_links"} == {
        name: feature for name, feature in wide.features.items() if name != "ast_links"}  # as datasets infers them
    assert compact.data.column("ast_links").nbytes < wide.data.column("ast_links").nbytes / 3
    collator = sasa.SasaDataCollator(tokenizer, pad_to_multiple_of=8)
    batches = [list(DataLoader(dataset, batch_size=3, collate_fn=collator)) for dataset in (compact, wide)]
    for from_compact, from_wide in zip(*batches):
        assert from_compact.keys() == from_wide.keys()
        for key, tensor in from_wide.items():
            assert from_compact[key].dtype == tensor.dtype and torch.equal(from_compact[key], tensor), key
    links = batches[0][0]["ast_links"]
    assert links.shape[:-1] == batches[0][0]["input_ids"].shape and (links >= 0).any() and (links == -1).any()
