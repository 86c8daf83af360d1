"""SasaDataCollator pads every head's features: plain, prefixed groups (queries), pairs, token-list labels; and
SasaDataCollatorForMaskedLM masks them for masked-LM."""

import pytest
import torch

from conftest import links_touching, read_snippet
from sasa.data_collator import SasaDataCollator, SasaDataCollatorForMaskedLM
from sasa.masking import evaluation_mask

PYTHON, JAVA = read_snippet("example.py")[:300], read_snippet("Example.java")[:200]


def test_plain_and_query_groups_are_padded_separately(tokenizer):
    code = tokenizer([PYTHON, JAVA], language=["python", "java"])
    queries = tokenizer(["return the sum of a list", "parse"], language=None)
    features = [dict(input_ids=code["input_ids"][i], attention_mask=code["attention_mask"][i],
                     ast_links=code["ast_links"][i], query_input_ids=queries["input_ids"][i],
                     query_attention_mask=queries["attention_mask"][i]) for i in range(2)]
    batch = SasaDataCollator(tokenizer, pad_to_multiple_of=8)(features)
    expected = tokenizer.pad([{k: code[k][i] for k in code} for i in range(2)], pad_to_multiple_of=8,
                             return_tensors="pt")
    for key in ("input_ids", "attention_mask", "ast_links"):
        assert torch.equal(batch[key], expected[key])
    width = max(len(ids) for ids in queries["input_ids"])
    assert batch["query_input_ids"].shape == (2, -(-width // 8) * 8)
    assert batch["query_attention_mask"].sum(1).tolist() == [len(ids) for ids in queries["input_ids"]]


def test_pairs_are_padded_together_and_stacked(tokenizer):
    code = tokenizer([PYTHON, JAVA, JAVA[:80]], language=["python", "java", "java"])
    row = [{key: code[key][i] for key in code} for i in range(3)]
    features = [dict(input_ids=[row[0]["input_ids"], row[1]["input_ids"]],
                     attention_mask=[row[0]["attention_mask"], row[1]["attention_mask"]],
                     ast_links=[row[0]["ast_links"], row[1]["ast_links"]], labels=1),
                dict(input_ids=[row[2]["input_ids"], row[0]["input_ids"]],
                     attention_mask=[row[2]["attention_mask"], row[0]["attention_mask"]],
                     ast_links=[row[2]["ast_links"], row[0]["ast_links"]], labels=0)]
    batch = SasaDataCollator(tokenizer)(features)
    flat = tokenizer.pad([row[0], row[1], row[2], row[0]], return_tensors="pt")
    assert batch["input_ids"].shape == (2, 2, flat["input_ids"].shape[1])
    for key in ("input_ids", "attention_mask", "ast_links"):
        assert torch.equal(batch[key].reshape(4, *batch[key].shape[2:]), flat[key])
    assert batch["labels"].tolist() == [1, 0]


def test_token_list_labels_are_padded_with_minus_100(tokenizer):
    code = tokenizer([PYTHON, JAVA], language=["python", "java"])
    features = [dict(input_ids=code["input_ids"][i], attention_mask=code["attention_mask"][i],
                     ast_links=code["ast_links"][i], labels=labels) for i, labels in enumerate([[5, 6, 2], [7, 2]])]
    batch = SasaDataCollator(tokenizer)(features)
    assert batch["labels"].tolist() == [[5, 6, 2], [7, 2, -100]]


def test_empty_batch_is_an_error(tokenizer):
    with pytest.raises(ValueError, match="empty"):
        SasaDataCollator(tokenizer)([])


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("form", ["list", "numpy", "tensor"])
def test_ast_links_are_padded_as_tensors_like_the_tokenizer_pads_them(tokenizer, side, form, monkeypatch):
    """The collator pads with tensor operations (the tokenizer's pad walks Python lists token by token: 127 ms per
    batch of 32 x 2048); the result equals the tokenizer's, for nested lists, arrays and tensors, either side."""
    import numpy as np

    tokenizer.padding_side = side
    code = tokenizer([PYTHON, JAVA, JAVA[:50]], language=["python", "java", "java"])
    expected = tokenizer.pad([{k: code[k][i] for k in code} for i in range(3)], pad_to_multiple_of=8,
                             return_tensors="pt")
    convert = {"list": lambda x: x, "numpy": np.asarray, "tensor": torch.tensor}[form]
    features = [dict(input_ids=code["input_ids"][i], attention_mask=code["attention_mask"][i],
                     ast_links=convert(code["ast_links"][i])) for i in range(3)]
    calls = []
    pad = tokenizer.pad
    monkeypatch.setattr(tokenizer, "pad", lambda rows, **kw: calls.append(rows) or pad(rows, **kw))
    batch = SasaDataCollator(tokenizer, pad_to_multiple_of=8)(features)
    assert not calls  # no Python-list padding in the tokenizer
    for key in ("input_ids", "attention_mask", "ast_links"):
        assert torch.equal(batch[key], expected[key]), key
    assert batch["ast_links"].dtype == torch.long and (batch["ast_links"] >= 0).any()


def test_collator_masks_training_batches_and_keeps_fixed_labels(tokenizer):
    collator = SasaDataCollatorForMaskedLM(tokenizer, pad_to_multiple_of=8)
    codes = [read_snippet("example.py"), read_snippet("example.c")]
    features = [dict(tokenizer(code, language=None)) for code in codes]
    torch.manual_seed(0)
    batch = collator(features)
    assert batch["input_ids"].shape == batch["labels"].shape and batch["input_ids"].shape[1] % 8 == 0
    scored = batch["labels"] != -100
    assert scored.any() and not (scored & (batch["attention_mask"] == 0)).any()
    original = torch.tensor(features[0]["input_ids"])
    assert torch.equal(batch["labels"][0, : len(original)][scored[0, : len(original)]], original[scored[0, : len(original)]])
    share_masked = (batch["input_ids"][scored] == tokenizer.mask_token_id).float().mean()
    assert 0.6 < share_masked < 0.95  # 80 % <mask>, the rest random or kept
    fixed = [dict(f, labels=evaluation_mask(f["input_ids"], collator.vocabulary, "tokens", 0.15)[1]) for f in features]
    batch = collator(fixed)
    assert torch.equal(batch["labels"][1, : len(fixed[1]["labels"])], torch.tensor(fixed[1]["labels"]))
    assert (batch["labels"][1, len(fixed[1]["labels"]):] == -100).all()
    with pytest.raises(ValueError, match="masking must be one of"):
        SasaDataCollatorForMaskedLM(tokenizer, masking="spans")


def test_masked_lm_batches_keep_no_link_of_a_hidden_token(tokenizer):
    """The rule in the collator (property test): whatever the masking, rate, seed or padding side, no AST link of a
    training batch or of a fixed-mask batch starts or ends at a hidden token; every other link is the one the
    tokenizer made. ``unlink_hidden=False`` keeps them all (and then some do touch hidden tokens)."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    codes = [(read_snippet(name), language) for name, language in
             (("example.py", "python"), ("example.c", "c"), ("Example.java", "java"))]
    encoded = [dict(tokenizer(code, language=language)) for code, language in codes]
    assert all(any(link >= 0 for row in f["ast_links"] for link in row) for f in encoded)

    @settings(max_examples=25, deadline=None)
    @given(masking=st.sampled_from(["tokens", "identifiers"]), rate=st.floats(0.05, 0.9),
           seed=st.integers(0, 10_000), side=st.sampled_from(["right", "left"]), fixed=st.booleans())
    def check(masking, rate, seed, side, fixed):
        tokenizer.padding_side = side
        try:
            collator = SasaDataCollatorForMaskedLM(tokenizer, pad_to_multiple_of=8, masking=masking,
                                                   mlm_probability=rate)
            leaky = SasaDataCollatorForMaskedLM(tokenizer, pad_to_multiple_of=8, masking=masking,
                                                mlm_probability=rate, unlink_hidden=False)
            features = encoded
            if fixed:
                features = [dict(f, labels=evaluation_mask(f["input_ids"], collator.vocabulary, masking, rate,
                                                           seed)[1]) for f in encoded]
            torch.manual_seed(seed)
            batch = collator(features)
            torch.manual_seed(seed)
            kept = leaky(features)
            parsed = SasaDataCollator(tokenizer, pad_to_multiple_of=8)(encoded)["ast_links"]
        finally:
            tokenizer.padding_side = "right"
        hidden = batch["labels"] != -100
        assert hidden.any() and torch.equal(batch["labels"], kept["labels"])
        assert not links_touching(batch["ast_links"], hidden).any()
        assert links_touching(kept["ast_links"], hidden).any()
        untouched = (batch["ast_links"] == kept["ast_links"]) | (batch["ast_links"] == -1)
        assert untouched.all()
        assert torch.equal(kept["ast_links"], parsed)
        real = batch["attention_mask"].bool()
        assert not (hidden & ~real).any()  # left padding too: only real tokens are hidden

    check()
