#!/usr/bin/env python
"""Fine-tune SASA on Devign defect detection (CodeXGLUE ``Code-Code/Defect-detection``): is a C function vulnerable?

    sasa convert microsoft/codebert-base sasa-codebert
    python examples/run_defect_detection.py --model_name_or_path sasa-codebert \\
        --dataset_name google/code_x_glue_cc_defect_detection --max_source_length 1024 \\
        --do_train --do_eval --do_predict --output_dir out/defect

Data: ``--dataset_name`` or local ``--train_file/--validation_file/--test_file`` (.jsonl/.json/.parquet) with the
columns ``func`` (one C function) and ``target`` (bool, True = vulnerable). Metric: accuracy, as CodeXGLUE reports
it. Every ``TrainingArguments`` flag works, and so does one JSON file of arguments (``run_defect_detection.py
args.json``). The output directory is a checkpoint with its code: ``AutoModelForSequenceClassification``/
``AutoTokenizer.from_pretrained(output_dir, trust_remote_code=True)`` load it where ``sasa`` is not installed.
"""

import logging
import os

import numpy as np
from transformers import EvalPrediction, Trainer, set_seed

import common
from sasa import SasaDataCollator, SasaForSequenceClassification, SasaTokenizer
from sasa.metrics import accuracy

logger = logging.getLogger(__name__)

#: TrainingArguments defaults of this task; a flag (or JSON key) given by the user wins. Every parameter of the
#: classifier is used in each step (the heads have no pooler), so DDP need not search for unused ones.
TASK_DEFAULTS = {"metric_for_best_model": "accuracy", "ddp_find_unused_parameters": False}
LABELS = {0: "no-defect", 1: "defect"}


def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
    """Accuracy of the argmax class; with two logits, argmax is CodeXGLUE's ``sigmoid(logit) > 0.5``."""
    return {"accuracy": accuracy(np.argmax(prediction.predictions, axis=-1), prediction.label_ids)}


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    """Train / evaluate / predict as the flags ask; returns the metrics by split (``train``, ``eval``, ``test``)."""
    model_args, data_args, training_args = common.parse_arguments(argv, TASK_DEFAULTS)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logger.setLevel(logging.INFO if training_args.should_log else logging.WARNING)
    resume = training_args.resume_from_checkpoint or common.last_checkpoint(
        training_args.output_dir, training_args.do_train, model_args.overwrite_output_dir)
    if model_args.model_name_or_path:
        common.check_sasa_checkpoint(model_args.model_name_or_path)  # before anything else is loaded

    # Tokenizer: BPE + AST links of the C grammar. Its default language is saved with it (pipelines use it).
    tokenizer = SasaTokenizer.from_pretrained(model_args.tokenizer_name or model_args.model_name_or_path)
    tokenizer.language = data_args.language or "c"  # checked by DataArguments

    # Model configuration. CodeXGLUE's reference has one logit, a sigmoid and BCE; two logits with softmax
    # cross-entropy are the same model (softmax([a, b])[1] = sigmoid(b - a): BCE on the logit b - a, and argmax is
    # p > 0.5) with one redundant output row, and keep transformers' standard single-label head and pipeline.
    vocab = {"vocab_size": len(tokenizer)} if model_args.from_scratch else {}
    config = common.load_config(model_args, num_labels=2, problem_type="single_label_classification",
                                id2label=LABELS, label2id={name: i for i, name in LABELS.items()}, **vocab)
    common.check_model_fits(config, tokenizer, data_args.max_source_length)

    # Data. The source is kept as written. CodeXGLUE feeds ' '.join(func.split()), which puts the function on one
    # line: its first `// comment` then comments out all the rest and `#if`/`#define` lines run on, so tree-sitter
    # finds no statement and SASA loses its AST blocks (a 15-line function with a `//` comment on its first
    # statement: 38 syntax nodes instead of 129). The cost: newlines and indentation are tokens too.
    raw = common.load_raw_datasets(data_args, ["func", "target"])
    wanted = {"train": (training_args.do_train, data_args.max_train_samples),
              "validation": (training_args.do_eval, data_args.max_eval_samples),
              "test": (training_args.do_predict, data_args.max_predict_samples)}
    selected = {split: common.select_split(raw, split, max_samples)
                for split, (needed, max_samples) in wanted.items() if needed}
    if data_args.long_only:  # the paper's long-code subsets; --max_*_samples applies first
        selected = common.keep_long_splits(selected, tokenizer, "func", data_args, logger.info)

    def preprocess(batch: dict[str, list]) -> dict[str, list]:
        encoded = tokenizer(batch["func"], truncation=True, max_length=data_args.max_source_length)
        encoded["labels"] = [int(target) for target in batch["target"]]
        return encoded

    processed = {split: dataset.map(preprocess, batched=True, num_proc=data_args.preprocessing_num_workers,
                                    remove_columns=dataset.column_names,
                                    desc=f"Tokenizing and parsing {split} ({tokenizer.language})")
                 for split, dataset in selected.items()}

    # Model and Trainer.
    set_seed(training_args.seed)
    model = common.load_model(SasaForSequenceClassification, model_args, config, tokenizer)
    trainer = Trainer(model=model, args=training_args, train_dataset=processed.get("train"),
                      eval_dataset=processed.get("validation"), processing_class=tokenizer,
                      data_collator=SasaDataCollator(tokenizer, pad_to_multiple_of=config.block_size),
                      compute_metrics=compute_metrics)

    def write_predictions(output) -> None:
        """CodeXGLUE's predictions.txt for the test split: id <tab> 0/1 per line (row index without ids)."""
        test = selected["test"]
        ids = test["id"] if "id" in test.column_names else range(len(test))
        with open(os.path.join(training_args.output_dir, "predictions.txt"), "w", encoding="utf-8") as handle:
            handle.writelines(f"{i}\t{p}\n" for i, p in zip(ids, np.argmax(output.predictions, axis=-1)))

    # Train, evaluate, predict, save.
    results = common.train_evaluate_predict(trainer, processed, training_args, resume, write_predictions)
    if training_args.push_to_hub:
        trainer.push_to_hub(finetuned_from=model_args.model_name_or_path, tasks="text-classification",
                            dataset=data_args.dataset_name, tags=["sasa", "code", "defect-detection"])
    return results


if __name__ == "__main__":
    main()
