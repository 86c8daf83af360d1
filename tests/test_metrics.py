"""sasa.metrics: the CodeXGLUE task metrics, checked on cases worked out by hand and against a second implementation."""

import math
import random
import re
import sys
from collections import Counter

import numpy as np
import pytest

from sasa.metrics import (
    accuracy,
    binary_precision_recall_f1,
    bleu_tokenize,
    mean_reciprocal_rank,
    sentence_bleu,
    smoothed_bleu,
)

TINY = sys.float_info.min


# --- accuracy ------------------------------------------------------------------------------------------------------

def test_accuracy_counts_equal_predictions_and_accepts_bools():
    assert accuracy([1, 0, 1, 1], [1, 1, 1, 0]) == 0.5
    assert accuracy(np.array([True, False]), [1, 0]) == 1.0  # defect detection's labels are bools


def test_accuracy_rejects_mismatched_or_empty_inputs():
    with pytest.raises(ValueError, match="same length"):
        accuracy([1, 0], [1])
    with pytest.raises(ValueError, match="argmax"):
        accuracy(np.zeros((3, 2)), [0, 1, 1])  # logits, not class ids
    with pytest.raises(ValueError, match="empty"):
        accuracy([], [])


# --- precision / recall / F1 ---------------------------------------------------------------------------------------

def test_binary_scores_on_a_hand_made_case():
    # predictions 1 1 0 0 1, labels 1 0 1 0 1: tp = 2 (0, 4), fp = 1 (1), fn = 1 (2)
    scores = binary_precision_recall_f1([1, 1, 0, 0, 1], [1, 0, 1, 0, 1])
    assert scores == pytest.approx({"precision": 2 / 3, "recall": 2 / 3, "f1": 4 / 6})


def test_binary_scores_are_zero_not_nan_where_undefined():
    # no predicted positives: precision 0/0 -> 0; the one positive missed: recall 0/1, f1 0/1
    assert binary_precision_recall_f1([0, 0, 0], [0, 1, 0]) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    # no positives anywhere: every ratio 0/0 -> 0.0 (sklearn's zero_division default)
    assert binary_precision_recall_f1([0, 0], [0, 0]) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    # all positives predicted, half right
    assert binary_precision_recall_f1([True] * 4, [1, 1, 0, 0]) == pytest.approx(
        {"precision": 0.5, "recall": 1.0, "f1": 2 / 3})


def test_binary_scores_reject_labels_other_than_0_and_1():
    with pytest.raises(ValueError, match=r"labels in \{0, 1\}.*\[0, 2\]"):
        binary_precision_recall_f1([0, 1], [0, 2])


# --- MRR -----------------------------------------------------------------------------------------------------------

def test_mrr_on_a_hand_made_case():
    scores = np.array([[0.9, 0.1, 0.3],    # answer 0 is best: rank 1
                       [0.8, 0.5, 0.7],    # answer 1 has two above it: rank 3
                       [0.2, 0.6, 0.4]])   # answer 2 has one above it: rank 2
    assert mean_reciprocal_rank(scores, [0, 1, 2]) == pytest.approx((1 + 1 / 3 + 1 / 2) / 3)


def test_mrr_counts_ties_pessimistically():
    # CodeXGLUE's run.py: rank = 1 + #{j != i : scores[i, j] >= scores[i, i]}; two equal rivals rank ahead
    assert mean_reciprocal_rank([[0.5, 0.5, 0.5, 0.1]], [0]) == pytest.approx(1 / 3)
    assert mean_reciprocal_rank(np.ones((4, 4)), np.arange(4)) == pytest.approx(1 / 4)


def test_mrr_max_rank_scores_answers_below_the_cut_as_zero():
    scores = np.array([[0.1, 0.9, 0.8], [0.9, 0.1, 0.8]])
    assert mean_reciprocal_rank(scores, [0, 2]) == pytest.approx((1 / 3 + 1 / 2) / 2)
    assert mean_reciprocal_rank(scores, [0, 2], max_rank=2) == pytest.approx((0 + 1 / 2) / 2)


def test_mrr_chunks_agree_with_one_pass():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, size=(37, 11)).astype(np.float32)  # many ties
    correct = rng.integers(0, 11, size=37)
    expected = np.mean([1 / (1 + sum(scores[i, j] >= scores[i, correct[i]] for j in range(11) if j != correct[i]))
                        for i in range(37)])
    assert mean_reciprocal_rank(scores, correct, chunk_size=5) == pytest.approx(expected)


