"""What the four CodeXGLUE task scripts share, in the order each script runs it.

Every ``run_*.py`` is the same skeleton, top to bottom:

1. :func:`parse_arguments`: ``(ModelArguments, DataArguments, [task arguments,] TrainingArguments)`` from one
   ``transformers.HfArgumentParser``, so every Trainer flag works and so does a JSON file of arguments;
2. :func:`start_run`: logging, the seed, ``--output_dir`` writable, the checkpoint to resume from;
3. :func:`load_config_and_tokenizer`: the checkpoint checked, the tokenizer (a byte-level BPE), the config, checked
   against each other;
4. data: :func:`load_raw_datasets` (every row checked against the task's column rules, :mod:`validation`),
   :func:`select_splits`, :func:`keep_long_splits` (``--long_only``), then the task's tokenization through
   :func:`tokenize_splits`;
5. :func:`load_model`, and the task's ``Trainer``;
6. :func:`train_evaluate_predict`: ``--do_train`` (then save), ``--do_eval``, ``--do_predict`` (the task's
   prediction files and test metrics through two hooks), every split's metrics logged and saved;
7. :func:`push_to_hub`.
"""

import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import datasets
import numpy as np
import transformers
from tokenizers.pre_tokenizers import ByteLevel
from transformers import (
    AutoConfig,
    HfArgumentParser,
    PretrainedConfig,
    PreTrainedTokenizerBase,
    Trainer,
    TrainingArguments,
    set_seed,
)
from transformers.trainer_utils import PredictionOutput, get_last_checkpoint

import validation
from sasa import SasaConfig, SasaTokenizer
from sasa.ast_languages import normalize_language
from sasa.frequency import install_identifier_tokens

#: The one logger of the example scripts and their helpers (:func:`start_run` sets its level).
logger = logging.getLogger(__name__)
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: Local data formats, by file extension, and the ``datasets`` builder that reads each.
LOCAL_FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(default=None, metadata={
        "help": "SASA checkpoint directory or Hub id (convert CodeBERT first: sasa convert <roberta> <out_dir>)."})
    tokenizer_name: str | None = field(default=None, metadata={
        "help": "Tokenizer directory or Hub id, if not the checkpoint's (needed with --from_scratch alone)."})
    from_scratch: bool = field(default=False, metadata={
        "help": "Random weights: SasaConfig defaults (or the checkpoint's shape), then --config_overrides."})
    config_overrides: str | None = field(default=None, metadata={
        "help": "With --from_scratch: e.g. 'hidden_size=128,num_hidden_layers=2,num_attention_heads=4'."})
    attn_implementation: str | None = field(default=None, metadata={
        "help": "Attention kernel: sasa_auto (default: flex_attention on CUDA unless training with attention dropout, "
                "sasa_blocks elsewhere), sasa_blocks, flex_attention, sdpa or eager (docs/layout.md)."})
    attention_probs_dropout_prob: float | None = field(default=None, metadata={
        "help": "Override the checkpoint's attention dropout; 0 lets sasa_auto train with FlexAttention on CUDA."})
    overwrite_output_dir: bool = field(default=False, metadata={
        "help": "Start afresh in a non-empty --output_dir instead of resuming its last checkpoint-N "
                "(transformers 5's TrainingArguments no longer has this flag)."})

    def __post_init__(self) -> None:
        if self.from_scratch and self.model_name_or_path is None and self.tokenizer_name is None:
            raise ValueError("--from_scratch needs a tokenizer: give --tokenizer_name (or --model_name_or_path).")
        if not self.from_scratch and self.model_name_or_path is None:
            raise ValueError("give --model_name_or_path (a SASA checkpoint), or --from_scratch with --tokenizer_name.")
        if self.config_overrides and not self.from_scratch:
            raise ValueError(f"--config_overrides {self.config_overrides!r} changes the model's shape, which only "
                             "--from_scratch can do; a pretrained checkpoint's config is fixed.")


