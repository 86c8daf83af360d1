"""sasa.masking: which tokens masked-LM hides (tokens, whole identifiers), fixed held-out masks, far tokens, and the
metrics by position bucket."""

import numpy as np
import pytest
import torch

from conftest import read_snippet
from sasa.masking import MaskingVocabulary, bucket_metrics, evaluation_mask, far_tokens, select_tokens, word_ids


def test_word_ids_join_the_pieces_of_one_name_only(tokenizer):
    ids = tokenizer("total_value = self.items_2 + 10", language=None)["input_ids"]
    words = word_ids(torch.tensor(ids), MaskingVocabulary.from_tokenizer(tokenizer)).tolist()
    text = {}
    for token, word in zip(ids, words):
        text[word] = text.get(word, "") + tokenizer.decode([token])
    # this small BPE has no " +" or " 10": their space is a token of its own
    assert list(text.values()) == ["<s>", "total_value", " =", " self", ".", "items_2", " ", "+", " ", "10", "</s>"]


@pytest.mark.parametrize("masking", ["tokens", "identifiers"])
def test_selection_hides_about_the_rate_and_never_special_tokens(tokenizer, masking):
    vocabulary = MaskingVocabulary.from_tokenizer(tokenizer)
    ids = torch.tensor(tokenizer(read_snippet("example.py") * 4, language=None)["input_ids"])
    generator = torch.Generator().manual_seed(0)
    shares = []
    for _ in range(50):
        selected = select_tokens(ids, vocabulary, masking, 0.15, generator)
        assert not selected[vocabulary.special[ids]].any()
        if masking == "identifiers":  # a word is hidden whole or not at all
            words = word_ids(ids, vocabulary)
            for word in words[selected].unique():
                assert selected[words == word].all()
        shares.append(float(selected.float().mean()))
    assert 0.12 < np.mean(shares) < 0.18, np.mean(shares)


def test_identifiers_hide_more_multi_piece_names_whole_than_tokens(tokenizer):
    vocabulary = MaskingVocabulary.from_tokenizer(tokenizer)
    ids = torch.tensor(tokenizer(read_snippet("example.py") * 4, language=None)["input_ids"])
    words = word_ids(ids, vocabulary)
    long_words = [w for w in words.unique() if (words == w).sum() >= 2]
    assert long_words

    def partly_hidden(masking: str) -> int:
        generator = torch.Generator().manual_seed(1)
        count = 0
        for _ in range(20):
            selected = select_tokens(ids, vocabulary, masking, 0.15, generator)
            count += sum(0 < int(selected[words == w].sum()) < int((words == w).sum()) for w in long_words)
        return count

    assert partly_hidden("identifiers") == 0 < partly_hidden("tokens")


def test_evaluation_masks_are_fixed_per_example_and_all_mask_tokens(tokenizer):
    vocabulary = MaskingVocabulary.from_tokenizer(tokenizer)
    ids = tokenizer(read_snippet("Example.java"), language=None)["input_ids"]
    inputs, labels = evaluation_mask(ids, vocabulary, "tokens", 0.15, seed=3)
    assert (inputs, labels) == evaluation_mask(ids, vocabulary, "tokens", 0.15, seed=3)
    assert evaluation_mask(ids, vocabulary, "tokens", 0.15, seed=4) != (inputs, labels)
    hidden = [i for i, label in enumerate(labels) if label != -100]
    assert hidden and all(inputs[i] == tokenizer.mask_token_id and labels[i] == ids[i] for i in hidden)
    assert all(inputs[i] == ids[i] for i in range(len(ids)) if i not in hidden)


