"""A learned measurement of block layouts: a tiny SASA pre-trained from scratch with masked-LM, one run per layout.

Every run trains the same small :class:`sasa.SasaForMaskedLM` (same data, steps, optimiser and seed) with a different
block layout (``SasaConfig`` overrides) and reports held-out masked-token accuracy overall and on *far* tokens, split
into identifiers of the code and words in comments and strings (:func:`token_kinds`), and the share of far tokens
whose copy the layout reaches (:func:`occurrence_reached`: the ceiling a layout puts on copying).

Objective (identifier copy): only identifier pieces whose id occurs again in the same sequence are masked (single
sub-word tokens, each replaced by ``<mask>``), so every target can be copied from elsewhere in the sequence, and
logits are computed at the masked positions only (tied decoder). A masked token is *far* when it has other, unmasked
occurrences (same id) and all of them lie outside its window blocks (``|i - j| <= window_radius``) and outside the
global blocks: a window-only model sees none of them, a layout that reaches one can copy it.

Recipe (why it looks like this): plain MLM from scratch with a model this small stays on the unigram plateau for
thousands of steps, far beyond a 2-minute CPU run (loss = unigram entropy, the same accuracy whatever the layout).
Copying a masked piece ``process_<mask>_data`` from a far ``process_request_data`` needs two hops: a local one (which
token is my left neighbour?) and a far one (where else does that neighbour occur? copy what follows it). The local hop
is the same for every layout and is what takes so long to learn with learned absolute positions, so the probe hands
it to the model: each token's *token type* is its left neighbour's (masked) id (RoBERTa's token-type table, widened
to the vocabulary). The far hop, which is what a layout allows or not, must still be learned through SASA's own
attention and layout. Two initialisations make it learnable in hundreds of steps: ``W_q = W_k`` (mimetic
initialisation, Trockman & Kolter 2023: tokens with the same left neighbour attend to each other from the start) and
identity value/output/head projections (what is attended reaches the tied decoder unchanged). The masked token's own
id is never visible: its type column is its left neighbour's, and the next token's type is ``<mask>``.

Data: whole standard-library files cut into pieces of 768..1024 tokens at function/method boundaries (long real code
whose names recur far apart, and enough of it for ~1000 steps without repeating much), split by file.

    python benchmarks/quality/mlm_probe.py --quick                 # the plumbing: every layout, 1 seed, a few steps
    python benchmarks/quality/mlm_probe.py --json out.json         # 5 layouts x 3 seeds
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import os
import statistics
import sys
import sysconfig
import tempfile
import textwrap
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from sasa.masking import copy_candidates, far_tokens, sample_mask, unlink_hidden
from training_loop import decays_matrices_but_embeddings, train_loop

#: The probe model (``SasaConfig`` fields): ~1000 steps of 4 x 1024 tokens in ~2 minutes on 2 CPU cores.
PROBE_MODEL = dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, intermediate_size=512,
                   hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
#: The window every sparse layout shares; far tokens are defined against it.
WINDOW = dict(block_size=32, window_radius=1, num_global_blocks=1)
#: The compared layouts (``SasaConfig`` overrides). Full attention: a window at least as wide as the sequence.
LAYOUTS = {
    "full attention": dict(window_radius=1024, num_global_blocks=1, num_ast_blocks=0, num_topk_blocks=0),
    "window only": dict(window_radius=1, num_global_blocks=1, num_ast_blocks=0, num_topk_blocks=0),
    "random 3": dict(window_radius=1, num_global_blocks=1, num_ast_blocks=0, num_topk_blocks=0, num_random_blocks=3),
    # SASA's defaults (SasaConfig: 2 AST blocks + 1 top-k block; the tokenizer's default relations), and the top-k
    # sources: a teacher-free frequency table of the training files, or the input itself (the default), matching the
    # tokenizer's identifier-like pieces (as sasa convert/demo and the examples install them) or every id but
    # <s>, </s>, <pad> and <mask> (a model built without its tokenizer).
    "AST 2, forward links only": dict(window_radius=1, num_global_blocks=1, num_ast_blocks=2, num_topk_blocks=0,
                                      ast_reverse_weight=0.0),
    "AST 2, no top-k": dict(window_radius=1, num_global_blocks=1, num_ast_blocks=2, num_topk_blocks=0),
    "AST 3, no top-k": dict(window_radius=1, num_global_blocks=1, num_ast_blocks=3, num_topk_blocks=0),
    "AST 2 + top-k 1, teacher-free table": dict(window_radius=1, num_global_blocks=1, num_ast_blocks=2,
                                                num_topk_blocks=1, topk_source="table"),
    "AST 2 + top-k 1, input source over every id": dict(window_radius=1, num_global_blocks=1, num_ast_blocks=2,
                                                        num_topk_blocks=1, topk_source="input", matchable="every id"),
    "AST 2 + top-k 1 (default: input source)": dict(window_radius=1, num_global_blocks=1, num_ast_blocks=2,
                                                    num_topk_blocks=1, topk_source="input"),
}
#: Standard deviation of the shared query/key weights (mimetic initialisation).
MIMETIC_STD = 0.15
#: Node kinds whose text is prose rather than code: comments and the text of string literals (docstrings included).
PROSE_KINDS = ("comment", "line_comment", "block_comment", "string_content", "string_fragment")
#: What a masked identifier-like piece is (:func:`token_kinds`): results are split by it. Only ``IDENTIFIER`` pieces
#: are names in the code (what AST relations link; ``self`` is one); keywords such as ``def`` are ``OTHER_CODE``.
OTHER_CODE, IDENTIFIER, PROSE = 0, 1, 2


@dataclass
class Example:
    """One tokenized sequence. ``masked``/``far`` are set on held-out examples only (fixed evaluation masks)."""

    input_ids: torch.Tensor  # [L] long
    ast_links: torch.Tensor  # [L, R] int32, -1 = no link
    candidates: torch.Tensor  # [L] bool: identifier pieces whose id occurs elsewhere in the sequence
    group: str  # the file it comes from (the split is by group)
    kinds: torch.Tensor  # [L] int8: OTHER_CODE, IDENTIFIER (in a name node) or PROSE (comments, string text)
    masked: torch.Tensor | None = None  # [P, L] bool: P evaluation masks
    far: torch.Tensor | None = None  # [P, L] bool: the far tokens among the masked ones


@dataclass
class Vocabulary:
    size: int
    mask_id: int
    pad_id: int
    identifier: torch.Tensor = field(repr=False)  # [size] bool, identifier-like ids


@dataclass
class ProbeData:
    train: list[Example]
    test: list[Example]
    vocab: Vocabulary
    seconds: float = 0.0


def vocabulary(tokenizer) -> Vocabulary:
    """The ids the probe needs from a tokenizer (identifier pieces as :func:`sasa.frequency.identifier_vocabulary`)."""
    from sasa.frequency import identifier_vocabulary

    return Vocabulary(len(tokenizer), tokenizer.mask_token_id, tokenizer.pad_token_id, identifier_vocabulary(tokenizer))


def probe_tokenizer(directory: str, vocab_size: int = 2000, files: int = 300, relations=None):
    """A byte-level BPE of ``vocab_size`` ids trained on standard-library files (``sasa.demo.stdlib_tokenizer``), saved
    to ``directory``; ``relations``: the AST relations its ``ast_links`` carry (default: the tokenizer's)."""
    from sasa import SasaTokenizer
    from sasa.demo import stdlib_tokenizer

    stdlib_tokenizer(directory, files=files, vocab_size=vocab_size)
    extra = {} if relations is None else dict(ast_relations=relations)
    return SasaTokenizer.from_pretrained(directory, language="python", **extra)


# ----------------------------------------------------------------------------------------------------------- data


def _units(source: str) -> list[str]:
    """A Python file as pieces that parse on their own: module-level statements, and classes' statements dedented."""
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)

    def text(node: ast.stmt) -> str:
        first = node.decorator_list[0].lineno if getattr(node, "decorator_list", None) else node.lineno
        return textwrap.dedent("".join(lines[first - 1 : node.end_lineno]))

    units = []
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.body:
            units.extend(text(child) for child in node.body)
        else:
            units.append(text(node))
    return units