@dataclass
class DataArguments:
    dataset_name: str | None = field(default=None, metadata={
        "help": "Hub dataset, e.g. google/code_x_glue_cc_defect_detection."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "Its config, e.g. 'python'."})
    train_file: str | None = field(default=None, metadata={"help": "Local .jsonl/.json/.parquet, Hub columns."})
    validation_file: str | None = field(default=None, metadata={"help": "Local .jsonl/.json/.parquet."})
    test_file: str | None = field(default=None, metadata={"help": "Local .jsonl/.json/.parquet."})
    max_source_length: int = field(default=1024, metadata={"help": "Tokens kept per code input (truncation)."})
    long_only: bool = field(default=False, metadata={
        "help": "Keep only examples longer than --long_threshold tokens (the paper's long-code setting)."})
    long_threshold: int = field(default=512, metadata={"help": "Token count an example must exceed to be kept."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Use the first N training examples."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use the first N validation examples."})
    max_predict_samples: int | None = field(default=None, metadata={"help": "Use the first N test examples."})
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "Processes for datasets.map."})
    language: str | None = field(default=None, metadata={
        "help": "Language of the code, for its AST links (default: the task's, e.g. c for defect detection)."})
    bad_rows: Literal["stop", "skip"] = field(default="stop", metadata={
        "help": "Rows whose columns break the task's rules (a null or blank text, a label not 0/1, ...), lines that "
                "are not JSON, bytes that are not UTF-8: 'stop' before training with a message naming them, or "
                "'skip' them (bad bytes replaced by U+FFFD), counted and logged per split."})

    def __post_init__(self) -> None:
        if self.dataset_name and self.data_files():
            raise ValueError(f"give --dataset_name or local files, not both; got {self.dataset_name!r} and "
                             f"{self.data_files()}.")
        for split, path in self.data_files().items():
            if os.path.splitext(path)[1] not in LOCAL_FORMATS:
                raise ValueError(f"--{split}_file {path}: expected one of {sorted(LOCAL_FORMATS)} files.")
        if self.long_threshold < 0:
            raise ValueError(f"--long_threshold must be >= 0 tokens, got {self.long_threshold}.")
        try:
            normalize_language(self.language)
        except ValueError as error:
            raise ValueError(f"--language {self.language}: {error}") from None
        if self.bad_rows not in (validation.STOP, validation.SKIP):
            raise ValueError(f"--bad_rows must be 'stop' or 'skip', got {self.bad_rows!r}.")

    def data_files(self) -> dict[str, str]:
        """The local files given, by split: ``{"train": ..., "validation": ..., "test": ...}`` (only those set)."""
        files = {"train": self.train_file, "validation": self.validation_file, "test": self.test_file}
        return {split: path for split, path in files.items() if path}


# --- 1. arguments ---------------------------------------------------------------------------------------------------

def parse_arguments(argv: list[str] | None, task_defaults: dict, *extra_dataclasses: type,
                    training_arguments: type = TrainingArguments) -> tuple:
    """``(ModelArguments, DataArguments, *extra_dataclasses, TrainingArguments)`` from flags, or from one ``.json``
    file of them, over the task's ``TrainingArguments`` defaults (e.g. ``metric_for_best_model``); a flag or key the
    user gives wins. The defaults are in place before ``TrainingArguments.__post_init__``, so what it derives from
    them (``greater_is_better``) follows."""
    parser = HfArgumentParser((ModelArguments, DataArguments, *extra_dataclasses, training_arguments))
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 1 and argv[0].endswith(".json"):
        with open(argv[0], encoding="utf-8") as handle:
            return parser.parse_dict({**task_defaults, **json.load(handle)})
    parser.set_defaults(**task_defaults)
    return parser.parse_args_into_dataclasses(argv)


# --- 2. logging, seed, resuming -------------------------------------------------------------------------------------

def start_run(model_args: ModelArguments, training_args: TrainingArguments) -> str | None:
    """What every script does right after parsing: logging, the seed, and the checkpoint to resume from.

    Logging: one format, on stdout. The example scripts log through :data:`logger` (INFO on the main process,
    WARNING on the others); transformers and datasets at ``--log_level``/``--log_level_replica`` (by default their
    warnings only). The seed (``--seed``) is set before anything random: weights from scratch, a head's
    initialisation. ``--output_dir`` must be writable (:func:`check_output_dir`). Returns
    ``--resume_from_checkpoint``, else what :func:`last_checkpoint` finds in ``--output_dir``.
    """
    logging.basicConfig(format=LOG_FORMAT, handlers=[logging.StreamHandler(sys.stdout)])
    logger.setLevel(logging.INFO if training_args.should_log else logging.WARNING)
    library_level = training_args.get_process_log_level()
    transformers.utils.logging.set_verbosity(library_level)
    datasets.utils.logging.set_verbosity(library_level)
    set_seed(training_args.seed)
    check_output_dir(training_args.output_dir)
    resume = training_args.resume_from_checkpoint or last_checkpoint(
        training_args.output_dir, training_args.do_train, model_args.overwrite_output_dir)
    if resume and training_args.do_train:
        logger.info("resuming training from %s", resume)
    return resume