def test_far_tokens_are_hidden_names_whose_copies_are_all_outside_the_window():
    identifier = torch.ones(10, dtype=torch.bool)
    identifier[0] = False
    input_ids = torch.zeros(64, dtype=torch.long)  # blocks of 8; window radius 1; block 0 global
    input_ids[[20, 60]] = 5  # 20 (block 2) and 60 (block 7): far apart
    input_ids[[44, 50]] = 6  # 44 (block 5) and 50 (block 6): neighbours
    input_ids[[30, 62]] = 7  # 30 hidden, its only copy 62 hidden too: nothing to copy
    input_ids[[3, 40]] = 8  # 3 is in the global block: every block sees it
    masked = torch.zeros(64, dtype=torch.bool)
    masked[[20, 44, 30, 62, 40]] = True
    far = far_tokens(input_ids, masked, identifier, block_size=8, window_radius=1, num_global_blocks=1)
    assert far.nonzero()[:, 0].tolist() == [20]


def test_bucket_metrics_average_over_tokens_not_batches():
    labels = np.full((2, 6), -100)
    labels[0, [0, 4]] = 1
    labels[1, [1, 2, 5]] = 2
    stats = np.zeros((2, 6, 3))
    stats[0, 0], stats[0, 4] = (1.0, 1, 0), (3.0, 0, 1)
    stats[1, 1], stats[1, 2], stats[1, 5] = (2.0, 1, 0), (4.0, 1, 0), (5.0, 0, 1)
    metrics = bucket_metrics(stats, labels, boundary=4)
    assert metrics["masked_loss"] == pytest.approx(15 / 5) and metrics["tokens"] == 5
    assert metrics["masked_loss_first_4"] == pytest.approx(7 / 3) and metrics["accuracy_first_4"] == pytest.approx(1)
    assert metrics["masked_loss_after_4"] == pytest.approx(4) and metrics["accuracy_after_4"] == 0
    assert metrics["far_masked_loss"] == pytest.approx(4) and metrics["far_tokens"] == 2
    assert np.isnan(bucket_metrics(stats, labels, boundary=10)["masked_loss_after_10"])


def _link_case(draw, batch: bool):
    """Random ``ast_links`` (``-1`` for none; some past the end, which no layout reads) and hidden positions."""
    from hypothesis import strategies as st

    rows = draw(st.integers(1, 3)) if batch else 1
    length = draw(st.integers(1, 24))
    relations = draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**31 - 1))
    generator = torch.Generator().manual_seed(seed)
    links = torch.randint(-1, length + 2, (rows, length, relations), generator=generator)
    hidden = torch.rand(rows, length, generator=generator) < draw(st.floats(0.0, 1.0))
    return (links, hidden) if batch else (links[0], hidden[0])


def _unlinked_by_hand(links: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    """The rule, one link at a time: a link from a hidden token, or to one, becomes -1."""
    result = links.clone()
    for row in range(links.shape[0]):
        for position in range(links.shape[1]):
            for slot in range(links.shape[2]):
                target = int(links[row, position, slot])
                to_hidden = 0 <= target < links.shape[1] and bool(hidden[row, target])
                if target >= 0 and (hidden[row, position] or to_hidden):
                    result[row, position, slot] = -1
    return result


def test_unlink_hidden_drops_every_link_from_or_to_a_hidden_token_and_keeps_the_rest():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from sasa.masking import unlink_hidden

    @settings(max_examples=150, deadline=None)
    @given(st.data())
    def check(data):
        batch = data.draw(st.booleans())
        links, hidden = data.draw(st.composite(lambda draw: _link_case(draw, batch))())
        before = links.clone()
        result = unlink_hidden(links, hidden)
        assert torch.equal(links, before)  # the input is left as it was
        assert result.shape == links.shape and result.dtype == links.dtype
        expected = _unlinked_by_hand(links[None] if not batch else links, hidden[None] if not batch else hidden)
        assert torch.equal(result, expected[0] if not batch else expected)
        # [L] links (one relation) follow the same rule
        single = unlink_hidden(links[..., 0], hidden)
        assert torch.equal(single, result[..., 0])

    check()


def test_unlink_hidden_says_what_shapes_it_needs():
    from sasa.masking import unlink_hidden

    with pytest.raises(ValueError, match="must cover ast_links"):
        unlink_hidden(torch.zeros(2, 8, 2, dtype=torch.long), torch.zeros(2, 7, dtype=torch.bool))
