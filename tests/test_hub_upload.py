"""push_to_hub without network: the upload layer (HfApi.create_repo / create_commit) is intercepted, and the captured
file set must be exactly what a fresh from_pretrained(..., trust_remote_code=True) needs, in a Python without sasa."""

import json
import os
import shutil
import sys
import textwrap

import huggingface_hub
import pytest
import torch
from huggingface_hub import HfApi, ModelCard, RepoUrl
from huggingface_hub.errors import EntryNotFoundError

from conftest import read_snippet, run_fresh_process, tiny_config
from sasa import SasaForCodeSearch, SasaForCodeSummarization, SasaForSequenceClassification, SasaTokenizer

MODEL_CODE = {"configuration_sasa.py", "modeling_sasa.py", "block_layout.py", "sparse_attention.py",
              "fused_block_attention.py"}
TOKENIZER_CODE = {"tokenization_sasa.py", "ast_relations.py", "ast_languages.py"}


class FakeHub:
    """Stands in for the Hub: records created repositories and the files of every commit."""

    def __init__(self, root):
        self.root = root
        self.repos = []

    def create_repo(self, api, repo_id, *args, **kwargs):
        self.repos.append(repo_id)
        return RepoUrl(f"https://huggingface.co/{repo_id}")

    def create_commit(self, api, repo_id, operations, *args, **kwargs):
        for operation in operations:
            target = os.path.join(self.root, repo_id, operation.path_in_repo)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            source = operation.path_or_fileobj
            if isinstance(source, (str, os.PathLike)):
                shutil.copyfile(source, target)
            else:
                data = source if isinstance(source, bytes) else source.read()
                with open(target, "wb") as handle:
                    handle.write(data)
        return None

    def files(self, repo_id):
        folder = os.path.join(self.root, repo_id)
        return {os.path.relpath(os.path.join(d, f), folder) for d, _, names in os.walk(folder) for f in names}


@pytest.fixture
def hub(tmp_path, monkeypatch):
    fake = FakeHub(str(tmp_path / "hub"))
    monkeypatch.setattr(HfApi, "create_repo", lambda api, repo_id, *a, **k: fake.create_repo(api, repo_id, *a, **k))
    monkeypatch.setattr(HfApi, "create_commit",
                        lambda api, repo_id, operations, *a, **k: fake.create_commit(api, repo_id, operations))
    monkeypatch.setattr(HfApi, "create_branch", lambda *a, **k: None)
    monkeypatch.setattr(HfApi, "_validate_yaml", lambda *a, **k: None, raising=False)  # upload_folder asks the Hub
    # With hf_xet installed, upload_folder streams through its own pipeline; the single-commit path goes through
    # create_commit, the layer intercepted here.
    monkeypatch.setattr(huggingface_hub.hf_api, "is_xet_available", lambda: False, raising=False)
    monkeypatch.setattr(ModelCard, "load", classmethod(lambda cls, *a, **k: (_ for _ in ()).throw(
        EntryNotFoundError("no model card yet"))))  # a new repository has none
    # Older transformers call huggingface_hub's module-level functions (`create_repo = api.create_repo`, bound when
    # huggingface_hub was imported, so blind to the class patches above): route every such copy through the class.
    for module in list(sys.modules.values()):
        for name in ("create_repo", "create_commit", "create_branch", "upload_folder"):
            function = getattr(module, "__dict__", {}).get(name)
            if isinstance(getattr(function, "__self__", None), HfApi):
                monkeypatch.setattr(module, name, _through_the_class(function))
    return fake


def _through_the_class(bound):
    return lambda *args, **kwargs: getattr(HfApi, bound.__name__)(bound.__self__, *args, **kwargs)


RELOAD = textwrap.dedent(
    """
    import json, sys

    class NoSasa:
        def find_spec(self, name, path=None, target=None):
            if name == "sasa" or name.startswith("sasa."):
                raise ModuleNotFoundError(name)

    sys.meta_path.insert(0, NoSasa())
    import torch
    import transformers

    for case in json.loads(sys.argv[1]):
        model = getattr(transformers, case["auto_class"]).from_pretrained(case["path"], trust_remote_code=True).eval()
        tokenizer = transformers.AutoTokenizer.from_pretrained(case["path"], trust_remote_code=True)
        inputs = dict(tokenizer(case["code"], language="java", return_tensors="pt"))
        with torch.no_grad():
            output = model.encode(**inputs) if case["auto_class"] == "AutoModelForTextEncoding" else (
                model(**inputs, **torch.load(case["extra"])).logits)
        assert torch.equal(output, torch.load(case["expected"])), case["path"]
        print("identical", case["auto_class"])
    """
)


def heads(vocab_size):
    return [
        (SasaForSequenceClassification, "AutoModelForSequenceClassification", dict(num_labels=2)),
        (SasaForCodeSearch, "AutoModelForTextEncoding", {}),
        (SasaForCodeSummarization, "AutoModelForSeq2SeqLM", dict(num_decoder_layers=1)),
    ]