def test_mrr_rejects_bad_shapes_indices_and_nan():
    with pytest.raises(ValueError, match="num_queries"):
        mean_reciprocal_rank(np.zeros((3, 4)), [0, 1])
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        mean_reciprocal_rank(np.zeros((2, 4)), [0, 4])
    with pytest.raises(ValueError, match="NaN"):
        mean_reciprocal_rank(np.array([[np.nan, 0.0]]), [0])


# --- BLEU: tokenization ---------------------------------------------------------------------------------------------

def test_bleu_tokenize_splits_punctuation_and_underscores_and_lowercases():
    assert bleu_tokenize("  Returns the user_id, or None.\n") == [
        "returns", "the", "user", "_", "id", ",", "or", "none", "."]
    assert bleu_tokenize("self.x = 1.5") == ["self", ".", "x", "=", "1", ".", "5"]


def test_bleu_tokenize_keeps_what_splitpuncts_breaks_apart_before_nist_normalization():
    # splitPuncts runs first, so NIST's "<skipped>" and "&quot;" rules never see the strings they look for
    assert bleu_tokenize("<skipped>") == ["<", "skipped", ">"]
    assert bleu_tokenize("&quot;x&quot;") == ["&", "quot", ";", "x", "&", "quot", ";"]
    assert bleu_tokenize("line-\nbreak") == ["line", "-", "break"]


# --- BLEU: cases worked out by hand ---------------------------------------------------------------------------------

def test_identical_sentences_score_100():
    # c = r = 7; every n-gram order matches fully: (7/7)(7/7)(6/6)(5/5) -> log 0; BP = min(0, 1 - 8/8) = 0
    assert sentence_bleu("returns the sum of a and b", "returns the sum of a and b") == 1.0
    # one word: unigrams 1/1; n >= 2: 0 of 0, smoothed (0+1)/(0+1) = 1 -> still 1
    assert smoothed_bleu(["hello"], ["hello"]) == 100.0


def test_case_is_ignored():
    assert sentence_bleu("GET the NAME", "get the name") == 1.0


def test_short_prediction_pays_the_plus_one_brevity_penalty():
    # prediction "returns the sum" (c = 3), reference 6 tokens. Matches: 1-grams 3/3, 2-grams (2+1)/(2+1),
    # 3-grams (1+1)/(1+1), 4-grams (0+1)/(0+1): all 1, log = 0. BP = 1 - (6+1)/(3+1) = -0.75 -> exp(-0.75)
    # (the textbook 1 - r/c would give exp(-1)).
    score = sentence_bleu("returns the sum", "returns the sum of two numbers")
    assert score == pytest.approx(math.exp(-0.75), rel=1e-12)
    assert smoothed_bleu(["returns the sum"], ["returns the sum of two numbers"]) == pytest.approx(47.23665527410147)


def test_zero_unigram_matches_score_almost_but_not_exactly_zero():
    # "foo bar" vs "baz qux": 1-grams 0/2 -> log(tiny) - log 2; 2-grams (0+1)/(1+1) -> log 1/2; 3-, 4-grams 1/1.
    # BP = 1 - 3/3 = 0.  BLEU = exp((log(tiny) - 2 log 2) / 4) = tiny^(1/4) / sqrt(2), about 8.6e-78.
    score = sentence_bleu("foo bar", "baz qux")
    assert score == pytest.approx(math.exp((math.log(TINY) - 2 * math.log(2)) / 4), rel=1e-12)
    assert 0 < score < 1e-70


def test_punctuation_is_split_into_its_own_tokens():
    # "Returns a list." -> returns a list . (c = 4) vs returns a list (r = 3).
    # 1-grams 3/4; 2-grams (2+1)/(3+1); 3-grams (1+1)/(2+1); 4-grams (0+1)/(1+1)
    # -> (3/4 * 3/4 * 2/3 * 1/2)^(1/4) = 0.1875^(1/4); BP = min(0, 1 - 4/5) = 0
    assert sentence_bleu("Returns a list.", "returns a list") == pytest.approx(0.1875 ** 0.25, rel=1e-12)


