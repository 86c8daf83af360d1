"""Masked-LM masking for code: which tokens a step hides, and which hidden tokens are *far*.

Two maskings (:data:`MASKINGS`), both hiding about ``rate`` of the non-special tokens of a sequence:

``tokens``
    RoBERTa's: every non-special token is hidden with probability ``rate`` on its own. A name cut into several BPE
    pieces (``Ġprocess``, ``_``, ``request``) is often half hidden, and its visible pieces give the rest away.
``identifiers``
    Whole names: the pieces of one word (:func:`word_ids`: adjacent pieces of word characters, ``total_value``,
    ``items_2``, ``10``) are hidden together or not at all, each word with probability ``rate``; every other token
    on its own, as ``tokens`` does. Whole-word masking, with code's names as the words.

Training hides a selected token as BERT does (:func:`corrupt`: 80 % ``<mask>``, 10 % a random id, 10 % kept);
evaluation masks are fixed per example (:func:`evaluation_mask`) and always ``<mask>``.

A hidden token leaves no trace in the AST links (:func:`unlink_hidden`): the tokenizer parsed the code *before*
anything was hidden, so a hidden name's links (a use to its declaration) would route SASA's AST blocks to the answer.
Every place that hides tokens from a SASA layout (the masked-LM collator, the benchmarks) drops them.

A hidden token is *far* (:func:`far_tokens`) when it is an identifier piece whose id occurs elsewhere in the
sequence, unhidden, and every such occurrence lies outside its window blocks (``|block_i - block_j| <=
window_radius``) and outside the global blocks: the model can copy it only through attention beyond the window
(full attention, or SASA's top-k/AST blocks), never from its neighbourhood.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import torch

#: The ``--masking`` choices (module docstring).
MASKINGS = ("tokens", "identifiers")


@dataclass
class MaskingVocabulary:
    """What masking needs to know of each vocabulary id (``[V]`` bool tables) and the ``<mask>`` id.

    ``identifier``: identifier-like pieces (:func:`sasa.frequency.identifier_vocabulary`); ``word``: pieces made of
    word characters only (``[A-Za-z0-9_]``, after an optional leading space), which join into one name;
    ``spaced``: pieces that start with a space (they start a new word); ``special``: ``<s>``, ``</s>``, ``<pad>``,
    ``<mask>``, ... (never hidden).
    """

    mask_id: int
    identifier: torch.Tensor = field(repr=False)
    word: torch.Tensor = field(repr=False)
    spaced: torch.Tensor = field(repr=False)
    special: torch.Tensor = field(repr=False)

    @property
    def size(self) -> int:
        return self.identifier.shape[0]

    @classmethod
    def from_tokenizer(cls, tokenizer) -> MaskingVocabulary:
        """The tables of a byte-level BPE tokenizer (``len(tokenizer)`` ids)."""
        from .frequency import identifier_vocabulary

        size = len(tokenizer)
        tokens = tokenizer.convert_ids_to_tokens(list(range(size)))
        word = torch.zeros(size, dtype=torch.bool)
        spaced = torch.zeros(size, dtype=torch.bool)
        for index, token in enumerate(tokens):
            if token is None:
                continue
            text = tokenizer.convert_tokens_to_string([token])
            spaced[index] = text[:1].isspace()
            body = text[1:] if text[:1] == " " else text
            word[index] = bool(body) and all(c == "_" or (c.isascii() and c.isalnum()) for c in body)
        special = torch.zeros(size, dtype=torch.bool)
        special[[i for i in tokenizer.all_special_ids if i < size]] = True
        word &= ~special
        return cls(tokenizer.mask_token_id, identifier_vocabulary(tokenizer), word, spaced, special)


def word_ids(input_ids: torch.Tensor, vocab: MaskingVocabulary) -> torch.Tensor:
    """``[L]`` long: the word each token belongs to, numbered from 0 in order. A token continues the previous
    token's word when both are word pieces and it does not start with a space (``process`` ``_`` ``request`` is
    one word, ``self`` ``.`` ``value`` three); every other token is a word of its own."""
    ids = input_ids.clamp(0, vocab.size - 1)
    word = vocab.word[ids]
    continues = torch.zeros_like(word)
    continues[1:] = word[1:] & word[:-1] & ~vocab.spaced[ids[1:]]
    return torch.cumsum(~continues, 0) - 1


def sample_mask(candidates: torch.Tensor, rate: float, generator: torch.Generator) -> torch.Tensor:
    """``[L]`` bool: each candidate hidden with probability ``rate`` (at least one when there are candidates)."""
    masked = candidates & (torch.rand(candidates.shape, generator=generator) < rate)
    if not masked.any() and candidates.any():
        choices = candidates.nonzero()[:, 0]
        masked[choices[torch.randint(len(choices), (1,), generator=generator)]] = True
    return masked


def select_tokens(input_ids: torch.Tensor, vocab: MaskingVocabulary, masking: str, rate: float,
                  generator: torch.Generator, length: int | None = None) -> torch.Tensor:
    """``[L]`` bool: the tokens of one sequence (its first ``length`` tokens, default all) to hide.

    ``masking`` ``tokens``: each non-special token with probability ``rate``; ``identifiers``: each word
    (:func:`word_ids`) with probability ``rate``, all its pieces together (a word that is not a name is one token).
    At least one token is hidden when the sequence has a non-special one.
    """
    if masking not in MASKINGS:
        raise ValueError(f"masking must be one of {MASKINGS}, got {masking!r}.")
    length = input_ids.shape[0] if length is None else length
    ids = input_ids[:length]
    candidates = ~vocab.special[ids.clamp(0, vocab.size - 1)]
    selected = torch.zeros(input_ids.shape[0], dtype=torch.bool)
    if masking == "tokens":
        selected[:length] = sample_mask(candidates, rate, generator)
        return selected
    words = word_ids(ids, vocab)
    count = int(words[-1]) + 1 if length else 0
    word_candidates = torch.zeros(count, dtype=torch.bool)
    word_candidates[words[candidates]] = True
    chosen = sample_mask(word_candidates, rate, generator)
    selected[:length] = chosen[words] & candidates
    return selected


def unlink_hidden(ast_links: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    """The AST links with every link from or to a hidden position dropped (``-1``): the rule that a token hidden from
    the model leaves no trace in any input.

    The tokenizer computes ``ast_links`` from the whole code; a hidden token's links (a use to its declaration, a call
    to its definition) are information the model must not have, and SASA's AST blocks would follow them straight to
    the answer. Where a name is only partly hidden (name completion: the first piece typed, the rest hidden), the
    caller hides the typed piece's links too (a half-typed name resolves to nothing).

    Args:
        ast_links: ``[L, R]`` or ``[B, L, R]`` (or ``[L]`` / ``[B, L]``) token indices, ``-1`` for no link; indices
            count positions of the same sequence (left padding included, as the collator shifts them).
        hidden: ``[L]`` or ``[B, L]`` bool, the positions hidden from the model (matching ``ast_links``' leading axes).

    Returns:
        A new tensor of ``ast_links``' shape and dtype; the input is not changed.
    """
    squeeze = ast_links.dim() == hidden.dim()
    links = ast_links[..., None] if squeeze else ast_links
    if links.dim() != hidden.dim() + 1 or links.shape[:-1] != hidden.shape:
        raise ValueError(f"hidden {tuple(hidden.shape)} must cover ast_links' positions {tuple(ast_links.shape)}: "
                         "[L] with [L, R] links, or [B, L] with [B, L, R].")
    hidden = hidden.to(device=links.device, dtype=torch.bool)
    length = links.shape[-2]
    valid = (links >= 0) & (links < length)
    target_hidden = torch.gather(hidden[..., None].expand_as(links), -2, links.clamp(0, length - 1).long())
    drop = (valid & target_hidden) | hidden[..., None]
    result = links.masked_fill(drop & (links >= 0), -1)
    return result[..., 0] if squeeze else result


def corrupt(input_ids: torch.Tensor, selected: torch.Tensor, vocab: MaskingVocabulary, generator: torch.Generator,
            replace: float = 0.8, randomize: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's corruption of the ``selected`` tokens (any shape): ``replace`` of them become ``<mask>``, ``randomize``
    a random non-special id, the rest stay. Returns ``(inputs, labels)``, labels ``-100`` where not selected."""
    labels = torch.where(selected, input_ids, torch.full_like(input_ids, -100))
    draw = torch.rand(input_ids.shape, generator=generator)
    inputs = input_ids.masked_fill(selected & (draw < replace), vocab.mask_id)
    swap = selected & (draw >= replace) & (draw < replace + randomize)
    if swap.any():
        allowed = (~vocab.special).nonzero()[:, 0]
        pick = torch.randint(len(allowed), (int(swap.sum()),), generator=generator)
        inputs[swap] = allowed[pick]
    return inputs, labels


def evaluation_mask(input_ids: list[int], vocab: MaskingVocabulary, masking: str, rate: float,
                    seed: int = 0) -> tuple[list[int], list[int]]:
    """A held-out example's fixed mask: ``(inputs, labels)`` as lists, every selected token ``<mask>``, labels
    ``-100`` elsewhere. The random draw is seeded by ``seed`` and the example's ids, so an example gets the same
    mask in every run, every evaluation and every worker process."""
    ids = torch.tensor(input_ids, dtype=torch.long)
    example_seed = zlib.crc32(ids.numpy().astype("<i8").tobytes()) ^ (seed & 0xFFFFFFFF)
    generator = torch.Generator().manual_seed(example_seed)
    selected = select_tokens(ids, vocab, masking, rate, generator)
    labels = torch.where(selected, ids, torch.full_like(ids, -100))
    return ids.masked_fill(selected, vocab.mask_id).tolist(), labels.tolist()


def copy_candidates(input_ids: torch.Tensor, identifier: torch.Tensor) -> torch.Tensor:
    """``[L]`` bool: identifier pieces (``identifier``: ``[V]`` bool) whose id occurs at least twice in the sequence."""
    counts = torch.bincount(input_ids, minlength=identifier.shape[0])
    return identifier[input_ids] & (counts[input_ids] >= 2)


def far_tokens(input_ids: torch.Tensor, masked: torch.Tensor, identifier: torch.Tensor, block_size: int,
               window_radius: int = 1, num_global_blocks: int = 1) -> torch.Tensor:
    """``[L]`` bool: hidden identifier pieces with other *unhidden* occurrences (same id), all of them outside the
    window blocks of the token's block and outside the global blocks (tokens of global blocks are never far).

    Args:
        input_ids: ``[L]`` the original ids (hidden tokens' true ids).
        masked: ``[L]`` bool, the hidden tokens.
        identifier: ``[V]`` bool, identifier-like ids.
        block_size, window_radius, num_global_blocks: The layout's window (``SasaConfig`` fields).
    """
    length = input_ids.shape[0]
    block = torch.arange(length) // block_size
    same = (input_ids[:, None] == input_ids[None, :]) & ~masked[None, :]
    same.fill_diagonal_(False)
    seen = ((block[:, None] - block[None, :]).abs() <= window_radius) | (block[None, :] < num_global_blocks)
    ids = input_ids.clamp(0, identifier.shape[0] - 1)
    copyable = masked & identifier[ids] & same.any(1)
    return copyable & ~(same & seen).any(1) & (block >= num_global_blocks)


# --- evaluation: per-token statistics, and the metrics by position bucket ---------------------------------------------

#: The statistics :func:`token_statistics` keeps per token, in this order along the last axis.
STATISTICS = ("loss", "correct", "far")


def token_statistics(logits: torch.Tensor, labels: torch.Tensor, input_ids: torch.Tensor, identifier: torch.Tensor,
                     block_size: int, window_radius: int = 1, num_global_blocks: int = 1) -> torch.Tensor:
    """``[B, L, 3]`` float: per token, its cross-entropy, whether the argmax is right, and whether it is far
    (:func:`far_tokens`); zeros where ``labels`` is ``-100``. What an evaluation keeps instead of ``[B, L, V]``
    logits.

    Args:
        logits: ``[B, L, V]`` the model's predictions.
        labels: ``[B, L]`` the hidden tokens' ids, ``-100`` elsewhere.
        input_ids: ``[B, L]`` the ids the model read (hidden tokens as ``<mask>`` or corrupted).
        identifier, block_size, window_radius, num_global_blocks: As :func:`far_tokens`.
    """
    scored = labels >= 0
    target = labels.clamp(min=0)
    loss = torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), target, reduction="none")
    correct = logits.argmax(-1) == target
    far = torch.zeros_like(scored)
    original = torch.where(scored, labels, input_ids).cpu()
    for row in range(labels.shape[0]):
        if scored[row].any():
            far[row] = far_tokens(original[row], scored[row].cpu(), identifier.cpu(), block_size, window_radius,
                                  num_global_blocks).to(far.device)
    stats = torch.stack([loss, correct.float(), far.float()], dim=-1)
    return stats * scored[..., None]


