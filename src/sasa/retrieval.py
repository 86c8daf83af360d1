"""Retrieval with a SASA bi-encoder on raw texts: encode a pool of code and a list of queries, rank, score (MRR).

The encoding itself is the model's own :meth:`~sasa.SasaForCodeSearch.encode_batches` (shipped with checkpoints, so
the same code runs where ``sasa`` is not installed); :func:`encode_texts` only tokenizes the texts into its batches.
``sasa demo`` encodes with it, the demo's reload script builds the same batches with the checkpoint's own tokenizer,
and ``examples/run_code_search.py`` feeds ``encode_batches`` the Trainer's dataloader.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from .metrics import mean_reciprocal_rank


def text_batches(
    tokenizer,
    texts: Sequence[str],
    language: str | None | Sequence[str | None],
    max_length: int,
    batch_size: int = 16,
    pad_to_multiple_of: int | None = None,
) -> Iterator:
    """Padded ``return_tensors="pt"`` batches of ``batch_size`` texts each (the last may be smaller), each text
    truncated to ``max_length`` tokens: code with ``language=`` (one name, or one per text) for its AST links,
    queries with ``language=None``."""
    for start in range(0, len(texts), batch_size):
        chunk = list(texts[start : start + batch_size])
        languages = language[start : start + batch_size] if isinstance(language, (list, tuple)) else language
        yield tokenizer(chunk, language=languages, truncation=True, max_length=max_length, padding=True,
                        pad_to_multiple_of=pad_to_multiple_of, return_tensors="pt")


def encode_texts(
    model,
    tokenizer,
    texts: Sequence[str],
    language: str | None | Sequence[str | None],
    max_length: int,
    batch_size: int = 16,
) -> torch.Tensor:
    """``[N, H]`` float32 vectors of ``texts`` (code with ``language=`` for its AST links, queries with
    ``language=None``), each truncated to ``max_length`` tokens, encoded ``batch_size`` at a time by
    ``model.encode_batches`` (any model with it: :class:`~sasa.SasaForCodeSearch`)."""
    if isinstance(language, (list, tuple)) and len(language) != len(texts):
        raise ValueError(f"language= has {len(language)} entries for {len(texts)} texts: give one language (or "
                         "None) for all, or one per text.")
    batches = text_batches(tokenizer, texts, language, max_length, batch_size, model.config.block_size)
    return model.encode_batches(batches)


def retrieval_mrr(query_vectors: torch.Tensor, code_vectors: torch.Tensor) -> float:
    """MRR of query ``i`` finding code ``i`` among the whole pool (CodeXGLUE's NL-code-search ranking)."""
    scores = (query_vectors @ code_vectors.T).numpy()
    return mean_reciprocal_rank(scores, np.arange(len(scores)))