def test_underscores_split_words():
    # "get_name" -> get _ name (c = 3) vs get name (r = 2): 1-grams 2/3; 2-grams (0+1)/(2+1); 3-grams (0+1)/(1+1);
    # 4-grams (0+1)/(0+1) -> (2/3 * 1/3 * 1/2)^(1/4) = (1/9)^(1/4) = 1/sqrt(3); BP = 0 (prediction longer)
    assert sentence_bleu("get_name", "get name") == pytest.approx(1 / math.sqrt(3), rel=1e-12)


def test_empty_prediction_scores_exp_minus_reference_length():
    # c = 0: every order is (0 + s)/(0 + s) -> log 1 = 0 (tiny keeps log(0/0) finite); BP = 1 - (3+1)/(0+1) = -3
    assert sentence_bleu("", "a b c") == pytest.approx(math.exp(-3), rel=1e-12)


def test_several_references_clip_by_the_max_count_and_use_the_shortest_length():
    # "the the cat": "the" appears twice in the second reference, so both count: 1-grams 3/3;
    # 2-grams: (the the) in ref 2, (the cat) in ref 1 -> (2+1)/(2+1); 3-grams (the the cat) nowhere -> (0+1)/(1+1);
    # 4-grams 1/1. Shortest reference "the cat" (r = 2) < c = 3 -> BP 0.  BLEU = (1/2)^(1/4)
    score = sentence_bleu("the the cat", ["the cat", "the the dog sat"])
    assert score == pytest.approx(0.5 ** 0.25, rel=1e-12)
    # the shortest reference sets the length even when a longer one matches better: r = 1, c = 4 -> no penalty
    assert sentence_bleu("a b c d", ["x", "a b c d"]) == 1.0


def test_corpus_score_is_the_mean_of_sentence_scores_times_100():
    # 1.0 and about 1e-77 -> (1 + 1e-77) * 100 / 2
    assert smoothed_bleu(["a b c", "x"], ["a b c", "y"]) == pytest.approx(50.0)


def test_smoothed_bleu_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="2 predictions and 1 references"):
        smoothed_bleu(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="at least one"):
        smoothed_bleu([], [])


# --- BLEU: against a second implementation written from the formula ------------------------------------------------

def reference_tokens(text: str) -> list[str]:
    """The tokenization stated differently: letter/digit runs, then every other non-space character on its own."""
    return re.findall(r"[^\W_]+|\S", text.strip().lower())


def reference_sentence_bleu(prediction: str, references: list[str]) -> float:
    """Smoothed BLEU-4 from its definition (add-one for n >= 2, shortest reference, BP = 1 - (r+1)/(c+1))."""
    hyp = reference_tokens(prediction)
    refs = [reference_tokens(reference) for reference in references]
    log_sum = 0.0
    for n in range(1, 5):
        hyp_ngrams = Counter(tuple(hyp[i:i + n]) for i in range(len(hyp) - n + 1))
        best = Counter()
        for ref in refs:
            best |= Counter(tuple(ref[i:i + n]) for i in range(len(ref) - n + 1))  # | keeps the max count
        matched = sum((hyp_ngrams & best).values())  # & keeps the min count: clipping
        total = sum(hyp_ngrams.values())
        add = 1 if n > 1 else 0
        log_sum += math.log(matched + add + TINY) - math.log(total + add + TINY)
    shortest = min(len(ref) for ref in refs)
    return math.exp(log_sum / 4 + min(0.0, 1 - (shortest + 1) / (len(hyp) + 1)))


def test_bleu_agrees_with_a_reimplementation_on_random_sentences():
    rng = random.Random(0)
    vocab = ["Returns", "the", "value", "of", "a", "get_name", "x.y", "(", ")", ",", ".", "1.5", "3-4", "don't",
             "&quot;", "<b>", "é", "Value", "--", "a,b", "_"]

    def sentence() -> str:
        return " ".join(rng.choice(vocab) for _ in range(rng.randint(0, 12)))

    predictions, references = [], []
    for _ in range(300):
        prediction, refs = sentence(), [sentence() for _ in range(rng.randint(1, 3))]
        assert reference_tokens(prediction) == bleu_tokenize(prediction)
        assert sentence_bleu(prediction, refs) == pytest.approx(reference_sentence_bleu(prediction, refs), rel=1e-9)
        predictions.append(prediction)
        references.append(refs)
    expected = 100 * np.mean([reference_sentence_bleu(p, r) for p, r in zip(predictions, references)])
    assert smoothed_bleu(predictions, references) == pytest.approx(expected, rel=1e-9)