def bucket_metrics(stats, labels, boundary: int = 512) -> dict[str, float]:
    """Masked-token loss and accuracy by position bucket and on far tokens, from :func:`token_statistics` of a
    whole evaluation set (numpy or torch ``[N, L, 3]`` and ``[N, L]``; a position is the index along ``L``).

    Keys: ``loss``/``accuracy``/``tokens`` overall, ``..._first_{boundary}`` (positions ``0 .. boundary - 1``,
    what a ``boundary``-token model reads), ``..._after_{boundary}`` (the rest), ``far_...`` (far tokens, any
    position). Every loss is the mean over the bucket's hidden tokens (not a mean of batch means); a bucket
    without tokens gives ``nan``.
    """
    import numpy as np

    stats, labels = np.asarray(stats, dtype=np.float64), np.asarray(labels)
    scored = labels >= 0
    position = np.broadcast_to(np.arange(labels.shape[1]), labels.shape)
    buckets = {"": scored, f"_first_{boundary}": scored & (position < boundary),
               f"_after_{boundary}": scored & (position >= boundary), "far": scored & (stats[..., 2] > 0.5)}
    metrics = {}
    for suffix, where in buckets.items():
        count = int(where.sum())
        prefix, suffix = ("far_", "") if suffix == "far" else ("", suffix)
        metrics[f"{prefix}masked_loss{suffix}"] = float(stats[..., 0][where].mean()) if count else float("nan")
        metrics[f"{prefix}accuracy{suffix}"] = float(stats[..., 1][where].mean()) if count else float("nan")
        metrics[f"{prefix}tokens{suffix}"] = count
    return metrics
