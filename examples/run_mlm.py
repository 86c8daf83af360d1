#!/usr/bin/env python
"""Continued masked-LM pre-training on long code, so a converted CodeBERT learns its new positions and its layout.

``sasa convert`` copies CodeBERT's 512 trained position rows along the new table and swaps full attention for the
block-sparse layout; the model has never read a token past 512 nor attended through blocks. Longformer's authors
continued masked-LM pre-training on long documents after copying positions, before any fine-tuning; this script does
that for SASA (what it buys, measured: ``docs/continued-pretraining.md``):

    sasa convert microsoft/codebert-base sasa-codebert
    python examples/run_mlm.py --model_name_or_path sasa-codebert \\
        --dataset_name google/code_x_glue_ct_code_to_text --dataset_config_name python \\
        --long_only --max_source_length 2048 --do_train --do_eval --output_dir out/mlm

Data: ``--dataset_name`` or local ``--train_file/--validation_file/--test_file`` (.jsonl/.json/.parquet) with a
``code`` column (one source each, truncated to ``--max_source_length`` tokens, 2048 by default) and optionally
``language`` (else ``--language``, else the tokenizer's default, else Python), parsed for its AST links. ``--masking`` chooses what is
hidden (``tokens``: RoBERTa's, ``identifiers``: whole names; :mod:`sasa.masking`); ``--mlm_probability`` how much.
Held-out splits get one fixed mask per example (every token ``<mask>``), the same in every evaluation. Hidden tokens
keep no AST links, in training and held-out batches (``--no_unlink_hidden`` keeps them, for comparison only). Evaluation
reports the masked-token loss, accuracy and count overall (``eval_masked_loss``, ``eval_accuracy``), in the first
``--position_boundary`` positions (``..._first_512``: what CodeBERT read) and after them (``..._after_512``), and
on *far* tokens (``eval_far_...``: hidden identifier pieces whose other occurrences all lie outside their window,
:func:`sasa.masking.far_tokens`). Every ``TrainingArguments`` flag works (``--eval_on_start`` measures the model as
converted), so does one JSON file of arguments, and ``--from_scratch``. The output directory is a checkpoint with its
code: ``AutoModelForMaskedLM.from_pretrained(output_dir, trust_remote_code=True)`` loads it without ``sasa``.
"""

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from transformers import EvalPrediction, Trainer

import common
from sasa import SasaDataCollator, SasaDataCollatorForMaskedLM, SasaForMaskedLM
from sasa.masking import MASKINGS, MaskingVocabulary, bucket_metrics, evaluation_mask, token_statistics, unlink_hidden

#: Defaults of this task; a flag (or JSON key) given by the user wins. Sequences of up to 2048 tokens, a converted
#: checkpoint's length (the point is to train the positions past 512; a shorter model says to lower it); the best
#: model has the lowest held-out masked-token loss; every parameter is used in each step.
TASK_DEFAULTS = {"max_source_length": 2048, "metric_for_best_model": "masked_loss", "ddp_find_unused_parameters": False}
DEFAULT_LANGUAGE = "python"


@dataclass
class MaskingArguments:
    masking: Literal["tokens", "identifiers"] = field(default="tokens", metadata={
        "help": "What training hides: 'tokens' (RoBERTa's, each token on its own) or 'identifiers' (the pieces of "
                "a name together; other tokens on their own)."})
    mlm_probability: float = field(default=0.15, metadata={"help": "Share of the tokens (or words) hidden."})
    eval_masking: Literal["tokens", "identifiers"] | None = field(default=None, metadata={
        "help": "The held-out splits' masking (default: --masking); one fixed mask per example, all <mask>."})
    unlink_hidden: bool = field(default=True, metadata={
        "help": "Drop the AST links from and to every hidden token, in training and held-out batches (the tokenizer "
                "parsed the code before it was hidden; its links would lead the AST blocks to the answer). "
                "--no_unlink_hidden keeps them, for comparison only."})
    position_boundary: int = field(default=512, metadata={
        "help": "Evaluation splits positions into the first N (what the source model read) and the rest."})

    def __post_init__(self) -> None:
        for flag, value in (("--masking", self.masking), ("--eval_masking", self.eval_masking or self.masking)):
            if value not in MASKINGS:
                raise ValueError(f"{flag} must be one of {MASKINGS}, got {value!r}.")
        if not 0.0 < self.mlm_probability < 1.0:
            raise ValueError(f"--mlm_probability must be between 0 and 1, got {self.mlm_probability}.")
        if self.position_boundary < 1:
            raise ValueError(f"--position_boundary must be at least 1 token, got {self.position_boundary}.")
        self.eval_masking = self.eval_masking or self.masking


