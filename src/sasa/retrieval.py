"""Retrieval with a SASA bi-encoder: encode a pool of code and a list of queries, rank, score (MRR).

Used by ``sasa demo`` on raw texts (``examples/run_code_search.py`` evaluates its tokenized splits through the
Trainer's own dataloader); works with any model that has
``encode(input_ids, attention_mask, ast_links) -> [B, H]`` (:class:`~sasa.SasaForCodeSearch`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .data_collator import SasaDataCollator
from .metrics import mean_reciprocal_rank


@torch.no_grad()
def encode_texts(
    model,
    tokenizer,
    texts: Sequence[str],
    language: str | None | Sequence[str | None],
    max_length: int,
    batch_size: int = 16,
) -> torch.Tensor:
    """``[N, H]`` vectors of ``texts`` (code with ``language=`` for its AST links, queries with ``language=None``),
    encoded in batches in eval mode, each truncated to ``max_length`` tokens."""
    was_training = model.training
    model.eval()
    collator = SasaDataCollator(tokenizer, pad_to_multiple_of=model.config.block_size)
    device = next(model.parameters()).device
    vectors = []
    for start in range(0, len(texts), batch_size):
        chunk = list(texts[start : start + batch_size])
        languages = language[start : start + batch_size] if isinstance(language, (list, tuple)) else language
        encoded = tokenizer(chunk, language=languages, truncation=True, max_length=max_length)
        features = [{key: encoded[key][i] for key in ("input_ids", "attention_mask", "ast_links")}
                    for i in range(len(chunk))]
        batch = {key: tensor.to(device) for key, tensor in collator(features).items()}
        vectors.append(model.encode(**batch).float().cpu())
    model.train(was_training)
    return torch.cat(vectors) if vectors else torch.empty(0, model.config.hidden_size)


def retrieval_mrr(query_vectors: torch.Tensor, code_vectors: torch.Tensor) -> float:
    """MRR of query ``i`` finding code ``i`` among the whole pool (CodeXGLUE's NL-code-search ranking)."""
    scores = (query_vectors @ code_vectors.T).numpy()
    return mean_reciprocal_rank(scores, np.arange(len(scores)))