def stdlib_pieces(tokenizer, max_length: int = 1024, min_length: int = 768, limit_files: int | None = None,
                  root: str | None = None) -> tuple[list[str], list[str]]:
    """Standard-library files cut into pieces of ``min_length``..``max_length`` tokens (special tokens included).

    Consecutive units of a file (:func:`_units`: functions, methods, other statements) are joined until the next one
    would overflow ``max_length``; a unit longer than that is a piece of its own (the tokenizer cuts it). Pieces
    shorter than ``min_length`` (file ends) are dropped.

    Returns:
        ``(texts, groups)``, ``groups[i]`` the file of ``texts[i]`` (relative to the standard library).
    """
    from sasa.stdlib_corpus import stdlib_files

    root = root or sysconfig.get_paths()["stdlib"]
    budget = max_length - 2
    texts, groups = [], []
    for path in stdlib_files(root)[:limit_files]:
        try:
            with open(path, encoding="utf-8") as handle:
                units = _units(handle.read())
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        if not units:
            continue
        sizes = [len(ids) + 1 for ids in tokenizer(units, language=None, add_special_tokens=False)["input_ids"]]
        current, used = [], 0
        for unit, size in zip(units + [None], sizes + [budget + 1]):
            if current and (unit is None or used + size > budget):
                if used >= min_length - 2:
                    texts.append("\n".join(current))
                    groups.append(os.path.relpath(path, root))
                current, used = [], 0
            if unit is not None:
                current.append(unit)
                used += size
    return texts, groups




