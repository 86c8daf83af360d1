"""A saved checkpoint carries its code: it reloads, offline, in a fresh Python where ``sasa`` cannot be imported."""

import json
import os
import subprocess
import sys
import tempfile
import textwrap

import pytest
import torch

from conftest import padded_batch, read_snippet, tiny_config
from sasa import SasaForMaskedLM, SasaForSequenceClassification, SasaModel, SasaTokenizer

SHIPPED_FILES = {"configuration_sasa.py", "modeling_sasa.py", "block_layout.py", "sparse_attention.py",
                 "fused_block_attention.py"}

FRESH_PROCESS = textwrap.dedent(
    """
    import json, sys

    class BlockSasa:  # the package is "not installed": any import of it fails
        def find_spec(self, name, path=None, target=None):
            if name == "sasa" or name.startswith("sasa."):
                raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")

    sys.meta_path.insert(0, BlockSasa())
    try:
        import sasa  # noqa: F401
        raise SystemExit("sasa is importable; the test would prove nothing")
    except ModuleNotFoundError:
        pass

    import torch
    import transformers

    cases = json.loads(sys.argv[1])
    for case in cases:
        auto = getattr(transformers, case["auto_class"])
        model = auto.from_pretrained(case["path"], trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        assert type(model).__name__ == case["class_name"], type(model).__name__
        if "code" in case:  # the checkpoint's own tokenizer, loaded as remote code too
            tokenizer = transformers.AutoTokenizer.from_pretrained(case["path"], trust_remote_code=True)
            assert type(tokenizer).__module__.startswith("transformers_modules"), type(tokenizer).__module__
            inputs = dict(tokenizer(case["code"], language=case["language"], return_tensors="pt"))
            assert (inputs["ast_links"] >= 0).any()
        else:
            inputs = torch.load(case["inputs"])
        with torch.no_grad():
            output = model(**inputs)[0]
        expected = torch.load(case["expected"])
        assert torch.equal(output, expected), (case["path"], (output - expected).abs().max())
        print("identical", case["auto_class"], case["class_name"])
    """
)


@pytest.mark.slow
def test_checkpoints_reload_without_the_package_offline_to_identical_outputs(tmp_path, bpe_dir):
    config = tiny_config(num_labels=3)
    input_ids, attention_mask = padded_batch([45, 30], config.vocab_size)
    ast_links = torch.randint(-1, 45, (2, 45, 2), generator=torch.Generator().manual_seed(0))
    inputs = dict(input_ids=input_ids, attention_mask=attention_mask, ast_links=ast_links)
    torch.save(inputs, tmp_path / "inputs.pt")

    cases = []
    heads = [
        (SasaModel, "AutoModel", "SasaModel"),
        (SasaForMaskedLM, "AutoModelForMaskedLM", "SasaForMaskedLM"),
        (SasaForSequenceClassification, "AutoModelForSequenceClassification", "SasaForSequenceClassification"),
        # a head checkpoint also loads as the base model (complete auto_map)
        (SasaForSequenceClassification, "AutoModel", "SasaModel"),
    ]
    for index, (cls, auto_class, class_name) in enumerate(heads):
        torch.manual_seed(index)
        model = cls(config).eval()
        vocab = config.vocab_size
        model.base_model.set_frequency_table(torch.randint(0, vocab, (vocab, 2)), torch.rand(vocab, 2))
        path = tmp_path / f"checkpoint-{index}"
        model.save_pretrained(path)
        assert SHIPPED_FILES <= {p.name for p in path.iterdir()}
        if class_name != type(model).__name__:
            model = SasaModel.from_pretrained(path).eval()  # the base weights inside the head checkpoint
        with torch.no_grad():
            torch.save(model(**inputs)[0], tmp_path / f"expected-{index}.pt")
        cases.append(dict(path=str(path), auto_class=auto_class, class_name=class_name,
                          inputs=str(tmp_path / "inputs.pt"), expected=str(tmp_path / f"expected-{index}.pt")))

    # Model and tokenizer saved together: model(**tokenizer(code, language=...)) must reload identically.
    tokenizer = SasaTokenizer.from_pretrained(bpe_dir)
    model = SasaForSequenceClassification(tiny_config(vocab_size=len(tokenizer), num_labels=2)).eval()
    path = tmp_path / "checkpoint-with-tokenizer"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    code = read_snippet("Example.java")
    with torch.no_grad():
        logits = model(**tokenizer(code, language="java", return_tensors="pt")).logits
    torch.save(logits, tmp_path / "expected-tokenizer.pt")
    cases.append(dict(path=str(path), auto_class="AutoModelForSequenceClassification",
                      class_name="SasaForSequenceClassification", code=code, language="java",
                      expected=str(tmp_path / "expected-tokenizer.pt")))

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=tempfile.mkdtemp(prefix="fresh-hf-home-"))
    result = subprocess.run([sys.executable, "-c", FRESH_PROCESS, json.dumps(cases)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("identical") == len(cases)
