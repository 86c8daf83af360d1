"""Fine-tune SASA for natural-language code search (CodeXGLUE NL-code-search-Adv): a bi-encoder ranked by MRR.

Code (with its AST links) and queries (``' '.join(docstring_tokens)``, no AST links) go through one shared encoder
to one vector each (``config.pooling``); training is CodeXGLUE's in-batch softmax. Evaluation ranks every query
against the code of the *whole* eval split (not the batch), as CodeXGLUE's MRR does; ``--load_best_model_at_end``
keeps the best-MRR checkpoint (``--metric_for_best_model`` defaults to ``mrr``). The output directory is a retrieval
model on its own: ``AutoModelForTextEncoding`` (``trust_remote_code=True``) loads the bi-encoder (``encode()``),
``AutoModel`` the plain encoder, whose states pooled as ``config.pooling`` are ``encode()``'s vectors
(sentence-transformers: ``Transformer`` + ``Pooling``; the tokenizer needs ``language=`` for code, none for queries).

    python examples/run_code_search.py --model_name_or_path sasa-codebert \\
        --dataset_name google/code_x_glue_tc_nl_code_search_adv --max_source_length 1024 \\
        --do_train --do_eval --do_predict --output_dir out/search --per_device_train_batch_size 32 \\
        --learning_rate 5e-5 --num_train_epochs 2 --eval_strategy epoch --save_strategy epoch \\
        --load_best_model_at_end

Local ``--train_file``/``--validation_file``/``--test_file`` (.jsonl, .json, .parquet) need the columns ``code`` and
``docstring_tokens`` (and optionally ``language``: one per row). A JSON file of arguments works in place of flags.
"""

import logging
import sys
import time
from dataclasses import dataclass, field

import datasets
import numpy as np
import torch
import transformers
from transformers import Trainer, set_seed
from transformers.trainer_utils import speed_metrics

import codesearchnet
from common import check_model_fits, last_checkpoint, load_config, load_model, parse_arguments
from sasa import SasaDataCollator, SasaForCodeSearch, SasaTokenizer
from sasa.metrics import mean_reciprocal_rank

logger = logging.getLogger(__name__)

#: TrainingArguments defaults of this task; a flag (or JSON key) given by the user wins. Every parameter is used in
#: each step (no pooler), so DDP need not search for unused ones.
TASK_DEFAULTS = {"metric_for_best_model": "mrr", "ddp_find_unused_parameters": False}


@dataclass
class SearchArguments:
    max_query_length: int = field(default=256, metadata={
        "help": "Tokens kept per query (CodeXGLUE's Adv truncates queries at its block size, 256)."})


class CodeSearchTrainer(Trainer):
    """A Trainer whose evaluation ranks each query against all the eval split's code (MRR), not only its batch's."""

    def evaluate(self, eval_dataset: datasets.Dataset | None = None, ignore_keys: list[str] | None = None,
                 metric_key_prefix: str = "eval") -> dict[str, float]:
        start = time.time()
        code, queries = self.embed(self.eval_dataset if eval_dataset is None else eval_dataset)
        mrr = mean_reciprocal_rank(queries @ code.T, np.arange(len(queries)))  # query i's answer is code i
        metrics = {f"{metric_key_prefix}_mrr": mrr, **speed_metrics(metric_key_prefix, start, len(queries))}
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    @torch.no_grad()
    def embed(self, dataset: datasets.Dataset) -> tuple[np.ndarray, np.ndarray]:
        """``[N, H]`` code vectors and ``[N, H]`` query vectors of ``dataset``, in order, from every process."""
        self.model.eval()
        code, queries = [], []
        for batch in self.get_eval_dataloader(dataset):
            output = self.model(**self._prepare_inputs(batch), return_loss=False)
            gathered = self.accelerator.gather_for_metrics((output.code_embeds, output.query_embeds))
            code.append(gathered[0].float().cpu())
            queries.append(gathered[1].float().cpu())
        return torch.cat(code).numpy(), torch.cat(queries).numpy()


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Train and/or evaluate; returns the metrics (``eval_mrr``, ``test_mrr``, ...). ``argv``: flags, or one .json."""
    model_args, data_args, search_args, training_args = parse_arguments(argv, TASK_DEFAULTS, SearchArguments)
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO,
                        handlers=[logging.StreamHandler(sys.stdout)])
    transformers.utils.logging.set_verbosity(training_args.get_process_log_level())
    set_seed(training_args.seed)
    checkpoint = training_args.resume_from_checkpoint or last_checkpoint(
        training_args.output_dir, training_args.do_train, model_args.overwrite_output_dir)

    # The configuration first: a non-SASA checkpoint (e.g. CodeBERT, not yet converted) stops here, before any data.
    config = load_config(model_args)
    tokenizer = SasaTokenizer.from_pretrained(model_args.tokenizer_name or model_args.model_name_or_path)
    if model_args.from_scratch:
        config.vocab_size = len(tokenizer)
    check_model_fits(config, tokenizer, data_args.max_source_length)
    tokenizer.model_max_length = config.max_sequence_length  # saved with the model: where truncation must cut

    # Data: code (Python docstrings removed) and queries, tokenized with the code's AST links.
    splits = codesearchnet.load_splits(data_args, training_args, tokenizer)

    def tokenize(batch: dict[str, list]) -> dict[str, list]:
        code = tokenizer(batch["code"], language=batch["language"], truncation=True,
                         max_length=data_args.max_source_length)
        query = tokenizer(batch["text"], language=None, truncation=True, max_length=search_args.max_query_length)
        return {**code, "query_input_ids": query["input_ids"], "query_attention_mask": query["attention_mask"]}

    splits = {split: dataset.map(tokenize, batched=True, remove_columns=dataset.column_names,
                                 num_proc=data_args.preprocessing_num_workers, desc=f"Tokenizing the {split} split")
              for split, dataset in splits.items()}

    # Model and Trainer. The collator pads the code group and the query_ group each to whole blocks.
    model = load_model(SasaForCodeSearch, model_args, config, tokenizer)
    trainer = CodeSearchTrainer(
        model=model, args=training_args, train_dataset=splits.get("train"), eval_dataset=splits.get("validation"),
        processing_class=tokenizer, data_collator=SasaDataCollator(tokenizer, pad_to_multiple_of=config.block_size))

    metrics: dict[str, float] = {}
    if training_args.do_train:
        result = trainer.train(resume_from_checkpoint=checkpoint)
        trainer.save_model()  # the model, its code files and the tokenizer: a retrieval model on its own
        trainer.save_state()
        metrics.update(result.metrics, train_samples=len(splits["train"]))
        trainer.log_metrics("train", result.metrics)
        trainer.save_metrics("train", result.metrics)
    for prefix, split, wanted in (("eval", "validation", training_args.do_eval),
                                  ("test", "test", training_args.do_predict)):
        if wanted:
            split_metrics = trainer.evaluate(splits[split], metric_key_prefix=prefix)
            split_metrics[f"{prefix}_samples"] = len(splits[split])
            trainer.log_metrics(prefix, split_metrics)
            trainer.save_metrics(prefix, split_metrics)
            metrics.update(split_metrics)

    if training_args.push_to_hub:
        trainer.push_to_hub(finetuned_from=model_args.model_name_or_path, dataset=data_args.dataset_name)
    return metrics


if __name__ == "__main__":
    main()
