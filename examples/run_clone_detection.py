#!/usr/bin/env python
"""Fine-tune SASA on BigCloneBench clone detection (CodeXGLUE ``Code-Code/Clone-detection-BigCloneBench``): are two
Java functions clones?

    sasa convert microsoft/codebert-base sasa-codebert
    python examples/run_clone_detection.py --model_name_or_path sasa-codebert \\
        --dataset_name google/code_x_glue_cc_clone_detection_big_clone_bench --max_source_length 1024 \\
        --max_train_samples 90102 --max_eval_samples 41541 --do_train --do_eval --output_dir out/clone
    python examples/run_clone_detection.py --model_name_or_path out/clone --dataset_name ... --do_predict \\
        --max_source_length 1024 --output_dir out/clone-test    # the whole test split, as CodeXGLUE scores it

Data: ``--dataset_name`` or local ``--train_file/--validation_file/--test_file`` (.jsonl/.json/.parquet) with the
columns ``func1``, ``func2`` (two Java functions) and ``label`` (bool, True = clones). Model: CodeXGLUE's pair
classifier (``config.classify_pairs``): each function encoded on its own, the two ``<s>`` vectors joined and
classified. Metric: binary precision / recall / F1 of the class "clone" (F1 picks the best checkpoint). Every
``TrainingArguments`` flag works, and so does one JSON file of arguments (``run_clone_detection.py args.json``).
"""

import os

import numpy as np
from transformers import EvalPrediction, Trainer

import common
from sasa import SasaDataCollator, SasaForSequenceClassification
from sasa.metrics import binary_precision_recall_f1

#: TrainingArguments defaults of this task; a flag (or JSON key) given by the user wins. Every parameter of the
#: classifier is used in each step (the heads have no pooler), so DDP need not search for unused ones.
TASK_DEFAULTS = {"metric_for_best_model": "f1", "ddp_find_unused_parameters": False}
LABELS = {0: "not-clone", 1: "clone"}


def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
    """Precision, recall and F1 of "clone" for the argmax class (CodeXGLUE's test threshold: p(clone) > 0.5)."""
    return binary_precision_recall_f1(np.argmax(prediction.predictions, axis=-1), prediction.label_ids)


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    """Train / evaluate / predict as the flags ask; returns the metrics by split (``train``, ``eval``, ``test``)."""
    # Arguments; logging, seed, the checkpoint to resume from.
    model_args, data_args, training_args = common.parse_arguments(argv, TASK_DEFAULTS)
    resume = common.start_run(model_args, training_args)

    # Configuration and tokenizer: BPE + AST links of the Java grammar, its default language saved with it
    # (pipelines use it). CodeXGLUE's clone model: two labels, cross-entropy, the pair's two <s> vectors joined.
    config, tokenizer = common.load_config_and_tokenizer(
        model_args, data_args, language="java", num_labels=2, classify_pairs=True,
        problem_type="single_label_classification", id2label=LABELS, label2id={name: i for i, name in LABELS.items()})

    # Data. The source is kept as written: CodeXGLUE's ' '.join(func.split()) puts a function on one line, so its
    # first `// comment` comments out the rest and tree-sitter finds no statements (no AST blocks). CodeXGLUE trains
    # on a random 10 % of train and evaluates on 10 % of validation: --max_train_samples/--max_eval_samples sample
    # those two splits at random (seeded); --max_predict_samples takes the head of test.
    raw = common.load_raw_datasets(data_args, "clone")
    splits = common.select_splits(raw, data_args, training_args, random_sample=True)
    if data_args.long_only:  # pairs where either function is long; --max_*_samples applies first
        splits = common.keep_long_splits(splits, tokenizer, ["func1", "func2"], data_args)

    def tokenize(batch: dict[str, list]) -> dict[str, list]:
        """Each function encoded on its own; a pair feature holds both: ``input_ids = [ids1, ids2]`` etc."""
        first, second = (tokenizer(batch[column], truncation=True, max_length=data_args.max_source_length)
                         for column in ("func1", "func2"))
        encoded = {key: [list(pair) for pair in zip(first[key], second[key])] for key in first}
        return {**encoded, "labels": [int(label) for label in batch["label"]]}

    features = common.tokenize_splits(splits, tokenize, data_args, f"Tokenizing and parsing ({tokenizer.language})")

    # Model and Trainer.
    model = common.load_model(SasaForSequenceClassification, model_args, config, tokenizer)
    trainer = Trainer(model=model, args=training_args, train_dataset=features.get("train"),
                      eval_dataset=features.get("validation"), processing_class=tokenizer,
                      data_collator=SasaDataCollator(tokenizer, pad_to_multiple_of=config.block_size),
                      compute_metrics=compute_metrics)

    def write_predictions(output) -> None:
        """CodeXGLUE's predictions.txt for the test split: id1 <tab> id2 <tab> 0/1 per line."""
        test = splits["test"]
        has_ids = {"id1", "id2"} <= set(test.column_names)
        keys = [f"{a}\t{b}" for a, b in zip(test["id1"], test["id2"])] if has_ids else range(len(test))
        with open(os.path.join(training_args.output_dir, "predictions.txt"), "w", encoding="utf-8") as handle:
            handle.writelines(f"{key}\t{p}\n" for key, p in zip(keys, np.argmax(output.predictions, axis=-1)))

    # Train (and save), evaluate, predict; push.
    results = common.train_evaluate_predict(trainer, features, training_args, resume, write_predictions)
    common.push_to_hub(trainer, model_args, data_args, tags=["clone-detection"], tasks="text-classification")
    return results


if __name__ == "__main__":
    main()
