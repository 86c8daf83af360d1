"""sasa.retrieval: raw texts → batches → the model's own encode_batches; MRR over the whole pool."""

import pytest
import torch

from conftest import read_snippet, tiny_config
from sasa import SasaForCodeSearch
from sasa.retrieval import encode_texts, retrieval_mrr, text_batches


@pytest.fixture
def model(tokenizer):
    torch.manual_seed(0)
    return SasaForCodeSearch(tiny_config(vocab_size=len(tokenizer))).eval()


def test_encode_texts_gives_each_texts_own_vector_in_batches(model, tokenizer):
    """Batched and padded to whole blocks, each vector is the text's vector encoded alone (links included)."""
    code = [read_snippet("example.py"), read_snippet("Example.java"), "def f(x):\n    return x\n"]
    languages = ["python", "java", "python"]
    vectors = encode_texts(model, tokenizer, code, languages, max_length=128, batch_size=2)
    with torch.no_grad():
        alone = torch.cat([model.encode(**tokenizer(text, language=language, truncation=True, max_length=128,
                                                    return_tensors="pt"))
                           for text, language in zip(code, languages)])
    torch.testing.assert_close(vectors, alone, atol=1e-5, rtol=1e-5)
    without_links = encode_texts(model, tokenizer, code, None, max_length=128)
    assert (vectors - without_links).abs().max() > 1e-4  # the languages reached the tokenizer


def test_text_batches_pad_to_whole_blocks_with_links(tokenizer):
    batches = list(text_batches(tokenizer, ["def f():\n    return 1\n"] * 3, "python", max_length=64, batch_size=2,
                                pad_to_multiple_of=8))
    assert [len(batch["input_ids"]) for batch in batches] == [2, 1]
    assert all(batch["input_ids"].shape[1] % 8 == 0 for batch in batches)
    assert batches[0]["ast_links"].shape[:2] == batches[0]["input_ids"].shape
    assert (batches[0]["ast_links"] >= 0).any()


def test_encode_texts_names_a_language_list_of_the_wrong_length(model, tokenizer):
    with pytest.raises(ValueError, match="language= has 1 entries for 2 texts"):
        encode_texts(model, tokenizer, ["x = 1", "y = 2"], ["python"], max_length=16)


def test_retrieval_mrr_puts_query_i_against_the_whole_pool():
    code = torch.eye(3)
    assert retrieval_mrr(torch.eye(3), code) == 1.0
    # queries 0 and 1 swapped: each answer scores 0, tied with the third code, and ties count against it (rank 3)
    assert retrieval_mrr(torch.eye(3)[[1, 0, 2]], code) == pytest.approx((1 / 3 + 1 / 3 + 1) / 3)
