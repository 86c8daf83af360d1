"""examples/run_code_search.py and examples/run_code_summarization.py, end to end on a tiny model and tiny data.

The data are real functions of Python's standard library (their source, and the first paragraph of their docstring
as the query or the summary, CodeSearchNet's ``docstring_tokens``) plus the test snippets in other languages, so the
training loss falls within a few dozen steps (and the summarizer learns the summaries' most common opening). Each
script runs once per module (``main(argv)`` in this process, one torch thread); the tests read its outputs.
"""

import glob
import importlib
import inspect
import json
import logging
import os
import re
import sys
import textwrap

import pytest
import torch
from transformers import RobertaConfig, RobertaModel, Trainer

from conftest import SNIPPETS, WITHOUT_SASA, run_fresh_process, tiny_config
from sasa import SasaForCodeSearch, SasaForCodeSummarization, SasaModel, SasaTokenizer
from sasa.metrics import mean_reciprocal_rank, smoothed_bleu

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples"))
import codesearchnet  # noqa: E402
import run_code_search  # noqa: E402
import run_code_summarization  # noqa: E402

STDLIB_MODULES = ("textwrap", "fnmatch", "shlex", "calendar", "html", "base64", "glob", "difflib", "filecmp",
                  "quopri", "heapq", "copy", "statistics", "string", "gettext")
SNIPPET_LANGUAGES = {".java": "java", ".c": "c", ".cpp": "cpp", ".go": "go", ".js": "javascript", ".php": "php",
                     ".py": "python", ".rb": "ruby"}


def stdlib_rows() -> list[dict]:
    """CodeSearchNet-style rows of documented public functions of a few pure-Python standard-library modules."""
    rows = []
    for module_name in STDLIB_MODULES:
        module = importlib.import_module(module_name)
        for name, function in sorted(inspect.getmembers(module, inspect.isfunction)):
            if function.__module__ != module_name or name.startswith("_") or not function.__doc__:
                continue
            summary = inspect.getdoc(function).split("\n\n")[0]
            rows.append({"func_name": f"{module_name}.{name}", "language": "python",
                         "code": textwrap.dedent(inspect.getsource(function)), "docstring": inspect.getdoc(function),
                         "docstring_tokens": re.findall(r"\w+|[^\w\s]", summary)})
    return rows


def snippet_rows() -> list[dict]:
    """One row per test snippet, each in its own language (the ``language`` column is read per example)."""
    rows = []
    for path in sorted(glob.glob(os.path.join(SNIPPETS, "*"))):
        language = SNIPPET_LANGUAGES[os.path.splitext(path)[1]]
        with open(path, encoding="utf-8") as handle:
            rows.append({"func_name": os.path.basename(path), "language": language, "code": handle.read(),
                         "docstring": f"Example {language} code.", "docstring_tokens": ["Example", language, "code"]})
    return rows


def write_jsonl(path, rows: list[dict]) -> str:
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, bpe_dir) -> dict[str, str]:
    """A tiny SASA checkpoint with its tokenizer, a RoBERTa one (not SASA), and train/validation/test JSONL files
    (functions interleaved across the splits, so the three share modules and style)."""
    root = tmp_path_factory.mktemp("retrieval-generation")
    tokenizer = SasaTokenizer.from_pretrained(bpe_dir)
    torch.manual_seed(0)
    # A wider initialisation than RoBERTa's 0.02 lets the tiny decoder learn within a few dozen steps.
    config = tiny_config(vocab_size=len(tokenizer), initializer_range=0.1, num_decoder_layers=2)
    SasaModel(config).save_pretrained(root / "sasa")
    tokenizer.save_pretrained(root / "sasa")
    RobertaModel(RobertaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=64)).save_pretrained(root / "roberta")
    tokenizer.save_pretrained(root / "roberta")
    rows = stdlib_rows()
    assert len(rows) >= 80, len(rows)
    splits = {"train": [r for i, r in enumerate(rows) if i % 5 > 1] + snippet_rows(),
              "validation": [r for i, r in enumerate(rows) if i % 5 == 0],
              "test": [r for i, r in enumerate(rows) if i % 5 == 1]}
    files = {split: write_jsonl(root / f"{split}.jsonl", split_rows) for split, split_rows in splits.items()}
    return dict(root=str(root), checkpoint=str(root / "sasa"), roberta=str(root / "roberta"), **files)


