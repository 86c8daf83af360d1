"""Fine-tune SASA for natural-language code search (CodeXGLUE NL-code-search-Adv): a bi-encoder ranked by MRR.

Code (with its AST links) and queries (``' '.join(docstring_tokens)``, no AST links) go through one shared encoder
to one vector each (``config.pooling``); training is CodeXGLUE's in-batch softmax. Evaluation ranks every query
against the code of the *whole* eval split (not the batch), as CodeXGLUE's MRR does; ``--load_best_model_at_end``
keeps the best-MRR checkpoint (``--metric_for_best_model`` defaults to ``mrr``). The output directory is a retrieval
model on its own: ``AutoModelForTextEncoding`` (``trust_remote_code=True``) loads the bi-encoder (``encode()``),
``AutoModel`` the plain encoder, whose states pooled as ``config.pooling`` are ``encode()``'s vectors, and
``SentenceTransformer(output_dir, trust_remote_code=True)`` the same vectors through ``encode_query`` (no AST links)
and ``encode_document`` (AST links in ``language=``, else the tokenizer's default: ``--language``, else the data's
language when it has one).

    python examples/run_code_search.py --model_name_or_path sasa-codebert \\
        --dataset_name google/code_x_glue_tc_nl_code_search_adv --max_source_length 1024 \\
        --do_train --do_eval --do_predict --output_dir out/search --per_device_train_batch_size 32 \\
        --learning_rate 5e-5 --num_train_epochs 2 --eval_strategy epoch --save_strategy epoch \\
        --load_best_model_at_end

Local ``--train_file``/``--validation_file``/``--test_file`` (.jsonl, .json, .parquet) need the columns ``code`` and
``docstring_tokens`` (and optionally ``language``: one per row). A JSON file of arguments works in place of flags.
"""

import time
from dataclasses import dataclass, field

import datasets
import numpy as np
from transformers import Trainer
from transformers.trainer_utils import PredictionOutput, speed_metrics

import codesearchnet
import common
from sasa import SasaDataCollator, SasaForCodeSearch
from sasa.metrics import mean_reciprocal_rank
from sasa.sentence_transformers_files import save_sentence_transformers_files

#: TrainingArguments defaults of this task; a flag (or JSON key) given by the user wins. Every parameter is used in
#: each step (no pooler), so DDP need not search for unused ones.
TASK_DEFAULTS = {"metric_for_best_model": "mrr", "ddp_find_unused_parameters": False}


@dataclass
class SearchArguments:
    max_query_length: int = field(default=256, metadata={
        "help": "Tokens kept per query (CodeXGLUE's Adv truncates queries at its block size, 256)."})


class CodeSearchTrainer(Trainer):
    """A Trainer whose ``evaluate`` and ``predict`` rank each query against all the split's code (MRR), not only
    its batch's."""

    def evaluate(self, eval_dataset: datasets.Dataset | None = None, ignore_keys: list[str] | None = None,
                 metric_key_prefix: str = "eval") -> dict[str, float]:
        metrics = self.rank(self.eval_dataset if eval_dataset is None else eval_dataset, metric_key_prefix).metrics
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    def predict(self, test_dataset: datasets.Dataset, ignore_keys: list[str] | None = None,
                metric_key_prefix: str = "test") -> PredictionOutput:
        output = self.rank(test_dataset, metric_key_prefix)
        self.control = self.callback_handler.on_predict(self.args, self.state, self.control, output.metrics)
        return output

    def rank(self, dataset: datasets.Dataset, metric_key_prefix: str) -> PredictionOutput:
        """Query ``i`` of ``dataset`` against all its code, code ``i`` the answer: ``{prefix}_mrr`` and speed metrics
        (no per-example predictions)."""
        start = time.time()
        code, queries = self.embed(dataset)
        mrr = mean_reciprocal_rank(queries @ code.T, np.arange(len(queries)))
        metrics = {f"{metric_key_prefix}_mrr": mrr, **speed_metrics(metric_key_prefix, start, len(queries))}
        return PredictionOutput(predictions=None, label_ids=None, metrics=metrics)

    def embed(self, dataset: datasets.Dataset) -> tuple[np.ndarray, np.ndarray]:
        """``[N, H]`` code vectors and ``[N, H]`` query vectors of ``dataset``, in order, gathered from every process:
        the model's own ``encode_batches`` over the eval dataloader, once for the code, once for the queries."""
        batches, gather = self.get_eval_dataloader(dataset), self.accelerator.gather_for_metrics
        code = self.model.encode_batches(batches, gather=gather)
        queries = self.model.encode_batches(batches, prefix="query_", gather=gather)
        return code.numpy(), queries.numpy()


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Train / evaluate / predict as the flags ask; returns the metrics of every split in one dict (``train_loss``,
    ``eval_mrr``, ``test_mrr``, ...). ``argv``: flags, or one .json."""
    # Arguments; logging, seed, the checkpoint to resume from.
    model_args, data_args, search_args, training_args = common.parse_arguments(argv, TASK_DEFAULTS, SearchArguments)
    resume = common.start_run(model_args, training_args)

    # Configuration and tokenizer (a non-SASA checkpoint, e.g. CodeBERT not yet converted, stops here), and the
    # lengths the model's positions must hold.
    config, tokenizer = common.load_config_and_tokenizer(model_args, data_args)
    common.check_length_fits(config, "--max_query_length", search_args.max_query_length)

    # Data: code (Python docstrings removed) with its AST links, each example in its own language; queries
    # (' '.join(docstring_tokens)) without AST links.
    splits = codesearchnet.load_splits(data_args, training_args, tokenizer, "search")
    if not data_args.language:  # saved: the language of code given without one (pipelines, sentence-transformers)
        tokenizer.language = codesearchnet.only_language(splits) or tokenizer.language

    def tokenize(batch: dict[str, list]) -> dict[str, list]:
        code = tokenizer(batch["code"], language=batch["language"], truncation=True,
                         max_length=data_args.max_source_length)
        query = tokenizer(batch["text"], language=None, truncation=True, max_length=search_args.max_query_length)
        return {**code, "query_input_ids": query["input_ids"], "query_attention_mask": query["attention_mask"]}

    features = common.tokenize_splits(splits, tokenize, data_args, "Tokenizing code and queries")

    # Model and Trainer. The collator pads the code group and the query_ group each to whole blocks.
    model = common.load_model(SasaForCodeSearch, model_args, config, tokenizer)
    trainer = CodeSearchTrainer(
        model=model, args=training_args, train_dataset=features.get("train"), eval_dataset=features.get("validation"),
        processing_class=tokenizer, data_collator=SasaDataCollator(tokenizer, pad_to_multiple_of=config.block_size))

    # Train (and save: the model, its code files, the tokenizer and sentence-transformers' files, a retrieval model on
    # its own), evaluate, predict (both rank the whole split); push.
    results = common.train_evaluate_predict(trainer, features, training_args, resume)
    if training_args.do_train and trainer.is_world_process_zero():  # SentenceTransformer(output_dir) loads it too
        save_sentence_transformers_files(trainer.model, training_args.output_dir, search_args.max_query_length)
    common.push_to_hub(trainer, model_args, data_args, tags=["code-search"])
    return {name: value for metrics in results.values() for name, value in metrics.items()}


if __name__ == "__main__":
    main()
