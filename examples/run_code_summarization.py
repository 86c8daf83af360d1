"""Fine-tune SASA for code summarization (CodeXGLUE code-to-text): SASA encoder + decoder, scored by smoothed BLEU-4.

The encoder reads the code with its AST links; the decoder (``config.num_decoder_layers``, 6 as CodeXGLUE) writes
the summary, ``' '.join(docstring_tokens)`` as CodeXGLUE's target. Evaluation generates (beam search,
``--generation_num_beams``, 10 by default as CodeXGLUE) and scores CodeXGLUE's smoothed BLEU-4 (``round(x, 2)``);
``--load_best_model_at_end`` keeps the best-BLEU checkpoint (``--metric_for_best_model`` defaults to ``bleu``).
``--do_predict`` writes ``test.output`` and ``test.gold`` (``index<TAB>text`` lines, as CodeXGLUE's files) into
``--output_dir``. CodeXGLUE scores dev BLEU on 1,000 examples: ``--max_eval_samples 1000`` (it cuts the validation
split only; ``--max_predict_samples`` cuts the test split).

    python examples/run_code_summarization.py --model_name_or_path sasa-codebert \\
        --dataset_name google/code_x_glue_ct_code_to_text --dataset_config_name python --max_source_length 1024 \\
        --do_train --do_eval --do_predict --output_dir out/summarization --per_device_train_batch_size 32 \\
        --learning_rate 5e-5 --num_train_epochs 10 --eval_strategy epoch --save_strategy epoch \\
        --load_best_model_at_end

Local ``--train_file``/``--validation_file``/``--test_file`` (.jsonl, .json, .parquet) need the columns ``code`` and
``docstring_tokens`` (and optionally ``language``: one per row). A JSON file of arguments works in place of flags.
"""

import os
from dataclasses import dataclass, field

import numpy as np
from transformers import EvalPrediction, Seq2SeqTrainer, Seq2SeqTrainingArguments

import codesearchnet
import common
from sasa import SasaDataCollator, SasaForCodeSummarization
from sasa.metrics import smoothed_bleu

#: Seq2SeqTrainingArguments defaults of this task (CodeXGLUE's beam of 10); a flag (or JSON key) given by the user
#: wins. Every parameter is used in each step, so DDP need not search for unused ones.
TASK_DEFAULTS = {"metric_for_best_model": "bleu", "generation_num_beams": 10, "ddp_find_unused_parameters": False}


@dataclass
class SummarizationArguments:
    max_target_length: int = field(default=128, metadata={
        "help": "Tokens kept per summary, its closing </s> included (CodeXGLUE: 128)."})


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Train / evaluate / predict as the flags ask; returns the metrics of every split in one dict (``train_loss``,
    ``eval_bleu``, ``test_bleu``, ...). ``argv``: flags, or one .json."""
    # Arguments; logging, seed, the checkpoint to resume from. BLEU scores text, so evaluation always generates: by
    # default the start token and up to --max_target_length tokens.
    model_args, data_args, summary_args, training_args = common.parse_arguments(
        argv, TASK_DEFAULTS, SummarizationArguments, training_arguments=Seq2SeqTrainingArguments)
    training_args.predict_with_generate = True
    training_args.generation_max_length = training_args.generation_max_length or summary_args.max_target_length + 1
    resume = common.start_run(model_args, training_args)

    # Configuration and tokenizer (a non-SASA checkpoint, e.g. CodeBERT not yet converted, stops here), and the
    # lengths the model's positions must hold.
    config, tokenizer = common.load_config_and_tokenizer(model_args, data_args)
    common.check_length_fits(config, "--max_target_length", summary_args.max_target_length,
                             positions=summary_args.max_target_length + 1)  # the decoder's start token too

    # Data: code (Python docstrings removed) with its AST links, each example in its own language; labels = the
    # summary's ids after <s>, ending in </s>.
    splits = codesearchnet.load_splits(data_args, training_args, tokenizer, "summarization")

    def tokenize(batch: dict[str, list]) -> dict[str, list]:
        code = tokenizer(batch["code"], language=batch["language"], truncation=True,
                         max_length=data_args.max_source_length)
        summary = tokenizer(batch["text"], language=None, truncation=True,
                            max_length=summary_args.max_target_length + 1)
        return {**code, "labels": [ids[1:] for ids in summary["input_ids"]]}

    features = common.tokenize_splits(splits, tokenize, data_args, "Tokenizing code and summaries")

    # Model and Trainer; BLEU as CodeXGLUE reports it. The saved model generates as it was evaluated. The decoder
    # keeps no key/value cache, but from_pretrained of a checkpoint without generation_config.json leaves use_cache
    # unset and generate() would then feed it only the newest token: turn it off explicitly.
    model = common.load_model(SasaForCodeSummarization, model_args, config, tokenizer)
    model.generation_config.update(num_beams=training_args.generation_num_beams,
                                   max_length=training_args.generation_max_length, use_cache=False)

    def decode(ids: np.ndarray) -> list[str]:
        ids = np.where(ids < 0, tokenizer.pad_token_id, ids)  # -100: label padding and gathered-batch padding
        texts = tokenizer.batch_decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        return [" ".join(text.split()) for text in texts]  # one line each; BLEU's tokenization ignores whitespace

    def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
        return {"bleu": round(smoothed_bleu(decode(prediction.predictions), decode(prediction.label_ids)), 2)}

    trainer = Seq2SeqTrainer(
        model=model, args=training_args, train_dataset=features.get("train"), eval_dataset=features.get("validation"),
        processing_class=tokenizer, compute_metrics=compute_metrics,
        data_collator=SasaDataCollator(tokenizer, pad_to_multiple_of=config.block_size))

    # The test split is scored as CodeXGLUE's evaluator reads test.output and test.gold: against the untruncated
    # summaries (gathered batches may repeat the last predictions: cut to the split).
    golds = [" ".join(text.split()) for text in splits["test"]["text"]] if "test" in splits else []

    def test_metrics(output) -> dict[str, float]:
        return {"test_bleu": round(smoothed_bleu(decode(output.predictions)[:len(golds)], golds), 2)}

    def write_predictions(output) -> None:
        """test.output and test.gold, ``index<TAB>text`` lines as CodeXGLUE's files."""
        for name, texts in (("test.output", decode(output.predictions)[:len(golds)]), ("test.gold", golds)):
            with open(os.path.join(training_args.output_dir, name), "w", encoding="utf-8") as handle:
                handle.writelines(f"{index}\t{text}\n" for index, text in enumerate(texts))

    # Train (and save: the model, its code files, its generation settings and the tokenizer), evaluate, predict;
    # push.
    results = common.train_evaluate_predict(trainer, features, training_args, resume, write_predictions, test_metrics)
    common.push_to_hub(trainer, model_args, data_args, tags=["code-summarization"])
    return {name: value for metrics in results.values() for name, value in metrics.items()}


if __name__ == "__main__":
    main()