def token_kinds(source: str, offsets: list[tuple[int, int]], language: str | None) -> torch.Tensor:
    """``[L]`` int8: the kind of each token (character ``offsets`` into ``source``) by the syntax node holding its first
    character: :data:`PROSE` in a comment or the text of a string literal (:data:`PROSE_KINDS`), :data:`IDENTIFIER` in
    a name node (:data:`far_dependencies.IDENTIFIERS`, the leaves that name things), else :data:`OTHER_CODE` (keywords,
    operators, numbers; special tokens; everything without a language)."""
    import numpy as np

    from far_dependencies import IDENTIFIERS
    from sasa.ast_languages import get_parser
    from sasa.ast_relations import char_to_byte_offsets

    kinds = np.full(len(offsets), OTHER_CODE, dtype=np.int8)
    if language is None or not offsets:
        return torch.from_numpy(kinds)
    tree = get_parser(language).parse(source.encode("utf-8", "surrogatepass"))
    ranges, stack = [], [tree.root_node]
    while stack:
        node = stack.pop()
        if node.type in PROSE_KINDS:
            ranges.append((node.start_byte, node.end_byte, PROSE))
        elif node.child_count:
            stack.extend(node.children)
        elif node.type in IDENTIFIERS:
            ranges.append((node.start_byte, node.end_byte, IDENTIFIER))
    if not ranges:
        return torch.from_numpy(kinds)
    ranges = np.array(sorted(ranges))  # leaves and prose nodes do not overlap
    starts = np.array([start for start, _ in offsets])
    byte_starts = char_to_byte_offsets(source)[starts]
    index = np.searchsorted(ranges[:, 0], byte_starts, side="right") - 1
    inside = (index >= 0) & (byte_starts < ranges[np.maximum(index, 0), 1])
    inside &= np.array([start < end for start, end in offsets])  # special tokens have empty spans
    kinds[inside] = ranges[index[inside], 2]
    return torch.from_numpy(kinds)


def encode_examples(texts: list[str], languages: list[str | None], tokenizer, vocab: Vocabulary,
                    max_length: int = 1024, groups: list[str] | None = None) -> list[Example]:
    """Tokenize (with ``ast_links``) and find each sequence's copyable identifier pieces.

    Args:
        texts, languages: The sources and their languages (``None``: no AST links).
        tokenizer: A :class:`sasa.SasaTokenizer`.
        vocab: :func:`vocabulary` of the tokenizer.
        max_length: Longer sources are truncated.
        groups: The file of each text (for :func:`split_examples`); default: each text its own group.
    """
    examples = []
    for start in range(0, len(texts), 64):
        chunk = slice(start, start + 64)
        encoding = tokenizer(texts[chunk], language=list(languages[chunk]), truncation=True, max_length=max_length,
                             return_offsets_mapping=True)
        rows = zip(encoding["input_ids"], encoding["ast_links"], encoding["offset_mapping"])
        for offset, (ids, links, offsets) in enumerate(rows):
            input_ids = torch.tensor(ids, dtype=torch.long)
            index = start + offset
            examples.append(Example(input_ids, torch.tensor(links, dtype=torch.int32).reshape(len(ids), -1),
                                    copy_candidates(input_ids, vocab.identifier),
                                    groups[index] if groups is not None else str(index),
                                    token_kinds(texts[index], offsets, languages[index])))
    return examples


def split_examples(examples: list[Example], test_every: int = 4) -> tuple[list[Example], list[Example]]:
    """``(train, test)``: the examples of every ``test_every``-th group (file, in sorted order) are held out."""
    groups = sorted({e.group for e in examples})
    held_out = set(groups[test_every - 1 :: test_every])
    return [e for e in examples if e.group not in held_out], [e for e in examples if e.group in held_out]




def occurrence_reached(input_ids: torch.Tensor, masked: torch.Tensor, block_mask: torch.Tensor,
                       block_size: int) -> torch.Tensor:
    """``[M]`` bool, one per masked token (in position order): another unmasked occurrence of its id lies in a key
    block its query block attends to under ``block_mask`` (``[n, n]`` bool, one example's layout), so the layout lets
    the model copy it."""
    positions = masked.nonzero()[:, 0]
    block = torch.arange(input_ids.shape[0]) // block_size
    same = (input_ids[positions, None] == input_ids[None, :]) & ~masked[None, :]
    allowed = block_mask[block[positions]][:, block]
    return (same & allowed).any(1)