def check_output_dir(output_dir: str) -> None:
    """``ValueError`` unless ``output_dir`` is a directory this process may write into, or one it may create (its
    nearest existing parent a writable directory). Checked at the start: Trainer would fail only once the data are
    tokenized and the model built."""
    existing = os.path.abspath(output_dir)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ValueError(f"--output_dir {output_dir}: {existing} is a file, not a directory; choose another "
                         "--output_dir.")
    if not os.access(existing, os.W_OK | os.X_OK):
        where = "is" if existing == os.path.abspath(output_dir) else f"would be made in {existing}, which is"
        raise ValueError(f"--output_dir {output_dir} {where} not writable by this user; choose another --output_dir "
                         "(or change the directory's permissions).")


def last_checkpoint(output_dir: str, do_train: bool = True, overwrite_output_dir: bool = False) -> str | None:
    """The ``checkpoint-N`` directory in ``output_dir`` to resume training from, or ``None`` to start afresh.

    transformers' example-script rule: when training into an existing ``output_dir`` (and not
    ``--overwrite_output_dir``), resume from its last checkpoint; a non-empty directory without one is a
    ``ValueError`` rather than a silent overwrite. Give ``--resume_from_checkpoint`` precedence over this.
    """
    if not do_train or overwrite_output_dir or not os.path.isdir(output_dir):
        return None
    checkpoint = get_last_checkpoint(output_dir)
    if checkpoint is None and os.listdir(output_dir):
        raise ValueError(f"output directory {output_dir} is not empty and holds no checkpoint-N to resume from "
                         f"(it has {sorted(os.listdir(output_dir))[:8]}): pass --overwrite_output_dir to train "
                         "into it anyway, or choose another --output_dir.")
    return checkpoint


# --- 3. configuration and tokenizer ---------------------------------------------------------------------------------

def load_config_and_tokenizer(model_args: ModelArguments, data_args: DataArguments, language: str | None = None,
                              **config_fields) -> tuple[PretrainedConfig, SasaTokenizer]:
    """The model's configuration (``config_fields`` set on it, e.g. ``num_labels=2``) and its tokenizer, checked
    against each other before any data is read.

    ``--model_name_or_path`` must be a SASA checkpoint (checked first: a RoBERTa one stops here, pointed at
    ``sasa convert``). The tokenizer is the checkpoint's, or ``--tokenizer_name``, a byte-level BPE
    (:func:`check_sasa_tokenizer`); with ``--from_scratch`` the
    vocabulary is the tokenizer's (unless ``--config_overrides`` sets ``vocab_size``). ``--max_source_length``
    must fit the positions, and the tokenizer's ids the vocabulary. Saved with the model: the tokenizer's default
    language (``--language``, else the task's ``language``; ``None`` keeps the tokenizer's own, for scripts that
    read each example's language from the data) and its ``model_max_length`` (the model's positions, where
    truncation must cut).
    """
    if model_args.model_name_or_path is not None:
        check_sasa_checkpoint(model_args.model_name_or_path)  # before the tokenizer: a directory may have none
    tokenizer_source = model_args.tokenizer_name or model_args.model_name_or_path
    tokenizer = SasaTokenizer.from_pretrained(tokenizer_source)
    check_sasa_tokenizer(tokenizer, tokenizer_source,
                         "--tokenizer_name" if model_args.tokenizer_name else "--model_name_or_path")
    if data_args.language or language:
        tokenizer.language = data_args.language or language  # checked by DataArguments
    if model_args.from_scratch and "vocab_size" not in (model_args.config_overrides or ""):
        config_fields["vocab_size"] = len(tokenizer)
    config = load_config(model_args, **config_fields)
    check_model_fits(config, tokenizer, data_args.max_source_length)
    tokenizer.model_max_length = config.max_sequence_length
    return config, tokenizer