def data_flags(workspace: dict[str, str], **replacements: str) -> list[str]:
    files = {split: replacements.get(split, workspace[split]) for split in ("train", "validation", "test")}
    return ["--train_file", files["train"], "--validation_file", files["validation"], "--test_file", files["test"]]


def training_flags(output_dir: str, metric: str, epochs: int) -> list[str]:
    return ["--do_train", "--do_eval", "--do_predict", "--output_dir", output_dir, "--max_source_length", "128",
            "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "8", "--learning_rate", "3e-3",
            "--num_train_epochs", str(epochs), "--logging_steps", "8", "--eval_strategy", "epoch",
            "--save_strategy", "epoch", "--save_total_limit", "1", "--load_best_model_at_end",
            "--metric_for_best_model", metric, "--report_to", "none", "--disable_tqdm", "true", "--seed", "0",
            "--dataloader_pin_memory", "false"]


@pytest.fixture(scope="module")
def search_run(workspace, one_thread) -> tuple[dict[str, float], str]:
    output_dir = os.path.join(workspace["root"], "search")
    metrics = run_code_search.main(["--model_name_or_path", workspace["checkpoint"], *data_flags(workspace),
                                    "--max_query_length", "32", *training_flags(output_dir, "mrr", epochs=10)])
    return metrics, output_dir


@pytest.fixture(scope="module")
def summarization_run(workspace, one_thread) -> tuple[dict[str, float], str]:
    output_dir = os.path.join(workspace["root"], "summarization")
    metrics = run_code_summarization.main([
        "--model_name_or_path", workspace["checkpoint"], *data_flags(workspace), "--max_target_length", "24",
        "--generation_num_beams", "2", *training_flags(output_dir, "bleu", epochs=20)])
    return metrics, output_dir


def logged_losses(output_dir: str) -> list[float]:
    with open(os.path.join(output_dir, "trainer_state.json"), encoding="utf-8") as handle:
        return [entry["loss"] for entry in json.load(handle)["log_history"] if "loss" in entry]


