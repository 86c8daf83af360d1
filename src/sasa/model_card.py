"""A model card (``README.md``) for a fine-tuned SASA checkpoint, written with ``huggingface_hub.ModelCard``.

The card says what a user of the Hub needs: the task, the data, the metrics, the block layout, the license, and how to
load the checkpoint (its code ships with it: ``trust_remote_code=True``).
"""

from __future__ import annotations

import os

from huggingface_hub import EvalResult, ModelCard, ModelCardData

#: task name → (Hub pipeline tag, Auto class that loads the fine-tuned head)
TASKS = {
    "code-search": ("feature-extraction", "AutoModelForTextEncoding"),
    "defect-detection": ("text-classification", "AutoModelForSequenceClassification"),
    "clone-detection": ("text-classification", "AutoModelForSequenceClassification"),
    "code-summarization": ("summarization", "AutoModelForSeq2SeqLM"),
}

TEMPLATE = """---
{{ card_data }}
---

# {{ model_name }}

A [SASA](https://arxiv.org/abs/2205.13730) model (structure-aware sparse attention for long source code) fine-tuned
for **{{ task }}**. SASA replaces full self-attention in a RoBERTa/CodeBERT-shaped encoder with block-sparse
attention over sliding-window, global, top-k and AST blocks, so long functions and files cost time and memory linear
in their length.

## Data

{{ data_description }}

## Results

{{ results_table }}

## Model

- Encoder: hidden {{ config.hidden_size }}, {{ config.num_hidden_layers }} layers, {{ config.num_attention_heads }}
  heads, up to {{ config.max_sequence_length }} tokens.
- Block layout: blocks of {{ config.block_size }} tokens; window radius {{ config.window_radius }},
  {{ config.num_global_blocks }} global block(s), {{ config.num_topk_blocks }} top-k and {{ config.num_ast_blocks }}
  AST blocks per query block{{ topk_note }}.
- AST links: the tokenizer parses the code with tree-sitter (language `{{ language }}` by default).

## How to load

The checkpoint carries its code; no package install is needed beyond transformers, torch and the tree-sitter grammar
of your language (`pip install tree-sitter tree-sitter-{{ language }}`).

```python
from transformers import {{ auto_class }}, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("{{ repo_id }}", trust_remote_code=True)
model = {{ auto_class }}.from_pretrained("{{ repo_id }}", trust_remote_code=True)
inputs = tokenizer(code, language="{{ language }}", truncation=True, return_tensors="pt")  # input_ids, ast_links
{{ usage }}
```

## License

{{ license }}
"""


def write_model_card(
    model,
    output_dir: str | os.PathLike,
    task: str,
    data_description: str,
    metrics: dict[str, float],
    dataset_name: str,
    language: str,
    license: str = "apache-2.0",
    repo_id: str | None = None,
    usage: str = "outputs = model(**inputs)",
) -> ModelCard:
    """Write ``README.md`` (the Hub's model card) into ``output_dir`` and return it.

    Args:
        model: The fine-tuned SASA model (its config describes the architecture and layout).
        output_dir: The checkpoint directory.
        task: One of :data:`TASKS`.
        data_description: What it was trained and evaluated on (a sentence or two).
        metrics: Metric name → value on the evaluation data (e.g. ``{"mrr": 0.41}``).
        dataset_name: Name of the data set, as the card's metadata lists it.
        language: The programming language of the code (the tokenizer's ``language=``).
        license: SPDX id of the weights' license.
        repo_id: The Hub id it will be pushed to (default: the directory name).
        usage: A line of Python after the loading code, showing the model's use.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)}, got {task!r}.")
    pipeline_tag, auto_class = TASKS[task]
    repo_id = repo_id or os.path.basename(os.path.abspath(output_dir))
    config = model.config
    results = [EvalResult(task_type=task, dataset_type=dataset_name, dataset_name=dataset_name, metric_type=name,
                          metric_value=round(float(value), 4)) for name, value in metrics.items()]
    card_data = ModelCardData(language="code", license=license, library_name="transformers", pipeline_tag=pipeline_tag,
                              tags=["sasa", "code", "sparse-attention", task, language], metrics=list(metrics),
                              model_name=repo_id, eval_results=results)
    table = "| metric | value |\n|---|---|\n" + "\n".join(f"| {k} | {v:.4f} |" for k, v in metrics.items())
    topk_note = (" (top-k blocks from a frequency table)" if config.topk_source == "table" else
                 " (top-k blocks: the far blocks sharing the query block's rarer identifiers)")
    card = ModelCard.from_template(
        card_data, template_str=TEMPLATE, model_name=repo_id, task=task.replace("-", " "),
        data_description=data_description, results_table=table, config=config, topk_note=topk_note,
        language=language, auto_class=auto_class, repo_id=repo_id, usage=usage, license=license,
    )
    card.save(os.path.join(output_dir, "README.md"))
    return card