def check_sasa_checkpoint(path_or_id: str) -> None:
    """``ValueError`` unless ``path_or_id`` is a SASA checkpoint (``model_type == "sasa"``), saying how to make one."""
    if os.path.isdir(path_or_id) and not os.path.isfile(os.path.join(path_or_id, "config.json")):
        raise ValueError(f"{path_or_id} is a directory without config.json, so not a checkpoint (it holds "
                         f"{sorted(os.listdir(path_or_id))[:8]}); expected a SASA checkpoint, as "
                         "save_pretrained or `sasa convert <roberta checkpoint> <out_dir>` writes one.")
    config = AutoConfig.from_pretrained(path_or_id, trust_remote_code=True)
    if config.model_type != "sasa":
        raise ValueError(f"{path_or_id} is a {config.model_type!r} checkpoint ({type(config).__name__}), not a SASA "
                         f"one. Convert it first: `sasa convert {path_or_id} <out_dir>`, then pass "
                         "--model_name_or_path <out_dir>.")


def check_sasa_tokenizer(tokenizer: PreTrainedTokenizerBase, source: str, flag: str = "--tokenizer_name") -> None:
    """``ValueError`` unless ``tokenizer`` (loaded from ``source``, given as ``flag``) is a byte-level BPE, as
    RoBERTa's, CodeBERT's and every SASA checkpoint's: its vocabulary holds the 256 byte symbols.

    ``SasaTokenizer.from_pretrained`` does not fail on a directory without vocabulary files, a checkpoint saved
    without its tokenizer, a Hub id not in the offline cache, or a WordPiece (BERT) vocabulary: it returns a
    tokenizer of a few tokens, which would turn every input into ``<unk>``.
    """
    vocabulary = tokenizer.get_vocab()
    missing = sum(symbol not in vocabulary for symbol in ByteLevel.alphabet())
    if missing:
        held = (f"the directory holds {sorted(os.listdir(source))[:8]}" if os.path.isdir(source) else
                "it is not a local directory; offline, a Hub id loads only from the local cache")
        raise ValueError(f"{flag} {source} is not a SASA tokenizer: expected a byte-level BPE vocabulary (vocab.json "
                         "and merges.txt, as RoBERTa's, CodeBERT's or a SASA checkpoint's), but it loads as "
                         f"{len(tokenizer)} tokens, without {missing} of the 256 byte symbols ({held}).")


def load_config(model_args: ModelArguments, **kwargs) -> PretrainedConfig:
    """The model's configuration, with ``kwargs`` (e.g. ``num_labels=1``) set on it.

    The checkpoint's config; with ``--from_scratch``, SasaConfig defaults (or the checkpoint's config when one is
    given) then ``--config_overrides``; pass ``vocab_size=len(tokenizer)`` there. Checks ``--model_name_or_path``
    is a SASA checkpoint first.
    """
    if model_args.model_name_or_path is not None:
        check_sasa_checkpoint(model_args.model_name_or_path)
        config = AutoConfig.from_pretrained(model_args.model_name_or_path, trust_remote_code=True, **kwargs)
    else:
        config = SasaConfig(**kwargs)
    if model_args.config_overrides:
        config.update_from_string(model_args.config_overrides)
    if model_args.attention_probs_dropout_prob is not None:
        config.attention_probs_dropout_prob = model_args.attention_probs_dropout_prob
    return config


def check_model_fits(config: PretrainedConfig, tokenizer: PreTrainedTokenizerBase, max_source_length: int) -> None:
    """``ValueError`` unless ``--max_source_length`` fits the position table and the tokenizer's ids the vocabulary."""
    if max_source_length > config.max_sequence_length:
        raise ValueError(f"--max_source_length {max_source_length} exceeds the model's {config.max_sequence_length} "
                         "positions: lower it, or convert with a longer position table (sasa convert <roberta> "
                         f"<out_dir> --max-position-embeddings {max_source_length + 2}).")
    if len(tokenizer) > config.vocab_size:
        raise ValueError(f"the tokenizer has {len(tokenizer)} ids but the model only {config.vocab_size}: use the "
                         "checkpoint's own tokenizer (leave out --tokenizer_name).")


