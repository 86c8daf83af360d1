"""Top-k attention-frequency preprocessing: which vocabulary ids a pretrained code model attends to most.

Run a full-attention encoder (CodeBERT for real use; any ``AutoModel`` checkpoint) over a corpus; for every layer,
head and query token, take its ``top_k`` most attended keys and count the pair ``(id_query, id_key)``. Special tokens
and padding are left out on both sides (attention "sinks" on ``<s>``/``</s>`` would otherwise dominate). The result is
stored compactly: for each vocabulary id its ``partners`` most frequent partners and their weights, where a weight is
the fraction of that id's top-k picks that went to the partner. A SASA model turns the table into block scores
(:func:`block_layout.frequency_block_scores`) without an ``O(V^2)`` matrix.

Without a teacher, :func:`identifier_frequency_table` builds a table from a corpus alone: every identifier-like
vocabulary id is its own single partner, weighted by how informative it is (its inverse document frequency over the
corpus, to a power). Two blocks then score by the informative identifiers they share, so a query block is pointed at
the far blocks that use (or define) the same rare names — the data-flow partners a teacher's attention also finds —
while ``self``, ``return`` or ``i`` weigh next to nothing. A converted or from-scratch checkpoint gets working top-k
blocks this way (``sasa topk --tokenizer DIR --files ...``, no ``--model``).

Files are safetensors with tensors ``partner_ids [V, m]`` (int64) and ``partner_weights [V, m]`` (float32) and string
metadata (source model or method, corpus size, top_k); never pickles.
"""

from __future__ import annotations

import glob
import json
import math
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm


@dataclass
class PairCounts:
    """Running counts of ``(query id, key id)`` top-k picks, kept as sorted unique pair keys ``q * V + k``."""

    vocab_size: int
    keys: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    counts: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    picks: torch.Tensor | None = None  # [V] total picks made by each query id
    tokens: int = 0

    def __post_init__(self) -> None:
        if self.picks is None:
            self.picks = torch.zeros(self.vocab_size, dtype=torch.long)

    def add(self, query_ids: torch.Tensor, key_ids: torch.Tensor) -> None:
        """Count one pick per element of the equally shaped id tensors."""
        pair_keys = query_ids.reshape(-1).long() * self.vocab_size + key_ids.reshape(-1).long()
        self.picks += torch.bincount(query_ids.reshape(-1).long(), minlength=self.vocab_size)
        merged_keys, inverse = torch.unique(torch.cat([self.keys, pair_keys]), return_inverse=True)
        merged_counts = torch.zeros_like(merged_keys)
        merged_counts.scatter_add_(0, inverse, torch.cat([self.counts, torch.ones_like(pair_keys)]))
        self.keys, self.counts = merged_keys, merged_counts

    def table(self, partners: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``partners`` most frequent partners of every id: ``(ids [V, m] int64, weights [V, m] float32)``."""
        vocab = self.vocab_size
        ids = torch.zeros(vocab, partners, dtype=torch.long)
        weights = torch.zeros(vocab, partners, dtype=torch.float32)
        if self.keys.numel() == 0 or partners == 0:
            return ids, weights
        query, key = self.keys // vocab, self.keys % vocab
        # Sort by query id, then by count descending (ties: smaller key id first, deterministic).
        order = torch.argsort(self.counts, descending=True, stable=True)
        order = order[torch.argsort(query[order], stable=True)]
        query, key, count = query[order], key[order], self.counts[order]
        first = torch.searchsorted(query, query, right=False)  # index where each query id's run starts
        rank = torch.arange(query.numel()) - first
        keep = rank < partners
        ids[query[keep], rank[keep]] = key[keep]
        weights[query[keep], rank[keep]] = count[keep].float() / self.picks[query[keep]].float()
        return ids, weights


@torch.no_grad()
def count_topk_attention(
    model,
    batches: Iterable[dict[str, torch.Tensor]],
    vocab_size: int,
    special_ids: Iterable[int],
    top_k: int = 8,
    progress: bool = True,
    total: int | None = None,
) -> PairCounts:
    """Count top-k attention pairs of ``model`` (eager attention, ``output_attentions=True``) over ``batches``.

    Args:
        model: A full-attention encoder returning ``attentions`` (``[B, H, L, L]`` per layer).
        batches: Dicts with ``input_ids`` and ``attention_mask`` (``[B, L]``).
        vocab_size: Size of the id space.
        special_ids: Ids never counted (``<s>``, ``</s>``, ``<pad>``, ...).
        top_k: Keys kept per query, layer and head.
        progress, total: Progress bar over batches.
    """
    model.eval()
    device = next(model.parameters()).device
    special = torch.tensor(sorted(set(special_ids)), dtype=torch.long)
    counts = PairCounts(vocab_size)
    for batch in tqdm(batches, desc="top-k attention", unit="batch", disable=not progress, total=total):
        input_ids = batch["input_ids"]
        countable = batch["attention_mask"].bool() & ~torch.isin(input_ids, special)  # [B, L]
        outputs = model(input_ids=input_ids.to(device), attention_mask=batch["attention_mask"].to(device),
                        output_attentions=True)
        if not outputs.attentions or outputs.attentions[0] is None:
            raise ValueError("the model returned no attention weights: load it with attn_implementation='eager'.")
        k = min(top_k, int(countable.sum(1).max()))
        if k == 0:
            continue
        counts.tokens += int(countable.sum())
        key_ok = countable[:, None, None, :]
        query_parts, key_parts = [], []
        for attention in outputs.attentions:
            probs = attention.float().cpu().masked_fill(~key_ok, -1.0)  # never pick special or padding keys
            values, picked = probs.topk(k, dim=-1)  # [B, H, L, k]
            keep = countable[:, None, :, None] & (values >= 0)
            query_ids = input_ids[:, None, :, None].expand_as(picked)
            key_ids = torch.gather(input_ids[:, None, None, :].expand(*picked.shape[:3], -1), 3, picked)
            query_parts.append(query_ids[keep])
            key_parts.append(key_ids[keep])
        counts.add(torch.cat(query_parts), torch.cat(key_parts))
    return counts


def read_corpus(paths: Iterable[str], column: str = "code") -> Iterator[str]:
    """Texts from local files: ``.jsonl`` files give their ``column`` field per line, other files their whole text.
    Directories are searched recursively; glob patterns are expanded. Files are decoded as UTF-8 with replacement."""
    for pattern in paths:
        matches = sorted(glob.glob(pattern, recursive=True)) or [pattern]
        for path in matches:
            if os.path.isdir(path):
                children = sorted(glob.glob(os.path.join(path, "**", "*"), recursive=True))
                yield from read_corpus([c for c in children if os.path.isfile(c)], column)
                continue
            with open(path, encoding="utf-8", errors="replace") as handle:
                if path.endswith(".jsonl"):
                    for line in handle:
                        if line.strip():
                            yield json.loads(line)[column]
                else:
                    yield handle.read()


def tokenized_batches(texts: Iterable[str], tokenizer, max_length: int = 512, batch_size: int = 8):
    """Tokenize texts into padded ``[B, L]`` batches (truncated to ``max_length``)."""
    chunk = []
    for text in texts:
        chunk.append(text)
        if len(chunk) == batch_size:
            yield tokenizer(chunk, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
            chunk = []
    if chunk:
        yield tokenizer(chunk, truncation=True, max_length=max_length, padding=True, return_tensors="pt")


def save_frequency_table(path: str | os.PathLike, ids: torch.Tensor, weights: torch.Tensor, **metadata) -> None:
    save_file({"partner_ids": ids.contiguous(), "partner_weights": weights.contiguous()}, str(path),
              metadata={key: str(value) for key, value in metadata.items()})


def load_frequency_table(path: str | os.PathLike) -> tuple[torch.Tensor, torch.Tensor]:
    """``(partner_ids [V, m], partner_weights [V, m])`` from a file written by :func:`save_frequency_table`."""
    tensors = load_file(str(path))
    missing = {"partner_ids", "partner_weights"} - tensors.keys()
    if missing:
        raise ValueError(f"{path} is not a frequency table: missing {sorted(missing)}.")
    return tensors["partner_ids"], tensors["partner_weights"]


def compute_frequency_table(
    model_path: str,
    texts: Iterable[str],
    output: str | os.PathLike,
    top_k: int = 8,
    partners: int = 32,
    max_length: int = 512,
    batch_size: int = 8,
    limit: int | None = None,
    tokenizer_path: str | None = None,
    device: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole preprocessing: load the encoder (eager attention) and its tokenizer, count, write ``output``. The
    teacher runs on ``device`` (default: ``"cuda"`` when a GPU is visible, else the CPU)."""
    import itertools

    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path or model_path)
    model = AutoModel.from_pretrained(model_path, attn_implementation="eager")
    model.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if limit is not None:
        texts = itertools.islice(texts, limit)
    total = -(-limit // batch_size) if limit else None
    batches = tokenized_batches(texts, tokenizer, max_length, batch_size)
    vocab_size = max(model.config.vocab_size, len(tokenizer))
    counts = count_topk_attention(model, batches, vocab_size, tokenizer.all_special_ids, top_k, total=total)
    ids, weights = counts.table(partners)
    save_frequency_table(output, ids, weights, source_model=model_path, tokens=counts.tokens, top_k=top_k,
                         partners=partners, max_length=max_length)
    return ids, weights


#: A vocabulary entry that is (part of) an identifier: letters, digits, ``_`` (and ``$``/``@`` sigils), with a letter.
IDENTIFIER_PIECE = re.compile(r"[$@]{0,2}[A-Za-z_][A-Za-z0-9_]*|[0-9]+[A-Za-z_][A-Za-z0-9_]*")
#: Default power of the inverse document frequency in :func:`identifier_frequency_table` (chosen by
#: ``benchmarks/quality/layout_quality.py``).
IDENTIFIER_IDF_POWER = 1.0


def identifier_vocabulary(tokenizer) -> torch.Tensor:
    """``[V]`` bool over ``len(tokenizer)`` ids: True where the token's text (leading space removed) is identifier-like
    (:data:`IDENTIFIER_PIECE`) and the id is not a special token."""
    size = len(tokenizer)
    special = set(tokenizer.all_special_ids)
    tokens = tokenizer.convert_ids_to_tokens(list(range(size)))
    flags = torch.zeros(size, dtype=torch.bool)
    for index, token in enumerate(tokens):
        if token is None or index in special:
            continue
        text = tokenizer.convert_tokens_to_string([token]).strip()
        flags[index] = bool(IDENTIFIER_PIECE.fullmatch(text))
    return flags


def install_identifier_tokens(model, tokenizer) -> torch.Tensor:
    """Make ``model``'s input top-k source (``config.topk_source="input"``, the default) match only the tokenizer's
    identifier-like ids (:func:`identifier_vocabulary`), not punctuation, whitespace or numbers. Returns the
    ``[vocab_size]`` bool flags it installed (ids beyond the tokenizer's are not matched)."""
    flags = identifier_vocabulary(tokenizer)
    matchable = torch.zeros(model.config.vocab_size, dtype=torch.bool)
    count = min(len(flags), matchable.shape[0])
    matchable[:count] = flags[:count]
    model.base_model.set_matchable_tokens(matchable)
    return matchable


def identifier_frequency_table(
    texts: Iterable[str],
    tokenizer,
    vocab_size: int | None = None,
    power: float = IDENTIFIER_IDF_POWER,
    max_length: int | None = None,
    progress: bool = True,
    total: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """A top-k table without a teacher: identifier ids partnered with themselves, weighted by informativeness.

    ``weight[v] = (log((N + 1) / (df[v] + 1)) / log(N + 1)) ** power`` for identifier-like ids (:func:`identifier_vocabulary`),
    ``0`` for the others (punctuation, numbers, whitespace, special tokens); ``N`` texts, ``df[v]`` how many of them
    contain ``v``. An id the corpus never saw weighs 1 (a name unseen elsewhere is as specific as names get).

    Args:
        texts: The corpus (code as strings).
        tokenizer: The checkpoint's tokenizer (its ids index the table).
        vocab_size: Rows of the table (default ``len(tokenizer)``; give the model's ``config.vocab_size`` if larger).
        power: Exponent of the normalised inverse document frequency.
        max_length: Tokens read per text (default: all).
        progress, total: Progress bar over texts.

    Returns:
        ``(partner_ids [V, 1] int64, partner_weights [V, 1] float32, N)``.
    """
    size = max(vocab_size or 0, len(tokenizer))
    document_frequency = torch.zeros(size, dtype=torch.long)
    documents = 0
    no_parse = {"language": None} if hasattr(tokenizer, "ast_relations") else {}  # a SasaTokenizer need not parse
    for text in tqdm(texts, desc="identifier document frequency", unit="text", disable=not progress, total=total):
        if not isinstance(text, str):
            raise ValueError(f"texts must be strings, got {type(text).__name__} for text {documents}.")
        ids = tokenizer(text, add_special_tokens=False, truncation=max_length is not None, max_length=max_length,
                        **no_parse)["input_ids"]
        present = torch.tensor(sorted(set(ids)), dtype=torch.long)
        if present.numel() and int(present.max()) >= size:
            raise ValueError(f"the tokenizer produced id {int(present.max())}, outside a table of {size} rows.")
        document_frequency[present] += 1
        documents += 1
    if documents == 0:
        raise ValueError("the corpus is empty: give at least one text to build an identifier table from.")
    idf = torch.log((documents + 1) / (document_frequency.double() + 1)) / math.log(documents + 1)
    identifiers = torch.zeros(size, dtype=torch.bool)
    identifiers[: len(tokenizer)] = identifier_vocabulary(tokenizer)
    weights = (idf.clamp(min=0) ** power * identifiers).float()
    return torch.arange(size)[:, None], weights[:, None], documents


def compute_identifier_table(
    tokenizer_path: str,
    texts: Iterable[str],
    output: str | os.PathLike,
    vocab_size: int | None = None,
    power: float = IDENTIFIER_IDF_POWER,
    max_length: int | None = None,
    limit: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher-free preprocessing: load the tokenizer, build :func:`identifier_frequency_table`, write ``output``."""
    import itertools

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path, trust_remote_code=True)
    if limit is not None:
        texts = itertools.islice(texts, limit)
    ids, weights, documents = identifier_frequency_table(texts, tokenizer, vocab_size, power, max_length, total=limit)
    save_frequency_table(output, ids, weights, method="identifiers", tokenizer=tokenizer_path, documents=documents,
                         power=power, partners=1)
    return ids, weights
