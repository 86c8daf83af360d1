"""The four CodeXGLUE long-code tasks' metrics, offline, in plain Python/numpy, computed as CodeXGLUE computes them.

=====================  ===================================  =====================================================
task                   metric                               CodeXGLUE's computation (``microsoft/CodeXGLUE``)
=====================  ===================================  =====================================================
defect detection       :func:`accuracy`                     ``Code-Code/Defect-detection/evaluator/evaluator.py``
clone detection        :func:`binary_precision_recall_f1`   sklearn's ``precision_score``/``recall_score``/
                                                            ``f1_score`` (binary, positive class 1)
code search (Adv)      :func:`mean_reciprocal_rank`         ``Text-Code/NL-code-search-Adv/code/run.py``
code summarization     :func:`smoothed_bleu`                ``Code-Text/code-to-text/evaluator/evaluator.py``
                                                            (the same file as ``code/bleu.py``)
=====================  ===================================  =====================================================

Nothing here downloads anything (no ``evaluate.load``), so metrics work on an offline machine.
"""

from __future__ import annotations

import math
import re
import sys
import xml.sax.saxutils
from collections.abc import Sequence

import numpy as np

__all__ = [
    "accuracy",
    "binary_precision_recall_f1",
    "bleu_tokenize",
    "mean_reciprocal_rank",
    "sentence_bleu",
    "smoothed_bleu",
]