def check_length_fits(config: PretrainedConfig, flag: str, value: int, positions: int | None = None) -> None:
    """``ValueError`` unless ``flag``'s ``value`` (a length in tokens, taking ``positions`` positions: by default
    ``value``) fits the model's position table, e.g. ``--max_query_length`` (queries go through the same encoder)
    or ``--max_target_length`` (the decoder embeds with the encoder's positions, the start token included)."""
    positions = value if positions is None else positions
    if positions > config.max_sequence_length:
        raise ValueError(f"{flag} {value} needs {positions} positions, but the model has {config.max_sequence_length}:"
                         f" lower {flag}.")


# --- 4. data --------------------------------------------------------------------------------------------------------

def load_raw_datasets(data_args: DataArguments, task: str) -> datasets.DatasetDict:
    """The task's splits, from the Hub (``--dataset_name``) or local files (:func:`read_local_file`), every row of
    each checked against ``validation.TASK_COLUMNS[task]`` before anything is tokenized.

    One pass per split (:func:`validation.check_split`): a missing column, an empty split or a bad row stops here
    with a message naming the split, its file, the first bad rows, the column, the value and what was expected;
    with ``--bad_rows skip`` the bad rows are left out, counted and logged per split. ``--language`` replaces a
    ``language`` column, which is then neither read nor checked.
    """
    columns = dict(validation.TASK_COLUMNS[task])
    if data_args.language:
        columns.pop("language", None)
    if data_args.dataset_name:
        raw = datasets.load_dataset(data_args.dataset_name, data_args.dataset_config_name)
        sources = {split: validation.Source(split, name=data_args.dataset_name) for split in raw}
    else:
        files = data_args.data_files()
        if not files:
            raise ValueError("no data: give --dataset_name (e.g. google/code_x_glue_cc_defect_detection) or at "
                             "least one of --train_file, --validation_file, --test_file (.jsonl, .json, .parquet).")
        for split, path in files.items():
            if not os.path.isfile(path):
                raise FileNotFoundError(f"--{split}_file {path}: no such file.")
        raw, sources = datasets.DatasetDict(), {}
        for split, path in files.items():
            raw[split], line_numbers = read_local_file(path, split, data_args.bad_rows, columns)
            sources[split] = validation.Source(split, path=path, flag=f"--{split}_file", line_numbers=line_numbers)
    checked = {}
    for split, dataset in raw.items():
        start = time.perf_counter()
        checked[split], report = validation.check_split(dataset, columns, sources[split], data_args.bad_rows)
        log = logger.warning if len(checked[split]) < len(dataset) else logger.info
        log("%s split, checked in %.2f s: %s", split, time.perf_counter() - start, report)
    return datasets.DatasetDict(checked)