class MaskedLMTrainer(Trainer):
    """A ``Trainer`` that hides the tokens of each training batch in its training step (``masker``), and whose
    evaluation keeps, per token, its loss, whether the argmax is right and whether it is far
    (:func:`sasa.masking.token_statistics`, ``[B, L, 3]``) instead of ``[B, L, V]`` logits; ``compute_metrics``
    turns them into the metrics by position bucket.

    Masking in the step, not in the data loader: on resuming, Trainer prefetches the first batch *before* it restores
    the checkpoint's random state, so masks drawn in the collator would differ from the uninterrupted run's.
    """

    def __init__(self, *args, masker: SasaDataCollatorForMaskedLM, **kwargs):
        super().__init__(*args, **kwargs)
        self.masker = masker

    def training_step(self, model, inputs, num_items_in_batch=None):
        if "labels" not in inputs:
            inputs = self.masker.mask_batch(inputs)
        return super().training_step(model, inputs, num_items_in_batch)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        loss, logits, labels = super().prediction_step(model, inputs, False, ignore_keys)
        if prediction_loss_only or labels is None:
            return loss, None, None
        config = self.accelerator.unwrap_model(model).config  # far tokens: against the model's own window
        stats = token_statistics(logits, labels, inputs["input_ids"].to(labels.device),
                                 self.masker.vocabulary.identifier, config.block_size, config.window_radius,
                                 config.num_global_blocks)
        return loss, stats, labels


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    """Train / evaluate / predict as the flags ask; returns the metrics by split (``train``, ``eval``, ``test``)."""
    # Arguments; logging, seed, the checkpoint to resume from.
    model_args, data_args, masking_args, training_args = common.parse_arguments(argv, TASK_DEFAULTS, MaskingArguments)
    resume = common.start_run(model_args, training_args)

    # Configuration and tokenizer (a non-SASA checkpoint, e.g. CodeBERT not yet converted, stops here).
    config, tokenizer = common.load_config_and_tokenizer(model_args, data_args)
    vocabulary = MaskingVocabulary.from_tokenizer(tokenizer)  # the held-out masks'

    # Data: the code with its AST links, each example in its language. Training batches are masked afresh in each
    # training step (MaskedLMTrainer); held-out examples get their fixed mask here.
    raw = common.load_raw_datasets(data_args, "mlm")
    splits = common.select_splits(raw, data_args, training_args)
    if data_args.long_only:
        splits = common.keep_long_splits(splits, tokenizer, "code", data_args)
    default_language = data_args.language or tokenizer.language or DEFAULT_LANGUAGE

    def tokenize(batch: dict[str, list]) -> dict[str, list]:
        languages = batch["language"] if "language" in batch and not data_args.language else None
        languages = [name or default_language for name in languages] if languages else default_language
        return dict(tokenizer(batch["code"], language=languages, truncation=True,
                              max_length=data_args.max_source_length))

    def tokenize_and_mask(batch: dict[str, list]) -> dict[str, list]:
        encoded = tokenize(batch)
        masked = [evaluation_mask(ids, vocabulary, masking_args.eval_masking, masking_args.mlm_probability,
                                  training_args.seed) for ids in encoded["input_ids"]]
        result = {**encoded, "input_ids": [ids for ids, _ in masked], "labels": [labels for _, labels in masked]}
        if masking_args.unlink_hidden:  # the fixed masks' hidden tokens keep no AST links
            result["ast_links"] = [unlink_hidden(torch.tensor(links), torch.tensor(labels) != -100).tolist()
                                   for links, (_, labels) in zip(encoded["ast_links"], masked)]
        return result

    features = common.tokenize_splits({s: d for s, d in splits.items() if s == "train"}, tokenize, data_args,
                                      "Tokenizing and parsing")
    features.update(common.tokenize_splits({s: d for s, d in splits.items() if s != "train"}, tokenize_and_mask,
                                           data_args, f"Tokenizing, parsing and masking ({masking_args.eval_masking})"))

    # Model and Trainer; the metrics by position bucket.
    model = common.load_model(SasaForMaskedLM, model_args, config, tokenizer)

    def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
        metrics = bucket_metrics(prediction.predictions, prediction.label_ids, masking_args.position_boundary)
        return {**metrics, "perplexity": float(np.exp(metrics["masked_loss"]))}

    masker = SasaDataCollatorForMaskedLM(tokenizer, pad_to_multiple_of=config.block_size, masking=masking_args.masking,
                                         mlm_probability=masking_args.mlm_probability,
                                         unlink_hidden=masking_args.unlink_hidden)
    trainer = MaskedLMTrainer(
        model=model, args=training_args, train_dataset=features.get("train"), eval_dataset=features.get("validation"),
        processing_class=tokenizer, compute_metrics=compute_metrics, masker=masker,
        data_collator=SasaDataCollator(tokenizer, pad_to_multiple_of=config.block_size))

    # Train (and save: the model, its code files and the tokenizer), evaluate, predict; push.
    results = common.train_evaluate_predict(trainer, features, training_args, resume)
    common.push_to_hub(trainer, model_args, data_args, tags=["fill-mask", "continued-pretraining"], tasks="fill-mask")
    return results


if __name__ == "__main__":
    main()