def _labels_pair(predictions, labels) -> tuple[np.ndarray, np.ndarray]:
    """``predictions`` and ``labels`` as two 1-D arrays of the same non-zero length (``ValueError`` otherwise)."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.ndim != 1 or labels.ndim != 1 or len(predictions) != len(labels):
        raise ValueError(f"predictions and labels must be 1-D and of the same length (one class id per example); "
                         f"got shapes {predictions.shape} and {labels.shape}. For logits, take argmax (or "
                         f"threshold a probability) first.")
    if len(labels) == 0:
        raise ValueError("predictions and labels are empty: a metric needs at least one example.")
    return predictions, labels


def accuracy(predictions: Sequence[int] | np.ndarray, labels: Sequence[int] | np.ndarray) -> float:
    """Fraction of examples whose predicted class equals the label, in [0, 1].

    Args:
        predictions: ``[N]`` predicted class ids (bool or int; ``True == 1``).
        labels: ``[N]`` true class ids.
    """
    predictions, labels = _labels_pair(predictions, labels)
    return float(np.mean(predictions == labels))


def binary_precision_recall_f1(predictions: Sequence[int] | np.ndarray,
                               labels: Sequence[int] | np.ndarray) -> dict[str, float]:
    """Precision, recall and F1 of the positive class 1, as sklearn's ``average="binary"`` computes them.

    ``precision = tp / (tp + fp)``, ``recall = tp / (tp + fn)``, ``f1 = 2 tp / (2 tp + fp + fn)``; a ratio whose
    denominator is 0 (no predicted positives, no true positives, or neither) is 0.0, as sklearn's default
    ``zero_division`` gives, without its warning and never NaN.

    Args:
        predictions: ``[N]`` predicted classes, each 0 or 1 (bools accepted).
        labels: ``[N]`` true classes, each 0 or 1.

    Returns:
        ``{"precision": ..., "recall": ..., "f1": ...}``, each in [0, 1].
    """
    predictions, labels = _labels_pair(predictions, labels)
    for name, values in (("predictions", predictions), ("labels", labels)):
        if not np.isin(values, (0, 1)).all():
            raise ValueError(f"binary precision/recall/F1 needs {name} in {{0, 1}}; got the values "
                             f"{sorted(set(np.unique(values).tolist()))}.")
    predicted, actual = predictions == 1, labels == 1
    tp = int(np.sum(predicted & actual))
    fp = int(np.sum(predicted & ~actual))
    fn = int(np.sum(~predicted & actual))

    def ratio(numerator: int, denominator: int) -> float:
        return numerator / denominator if denominator else 0.0

    return {"precision": ratio(tp, tp + fp), "recall": ratio(tp, tp + fn), "f1": ratio(2 * tp, 2 * tp + fp + fn)}


def mean_reciprocal_rank(scores: np.ndarray, correct: Sequence[int] | np.ndarray, max_rank: int | None = None,
                         chunk_size: int = 1024) -> float:
    """Mean over queries of 1 / (rank of the right candidate), ties counted pessimistically.

    The rank of query ``i``'s answer is 1 + the number of *other* candidates scoring ``>=`` the answer: a candidate
    with an equal score ranks ahead. This is how CodeXGLUE's NL-code-search-Adv computes the MRR it reports
    during evaluation (``code/run.py``, ``evaluate``: ``rank = 1; rank += 1 for j != i if scores[i, j] >=
    scores[i, i]``, scores = query vectors · code vectors, the answer on the diagonal). Its test path differs in
    two ways: ``test()`` writes for each query the candidates sorted by ``np.argsort(scores)[:, ::-1]`` (descending;
    ties in whatever order quicksort leaves them, so not pessimistic) cut to the top 100, and
    ``evaluator/evaluator.py`` takes 1 / (1 + position of the answer in that list), 0 when it is not among them.
    With real-valued embeddings ties are rare; ``max_rank=100`` reproduces the cut-off.

    Args:
        scores: ``[num_queries, num_candidates]`` similarity, higher is better (numpy array or CPU tensor).
        correct: ``[num_queries]`` index of each query's right candidate.
        max_rank: answers ranked below this count 0 (``None``: no cut-off).
        chunk_size: queries compared at a time (bounds the memory of the ``>=`` mask on large score matrices).

    Returns:
        MRR in (0, 1] (0 possible only with ``max_rank``).
    """
    scores, correct = np.asarray(scores), np.asarray(correct)
    if scores.ndim != 2 or correct.ndim != 1 or len(correct) != scores.shape[0] or scores.shape[0] == 0:
        raise ValueError(f"expected scores [num_queries, num_candidates] and correct [num_queries] with "
                         f"num_queries >= 1; got shapes {scores.shape} and {correct.shape}.")
    if not np.issubdtype(correct.dtype, np.integer) or correct.min() < 0 or correct.max() >= scores.shape[1]:
        raise ValueError(f"correct must hold candidate indices in [0, {scores.shape[1]}); got dtype {correct.dtype}, "
                         f"values from {correct.min()} to {correct.max()}.")
    if max_rank is not None and max_rank < 1:
        raise ValueError(f"max_rank must be None or >= 1, got {max_rank}.")
    reciprocal = np.empty(len(correct), dtype=np.float64)
    for start in range(0, len(correct), chunk_size):
        block, answers = scores[start:start + chunk_size], correct[start:start + chunk_size]
        answer_scores = block[np.arange(len(block)), answers]
        if np.issubdtype(block.dtype, np.floating) and np.isnan(block).any():
            raise ValueError(f"scores hold NaN (in queries {start}..{start + len(block) - 1}): a rank is undefined.")
        ranks = np.sum(block >= answer_scores[:, None], axis=1)  # counts the answer itself: 1 + others >=
        reciprocal[start:start + len(block)] = 1.0 / ranks
        if max_rank is not None:
            reciprocal[start:start + len(block)][ranks > max_rank] = 0.0
    return float(np.mean(reciprocal))


# --- smoothed BLEU-4, as CodeXGLUE's code-to-text bleu.py computes it ----------------------------------------------
# bleu.py (MOSES' bleu.py by hieuhoang1972, as CodeXGLUE ships it) reads "id<TAB>text" lines. For each line,
# computeMaps does splitPuncts(text.strip().lower()): " ".join(re.findall(r"[\w]+|[^\s\w]", ...)). bleu() then runs
# NIST mteval-v11a's normalize() on that: the language-independent rules below, xml unescape (&quot; too), " %s ",
# lower-casing (preserve_case = False), the punctuation rules, split(). splitPuncts has already separated every
# punctuation character and collapsed whitespace, so of normalize() only one rule still changes the tokens: the first
# punctuation rule's class holds "_", so "get_name" becomes "get _ name". "<skipped>", "-\n" and entities such as
# "&quot;" never survive splitPuncts intact ("&quot;" is scored as the tokens "&", "quot", ";"). Kept here in full so
# the code reads against the original.
_NORMALIZE_LANGUAGE_INDEPENDENT = [(re.compile(pattern), replacement) for pattern, replacement in (
    (r"<skipped>", ""),  # strip "skipped" tags
    (r"-\n", ""),  # strip end-of-line hyphenation and join lines
    (r"\n", " "),  # join lines
)]
_NORMALIZE_PUNCTUATION = [(re.compile(pattern), replacement) for pattern, replacement in (
    (r"([\{-\~\[-\` -\&\(-\+\:-\@\/])", r" \1 "),  # tokenize punctuation (not the apostrophe, comma, dash, period)
    (r"([^0-9])([\.,])", r"\1 \2 "),  # period and comma unless preceded by a digit
    (r"([\.,])([^0-9])", r" \1 \2"),  # period and comma unless followed by a digit
    (r"([0-9])(-)", r"\1 \2 "),  # dash when preceded by a digit
)]
_MAX_ORDER = 4  # BLEU-4
_TINY = sys.float_info.min  # bleu.py adds it inside every log: log(0 + tiny) = -708.4, not -inf


def bleu_tokenize(text: str) -> list[str]:
    """The tokens bleu.py scores for one prediction or reference: ``splitPuncts(text.strip().lower())``, then NIST
    ``normalize``. Words (``\\w`` runs, split at underscores) and single punctuation characters, lower-cased.

    >>> bleu_tokenize("Returns the user_id, or None.")
    ['returns', 'the', 'user', '_', 'id', ',', 'or', 'none', '.']
    """
    text = " ".join(re.findall(r"[\w]+|[^\s\w]", text.strip().lower()))  # splitPuncts (computeMaps)
    for pattern, replacement in _NORMALIZE_LANGUAGE_INDEPENDENT:  # normalize (cook_refs / cook_test)
        text = pattern.sub(replacement, text)
    text = xml.sax.saxutils.unescape(text, {"&quot;": '"'})
    text = f" {text} ".lower()
    for pattern, replacement in _NORMALIZE_PUNCTUATION:
        text = pattern.sub(replacement, text)
    return text.split()


def _ngram_counts(tokens: list[str]) -> dict[tuple[str, ...], int]:
    """Counts of every 1- to 4-gram of ``tokens``."""
    counts: dict[tuple[str, ...], int] = {}
    for order in range(1, _MAX_ORDER + 1):
        for start in range(len(tokens) - order + 1):
            ngram = tuple(tokens[start:start + order])
            counts[ngram] = counts.get(ngram, 0) + 1
    return counts


def sentence_bleu(prediction: str, references: str | Sequence[str]) -> float:
    """Smoothed BLEU-4 of one prediction, in [0, 1]: ``bleu.py``'s ``bleu(refs, candidate)[0]``.

    With ``c`` the prediction's token count, ``r`` the *shortest* reference's (``eff_ref_len = "shortest"``),
    ``m_n`` the n-grams of the prediction matched in the references (each clipped to its largest count in any one
    reference) and ``g_n = max(c - n + 1, 0)`` the prediction's n-grams:

        log BLEU = (1/4) * sum_{n=1..4} [log(m_n + s_n + tiny) - log(g_n + s_n + tiny)]
                   + min(0, 1 - (r + 1) / (c + 1))

    where ``s_n`` = 0 for unigrams and 1 for n >= 2 (``smooth=1``, add-one on both counts) and ``tiny`` is
    ``sys.float_info.min``. Consequences worth knowing: the brevity penalty is the "+1" form (a 3-token prefix of a
    6-token reference scores exp(1 - 7/4), not exp(1 - 6/3)); a prediction with no unigram match scores about
    1e-77, not 0; an empty prediction scores exp(-r) (every term is 0/0 -> log 1).

    Args:
        prediction: the generated text.
        references: one reference, or several (n-gram counts clipped by the maximum over them).
    """
    references = [references] if isinstance(references, str) else list(references)
    if not references:
        raise ValueError("sentence_bleu needs at least one reference; got none.")
    reference_tokens = [bleu_tokenize(reference) for reference in references]
    max_reference_counts: dict[tuple[str, ...], int] = {}
    for tokens in reference_tokens:
        for ngram, count in _ngram_counts(tokens).items():
            max_reference_counts[ngram] = max(max_reference_counts.get(ngram, 0), count)
    prediction_tokens = bleu_tokenize(prediction)
    matched = [0] * _MAX_ORDER
    for ngram, count in _ngram_counts(prediction_tokens).items():
        matched[len(ngram) - 1] += min(max_reference_counts.get(ngram, 0), count)

    # Same operations in the same order as score_cooked, so results agree to the last bit.
    log_bleu = 0.0
    for index in range(_MAX_ORDER):
        total = max(len(prediction_tokens) - index, 0)
        smoothing = 1 if index > 0 else 0
        log_bleu += math.log(matched[index] + smoothing + _TINY) - math.log(total + smoothing + _TINY)
    log_bleu /= float(_MAX_ORDER)
    reference_length = min(len(tokens) for tokens in reference_tokens)
    brevity_penalty = min(0, 1 - float(reference_length + 1) / (len(prediction_tokens) + 1))
    return math.exp(log_bleu + brevity_penalty)


def smoothed_bleu(predictions: Sequence[str], references: Sequence[str] | Sequence[Sequence[str]]) -> float:
    """CodeXGLUE code-to-text's smoothed BLEU-4: the mean of :func:`sentence_bleu` over examples, times 100.

    This is ``bleuFromMaps(goldMap, predictionMap)[0]`` (sum of per-sentence BLEU * 100.0 / count; not corpus
    BLEU), unrounded, as ``evaluator/evaluator.py`` prints it; CodeXGLUE's ``code/run.py`` logs and compares
    ``round(..., 2)`` of it (dev BLEU for the best-BLEU checkpoint, test BLEU). Its file format adds nothing here
    except that a prediction is cut at its first tab (``row.strip().split('\\t')``); pass texts without tabs.

    Args:
        predictions: ``[N]`` generated texts.
        references: ``[N]`` reference texts, or ``[N]`` lists of references (the gold file may repeat an id).

    Returns:
        BLEU-4 in [0, 100].
    """
    if len(predictions) != len(references) or len(predictions) == 0:
        raise ValueError(f"expected as many predictions as references, at least one; got {len(predictions)} "
                         f"predictions and {len(references)} references.")
    total = 0.0
    for prediction, reference in zip(predictions, references):
        total += sentence_bleu(prediction, reference)
    return total * 100.0 / len(predictions)