def read_local_file(path: str, split: str, bad_rows: str = validation.STOP,
                    columns: Mapping[str, validation.Rule] | None = None) -> tuple[datasets.Dataset, np.ndarray | None]:
    """One local file (``--{split}_file``) as a dataset, with what ``datasets`` would report deep inside (or not at
    all) said first; and the line of each row, where a copy without some lines was read (else ``None``: lines are
    found when needed).

    A JSON file is checked before it is read (:func:`validation.check_json_file`: empty, not UTF-8). When
    ``datasets`` fails on it all the same, it is parsed line by line: the lines that are not JSON objects are named,
    the rows checked against ``columns`` (:func:`validation.check_objects`), a column of mixed JSON types named. With
    ``bad_rows`` ``skip`` bad lines and rows are left out (bad bytes replaced), counted in the log. A temporary copy
    is read in those cases: ``datasets`` keeps what it read in its cache, so the copy is removed at once.
    """
    builder, flag = LOCAL_FORMATS[os.path.splitext(path)[1]], f"--{split}_file"
    with tempfile.TemporaryDirectory(prefix="sasa-bad-rows-") as workdir:
        readable = path
        if builder == "json":
            readable, report = validation.check_json_file(path, flag, bad_rows, workdir)
            if report:
                logger.warning(report)
        try:
            return datasets.load_dataset(builder, data_files=readable, split="train"), None
        except Exception as error:  # datasets' own, from deep inside its reader: find the line
            if builder != "json":
                raise ValueError(f"{flag} {path}: datasets could not read it as {builder}: {error}") from error
            if validation.is_json_array(readable):
                raise ValueError(validation.json_array_problem(readable, flag, path) or
                                 f"{flag} {path}: datasets could not read it as JSON: {error}") from error
            failure = error
        objects, numbers, bad_lines = validation.read_json_lines(readable)
        if bad_lines and (bad_rows != validation.SKIP or not objects):
            raise ValueError(validation.bad_json_lines_message(path, flag, bad_lines, len(objects) + len(bad_lines)))
        dropped = {number for number, _, _ in bad_lines}
        if bad_lines:
            logger.warning("%s %s: skipped %d of %d lines that are not one JSON object each (--bad_rows skip); the "
                           "first: line %d", flag, path, len(bad_lines), len(objects) + len(bad_lines),
                           bad_lines[0][0])
        source = validation.Source(split, path=path, flag=flag, line_numbers=np.array(numbers, dtype=np.int64))
        bad = validation.check_objects(objects, columns or {}, source)
        if bad is not None and bad_rows != validation.SKIP:
            raise ValueError(bad.error())
        if bad is not None:
            logger.warning("%s split: %s", split, bad.skipped())
            dropped |= {numbers[row] for row in np.flatnonzero(bad.mask)}
        copy, line_numbers = validation.compact_copy(readable, dropped, workdir)
        try:
            return datasets.load_dataset(builder, data_files=copy, split="train"), line_numbers
        except Exception as error:
            kept = [(row, number) for row, number in zip(objects, numbers) if number not in dropped]
            mixed = validation.mixed_types([row for row, _ in kept], [number for _, number in kept])
            raise ValueError(f"{flag} {path}: {mixed}: datasets reads one type per column (this version of it, "
                             f"{datasets.__version__}); make the column one type." if mixed else
                             f"{flag} {path}: datasets could not read it as JSON lines: {failure}") from error


def select_splits(raw: datasets.DatasetDict, data_args: DataArguments, training_args: TrainingArguments,
                  random_sample: bool = False) -> dict[str, datasets.Dataset]:
    """The splits this run needs: ``train`` (``--do_train``), ``validation`` (``--do_eval``, which evaluating during
    training turns on) and ``test`` (``--do_predict``), cut to ``--max_train_samples``, ``--max_eval_samples`` and
    ``--max_predict_samples``: their first examples, or with ``random_sample`` a sample of train and validation
    drawn with ``--seed`` (as CodeXGLUE samples BigCloneBench's 10 %). A ``ValueError`` names a missing split."""
    wanted = {"train": (training_args.do_train, data_args.max_train_samples),
              "validation": (training_args.do_eval, data_args.max_eval_samples),
              "test": (training_args.do_predict, data_args.max_predict_samples)}
    seed = training_args.seed if random_sample else None
    return {split: select_split(raw, split, max_samples, seed=None if split == "test" else seed)
            for split, (needed, max_samples) in wanted.items() if needed}


def select_split(raw: datasets.DatasetDict, split: str, max_samples: int | None = None,
                 seed: int | None = None) -> datasets.Dataset:
    """Split ``split``, cut to ``max_samples`` examples: its first ones, or with ``seed`` a random sample (as
    CodeXGLUE samples BigCloneBench's 10 %); a ``ValueError`` naming the splits there are."""
    if split not in raw:
        raise ValueError(f"this run needs a {split!r} split, but the data has {list(raw)}: give --{split}_file "
                         f"(or a dataset with that split), or leave out the --do_* flag that needs it.")
    dataset = raw[split]
    if max_samples is None or max_samples >= len(dataset):
        return dataset
    return (dataset if seed is None else dataset.shuffle(seed=seed)).select(range(max_samples))


def keep_long_splits(splits: dict[str, datasets.Dataset], tokenizer: PreTrainedTokenizerBase,
                     columns: str | Sequence[str], data_args: DataArguments) -> dict[str, datasets.Dataset]:
    """``--long_only``: :func:`keep_long_examples` on every split (``--long_threshold``,
    ``--preprocessing_num_workers``), each split's report logged."""
    kept = {}
    for split, dataset in splits.items():
        kept[split], report = keep_long_examples(dataset, tokenizer, columns, data_args.long_threshold,
                                                 data_args.preprocessing_num_workers)
        logger.info("%s split: %s", split, report)
    return kept