def expected_output(model, tokenizer, code, auto_class, extra):
    inputs = dict(tokenizer(code, language="java", return_tensors="pt"))
    with torch.no_grad():
        if auto_class == "AutoModelForTextEncoding":
            return model.encode(**inputs)
        return model(**inputs, **extra).logits


def reload_without_the_package(cases):
    result = run_fresh_process(RELOAD, json.dumps(cases), timeout=600)
    assert result.stdout.count("identical") == len(cases)


@pytest.mark.slow
def test_model_and_tokenizer_push_to_hub_upload_exactly_a_loadable_checkpoint(hub, tmp_path, bpe_dir):
    tokenizer = SasaTokenizer.from_pretrained(bpe_dir)
    code = read_snippet("Example.java")
    cases = []
    for index, (cls, auto_class, fields) in enumerate(heads(len(tokenizer))):
        torch.manual_seed(index)
        model = cls(tiny_config(vocab_size=len(tokenizer), **fields)).eval()
        vocab = model.config.vocab_size
        model.base_model.set_frequency_table(torch.randint(0, vocab, (vocab, 2)), torch.rand(vocab, 2))
        repo_id = f"someone/sasa-{auto_class.lower()}"
        model.push_to_hub(repo_id)
        tokenizer.push_to_hub(repo_id)
        uploaded = hub.files(repo_id)
        assert MODEL_CODE | TOKENIZER_CODE <= uploaded
        assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                "README.md"} <= uploaded
        assert not {f for f in uploaded if f.endswith((".bin", ".pkl", ".pt"))}  # no pickles
        # nothing beyond what loading needs: code, config(s), weights, tokenizer files, the card
        assert uploaded - MODEL_CODE - TOKENIZER_CODE <= {
            "config.json", "generation_config.json", "model.safetensors", "vocab.json", "merges.txt",
            "tokenizer_config.json", "special_tokens_map.json", "tokenizer.json", "README.md"}, uploaded
        config = json.load(open(os.path.join(hub.root, repo_id, "config.json")))
        assert config["auto_map"][auto_class] == f"modeling_sasa.{cls.__name__}"
        assert config["frequency_partners"] == 2  # the frequency table travels in the weights
        from safetensors import safe_open
        with safe_open(os.path.join(hub.root, repo_id, "model.safetensors"), "pt") as weights:
            assert any(name.endswith("frequency_table.partner_ids") for name in weights.keys())
        extra = dict(labels=torch.tensor([[5, 6, 2]])) if cls is SasaForCodeSummarization else {}
        torch.save(extra, tmp_path / f"extra-{index}.pt")
        reference = cls.from_pretrained(os.path.join(hub.root, repo_id)).eval()
        torch.save(expected_output(reference, tokenizer, code, auto_class, extra), tmp_path / f"expected-{index}.pt")
        cases.append(dict(path=os.path.join(hub.root, repo_id), auto_class=auto_class, code=code,
                          extra=str(tmp_path / f"extra-{index}.pt"), expected=str(tmp_path / f"expected-{index}.pt")))
    assert hub.repos  # the repository was created through the intercepted API
    reload_without_the_package(cases)


@pytest.mark.slow
def test_trainer_push_to_hub_uploads_a_loadable_checkpoint(hub, tmp_path, bpe_dir):
    from transformers import Trainer, TrainingArguments

    from sasa import SasaDataCollator

    tokenizer = SasaTokenizer.from_pretrained(bpe_dir)
    torch.manual_seed(0)
    model = SasaForSequenceClassification(tiny_config(vocab_size=len(tokenizer), num_labels=2))
    code = read_snippet("Example.java")
    encoded = tokenizer([code, code[:300]], language="java", truncation=True, max_length=120)
    features = [dict(input_ids=encoded["input_ids"][i], attention_mask=encoded["attention_mask"][i],
                     ast_links=encoded["ast_links"][i], labels=i) for i in range(2)]
    arguments = TrainingArguments(output_dir=str(tmp_path / "run"), max_steps=2, per_device_train_batch_size=2,
                                  push_to_hub=True, hub_model_id="someone/sasa-trained", report_to=[],
                                  disable_tqdm=True, save_strategy="no", hub_strategy="end")
    trainer = Trainer(model=model, args=arguments, train_dataset=features, processing_class=tokenizer,
                      data_collator=SasaDataCollator(tokenizer, pad_to_multiple_of=8))
    trainer.train()
    trainer.push_to_hub()
    uploaded = hub.files("someone/sasa-trained")
    assert MODEL_CODE | TOKENIZER_CODE | {"config.json", "model.safetensors", "tokenizer.json", "README.md"} <= uploaded
    assert not any(f.startswith("checkpoint-") for f in uploaded)
    path = os.path.join(hub.root, "someone/sasa-trained")
    reference = SasaForSequenceClassification.from_pretrained(path).eval()
    torch.save({}, tmp_path / "extra.pt")
    torch.save(expected_output(reference, tokenizer, code, "AutoModelForSequenceClassification", {}),
               tmp_path / "expected.pt")
    reload_without_the_package([dict(path=path, auto_class="AutoModelForSequenceClassification", code=code,
                                     extra=str(tmp_path / "extra.pt"), expected=str(tmp_path / "expected.pt"))])
