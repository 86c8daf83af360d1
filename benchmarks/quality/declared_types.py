"""Declared types: a far-context task on whole code, where nothing is hidden (so the AST links are legitimate input).

At a use of a local variable, which type was it declared with? The type is written once, at the declaration
(``var n int64``, ``List<String> xs``, ``size_t n``); the question is asked at a later use, often far from it. Nothing
is hidden or changed: the model reads the whole function as a parser would, and the answer lies in one place, the
declaration, which the use's data-flow link points to. It is where SASA's AST blocks should earn their place.

* :func:`typed_declarations`: the local variables of a function declared with a written type, from tree-sitter
  (Go, Java, C, C++: parameters and declarations of a plain name; pointer declarators, ``auto``/``var`` and names
  declared more than once in the function are left out).
* :func:`type_examples`: up to ``sites`` uses per function of such variables, with the function's distinct declared
  types as the choices (at least two), uses whose declaration is far sampled first. Labels are right by construction:
  the type is the text the parser found at the declaration of the name used.
* :func:`type_rows`: tokenized; the choices' token ids, the declaration's tokens (the evidence) and whether it lies
  outside the use's window blocks (far).
* :func:`finetune_types` / :func:`evaluate_types`: the pre-trained masked-LM head scores each choice at the use's
  first token (the mean of its logits over the type's pieces); cross-entropy against the declared one. Accuracy
  overall and by the benchmark's buckets (far / near, within / beyond 512 tokens), and chance (one over the choices).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from dataclasses import dataclass, field
from functools import cache

import numpy as np
import torch
import torch.nn.functional as F

import code_tasks
from sasa.ast_languages import get_parser
from sasa.ast_relations import char_to_byte_offsets

Span = tuple[int, int]

#: Per language, tree-sitter patterns capturing a declared ``@name`` and its ``@type``.
TYPE_QUERIES = {
    "go": ("(parameter_declaration name: (identifier) @name type: (_) @type)",
           "(var_spec name: (identifier) @name type: (_) @type)"),
    "java": ("(local_variable_declaration type: (_) @type declarator: (variable_declarator name: (identifier) @name))",
             "(formal_parameter type: (_) @type name: (identifier) @name)",
             "(enhanced_for_statement type: (_) @type name: (identifier) @name)"),
    "c": ("(declaration type: (_) @type declarator: [(identifier) @name "
          "(init_declarator declarator: (identifier) @name)])",
          "(parameter_declaration type: (_) @type declarator: (identifier) @name)"),
}
TYPE_QUERIES["cpp"] = TYPE_QUERIES["c"]
LANGUAGES = tuple(TYPE_QUERIES)
#: Declared "types" that name none.
UNTYPED = {"auto", "var"}
#: A Java method does not parse on its own: it is wrapped in a class.
WRAP = {"java": ("class _ {\n", "\n}")}
#: Part of the cache key: bump it when the rows' format or content changes.
FORMAT = 1


@dataclass(frozen=True)
class TypeExample:
    """One question: in ``code`` (a function), which of ``types`` was the variable used at ``site`` declared with."""

    code: str
    language: str
    file: str
    unit: str
    site: Span  # the use
    declaration: Span  # the type as written at the variable's declaration
    right: int  # index into types
    types: tuple[str, ...]  # the function's distinct declared types, sorted
    type_spans: tuple[Span, ...]  # where each type is first written
    evidence_chars: int  # characters between the use and the declaration's type


@dataclass
class TypeRow:
    """A tokenized :class:`TypeExample`."""

    input_ids: torch.Tensor
    ast_links: torch.Tensor
    file: str
    site: int  # the use's first token
    type_ids: list[torch.Tensor] = field(default_factory=list)  # per choice: the ids of its pieces
    right: int = 0
    evidence: tuple[int, ...] = ()  # the declaration's type tokens
    far: bool = False  # every evidence token outside the site's window blocks and the global block


@cache
def _query(language: str):
    from tree_sitter import Query

    return Query(get_parser(language).language, " ".join(TYPE_QUERIES[language]))


def typed_declarations(code: str, language: str) -> dict[str, tuple[Span, Span, str]]:
    """``name -> (name span, type span, type text)`` (character spans of ``code``) for every name declared exactly
    once in ``code`` with a written type (whitespace in the type text normalised); see the module docstring."""
    from tree_sitter import QueryCursor

    if language not in TYPE_QUERIES:
        return {}
    prefix, suffix = WRAP.get(language, ("", ""))
    source = (prefix + code + suffix).encode("utf-8", "surrogatepass")
    tree = get_parser(language).parse(source)
    byte_of_char = char_to_byte_offsets(prefix + code + suffix)

    def span(node) -> Span:
        return tuple(int(np.searchsorted(byte_of_char, b)) - len(prefix) for b in (node.start_byte, node.end_byte))

    found: dict[str, list] = {}
    for _, captures in QueryCursor(_query(language)).matches(tree.root_node):
        name, kind = captures["name"][0], captures["type"][0]
        text = " ".join(kind.text.decode("utf-8", "replace").split())
        found.setdefault(name.text.decode("utf-8", "replace"), []).append((span(name), span(kind), text))
    return {name: entries[0] for name, entries in found.items()
            if len({entry[0] for entry in entries}) == 1 and entries[0][2] not in UNTYPED and entries[0][1][0] >= 0}


def type_examples(unit: code_tasks.Unit, rng: random.Random, sites: int = 4, far_chars: int = 400,
                  far_share: float = 0.5) -> list[TypeExample]:
    """Up to ``sites`` questions of ``unit``: uses (after the declaration) of its typed local variables, about
    ``far_share`` of them with the declaration more than ``far_chars`` characters away where the unit has such."""
    declared = typed_declarations(unit.code, unit.language)
    types = sorted({text for _, _, text in declared.values()})
    if len(types) < 2:
        return []
    first_span = {}
    for _, type_span, text in sorted(declared.values(), key=lambda entry: entry[1]):
        first_span.setdefault(text, type_span)
    candidates = []
    for variable in unit.variables:
        if variable.name not in declared:
            continue
        name_span, type_span, text = declared[variable.name]
        if name_span not in variable.occurrences:
            continue  # the parser of the function alone and the file's disagree: leave the name out
        for start, end in variable.occurrences:
            if start > name_span[1]:
                distance = start - type_span[1]
                candidates.append(TypeExample(unit.code, unit.language, unit.file, unit.name, (start, end),
                                              type_span, types.index(text), tuple(types),
                                              tuple(first_span[t] for t in types), distance))
    far = [c for c in candidates if c.evidence_chars > far_chars]
    near = [c for c in candidates if c.evidence_chars <= far_chars]
    rng.shuffle(far)
    rng.shuffle(near)
    wanted_far = min(len(far), max(round(sites * far_share), sites - len(near)))
    return far[:wanted_far] + near[: sites - wanted_far]


def type_rows(examples: list[TypeExample], tokenizer, max_length: int) -> list[TypeRow]:
    """Tokenize (with AST links, nothing hidden); a row needs its use and its declaration inside ``max_length``."""
    from task_data import _is_far, tokenized

    rows = []
    for example, ids, links, token_at in tokenized(examples, tokenizer, max_length):
        site, evidence = token_at(example.site[0]), _tokens(token_at, example.declaration)
        choices = [_tokens(token_at, span) for span in example.type_spans]
        if site <= 0 or not evidence or not all(choices):
            continue
        type_ids = [torch.tensor(sorted({ids[t] for t in choice}), dtype=torch.long) for choice in choices]
        if any(torch.equal(type_ids[example.right], other) for i, other in enumerate(type_ids) if i != example.right):
            continue  # two choices made of the same pieces cannot be told apart by their scores
        rows.append(TypeRow(torch.tensor(ids), torch.tensor(links, dtype=torch.int16).reshape(len(ids), -1),
                            example.file, site, type_ids, example.right, tuple(evidence), _is_far(site, evidence)))
    return rows


def _tokens(token_at, span: Span) -> list[int]:
    """The tokens covering a character span (none when it is cut off)."""
    first, last = token_at(span[0]), token_at(span[1] - 1)
    return list(range(first, last + 1)) if first > 0 and last >= first else []


@dataclass
class TypeData:
    train: list[TypeRow]
    test: list[TypeRow]
    summary: dict


def prepare(settings, cache_dir: str, tokenizer, progress=print) -> TypeData:
    """The task's rows for the benchmark's data ``settings`` (a :class:`task_data.DataSettings`: corpus, split, lengths,
    sites) and its ``tokenizer``, cached in ``cache_dir`` beside the benchmark's own data."""
    text = json.dumps(dict(data=settings.key(), format=FORMAT), sort_keys=True)
    path = os.path.join(cache_dir, f"types-{hashlib.sha1(text.encode()).hexdigest()[:16]}.pt")
    if os.path.exists(path):
        return torch.load(path, weights_only=False)
    started = time.perf_counter()
    from task_data import read_corpus

    sources, train_files = read_corpus(settings)
    units = code_tasks.unique_units([unit for code, language, file in sources if language in TYPE_QUERIES
                                     for unit in code_tasks.function_units(code, language, file)])
    lengths = [len(ids) for ids in tokenizer([u.code for u in units], language=None)["input_ids"]] if units else []
    rng = random.Random(settings.seed)
    train = type_rows([e for u, n in zip(units, lengths) if u.file in train_files
                       and settings.min_unit_tokens <= n <= settings.max_length
                       for e in type_examples(u, rng, settings.train_sites, settings.far_chars,
                                              settings.train_far_share)], tokenizer, settings.max_length)
    test = type_rows([e for u, n in zip(units, lengths) if u.file not in train_files
                      and settings.test_min_tokens <= n <= settings.max_length
                      for e in type_examples(u, rng, settings.test_sites, settings.far_chars,
                                             settings.test_far_share)], tokenizer, settings.max_length)
    summary = dict(train=len(train), test=len(test), test_far=sum(r.far for r in test),
                   test_beyond_512=sum(r.site >= 512 for r in test),
                   choices=float(np.mean([len(r.type_ids) for r in test])) if test else 0.0,
                   seconds=round(time.perf_counter() - started, 1))
    data = TypeData(train, test, summary)
    os.makedirs(cache_dir, exist_ok=True)
    torch.save(data, path + ".part")
    os.replace(path + ".part", path)
    progress(f"declared types: {json.dumps(summary)}")
    return data