def keep_long_examples(dataset: datasets.Dataset, tokenizer: PreTrainedTokenizerBase, columns: str | Sequence[str],
                       threshold: int = 512, num_proc: int | None = None) -> tuple[datasets.Dataset, str]:
    """The examples longer than ``threshold`` tokens, and a one-line report of how many were kept.

    Length is ``len(tokenizer(text)["input_ids"])``: no truncation, special tokens included. With several columns
    (clone detection's ``func1``, ``func2``, each encoded on its own), an example is kept if *any* is longer.
    Measure the text the model sees: apply the task's preprocessing (e.g. ``' '.join(func.split())``) first.
    """
    columns = [columns] if isinstance(columns, str) else list(columns)
    # A SASA tokenizer parses the code for AST links when it has a default language; lengths do not depend on them.
    no_parsing = {"language": None} if hasattr(tokenizer, "ast_relations") else {}

    def is_long(batch: dict[str, list]) -> list[bool]:
        longest = [0] * len(batch[columns[0]])
        for column in columns:
            encoded = tokenizer(batch[column], truncation=False, return_attention_mask=False, verbose=False,
                                **no_parsing)
            longest = [max(length, len(ids)) for length, ids in zip(longest, encoded["input_ids"])]
        return [length > threshold for length in longest]

    kept = dataset.filter(is_long, batched=True, num_proc=num_proc,
                          desc=f"Keeping examples longer than {threshold} tokens")
    where = " or ".join(repr(column) for column in columns)
    if len(kept) == 0:
        raise ValueError(f"no example is longer than {threshold} tokens (in {where}): looked at {len(dataset)}. "
                         "Run without --long_only, or with a lower --long_threshold.")
    return kept, f"kept {len(kept)} of {len(dataset)} examples longer than {threshold} tokens (in {where})"


def tokenize_splits(splits: dict[str, datasets.Dataset], tokenize: Callable[[dict[str, list]], dict[str, list]],
                    data_args: DataArguments, description: str) -> dict[str, datasets.Dataset]:
    """Every split mapped through the task's ``tokenize`` (batched, ``--preprocessing_num_workers`` processes,
    cached by ``datasets``), its raw columns dropped: the model's inputs and labels only.

    The AST links are stored compactly (:func:`compact_features`): ``int16`` (for ``--max_source_length`` up to
    32,768 tokens) in a fixed-size list per token, where ``datasets`` would store nested lists of ``int64``. They
    read back as the same Python ints, so the collator's tensors are unchanged.
    """
    return {split: dataset.map(tokenize, batched=True, num_proc=data_args.preprocessing_num_workers,
                               remove_columns=dataset.column_names, desc=f"{description}: {split} split",
                               features=compact_features(tokenize, dataset, data_args.max_source_length))
            for split, dataset in splits.items()}


def link_dtype(max_length: int) -> str:
    """The smallest integer type that holds every AST link of sequences of up to ``max_length`` tokens (a token
    index, or -1 for none): ``"int16"`` up to 32,768 tokens, ``"int32"`` beyond."""
    return "int16" if max_length - 1 <= np.iinfo(np.int16).max else "int32"


def compact_features(tokenize: Callable[[dict[str, list]], dict[str, list]], dataset: datasets.Dataset,
                     max_length: int) -> datasets.Features | None:
    """The ``features`` for ``dataset.map(tokenize)`` that store every ``*ast_links`` column (code: ``[L][R]``,
    clone pairs: ``[2][L][R]``) compactly: :func:`link_dtype` integers instead of ``int64``, and each token's ``R``
    links as a fixed-size list (Arrow keeps no 4-byte offset per token). 2R bytes per token instead of 8R + 4.

    The other columns keep the types ``datasets`` infers; both are read from ``tokenize`` on the first example
    (``R``: the tokenizer's relations, the same for every token). ``None`` for an empty dataset (nothing to map). A
    link or a row that does not fit is an error of the map, never a silent overflow.
    """
    if len(dataset) == 0:
        return None
    probe = tokenize(dataset[:1])
    features = datasets.Dataset.from_dict(probe).features
    for name, feature in features.items():
        if name.endswith("ast_links"):
            links = probe[name][0]
            while links and isinstance(links[0][0], (list, tuple)):  # a pair: [2][L][R] -> its first [L][R]
                links = links[0]
            features[name] = _links_feature(feature, link_dtype(max_length), relations=len(links[0]))
    return features


