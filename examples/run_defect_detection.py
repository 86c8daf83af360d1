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

import os

import numpy as np
from transformers import EvalPrediction, Trainer

import common
from sasa import SasaDataCollator, SasaForSequenceClassification
from sasa.metrics import accuracy

#: TrainingArguments defaults of this task; a flag (or JSON key) given by the user wins. Every parameter of the
#: classifier is used in each step (the heads have no pooler), so DDP need not search for unused ones.
TASK_DEFAULTS = {"metric_for_best_model": "accuracy", "ddp_find_unused_parameters": False}
LABELS = {0: "no-defect", 1: "defect"}


def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
    """Accuracy of the argmax class; with two logits, argmax is CodeXGLUE's ``sigmoid(logit) > 0.5``."""
    return {"accuracy": accuracy(np.argmax(prediction.predictions, axis=-1), prediction.label_ids)}


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    """Train / evaluate / predict as the flags ask; returns the metrics by split (``train``, ``eval``, ``test``)."""
    # Arguments; logging, seed, the checkpoint to resume from.
    model_args, data_args, training_args = common.parse_arguments(argv, TASK_DEFAULTS)
    resume = common.start_run(model_args, training_args)

    # Configuration and tokenizer: BPE + AST links of the C grammar, its default language saved with it (pipelines
    # use it). CodeXGLUE's reference has one logit, a sigmoid and BCE; two logits with softmax cross-entropy are the
    # same model (softmax([a, b])[1] = sigmoid(b - a): BCE on the logit b - a, and argmax is p > 0.5) with one
    # redundant output row, and keep transformers' standard single-label head and pipeline.
    config, tokenizer = common.load_config_and_tokenizer(
        model_args, data_args, language="c", num_labels=2, problem_type="single_label_classification",
        id2label=LABELS, label2id={name: i for i, name in LABELS.items()})

    # Data. The source is kept as written. CodeXGLUE feeds ' '.join(func.split()), which puts the function on one
    # line: its first `// comment` then comments out all the rest and `#if`/`#define` lines run on, so tree-sitter
    # finds no statement and SASA loses its AST blocks (a 15-line function with a `//` comment on its first
    # statement: 38 syntax nodes instead of 129). The cost: newlines and indentation are tokens too.
    raw = common.load_raw_datasets(data_args, "defect")
    splits = common.select_splits(raw, data_args, training_args)
    if data_args.long_only:  # the paper's long-code subsets; --max_*_samples applies first
        splits = common.keep_long_splits(splits, tokenizer, "func", data_args)

    def tokenize(batch: dict[str, list]) -> dict[str, list]:
        encoded = tokenizer(batch["func"], truncation=True, max_length=data_args.max_source_length)
        return {**encoded, "labels": [int(target) for target in batch["target"]]}

    features = common.tokenize_splits(splits, tokenize, data_args, f"Tokenizing and parsing ({tokenizer.language})")

    # Model and Trainer.
    model = common.load_model(SasaForSequenceClassification, model_args, config, tokenizer)
    trainer = Trainer(model=model, args=training_args, train_dataset=features.get("train"),
                      eval_dataset=features.get("validation"), processing_class=tokenizer,
                      data_collator=SasaDataCollator(tokenizer, pad_to_multiple_of=config.block_size),
                      compute_metrics=compute_metrics)

    def write_predictions(output) -> None:
        """CodeXGLUE's predictions.txt for the test split: id <tab> 0/1 per line (row index without ids)."""
        test = splits["test"]
        ids = test["id"] if "id" in test.column_names else range(len(test))
        with open(os.path.join(training_args.output_dir, "predictions.txt"), "w", encoding="utf-8") as handle:
            handle.writelines(f"{i}\t{p}\n" for i, p in zip(ids, np.argmax(output.predictions, axis=-1)))

    # Train (and save), evaluate, predict; push.
    results = common.train_evaluate_predict(trainer, features, training_args, resume, write_predictions)
    common.push_to_hub(trainer, model_args, data_args, tags=["defect-detection"], tasks="text-classification")
    return results


if __name__ == "__main__":
    main()