def missing_rows(data: TypeData) -> list[str]:
    """A message when the corpus gave no training or held-out question (as :func:`task_data.missing_rows`)."""
    empty = [side for side, rows in (("training", data.train), ("held-out", data.test)) if not rows]
    if not empty:
        return []
    return [f"types: no {' or '.join(empty)} rows; the corpus needs functions in {', '.join(LANGUAGES)} with locals "
            "declared with at least two different written types (held-out ones of at least test_min_tokens tokens)"]


# ---------------------------------------------------------------------------------------------- training, scoring

def _type_scores(logits: torch.Tensor, row: TypeRow) -> torch.Tensor:
    """``[choices]``: each declared type's score at the use, the mean of the masked-LM logits of its pieces."""
    return torch.stack([logits[ids].mean() for ids in row.type_ids])


def _batch(rows: list[TypeRow], pad_id: int) -> tuple[dict, torch.Tensor]:
    from task_training import pad_batch

    return pad_batch(rows, pad_id), torch.tensor([row.site for row in rows])


def finetune_types(encoder, head, rows: list[TypeRow], pad_id: int, steps: int, seed: int, batch_size: int = 8,
                   learning_rate: float = 1e-3, log=None) -> dict:
    """Fine-tune ``encoder`` and the pre-trained masked-LM ``head``: cross-entropy of the choices' scores at the use
    (:func:`_type_scores`) against the declared type."""
    from task_training import fit

    rng = random.Random(seed)
    encoder.train()

    def loss_of_step(step: int) -> torch.Tensor:
        chosen = rng.sample(rows, min(batch_size, len(rows)))
        batch, sites = _batch(chosen, pad_id)
        logits = head(encoder(**batch)[torch.arange(len(chosen)), sites])
        return torch.stack([F.cross_entropy(_type_scores(logits[i], row)[None], torch.tensor([row.right]))
                            for i, row in enumerate(chosen)]).mean()

    return fit([encoder, head], loss_of_step, steps, learning_rate, log)


