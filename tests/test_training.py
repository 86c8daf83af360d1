"""ast_links travels like input_ids through collators, Trainer and Accelerate's batch utilities."""

import torch
from accelerate.utils.operations import concatenate, find_batch_size, slice_tensors
from datasets import Dataset
from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

from conftest import read_snippet, tiny_config
from sasa import SasaForSequenceClassification

CODE = [read_snippet(name) for name in ("example.py", "example.go", "example.c", "example.js")]
LANGUAGES = ["python", "go", "c", "javascript"]


def encoded_dataset(tokenizer) -> Dataset:
    rows = [dict(tokenizer(code, language=language, truncation=True, max_length=120)) for code, language in
            zip(CODE, LANGUAGES)]
    columns = {key: [row[key] for row in rows] for key in rows[0]}
    return Dataset.from_dict(dict(columns, labels=[0, 1, 0, 1], code=CODE))


def test_trainer_delivers_ast_links_to_forward_and_trains(tokenizer, tmp_path):
    torch.manual_seed(0)
    model = SasaForSequenceClassification(tiny_config(vocab_size=len(tokenizer), num_labels=2))
    seen = []
    model.register_forward_pre_hook(lambda module, args, kwargs: seen.append(dict(kwargs)), with_kwargs=True)
    before = model.classifier.out_proj.weight.detach().clone()
    arguments = TrainingArguments(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=2,
                                  use_cpu=True, report_to=[], save_strategy="no", learning_rate=1e-2,
                                  gradient_accumulation_steps=1)
    trainer = Trainer(model=model, args=arguments, train_dataset=encoded_dataset(tokenizer),
                      data_collator=DataCollatorWithPadding(tokenizer))
    trainer.train()
    assert seen and {"input_ids", "attention_mask", "ast_links", "labels"} <= seen[0].keys()
    assert "code" not in seen[0]  # raw columns are dropped; ast_links survives because forward names it
    links = seen[0]["ast_links"]
    assert links.dim() == 3 and links.shape[:2] == seen[0]["input_ids"].shape and (links >= 0).any()
    assert not torch.equal(before, model.classifier.out_proj.weight)


def test_accelerate_batch_utilities_split_and_join_ast_links(tokenizer):
    features = [tokenizer(code, language=language) for code, language in zip(CODE, LANGUAGES)]
    batch = dict(DataCollatorWithPadding(tokenizer)(features))
    assert find_batch_size(batch) == 4
    halves = [slice_tensors(batch, slice(0, 2)), slice_tensors(batch, slice(2, 4))]
    assert halves[0]["ast_links"].shape == (2, *batch["ast_links"].shape[1:])
    joined = concatenate(halves)
    assert torch.equal(joined["ast_links"], batch["ast_links"])