def _links_feature(feature, dtype: str, relations: int):
    """``feature``, nested ``List``s of integers, with ``dtype`` integers in a fixed-size innermost list."""
    if not isinstance(feature, datasets.List) or not isinstance(feature.feature, (datasets.List, datasets.Value)):
        raise ValueError(f"expected AST links as nested lists of integers, got the feature {feature!r}.")
    if isinstance(feature.feature, datasets.Value):
        return datasets.List(datasets.Value(dtype), length=relations)
    return datasets.List(_links_feature(feature.feature, dtype, relations), length=feature.length)


# --- 5. model -------------------------------------------------------------------------------------------------------

def load_model(model_class: type, model_args: ModelArguments, config: PretrainedConfig,
               tokenizer: PreTrainedTokenizerBase):
    """``model_class`` with random weights (``--from_scratch``: its input top-k source matches the tokenizer's
    identifiers, as ``sasa convert`` sets it) or the checkpoint's weights, under ``config``."""
    if model_args.from_scratch:
        model = model_class._from_config(config, attn_implementation=model_args.attn_implementation)
        install_identifier_tokens(model, tokenizer)
        return model
    return model_class.from_pretrained(model_args.model_name_or_path, config=config,
                                       attn_implementation=model_args.attn_implementation)


# --- 6. train, evaluate, predict, save; 7. push -----------------------------------------------------------------------

def train_evaluate_predict(trainer: Trainer, splits: dict[str, datasets.Dataset], training_args: TrainingArguments,
                           resume: str | None,
                           write_predictions: Callable[[PredictionOutput], None] | None = None,
                           test_metrics: Callable[[PredictionOutput], dict[str, float]] | None = None,
                           ) -> dict[str, dict[str, float]]:
    """What ``--do_train``, ``--do_eval`` and ``--do_predict`` ask for; every split's metrics logged and saved
    (``{split}_results.json``) and returned by split: ``{"train": {...}, "eval": {...}, "test": {...}}``.

    Training ends with ``trainer.save_model()``: weights, config, tokenizer and the model's code files, a checkpoint
    that loads as remote code. Evaluation is ``trainer.evaluate()`` on the validation split and prediction
    ``trainer.predict(test)``: a task that scores otherwise (code search ranks the whole split) overrides those two
    in its Trainer. Two hooks take the test split's ``PredictionOutput``: ``test_metrics(output)`` returns metrics
    that add to or replace the Trainer's (on every process), ``write_predictions(output)`` writes the task's
    prediction files (on the main process only).
    """
    results = {}
    if training_args.do_train:
        train_result = trainer.train(resume_from_checkpoint=resume)
        trainer.save_model()
        trainer.save_state()
        results["train"] = {**train_result.metrics, "train_samples": len(splits["train"])}
    if training_args.do_eval:
        results["eval"] = {**trainer.evaluate(), "eval_samples": len(splits["validation"])}
    if training_args.do_predict:
        output = trainer.predict(splits["test"], metric_key_prefix="test")
        extra = test_metrics(output) if test_metrics is not None else {}
        results["test"] = {**output.metrics, **extra, "test_samples": len(splits["test"])}
        if write_predictions is not None and trainer.is_world_process_zero():
            os.makedirs(training_args.output_dir, exist_ok=True)
            write_predictions(output)
    for split, metrics in results.items():
        trainer.log_metrics(split, metrics)
        trainer.save_metrics(split, metrics)
    return results


def push_to_hub(trainer: Trainer, model_args: ModelArguments, data_args: DataArguments, tags: list[str],
                **card) -> None:
    """``--push_to_hub``: upload ``--output_dir`` (``--hub_model_id``), its model card naming the checkpoint it was
    fine-tuned from, the dataset and ``tags`` (``card``: e.g. ``tasks="text-classification"``)."""
    if trainer.args.push_to_hub:
        trainer.push_to_hub(finetuned_from=model_args.model_name_or_path, dataset=data_args.dataset_name,
                            tags=["sasa", "code", *tags], **card)