@torch.no_grad()
def evaluate_types(encoder, head, rows: list[TypeRow], pad_id: int, batch_size: int = 16) -> dict:
    """Accuracy of the declared type at the use, overall and by bucket (the declaration far from the use or not; the
    use within the first 512 tokens or beyond), and chance (the mean of one over the choices)."""
    from task_training import by_bucket, share

    encoder.eval()
    outcomes = []
    for begin in range(0, len(rows), batch_size):
        chunk = rows[begin : begin + batch_size]
        batch, sites = _batch(chunk, pad_id)
        logits = head(encoder(**batch)[torch.arange(len(chunk)), sites])
        for i, row in enumerate(chunk):
            outcomes.append(dict(right=int(_type_scores(logits[i], row).argmax()) == row.right, far=row.far,
                                 beyond=row.site >= 512, chance=1.0 / len(row.type_ids)))
    result = dict(types=share(outcomes), chance=sum(o["chance"] for o in outcomes) / max(1, len(outcomes)),
                  examples=len(outcomes))
    result.update(by_bucket(outcomes, dict(types=share)))
    return result


@torch.no_grad()
def type_reach(encoder, rows: list[TypeRow], pad_id: int, batch_size: int = 16) -> dict:
    """For a SASA encoder, from its layout alone: the share of far questions whose use attends (its layout) to a
    token of the declaration's type, where the answer is written."""
    from task_training import pad_batch, share

    far = [row for row in rows if row.far]
    outcomes = []
    for begin in range(0, len(far), batch_size):
        chunk = far[begin : begin + batch_size]
        batch = pad_batch(chunk, pad_id)
        attends = encoder.model.layout(batch["input_ids"], batch["attention_mask"], batch["ast_links"]).token_mask()
        outcomes += [dict(reached=bool(attends[i, row.site, list(row.evidence)].any())) for i, row in enumerate(chunk)]
    return dict(types_far_reach=share(outcomes, "reached"), types_far_questions=len(outcomes))