def add_evaluation_masks(examples: list[Example], vocab: Vocabulary, rate: float = 0.25, passes: int = 1,
                         seed: int = 1234, block_size: int = WINDOW["block_size"],
                         window_radius: int = WINDOW["window_radius"],
                         num_global_blocks: int = WINDOW["num_global_blocks"]) -> None:
    """Give every held-out example ``passes`` fixed masks (the same for every layout and seed) and their far tokens."""
    generator = torch.Generator().manual_seed(seed)
    for example in examples:
        masks = [sample_mask(example.candidates, rate, generator) for _ in range(passes)]
        example.masked = torch.stack(masks)
        example.far = torch.stack([far_tokens(example.input_ids, m, vocab.identifier, block_size, window_radius,
                                              num_global_blocks) for m in masks])


def prepare_data(texts: list[str], languages: list[str | None], tokenizer, groups: list[str] | None = None,
                 max_length: int = 1024, min_length: int = 0, test_every: int = 4, max_test: int | None = None,
                 eval_rate: float = 0.25, eval_passes: int = 1, block_size: int = WINDOW["block_size"],
                 window_radius: int = WINDOW["window_radius"],
                 num_global_blocks: int = WINDOW["num_global_blocks"]) -> ProbeData:
    """Everything a probe run needs: tokenize (with AST links), split by group (file), fix the held-out masks.

    Args:
        texts, languages, groups: The sources, their languages and files (``groups`` default: one per text).
        tokenizer: A :class:`sasa.SasaTokenizer` (its ``ast_links`` drive the AST layouts).
        max_length, min_length: Sources are cut at ``max_length`` tokens; shorter ones than ``min_length`` dropped.
        test_every: Every ``test_every``-th file is held out.
        max_test: Keep at most this many held-out sequences, evenly spread over them (evaluation time).
        eval_rate, eval_passes: Share of copyable pieces masked per held-out mask, and masks per sequence.
        block_size, window_radius, num_global_blocks: The window the far tokens are defined against.
    """
    started = time.perf_counter()
    vocab = vocabulary(tokenizer)
    examples = [e for e in encode_examples(texts, languages, tokenizer, vocab, max_length, groups)
                if e.input_ids.shape[0] >= min_length and e.candidates.any()]
    train, test = split_examples(examples, test_every)
    if max_test is not None and len(test) > max_test:
        test = [test[i * len(test) // max_test] for i in range(max_test)]
    add_evaluation_masks(test, vocab, eval_rate, eval_passes, block_size=block_size, window_radius=window_radius,
                         num_global_blocks=num_global_blocks)
    return ProbeData(train, test, vocab, time.perf_counter() - started)


# ----------------------------------------------------------------------------------------------------------- model


def build_model(vocab: Vocabulary, layout: dict, max_length: int, seed: int, model_overrides: dict | None = None,
                frequency_table: tuple[torch.Tensor, torch.Tensor] | None = None, neighbour_types: bool = True,
                mimetic_std: float = MIMETIC_STD, identity_init: bool = True):
    """The probe's :class:`sasa.SasaForMaskedLM` (tied embeddings, ``sasa_blocks`` attention) with ``layout``.

    Args:
        vocab, max_length: Size the embedding and position tables.
        layout: ``SasaConfig`` overrides of the block layout (applied after :data:`PROBE_MODEL` and
            ``model_overrides``).
        seed: Seeds the weights.
        frequency_table: ``(partner_ids [V, m], partner_weights [V, m])`` installed when the layout's top-k source is
            ``"table"``. ``layout["matchable"]`` (not a config field): ``"identifiers"`` (default) restricts the
            input top-k source to the vocabulary's identifier-like ids, ``"every id"`` leaves it every non-special id.
        neighbour_types: One token type per vocabulary id (the left neighbour's id is fed as the type).
        mimetic_std: ``W_q = W_k`` with this std (0: the default initialisation).
        identity_init: Value, attention-output and LM-head dense weights start at the identity.
    """
    from sasa import SasaConfig, SasaForMaskedLM

    settings = dict(PROBE_MODEL, **WINDOW)
    settings.update(model_overrides or {})
    settings.update(layout)
    matchable = settings.pop("matchable", "identifiers")
    settings.setdefault("random_seed", seed)
    if neighbour_types:
        settings["type_vocab_size"] = vocab.size
    # A window wider than the sequence is full attention; a wider one would only cost padding.
    settings["window_radius"] = min(settings["window_radius"], -(-max_length // settings["block_size"]))
    config = SasaConfig(vocab_size=vocab.size, pad_token_id=vocab.pad_id, max_position_embeddings=max_length + 2,
                        tie_word_embeddings=True, **settings)
    torch.manual_seed(seed)
    model = SasaForMaskedLM._from_config(config, attn_implementation="sasa_blocks")
    if frequency_table is not None and config.topk_source == "table":
        model.sasa.set_frequency_table(*frequency_table)
    if matchable == "identifiers":  # what sasa convert, sasa demo and the examples install
        model.sasa.set_matchable_tokens(vocab.identifier)
    else:  # a model built without its tokenizer: every id but the special ones; <mask> would match every mask
        every = model.sasa.frequency_table.matchable_tokens.clone()
        every[vocab.mask_id] = False
        model.sasa.set_matchable_tokens(every)
    with torch.no_grad():
        eye = torch.eye(config.hidden_size)
        for layer in model.sasa.encoder.layer:
            attention = layer.attention.self
            if identity_init:
                for linear in (attention.value, layer.attention.output.dense):
                    linear.weight.copy_(eye)
                    linear.bias.zero_()
            if mimetic_std:
                attention.query.weight.normal_(0.0, mimetic_std)
                attention.key.weight.copy_(attention.query.weight)
                attention.query.bias.zero_()
                attention.key.bias.zero_()
        if identity_init:
            model.lm_head.dense.weight.copy_(eye)
            model.lm_head.dense.bias.zero_()
    return model


def _batch(examples: list[Example], masks: list[torch.Tensor], vocab: Vocabulary, block_size: int) -> dict:
    """Right-padded ``[B, L]`` inputs (``L`` a multiple of ``block_size``) with the masked tokens replaced and their
    AST links dropped (:func:`sasa.masking.unlink_hidden`); each token's type is its left neighbour's id as the model
    sees it (``<mask>`` after a masked token)."""
    length = max(e.input_ids.shape[0] for e in examples)
    length = -(-length // block_size) * block_size
    relations = examples[0].ast_links.shape[1]
    input_ids = torch.full((len(examples), length), vocab.pad_id, dtype=torch.long)
    attention_mask = torch.zeros(len(examples), length, dtype=torch.long)
    ast_links = torch.full((len(examples), length, relations), -1, dtype=torch.long)
    masked = torch.zeros(len(examples), length, dtype=torch.bool)
    for row, (example, mask) in enumerate(zip(examples, masks)):
        size = example.input_ids.shape[0]
        input_ids[row, :size] = example.input_ids
        attention_mask[row, :size] = 1
        ast_links[row, :size] = example.ast_links
        masked[row, :size] = mask
    labels = input_ids[masked]
    input_ids = input_ids.masked_fill(masked, vocab.mask_id)
    ast_links = unlink_hidden(ast_links, masked)  # a hidden token leaves no trace in the links
    token_type_ids = torch.zeros_like(input_ids)
    token_type_ids[:, 1:] = input_ids[:, :-1] * attention_mask[:, 1:]
    return dict(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                ast_links=ast_links, masked=masked, labels=labels)


def _masked_logits(model, batch: dict) -> torch.Tensor:
    """``[M, V]`` logits of the masked positions only (the encoder runs on the whole sequence)."""
    token_type_ids = batch["token_type_ids"] if model.config.type_vocab_size > 1 else None
    hidden = model.sasa(batch["input_ids"], batch["attention_mask"], token_type_ids=token_type_ids,
                        ast_links=batch["ast_links"]).last_hidden_state
    return model.lm_head(hidden[batch["masked"]])


@torch.no_grad()
def evaluate(model, examples: list[Example], vocab: Vocabulary, batch_size: int = 8) -> dict:
    """Accuracy of the argmax prediction on the held-out masks: overall, on far tokens (all, and those that are
    identifiers in the code: :func:`token_kinds`), and on the other ones; and the share of far tokens whose copy the
    layout reaches (:func:`occurrence_reached`)."""
    model.eval()
    rows = [(e, p) for e in examples for p in range(e.masked.shape[0])]
    hits, far, kinds, reached = [], [], [], []
    loss_sum = 0.0
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        batch = _batch([e for e, _ in chunk], [e.masked[p] for e, p in chunk], vocab, model.config.block_size)
        logits = _masked_logits(model, batch)
        loss_sum += float(F.cross_entropy(logits, batch["labels"], reduction="sum"))
        hits.append(logits.argmax(-1) == batch["labels"])
        far.append(torch.cat([e.far[p][e.masked[p]] for e, p in chunk]))
        kinds.append(torch.cat([e.kinds[e.masked[p]] for e, p in chunk]))
        layout = model.sasa.layout(batch["input_ids"], batch["attention_mask"], batch["ast_links"])
        reached.extend(occurrence_reached(e.input_ids, e.masked[p], layout.block_mask[row], layout.block_size)
                       for row, (e, p) in enumerate(chunk))
    hits, far, kinds, reached = (torch.cat(parts) for parts in (hits, far, kinds, reached))

    def share(values: torch.Tensor, where: torch.Tensor) -> float:
        return float(values[where].float().mean()) if where.any() else math.nan

    far_names, far_prose = far & (kinds == IDENTIFIER), far & (kinds == PROSE)
    return dict(accuracy=share(hits, torch.ones_like(hits)), far_accuracy=share(hits, far),
                far_name_accuracy=share(hits, far_names), far_prose_accuracy=share(hits, far_prose),
                near_accuracy=share(hits, ~far), far_reach=share(reached, far), far_name_reach=share(reached, far_names),
                far_prose_reach=share(reached, far_prose), masked_tokens=hits.numel(), far_tokens=int(far.sum()),
                far_name_tokens=int(far_names.sum()), far_prose_tokens=int(far_prose.sum()),
                test_loss=loss_sum / max(hits.numel(), 1))


def train_and_evaluate(
    train_examples: list[Example],
    test_examples: list[Example],
    layout: dict,
    seed: int,
    steps: int,
    vocab: Vocabulary,
    batch_size: int = 4,
    learning_rate: float = 2e-3,
    warmup: float = 0.05,
    weight_decay: float = 0.01,
    mask_rate: float = 0.25,
    max_length: int = 1024,
    model_overrides: dict | None = None,
    frequency_table: tuple[torch.Tensor, torch.Tensor] | None = None,
    neighbour_types: bool = True,
    mimetic_std: float = MIMETIC_STD,
    log_every: int = 0,
    eval_every: int = 0,
) -> dict:
    """Pre-train a fresh probe model with ``layout`` for ``steps`` steps, then measure it on ``test_examples``.

    Args:
        train_examples, test_examples: From :func:`prepare_data` (test examples carry their fixed masks).
        layout: ``SasaConfig`` overrides, e.g. ``dict(window_radius=1, num_ast_blocks=3, num_topk_blocks=0)``.
        seed: Seeds the weights, the batches, the training masks and the random blocks.
        steps: Optimiser steps of ``batch_size`` sequences (drawn without replacement, epoch by epoch).
        vocab: :attr:`ProbeData.vocab`.
        learning_rate, warmup, weight_decay: AdamW, linear warm-up over ``warmup * steps`` then cosine to 0.
        mask_rate: Share of each sequence's copyable identifier pieces masked per step (fresh masks every step).
        max_length: Longest sequence (sizes the position table).
        model_overrides: ``SasaConfig`` overrides of :data:`PROBE_MODEL` (width, layers, ...).
        frequency_table: ``(partner_ids [V, m], partner_weights [V, m])`` for top-k blocks.
        neighbour_types, mimetic_std: The recipe of :func:`build_model` (module docstring).
        log_every, eval_every: Print the running loss / the test accuracy every that many steps (0: never).

    Returns:
        :func:`evaluate`'s accuracies and reaches (``steps=0`` measures only the reaches meaningfully), counts and
        ``test_loss``, ``train_loss`` (mean over the last 10 % of steps), ``density`` (of the
        first held-out batch's layout), ``train_seconds``, ``seconds``, ``steps``, ``seed``, ``layout``.
    """
    torch.set_num_threads(2)
    started = time.perf_counter()
    model = build_model(vocab, layout, max_length, seed, model_overrides, frequency_table, neighbour_types,
                        mimetic_std)
    generator = torch.Generator().manual_seed(seed)
    block_size = model.config.block_size
    order: list[int] = []

    def loss_of_step(step: int) -> torch.Tensor:
        model.train()
        if len(order) < batch_size:
            order.extend(torch.randperm(len(train_examples), generator=generator).tolist())
        chosen = [train_examples[i] for i in order[:batch_size]]
        del order[:batch_size]
        batch = _batch(chosen, [sample_mask(e.candidates, mask_rate, generator) for e in chosen], vocab, block_size)
        return F.cross_entropy(_masked_logits(model, batch), batch["labels"])

    def evaluate_now(done: int) -> None:
        if eval_every and done % eval_every == 0 and done < steps:
            partial = evaluate(model, test_examples, vocab)
            print(f"    step {done}: test accuracy {partial['accuracy']:.3f}, far {partial['far_accuracy']:.3f}",
                  flush=True)

    trained = train_loop(model.named_parameters(), loss_of_step, steps, learning_rate, weight_decay=weight_decay,
                         decays=decays_matrices_but_embeddings, warmup=warmup, log_every=log_every, label="    ",
                         log=lambda line: print(line, flush=True), after_step=evaluate_now)
    result = evaluate(model, test_examples, vocab)
    first = _batch(test_examples[:8], [e.masked[0] for e in test_examples[:8]], vocab, block_size)
    density = model.sasa.layout(first["input_ids"], first["attention_mask"], first["ast_links"]).density()
    result.update(train_loss=trained["final_loss"], density=density, train_seconds=trained["seconds"],
                  seconds=time.perf_counter() - started, steps=steps, seed=seed, layout=dict(layout))
    return result


# ------------------------------------------------------------------------------------------------------ the table


#: The per-run numbers averaged over seeds.
SUMMARIZED = ("accuracy", "far_accuracy", "far_name_accuracy", "far_prose_accuracy", "near_accuracy", "far_reach",
              "far_name_reach", "train_loss", "density", "seconds")


def _mean_std(values: list[float]) -> tuple[float, float]:
    if any(math.isnan(v) for v in values):  # the training loss of runs without steps
        return math.nan, math.nan
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarize(runs: list[dict]) -> list[dict]:
    """Mean and sample standard deviation over seeds per layout (``name``), in the order the layouts first appear."""
    rows = []
    for name in dict.fromkeys(r["name"] for r in runs):
        mine = [r for r in runs if r["name"] == name]
        stats = {key: _mean_std([r[key] for r in mine]) for key in SUMMARIZED}
        rows.append(dict(layout=name, seeds=len(mine), **stats, far_tokens=mine[0]["far_tokens"],
                         far_name_tokens=mine[0]["far_name_tokens"], far_prose_tokens=mine[0]["far_prose_tokens"],
                         masked_tokens=mine[0]["masked_tokens"]))
    return rows


def print_table(rows: list[dict]) -> None:
    """Reach (share of far tokens with a copy in their layout: all / identifiers) and accuracy (mean ± std)."""
    width = max(len(r["layout"]) for r in rows)
    columns = ("accuracy", "far_accuracy", "far_name_accuracy", "far_prose_accuracy", "near_accuracy")
    print(f"{'layout':<{width}}  seeds  density  reach far/name  accuracy: all    far tokens       far identifiers  "
          "far in prose     other tokens     train loss  s/run")
    for r in rows:
        cells = "  ".join(f"{r[k][0]:.3f} ± {r[k][1]:.3f}" for k in columns)
        print(f"{r['layout']:<{width}}  {r['seeds']:>5}  {r['density'][0]:>7.3f}  {r['far_reach'][0]:>6.3f}/"
              f"{r['far_name_reach'][0]:.3f}   {cells}   {r['train_loss'][0]:>8.3f}  {r['seconds'][0]:>5.0f}")
    print(f"held-out masked tokens: {rows[0]['masked_tokens']} (far: {rows[0]['far_tokens']}, of them identifiers in "
          f"the code: {rows[0]['far_name_tokens']}, in comments and strings: {rows[0]['far_prose_tokens']}); "
          "mean ± std over seeds")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the plumbing only: few files and steps, one seed")
    parser.add_argument("--layouts", nargs="+", choices=list(LAYOUTS), default=list(LAYOUTS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--mask-rate", type=float, default=0.25)
    parser.add_argument("--vocab-size", type=int, default=2000)
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--block-size", type=int, default=WINDOW["block_size"])
    parser.add_argument("--max-test", type=int, default=240, help="held-out sequences evaluated")
    parser.add_argument("--limit-files", type=int, help="read only the first N standard-library files")
    parser.add_argument("--model", type=json.loads, default={}, help="JSON SasaConfig overrides of the probe model")
    parser.add_argument("--mimetic-std", type=float, default=MIMETIC_STD)
    parser.add_argument("--no-neighbour-types", action="store_true", help="plain token types (the recipe's ablation)")
    parser.add_argument("--log-every", type=int, default=0)
    parser.add_argument("--json", help="write every run and the summary to this JSON file")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.steps = args.seeds[:1], 20
        args.limit_files = args.limit_files or 40
        args.max_test = min(args.max_test, 16)
    torch.set_num_threads(2)
    started = time.perf_counter()

    from sasa.frequency import identifier_frequency_table

    with tempfile.TemporaryDirectory() as scratch:
        tokenizer = probe_tokenizer(scratch, vocab_size=args.vocab_size, files=60 if args.quick else 300)
    min_length = args.max_length * 3 // 4
    texts, groups = stdlib_pieces(tokenizer, args.max_length, min_length, limit_files=args.limit_files)
    data = prepare_data(texts, ["python"] * len(texts), tokenizer, groups, args.max_length, max_test=args.max_test,
                        block_size=args.block_size)
    train_files = {e.group for e in data.train}
    table = identifier_frequency_table([t for t, g in zip(texts, groups) if g in train_files], tokenizer,
                                       progress=False)[:2]
    tokens = sum(e.input_ids.shape[0] for e in data.train)
    print(f"data: {len(data.train)} training pieces ({tokens} tokens) and {len(data.test)} held-out pieces of "
          f"standard-library files (split by file, {min_length}..{args.max_length} tokens, BPE of {data.vocab.size} "
          f"ids); held-out: {sum(int(e.masked.sum()) for e in data.test)} masked identifier pieces, "
          f"{sum(int(e.far.sum()) for e in data.test)} far; prepared in {time.perf_counter() - started:.0f} s")
    print(f"model: SasaForMaskedLM {PROBE_MODEL | args.model}, block {args.block_size}, neighbour types "
          f"{not args.no_neighbour_types}, mimetic std {args.mimetic_std}; {args.steps} steps of {args.batch_size} "
          f"sequences, lr {args.learning_rate}, mask rate {args.mask_rate}; top-k table: identifier_frequency_table "
          f"of the training files", flush=True)

    # Each run is written to --json as it finishes; a rerun with the same settings keeps the runs already there.
    settings = {key: value for key, value in vars(args).items() if key not in RUN_ONLY}
    kept = _kept_runs(args.json, settings)
    runs = []
    for name in args.layouts:
        layout = dict(LAYOUTS[name], block_size=args.block_size)
        for seed in args.seeds:
            if (name, seed) in kept:
                runs.append(kept[name, seed])
                print(f"  {name}, seed {seed}: from {args.json}", flush=True)
                continue
            result = train_and_evaluate(
                data.train, data.test, layout, seed, args.steps, data.vocab, batch_size=args.batch_size,
                learning_rate=args.learning_rate, mask_rate=args.mask_rate, max_length=args.max_length,
                model_overrides=args.model, frequency_table=table,
                neighbour_types=not args.no_neighbour_types, mimetic_std=args.mimetic_std, log_every=args.log_every)
            result["name"], result["seed"] = name, seed
            runs.append(result)
            if args.json:
                _write(args.json, dict(arguments=vars(args), settings=settings, rule=RULE,
                                       runs=[*runs, *(r for key, r in kept.items() if r not in runs)]))
            print(f"  {name}, seed {seed}: accuracy {result['accuracy']:.3f}, far {result['far_accuracy']:.3f} "
                  f"(identifiers {result['far_name_accuracy']:.3f}; reached {result['far_reach']:.3f}), "
                  f"other {result['near_accuracy']:.3f}, train loss {result['train_loss']:.3f}, "
                  f"{result['seconds']:.0f} s", flush=True)
    rows = summarize(runs)
    print_table(rows)
    seconds = time.perf_counter() - started
    print(f"total {seconds:.0f} s")
    if args.json:
        _write(args.json, dict(arguments=vars(args), settings=settings, rule=RULE, runs=runs, summary=rows,
                               seconds=seconds))
    return 0


#: Arguments that do not change a run's result (which runs are asked for, where they go, how often to log).
RUN_ONLY = ("layouts", "seeds", "json", "log_every")
#: Written with every result: held-out and training masks leave no AST link (sasa.masking.unlink_hidden). Runs
#: written without it (before 2026-12) read the hidden tokens' links and are never resumed from.
RULE = "hidden tokens unlinked"


def _kept_runs(path: str | None, settings: dict) -> dict[tuple[str, int], dict]:
    """The runs of an earlier invocation with the same settings under the same rule, by (layout, seed)."""
    if not path or not os.path.exists(path):
        return {}
    with open(path) as handle:
        earlier = json.load(handle)
    if earlier.get("rule") != RULE or earlier.get("settings") != json.loads(json.dumps(settings)):
        return {}
    return {(run["name"], run["seed"]): run for run in earlier.get("runs", []) if "seed" in run}


def _write(path: str, content: dict) -> None:
    """Write JSON whole or not at all (a file beside it, then renamed)."""
    with open(path + ".part", "w") as handle:
        json.dump(content, handle, indent=2)
    os.replace(path + ".part", path)


if __name__ == "__main__":
    sys.exit(main())
