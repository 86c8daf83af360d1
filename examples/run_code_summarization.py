"""Fine-tune SASA for code summarization (CodeXGLUE code-to-text): SASA encoder + decoder, scored by smoothed BLEU-4.

The encoder reads the code with its AST links; the decoder (``config.num_decoder_layers``, 6 as CodeXGLUE) writes
the summary, ``' '.join(docstring_tokens)`` as CodeXGLUE's target. Evaluation generates (beam search,
``--generation_num_beams``, 10 by default as CodeXGLUE) and scores CodeXGLUE's smoothed BLEU-4 (``round(x, 2)``);
``--load_best_model_at_end`` keeps the best-BLEU checkpoint (``--metric_for_best_model`` defaults to ``bleu``).
``--do_predict`` writes ``test.output`` and ``test.gold`` (``index<TAB>text`` lines, as CodeXGLUE's files) into
``--output_dir``. CodeXGLUE scores dev BLEU on 1,000 examples (``--max_eval_samples 1000``, which cuts the test split
too: predict on the whole test split in a run of its own).

    python examples/run_code_summarization.py --model_name_or_path sasa-codebert \\
        --dataset_name google/code_x_glue_ct_code_to_text --dataset_config_name python --max_source_length 1024 \\
        --do_train --do_eval --do_predict --output_dir out/summarization --per_device_train_batch_size 32 \\
        --learning_rate 5e-5 --num_train_epochs 10 --eval_strategy epoch --save_strategy epoch \\
        --load_best_model_at_end

Local ``--train_file``/``--validation_file``/``--test_file`` (.jsonl, .json, .parquet) need the columns ``code`` and
``docstring_tokens`` (and optionally ``language``: one per row). A JSON file of arguments works in place of flags.
"""

import logging
import os
import sys
from dataclasses import dataclass, field

import numpy as np
import transformers
from transformers import EvalPrediction, Seq2SeqTrainer, Seq2SeqTrainingArguments, set_seed

import codesearchnet
from common import check_model_fits, last_checkpoint, load_config, load_model, parse_arguments
from sasa import SasaDataCollator, SasaForCodeSummarization, SasaTokenizer
from sasa.metrics import smoothed_bleu

logger = logging.getLogger(__name__)

#: Seq2SeqTrainingArguments defaults of this task (CodeXGLUE's beam of 10); a flag (or JSON key) given by the user
#: wins. Every parameter is used in each step, so DDP need not search for unused ones.
TASK_DEFAULTS = {"metric_for_best_model": "bleu", "generation_num_beams": 10, "ddp_find_unused_parameters": False}


