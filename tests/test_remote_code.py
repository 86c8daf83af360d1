"""A saved checkpoint carries its code: it reloads, offline, in a fresh Python where ``sasa`` cannot be imported."""

import json
import shutil
import textwrap

import pytest
import torch

from conftest import WITHOUT_SASA, padded_batch, read_snippet, run_fresh_process, tiny_config
from sasa import (
    SasaForCodeSearch,
    SasaForCodeSummarization,
    SasaForMaskedLM,
    SasaForSequenceClassification,
    SasaModel,
    SasaTokenizer,
)

SHIPPED_FILES = {"configuration_sasa.py", "modeling_sasa.py", "block_layout.py", "sparse_attention.py",
                 "fused_block_attention.py"}

FRESH_PROCESS = WITHOUT_SASA + textwrap.dedent(
    """
    import json, sys

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
            if case.get("generate"):
                output = model.generate(**inputs, num_beams=2, max_length=6)
            elif case.get("output_key"):
                output = getattr(model(**inputs), case["output_key"])
            else:
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
        # The reference is the checkpoint reloaded here (BLAS rounding depends on the weights' memory alignment, which
        # differs between freshly initialised and loaded tensors); as the base model when the case loads the base.
        model = (SasaModel if class_name != type(model).__name__ else cls).from_pretrained(path).eval()
        with torch.no_grad():
            torch.save(model(**inputs)[0], tmp_path / f"expected-{index}.pt")
        cases.append(dict(path=str(path), auto_class=auto_class, class_name=class_name,
                          inputs=str(tmp_path / "inputs.pt"), expected=str(tmp_path / f"expected-{index}.pt")))

    # The task heads, each under the Auto class its checkpoint names for it (and generate() for the summarizer).
    pair_inputs = dict(input_ids=input_ids[:, None].expand(2, 2, 45).clone(),
                       attention_mask=attention_mask[:, None].expand(2, 2, 45).clone(),
                       ast_links=ast_links[:, None].expand(2, 2, 45, 2).clone())
    pair_inputs["input_ids"][:, 1, 3:9] = 7  # the two members differ
    search_inputs = dict(inputs, query_input_ids=input_ids[:, :12], query_attention_mask=attention_mask[:, :12])
    summary_inputs = dict(inputs, labels=torch.randint(5, config.vocab_size, (2, 6)))
    task_heads = [
        (SasaForSequenceClassification, "AutoModelForSequenceClassification", pair_inputs, dict(output_key="logits")),
        (SasaForCodeSearch, "AutoModelForTextEncoding", search_inputs, dict(output_key="scores")),
        (SasaForCodeSummarization, "AutoModelForSeq2SeqLM", summary_inputs, dict(output_key="logits")),
        (SasaForCodeSummarization, "AutoModelForSeq2SeqLM", inputs, dict(generate=True)),
    ]
    for index, (cls, auto_class, case_inputs, how) in enumerate(task_heads):
        torch.manual_seed(index)
        path = tmp_path / f"task-{index}"
        cls(tiny_config(num_labels=2, num_decoder_layers=2, classify_pairs=case_inputs is pair_inputs)).save_pretrained(path)
        model = cls.from_pretrained(path).eval()
        torch.save(case_inputs, tmp_path / f"task-inputs-{index}.pt")
        with torch.no_grad():
            if how.get("generate"):
                expected = model.generate(**case_inputs, num_beams=2, max_length=6)
            else:
                expected = getattr(model(**case_inputs), how["output_key"])
        torch.save(expected, tmp_path / f"task-expected-{index}.pt")
        cases.append(dict(path=str(path), auto_class=auto_class, class_name=cls.__name__,
                          inputs=str(tmp_path / f"task-inputs-{index}.pt"),
                          expected=str(tmp_path / f"task-expected-{index}.pt"), **how))

    # Model and tokenizer saved together: model(**tokenizer(code, language=...)) must reload identically.
    tokenizer = SasaTokenizer.from_pretrained(bpe_dir)
    model = SasaForSequenceClassification(tiny_config(vocab_size=len(tokenizer), num_labels=2)).eval()
    path = tmp_path / "checkpoint-with-tokenizer"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    code = read_snippet("Example.java")
    model = SasaForSequenceClassification.from_pretrained(path).eval()
    with torch.no_grad():
        logits = model(**tokenizer(code, language="java", return_tensors="pt")).logits
    torch.save(logits, tmp_path / "expected-tokenizer.pt")
    cases.append(dict(path=str(path), auto_class="AutoModelForSequenceClassification",
                      class_name="SasaForSequenceClassification", code=code, language="java",
                      expected=str(tmp_path / "expected-tokenizer.pt")))

    result = run_fresh_process(FRESH_PROCESS, json.dumps(cases), cwd=tmp_path)
    assert result.stdout.count("identical") == len(cases)


COEXISTENCE_PROCESS = textwrap.dedent(
    """
    import json, sys

    with_package = sys.argv[2] == "with-package"
    if not with_package:
        class BlockSasa:
            def find_spec(self, name, path=None, target=None):
                if name == "sasa" or name.startswith("sasa."):
                    raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")

        sys.meta_path.insert(0, BlockSasa())

    import torch
    import transformers

    cases = json.loads(sys.argv[1])
    inputs = torch.load(cases[0]["inputs"])
    models = {}
    for index, case in enumerate(cases):  # every checkpoint loaded before any is called
        if with_package and index == 2:
            # The package imported midway: it registers its classes (later loads use them) and its dispatcher.
            import sasa  # noqa: F401
        models[case["name"]] = transformers.AutoModel.from_pretrained(case["path"], trust_remote_code=True).eval()
    modules = [type(m).__module__ for m in models.values()]
    remote = [m for m in modules if m.startswith("transformers_modules")]
    assert len(set(remote)) == len(remote) == (2 if with_package else len(cases)), modules
    assert not with_package or modules[2:] == ["sasa.modeling_sasa"] * (len(cases) - 2), modules

    for name in json.loads(sys.argv[3]):  # interleaved calls, each model several times
        case = next(c for c in cases if c["name"] == name)
        model = models[name]
        with torch.no_grad():
            output = model(**inputs).last_hidden_state
        expected = torch.load(case["expected"])
        assert torch.equal(output, expected), (name, (output - expected).abs().max())
        model.zero_grad()
        model(**inputs).last_hidden_state.square().sum().backward()  # the kernel's backward, per copy
        grad = model.encoder.layer[0].attention.self.query.weight.grad
        expected_grad = torch.load(case["expected_grad"])
        assert torch.allclose(grad, expected_grad, atol=1e-6, rtol=1e-5), (name, (grad - expected_grad).abs().max())
        print("equal", name)
    """
)


def _another_version(checkpoint, target):
    """A copy of ``checkpoint`` whose code files differ (as if saved by another version of SASA)."""
    shutil.copytree(checkpoint, target)
    for code_file in target.glob("*.py"):
        code_file.write_text(code_file.read_text() + "\n# saved by another version of SASA\n")
    return target


@pytest.mark.slow
@pytest.mark.parametrize("package", ["without-package", "with-package"])
def test_checkpoints_coexist_in_one_process(tmp_path, package):
    """Checkpoints loaded side by side (copies of one, another code version, another model) each keep their own
    attention code: called interleaved, every one equals its own reference, forward and backward."""
    config = tiny_config()
    input_ids, attention_mask = padded_batch([45, 30], config.vocab_size)
    ast_links = torch.randint(-1, 45, (2, 45, 2), generator=torch.Generator().manual_seed(0))
    inputs = dict(input_ids=input_ids, attention_mask=attention_mask, ast_links=ast_links)
    torch.save(inputs, tmp_path / "inputs.pt")

    torch.manual_seed(0)
    SasaModel(config).save_pretrained(tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "a-copy")  # e.g. a Trainer's checkpoint-3 and checkpoint-6
    _another_version(tmp_path / "a", tmp_path / "a-other-version")
    torch.manual_seed(1)
    SasaModel(tiny_config(num_ast_blocks=1, window_radius=2)).save_pretrained(tmp_path / "b")  # e.g. a student

    cases = []
    for name in ("a", "a-copy", "a-other-version", "b"):
        model = SasaModel.from_pretrained(tmp_path / name).eval()
        with torch.no_grad():
            torch.save(model(**inputs).last_hidden_state, tmp_path / f"{name}.pt")
        model(**inputs).last_hidden_state.square().sum().backward()
        torch.save(model.encoder.layer[0].attention.self.query.weight.grad, tmp_path / f"{name}-grad.pt")
        cases.append(dict(name=name, path=str(tmp_path / name), inputs=str(tmp_path / "inputs.pt"),
                          expected=str(tmp_path / f"{name}.pt"), expected_grad=str(tmp_path / f"{name}-grad.pt")))
    calls = ["a", "b", "a-other-version", "a-copy", "a", "b", "a-copy", "a-other-version"]

    result = run_fresh_process(COEXISTENCE_PROCESS, json.dumps(cases), package, json.dumps(calls), cwd=tmp_path,
                               timeout=600)
    assert result.stdout.count("equal") == len(calls)