def read_jsonl(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def prepared(path: str) -> dict[str, list]:
    """The rows of a JSONL file as the scripts see them (docstrings cut out of Python code, texts joined)."""
    rows = read_jsonl(path)
    return codesearchnet.prepare({key: [row[key] for row in rows] for key in rows[0]}, language=None)


# --- the shared CodeSearchNet handling -------------------------------------------------------------------------------

def test_python_docstring_is_cut_out_of_the_code():
    code = 'def area(r):\n    """Area of a circle.\n\n    More.\n    """\n    return 3.14 * r * r\n'
    assert codesearchnet.strip_docstring(code) == "def area(r):\n    return 3.14 * r * r\n"
    decorated = '@cache\ndef f(x):\n    r"""Doc."""  \n    return x\n'
    assert codesearchnet.strip_docstring(decorated) == "@cache\ndef f(x):\n    return x\n"
    undocumented = "def f(x):\n    y = 'not a docstring'\n    return y\n"
    assert codesearchnet.strip_docstring(undocumented) == undocumented
    assert codesearchnet.strip_docstring("print 'python 2'\n") == "print 'python 2'\n"


def test_prepare_reads_each_rows_language_and_joins_the_docstring_tokens():
    batch = {"code": ['def f():\n    """Doc."""\n    return 1\n', 'int f() { /* kept */ return 1; }'],
             "docstring_tokens": [["Doc", "."], ["Returns", "one"]], "language": ["Python", "java"]}
    prepared_batch = codesearchnet.prepare(batch, language=None)
    assert prepared_batch == {"code": ["def f():\n    return 1\n", 'int f() { /* kept */ return 1; }'],
                              "text": ["Doc .", "Returns one"], "language": ["python", "java"]}
    assert codesearchnet.prepare(batch, language="c")["language"] == ["c", "c"]  # --language wins
    no_column = {key: value for key, value in batch.items() if key != "language"}
    assert codesearchnet.prepare(no_column, language=None)["language"] == ["python", "python"]
    as_strings = {**batch, "docstring_tokens": ["Doc.", "Returns one"]}  # a summary given as one string: kept
    assert codesearchnet.prepare(as_strings, language=None)["text"] == ["Doc.", "Returns one"]


def test_only_language_names_the_data_language_when_there_is_one():
    import datasets

    python, java = (datasets.Dataset.from_dict({"language": names}) for names in (["python", "python"], ["java"]))
    assert codesearchnet.only_language({"train": python, "validation": python}) == "python"
    assert codesearchnet.only_language({"train": python, "test": java}) is None


# --- code search -----------------------------------------------------------------------------------------------------

def test_code_search_trains_and_ranks_each_query_against_the_whole_eval_split(search_run, workspace):
    metrics, output_dir = search_run
    losses = logged_losses(output_dir)
    assert len(losses) >= 8 and max(losses[-3:]) < min(losses[:2]), losses
    validation = prepared(workspace["validation"])
    assert metrics["eval_samples"] == len(validation["code"]) > 8  # a pool larger than one eval batch
    # Recomputed here from the saved model, one example at a time: every query against every code of the split.
    model = SasaForCodeSearch.from_pretrained(output_dir).eval()
    tokenizer = SasaTokenizer.from_pretrained(output_dir)
    with torch.no_grad():
        code = torch.cat([model.encode(**tokenizer(text, language=language, truncation=True, max_length=128,
                                                   return_tensors="pt"))
                          for text, language in zip(validation["code"], validation["language"])])
        queries = torch.cat([model.encode(**tokenizer(text, language=None, truncation=True, max_length=32,
                                                      return_tensors="pt"))
                             for text in validation["text"]])
    expected = mean_reciprocal_rank((queries @ code.T).numpy(), list(range(len(code))))
    assert metrics["eval_mrr"] == pytest.approx(expected, abs=1e-6)
    assert 0 < metrics["test_mrr"] <= 1 and metrics["test_samples"] == len(read_jsonl(workspace["test"]))
    assert os.path.isfile(os.path.join(output_dir, "test_results.json"))


def test_code_search_output_loads_in_sentence_transformers_with_ast_links(search_run, workspace):
    """The output directory is a sentence-transformers model (its files written by the script): code through
    encode_document with its AST links, queries through encode_query without, encode()'s vectors both."""
    sentence_transformers = pytest.importorskip("sentence_transformers", minversion="6.0")

    _, output_dir = search_run
    assert {"modules.json", "sentence_bert_config.json", "config_sentence_transformers.json",
            "sentence_transformers_module.py"} <= set(os.listdir(output_dir))
    test = prepared(workspace["test"])
    codes, queries = test["code"][:4], test["text"][:4]
    encoder = sentence_transformers.SentenceTransformer(output_dir, trust_remote_code=True, device="cpu")
    features = encoder.preprocess(codes, language="python", task="document")
    assert (features["ast_links"] >= 0).any()  # the tokenizer parsed the code ...
    # the training data mixes languages, so the saved tokenizer has no default: code needs language=
    vectors = encoder.encode_document(codes, language="python", convert_to_tensor=True, batch_size=len(codes))
    query_vectors = encoder.encode_query(queries, convert_to_tensor=True)
    model = SasaForCodeSearch.from_pretrained(output_dir).eval()
    tokenizer = SasaTokenizer.from_pretrained(output_dir)
    inputs = tokenizer(codes, language="python", padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        expected = model.encode(**inputs)
        without_links = model.encode(inputs["input_ids"], inputs["attention_mask"])
        expected_queries = model.encode(**tokenizer(queries, language=None, padding=True, truncation=True,
                                                    max_length=32, return_tensors="pt"))  # --max_query_length 32
    torch.testing.assert_close(vectors, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(query_vectors, expected_queries, atol=1e-5, rtol=1e-5)
    assert (expected - without_links).abs().max() > 1e-4  # ... and the links reached the model


# --- code summarization ----------------------------------------------------------------------------------------------

def test_summarization_trains_generates_and_writes_codexglue_files(summarization_run, workspace):
    metrics, output_dir = summarization_run
    losses = logged_losses(output_dir)
    assert len(losses) >= 8 and max(losses[-3:]) < min(losses[:2]) - 1.0, losses
    test_rows = read_jsonl(workspace["test"])
    outputs, golds = ([line.rstrip("\n").split("\t", 1) for line in open(os.path.join(output_dir, name),
                                                                         encoding="utf-8")]
                      for name in ("test.output", "test.gold"))
    assert [index for index, _ in outputs] == [index for index, _ in golds] == [str(i) for i in range(len(test_rows))]
    assert [text for _, text in golds] == [" ".join(row["docstring_tokens"]) for row in test_rows]
    predictions = [text for _, text in outputs]
    assert any(predictions), predictions  # generate() wrote something
    assert metrics["test_bleu"] == round(smoothed_bleu(predictions, [text for _, text in golds]), 2)
    assert 0 <= metrics["eval_bleu"] <= 100 and metrics["test_samples"] == len(test_rows)
    config = json.load(open(os.path.join(output_dir, "generation_config.json"), encoding="utf-8"))
    assert config["num_beams"] == 2 and config["use_cache"] is False


# --- the saved models without the package ----------------------------------------------------------------------------

FRESH_PROCESS = WITHOUT_SASA + textwrap.dedent(
    """
    import json, sys

    import torch
    import transformers

    case = json.loads(sys.argv[1])
    remote = dict(trust_remote_code=True)

    def load(auto_class, path):
        model = getattr(transformers, auto_class).from_pretrained(path, **remote).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        return model

    tokenizer = transformers.AutoTokenizer.from_pretrained(case["search"], **remote)
    assert type(tokenizer).__module__.startswith("transformers_modules"), type(tokenizer).__module__
    code = tokenizer(case["code"], language=case["languages"], padding=True, return_tensors="pt")
    queries = tokenizer(case["queries"], language=None, padding=True, return_tensors="pt")
    expected = torch.load(case["expected"])
    with torch.no_grad():
        bi_encoder = load("AutoModelForTextEncoding", case["search"])
        assert torch.equal(bi_encoder.encode(**code), expected["code"])
        assert torch.equal(bi_encoder.encode(**queries), expected["queries"])
        states = load("AutoModel", case["search"])(**code).last_hidden_state  # the plain encoder, pooled by hand
        if bi_encoder.config.pooling == "cls":
            pooled = states[:, 0]
        else:
            mask = code["attention_mask"][..., None].to(states.dtype)
            pooled = (states * mask).sum(1) / mask.sum(1)
        torch.testing.assert_close(pooled, expected["code"], atol=1e-6, rtol=1e-6)
        summarizer = load("AutoModelForSeq2SeqLM", case["summarization"])
        source = transformers.AutoTokenizer.from_pretrained(case["summarization"], **remote)(
            case["code"], language=case["languages"], padding=True, return_tensors="pt")
        assert torch.equal(summarizer.generate(**source), expected["summaries"])
    print("identical")
    """
)


@pytest.mark.slow
def test_saved_models_reload_offline_without_the_package_to_identical_outputs(search_run, summarization_run,
                                                                             workspace, tmp_path):
    (_, search_dir), (_, summarization_dir) = search_run, summarization_run
    test = prepared(workspace["test"])
    java = next(row for row in snippet_rows() if row["language"] == "java")
    code, languages = [*test["code"][:2], java["code"]], [*test["language"][:2], "java"]
    tokenizer = SasaTokenizer.from_pretrained(search_dir)
    with torch.no_grad():
        bi_encoder = SasaForCodeSearch.from_pretrained(search_dir).eval()
        summarizer = SasaForCodeSummarization.from_pretrained(summarization_dir).eval()
        code_inputs = tokenizer(code, language=languages, padding=True, return_tensors="pt")
        expected = {"code": bi_encoder.encode(**code_inputs),
                    "queries": bi_encoder.encode(**tokenizer(test["text"][:2], language=None, padding=True,
                                                             return_tensors="pt")),
                    "summaries": summarizer.generate(**code_inputs)}  # the saved generation settings
    torch.save(expected, tmp_path / "expected.pt")
    case = dict(search=search_dir, summarization=summarization_dir, code=code, languages=languages,
                queries=test["text"][:2], expected=str(tmp_path / "expected.pt"))
    result = run_fresh_process(FRESH_PROCESS, json.dumps(case), cwd=tmp_path)
    assert "identical" in result.stdout


# --- bad input stops before training ---------------------------------------------------------------------------------

SCRIPTS = {"search": run_code_search, "summarization": run_code_summarization}


@pytest.fixture
def no_training(monkeypatch):
    def train(*args, **kwargs):
        raise AssertionError("training started: the bad input was not caught before it")

    monkeypatch.setattr(Trainer, "train", train)


def bad_rows(workspace: dict[str, str], name: str, change) -> str:
    rows = [change(dict(row)) for row in read_jsonl(workspace["train"])]
    return write_jsonl(os.path.join(workspace["root"], f"bad-{name}.jsonl"), rows)


@pytest.mark.parametrize("script", sorted(SCRIPTS))
@pytest.mark.parametrize("case", ["missing column", "empty after --long_only", "unknown language column",
                                  "unknown --language", "non-SASA checkpoint", "source longer than the model"])
def test_bad_input_stops_before_training_with_what_to_fix(script, case, workspace, tmp_path, no_training):
    checkpoint, extra, data = workspace["checkpoint"], [], {}
    if case == "missing column":
        data["train"] = bad_rows(workspace, "missing", lambda row: {k: v for k, v in row.items()
                                                                    if k != "docstring_tokens"})
        message = r"split 'train' \(--train_file .*bad-missing.jsonl\) lacks the column\(s\) \['docstring_tokens'\]"
    elif case == "empty after --long_only":
        extra = ["--long_only", "--long_threshold", "100000"]
        message = "no example is longer than 100000 tokens"
    elif case == "unknown language column":
        data["train"] = bad_rows(workspace, "kotlin", lambda row: {**row, "language": "kotlin"}
                                 if row["language"] == "java" else row)
        message = r"row \d+ \(line \d+\): 'language' is 'kotlin'; expected a language SASA parses: python"
    elif case == "unknown --language":
        extra = ["--language", "cobol"]
        message = "--language cobol: unsupported language 'cobol'"
    elif case == "non-SASA checkpoint":
        checkpoint = workspace["roberta"]
        message = "is a 'roberta' checkpoint.*sasa convert"
    else:
        extra = ["--max_source_length", "4096"]
        message = "--max_source_length 4096 exceeds the model's 512 positions"
    argv = ["--model_name_or_path", checkpoint, *data_flags(workspace, **data), "--do_train", "--do_eval",
            "--output_dir", str(tmp_path / "out"), "--max_source_length", "128", "--report_to", "none", *extra]
    with pytest.raises(ValueError, match=message):
        SCRIPTS[script].main(argv)


# --- long code only, from scratch, arguments from a JSON file ---------------------------------------------------------

def test_long_only_keeps_the_long_examples_and_says_how_many(workspace, tmp_path, caplog, one_thread):
    """Evaluation alone, of a model built from scratch (--config_overrides), with every argument in a JSON file."""
    tokenizer = SasaTokenizer.from_pretrained(workspace["checkpoint"])
    validation = prepared(workspace["validation"])
    lengths = [len(tokenizer(code, language=None)["input_ids"]) for code in validation["code"]]
    long_count = sum(length > 150 for length in lengths)
    assert 0 < long_count < len(lengths)
    arguments = tmp_path / "args.json"
    arguments.write_text(json.dumps({
        "from_scratch": True, "tokenizer_name": workspace["checkpoint"],
        "config_overrides": "hidden_size=16,num_hidden_layers=1,num_attention_heads=2,intermediate_size=32,"
                            "block_size=8,max_position_embeddings=258",
        "validation_file": workspace["validation"], "long_only": True, "long_threshold": 150,
        "max_source_length": 128, "do_eval": True, "output_dir": str(tmp_path / "out"),
        "per_device_eval_batch_size": 8, "report_to": "none", "dataloader_pin_memory": False}))
    caplog.set_level(logging.INFO, logger="codesearchnet")
    metrics = run_code_search.main([str(arguments)])
    assert metrics["eval_samples"] == long_count and 0 < metrics["eval_mrr"] <= 1
    assert f"kept {long_count} of {len(lengths)} examples longer than 150 tokens (in 'code')" in caplog.text