@dataclass
class SummarizationArguments:
    max_target_length: int = field(default=128, metadata={
        "help": "Tokens kept per summary, its closing </s> included (CodeXGLUE: 128)."})


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Train and/or evaluate; returns the metrics (``eval_bleu``, ``test_bleu``, ...). ``argv``: flags, or one .json."""
    model_args, data_args, summary_args, training_args = parse_arguments(
        argv, TASK_DEFAULTS, SummarizationArguments, training_arguments=Seq2SeqTrainingArguments)
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO,
                        handlers=[logging.StreamHandler(sys.stdout)])
    transformers.utils.logging.set_verbosity(training_args.get_process_log_level())
    set_seed(training_args.seed)
    # BLEU scores text, so evaluation always generates: by default the start token and up to --max_target_length.
    training_args.predict_with_generate = True
    training_args.generation_max_length = training_args.generation_max_length or summary_args.max_target_length + 1
    checkpoint = training_args.resume_from_checkpoint or last_checkpoint(
        training_args.output_dir, training_args.do_train, model_args.overwrite_output_dir)

    # The configuration first: a non-SASA checkpoint (e.g. CodeBERT, not yet converted) stops here, before any data.
    config = load_config(model_args)
    tokenizer = SasaTokenizer.from_pretrained(model_args.tokenizer_name or model_args.model_name_or_path)
    if model_args.from_scratch:
        config.vocab_size = len(tokenizer)
    check_model_fits(config, tokenizer, data_args.max_source_length)
    tokenizer.model_max_length = config.max_sequence_length  # saved with the model: where truncation must cut

    # Data: code (Python docstrings removed) with its AST links; labels = the summary's ids after <s>, ending in </s>.
    splits = codesearchnet.load_splits(data_args, training_args, tokenizer)

    def tokenize(batch: dict[str, list]) -> dict[str, list]:
        code = tokenizer(batch["code"], language=batch["language"], truncation=True,
                         max_length=data_args.max_source_length)
        summary = tokenizer(batch["text"], language=None, truncation=True,
                            max_length=summary_args.max_target_length + 1)
        return {**code, "labels": [ids[1:] for ids in summary["input_ids"]]}

    tokenized = {split: dataset.map(tokenize, batched=True, remove_columns=dataset.column_names,
                                    num_proc=data_args.preprocessing_num_workers,
                                    desc=f"Tokenizing the {split} split")
                 for split, dataset in splits.items()}

    # Model and Trainer; BLEU as CodeXGLUE reports it.
    model = load_model(SasaForCodeSummarization, model_args, config, tokenizer)
    # The saved model generates as it was evaluated. The decoder keeps no key/value cache, but from_pretrained of a
    # checkpoint without generation_config.json leaves use_cache unset and generate() would then feed it only the
    # newest token: turn it off explicitly.
    model.generation_config.update(num_beams=training_args.generation_num_beams,
                                   max_length=training_args.generation_max_length, use_cache=False)

    def decode(ids: np.ndarray) -> list[str]:
        ids = np.where(ids < 0, tokenizer.pad_token_id, ids)  # -100: label padding and gathered-batch padding
        texts = tokenizer.batch_decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        return [" ".join(text.split()) for text in texts]  # one line each; BLEU's tokenization ignores whitespace

    def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
        return {"bleu": round(smoothed_bleu(decode(prediction.predictions), decode(prediction.label_ids)), 2)}

    trainer = Seq2SeqTrainer(
        model=model, args=training_args, train_dataset=tokenized.get("train"),
        eval_dataset=tokenized.get("validation"), processing_class=tokenizer, compute_metrics=compute_metrics,
        data_collator=SasaDataCollator(tokenizer, pad_to_multiple_of=config.block_size))

    metrics: dict[str, float] = {}
    if training_args.do_train:
        result = trainer.train(resume_from_checkpoint=checkpoint)
        trainer.save_model()  # the model, its code files, its generation settings and the tokenizer
        trainer.save_state()
        metrics.update(result.metrics, train_samples=len(tokenized["train"]))
        trainer.log_metrics("train", result.metrics)
        trainer.save_metrics("train", result.metrics)
    if training_args.do_eval:
        eval_metrics = trainer.evaluate(metric_key_prefix="eval")
        eval_metrics["eval_samples"] = len(tokenized["validation"])
        trainer.log_metrics("eval", eval_metrics)
        trainer.save_metrics("eval", eval_metrics)
        metrics.update(eval_metrics)
    if training_args.do_predict:
        output = trainer.predict(tokenized["test"], metric_key_prefix="test")
        predictions = decode(output.predictions)[:len(splits["test"])]  # gathered batches may repeat the last ones
        golds = [" ".join(text.split()) for text in splits["test"]["text"]]
        # Test BLEU against the untruncated summaries, as CodeXGLUE's evaluator reads test.gold.
        test_metrics = {**output.metrics, "test_bleu": round(smoothed_bleu(predictions, golds), 2),
                        "test_samples": len(golds)}
        if trainer.is_world_process_zero():
            os.makedirs(training_args.output_dir, exist_ok=True)
            for name, texts in (("test.output", predictions), ("test.gold", golds)):
                with open(os.path.join(training_args.output_dir, name), "w", encoding="utf-8") as handle:
                    handle.writelines(f"{index}\t{text}\n" for index, text in enumerate(texts))
        trainer.log_metrics("test", test_metrics)
        trainer.save_metrics("test", test_metrics)
        metrics.update(test_metrics)

    if training_args.push_to_hub:
        trainer.push_to_hub(finetuned_from=model_args.model_name_or_path, dataset=data_args.dataset_name)
    return metrics


if __name__ == "__main__":
    main()
