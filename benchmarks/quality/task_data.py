"""The task benchmark's data, tokenized: pre-training pieces, variable-misuse rows and code-search rows, split by file.

:func:`prepare` reads a corpus (the running interpreter's standard library by default; ``--corpus`` files, globs or
JSONL in any language SASA parses), trains a byte-level BPE on the training files, cuts the functions
(:mod:`code_tasks`) and turns every example into token positions. The result is cached on disk by its settings, so
every encoder and seed of a run (each in its own process) reads the same data.

Token conventions (the learned probe's recipe, :mod:`mlm_probe`, for every encoder alike): each token's *type* is its
left neighbour's id, so copying a name from where the same context occurred is one attention hop; the variable-misuse
rows mark nothing else. Positions are token indices of the sequence with ``<s>`` at 0.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
import time
from dataclasses import asdict, dataclass, field

import torch

import code_tasks

#: The window every far bucket is defined against (SASA's default: blocks of 32, radius 1, 1 global block).
BLOCK, RADIUS, GLOBAL = 32, 1, 1
#: Part of the cache key: bump it when the prepared data's format or content changes.
FORMAT = 3


@dataclass(frozen=True)
class DataSettings:
    """Everything the prepared data depends on (the cache key)."""

    corpus: tuple[str, ...] = ()  # files/globs/JSONL; empty: the standard library
    limit_sources: int | None = None  # read only the first N source files (quick runs)
    vocab_size: int = 4000
    max_length: int = 1024  # tokens per sequence, <s> and </s> included
    min_unit_tokens: int = 256  # shorter functions are not used for variable misuse
    test_min_tokens: int = 512  # held-out misuse units are at least this long (bugs beyond 512 exist)
    train_sites: int = 6  # bug sites per training function (each with its bug-free copy)
    test_sites: int = 4  # bug sites per held-out function
    far_chars: int = 400  # sites whose evidence is farther are sampled first (far_share of them)
    train_far_share: float = 0.5
    test_far_share: float = 0.8
    search_min_tokens: int = 128  # code-search functions (documented) at least this long
    test_every: int = 4  # a quarter of the files held out
    seed: int = 0

    def key(self) -> str:
        text = json.dumps(dict(asdict(self), format=FORMAT), sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:16]


@dataclass
class Sequence:
    """One tokenized sequence: ids, AST links ([L, R]), and its language and file."""

    input_ids: torch.Tensor
    ast_links: torch.Tensor
    file: str


@dataclass
class MisuseRow(Sequence):
    buggy: bool = False
    site: int = 0  # token of the (replaced) use
    site_end: int = 0  # one past the use's last token (a name may span several pieces)
    repairs: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))  # tokens of the right var
    candidates: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))  # every variable token
    evidence_tokens: int = 0  # tokens from the site to the nearest repair token
    far: bool = False  # every repair token lies outside the site's window blocks and the global block
    variable_ids: list[torch.Tensor] = field(default_factory=list)  # per local variable: the token ids it starts with
    right_variable: int = 0  # index into variable_ids of the variable that belongs at the site


@dataclass
class SearchRow:
    code: Sequence
    query: torch.Tensor  # the query's ids (no AST links)


@dataclass
class TaskData:
    settings: DataSettings
    tokenizer_dir: str
    vocab_size: int
    pad_id: int
    mask_id: int
    identifier: torch.Tensor  # [V] bool: identifier-like ids (masked by the pre-training, matched by SASA's top-k)
    pretrain: list[Sequence]
    pretrain_candidates: list[torch.Tensor]  # [L] bool per piece: identifier pieces that recur (maskable)
    misuse_train: list[MisuseRow]
    misuse_test: list[MisuseRow]
    search_train: list[SearchRow]
    search_test: list[SearchRow]
    summary: dict


def _train_tokenizer(texts: list[str], directory: str, vocab_size: int):
    from tokenizers import ByteLevelBPETokenizer

    from sasa import SasaTokenizer

    with tempfile.TemporaryDirectory() as scratch:
        paths = []
        for index in range(0, len(texts), 200):
            path = os.path.join(scratch, f"{index}.txt")
            with open(path, "w", encoding="utf-8", errors="replace") as handle:
                handle.write("\n".join(texts[index : index + 200]))
            paths.append(path)
        trainer = ByteLevelBPETokenizer()
        trainer.train(paths, vocab_size=vocab_size, min_frequency=2, show_progress=False,
                      special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    os.makedirs(directory, exist_ok=True)
    trainer.save_model(directory)
    return SasaTokenizer.from_pretrained(directory)


def _token_finder(offsets: list[tuple[int, int]]):
    """A function from a character offset to the token whose span holds it (``-1``: cut off, or between tokens)."""
    import numpy as np

    spans = np.array(offsets, dtype=np.int64).reshape(-1, 2)
    empty = spans[:, 1] <= spans[:, 0]  # special tokens: (0, 0)
    starts = np.maximum.accumulate(np.where(empty, 0, spans[:, 0]))
    ends = np.where(empty, starts, spans[:, 1])

    def token_at(char: int) -> int:
        index = int(np.searchsorted(starts, char, "right")) - 1
        while index > 0 and ends[index] <= char and starts[index] == starts[index - 1]:
            index -= 1  # an empty special token shares the start of the token before it
        return index if index >= 0 and starts[index] <= char < ends[index] else -1

    return token_at


def _is_far(site: int, repairs: list[int]) -> bool:
    block = site // BLOCK
    return block >= GLOBAL and all(abs(r // BLOCK - block) > RADIUS and r // BLOCK >= GLOBAL for r in repairs)


def tokenized(examples: list, tokenizer, max_length: int):
    """Each example's ``code`` tokenized in its ``language`` (with AST links, cut at ``max_length``), 64 at a time:
    yields ``(example, ids, links, token_at)``, ``token_at`` mapping a character offset to its token."""
    for start in range(0, len(examples), 64):
        chunk = examples[start : start + 64]
        encoding = tokenizer([e.code for e in chunk], language=[e.language for e in chunk], truncation=True,
                             max_length=max_length, return_offsets_mapping=True)
        for example, ids, links, offsets in zip(chunk, encoding["input_ids"], encoding["ast_links"],
                                                encoding["offset_mapping"]):
            yield example, ids, links, _token_finder(offsets)


def misuse_rows(examples: list[code_tasks.MisuseExample], tokenizer, max_length: int) -> list[MisuseRow]:
    """Tokenize variable-misuse examples; a row needs its site and at least one repair inside ``max_length``."""
    rows = []
    for example, ids, links, token_at in tokenized(examples, tokenizer, max_length):
        site = token_at(example.site[0])
        site_end = token_at(example.site[1] - 1) + 1
        repairs = sorted({t for t in map(token_at, (s for s, _ in example.repairs)) if t > 0})
        candidates = sorted({t for t in map(token_at, (s for s, _ in example.candidates)) if t > 0})
        if site <= 0 or site_end <= site or not repairs:
            continue
        variable_ids = [torch.tensor(sorted({ids[t] for t in map(token_at, (s for s, _ in spans)) if t > 0}),
                                     dtype=torch.long) for spans in example.variables]
        if not len(variable_ids[example.right_variable]):
            continue
        rows.append(MisuseRow(torch.tensor(ids), torch.tensor(links, dtype=torch.int16).reshape(len(ids), -1),
                              example.file, example.buggy, site, site_end, torch.tensor(repairs),
                              torch.tensor(candidates), min(abs(r - site) for r in repairs), _is_far(site, repairs),
                              variable_ids, example.right_variable))
    return rows


#: What each task reads of the prepared data (training rows, held-out rows), and what a corpus must hold for it.
NEEDS = {
    "pretraining": ("pretrain", "pretrain", "training files that cut into pieces of at least half the maximum "
                                            "length with identifier pieces that recur"),
    "misuse": ("misuse_train", "misuse_test", "functions with a local variable used twice or more (held-out ones "
                                              "of at least test_min_tokens tokens)"),
    "repair": ("misuse_train", "misuse_test", "functions with a local variable used twice or more (held-out ones "
                                              "of at least test_min_tokens tokens)"),
    "completion": ("misuse_test", "misuse_test", "held-out functions of at least test_min_tokens tokens with a local "
                                                 "variable used twice or more"),
    "search": ("search_train", "search_test", "documented functions (a docstring, or a comment before the function) "
                                              "of at least search_min_tokens tokens"),
}


def missing_rows(data: TaskData, tasks: list[str] | tuple[str, ...]) -> list[str]:
    """One message per asked task (pre-training always) that the prepared data has no training or held-out rows for,
    naming what the corpus lacks; empty when every task can run."""
    problems = []
    for task in ("pretraining", *tasks):
        train, test, what = NEEDS[task]
        empty = [side for side, attribute in (("training", train), ("held-out", test)) if not getattr(data, attribute)]
        if empty:
            problems.append(f"{task}: no {' or '.join(empty)} rows; the corpus needs {what}")
    return problems


def load_tokenizer(data: TaskData):
    """The tokenizer ``data`` was prepared with."""
    from sasa import SasaTokenizer

    return SasaTokenizer.from_pretrained(data.tokenizer_dir)


@dataclass(frozen=True)
class CompletionSite:
    """One name to complete: in ``unit`` (an index into :attr:`TaskData.misuse_test`, a bug-free row), the name
    occupying tokens ``start``..``end`` (two pieces or more); its first piece stays visible (typed), the rest is to be
    predicted. ``far``: every other occurrence of the same name lies outside the site's window blocks."""

    unit: int
    start: int
    end: int
    far: bool
    evidence: tuple[int, ...]  # the first tokens of the name's other occurrences

    @property
    def evidence_tokens(self) -> int:
        """Tokens from the site to the nearest other occurrence of the name."""
        return min(abs(other - self.start) for other in self.evidence)


def completion_sites(rows: list[MisuseRow], tokenizer, per_unit: int = 12, seed: int = 0) -> list[CompletionSite]:
    """Name-completion sites of the bug-free held-out units (each unit once, however many bug-free copies it has):
    every use of a local variable whose name has two pieces or more and occurs again in the unit (the evidence),
    up to ``per_unit`` per unit, sites with far evidence first. Occurrences are every word of the unit
    (:func:`sasa.masking.word_ids`) with the same text, whatever its pieces (`` name`` after a space and ``name``
    after a bracket are tokenized apart) and whatever it names (an attribute of the same name is evidence too)."""
    from sasa.masking import MaskingVocabulary, word_ids

    vocabulary = MaskingVocabulary.from_tokenizer(tokenizer)
    text_of = [piece.lstrip("\u0120") for piece in tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))]
    rng = random.Random(seed)
    sites, seen = [], set()
    for index, row in enumerate(rows):
        identity = (row.file, hashlib.sha1(row.input_ids.numpy().tobytes()).hexdigest())
        if row.buggy or identity in seen:
            continue
        seen.add(identity)
        words = word_ids(row.input_ids, vocabulary)
        starts = torch.ones(len(words), dtype=torch.bool)
        starts[1:] = words[1:] != words[:-1]
        begin = starts.nonzero()[:, 0].tolist()
        ends = begin[1:] + [len(words)]
        ids = row.input_ids.tolist()
        name_at = {start: "".join(text_of[i] for i in ids[start:end]) for start, end in zip(begin, ends)}
        occurrences: dict[str, list[int]] = {}
        for start, name in name_at.items():
            occurrences.setdefault(name, []).append(start)
        end_of = dict(zip(begin, ends))
        found = []
        for start in sorted(set(row.candidates.tolist())):
            end = end_of.get(start)
            if end is None or end - start < 2:
                continue
            others = [o for o in occurrences[name_at[start]] if o != start]
            if others:
                found.append(CompletionSite(index, start, end, _is_far(start, others), tuple(others)))
        rng.shuffle(found)
        found.sort(key=lambda site: not site.far)
        sites.extend(found[:per_unit])
    return sites


def _pieces(sources: list[tuple[str, str, str]], tokenizer, max_length: int) -> list[tuple[str, str, str]]:
    """Whole files cut at line boundaries into pieces of at most ``max_length`` tokens (pre-training data)."""
    pieces = []
    budget = max_length - 2
    for code, language, file in sources:
        lines = code.splitlines(keepends=True)
        if not lines:
            continue
        sizes = [len(ids) for ids in tokenizer(lines, language=None, add_special_tokens=False)["input_ids"]]
        current, used = [], 0
        for line, size in zip(lines + [None], sizes + [budget + 1]):
            if current and (line is None or used + size > budget):
                if used >= budget // 2:
                    pieces.append(("".join(current), language, file))
                current, used = [], 0
            if line is not None and size <= budget:
                current.append(line)
                used += size
    return pieces


def read_corpus(settings: DataSettings) -> tuple[list[tuple[str, str, str]], set[str]]:
    """The corpus's ``(code, language, file)`` sources (``settings.corpus``, else the standard library; the first
    ``limit_sources``), and the files of its training side: every task splits by file, the same way."""
    sources = (code_tasks.read_sources(list(settings.corpus)) if settings.corpus
               else code_tasks.standard_library_sources())[: settings.limit_sources]
    train, _ = code_tasks.split_by_file(
        [code_tasks.Unit(code, language, file, file, ()) for code, language, file in sources], settings.test_every)
    return sources, {unit.file for unit in train}


def prepare(settings: DataSettings, cache_dir: str, progress=print) -> TaskData:
    """The benchmark's data for ``settings``, from ``cache_dir`` when prepared before (see the module docstring)."""
    path = os.path.join(cache_dir, f"data-{settings.key()}.pt")
    tokenizer_dir = os.path.join(os.path.abspath(cache_dir), f"tokenizer-{settings.key()}")
    if os.path.exists(path):
        data = torch.load(path, weights_only=False)
        data.tokenizer_dir = tokenizer_dir  # beside the data, wherever the run starts from (a cache may hold it relative)
        return data
    started = time.perf_counter()
    from sasa.frequency import identifier_vocabulary
    from sasa.masking import copy_candidates

    sources, train_files = read_corpus(settings)
    train_sources = [source for source in sources if source[2] in train_files]
    tokenizer = _train_tokenizer([code for code, _, _ in train_sources], tokenizer_dir, settings.vocab_size)
    identifier = identifier_vocabulary(tokenizer)

    units = code_tasks.unique_units([unit for code, language, file in sources
                                     for unit in code_tasks.function_units(code, language, file)])
    lengths = [len(ids) for ids in tokenizer([u.code for u in units], language=None)["input_ids"]]
    train_units = [u for u, n in zip(units, lengths) if u.file in train_files]
    test_units = [u for u, n in zip(units, lengths) if u.file not in train_files]
    length_of = {u.name: n for u, n in zip(units, lengths)}
    rng = random.Random(settings.seed)
    misuse_train = misuse_rows(
        [e for u in train_units if settings.min_unit_tokens <= length_of[u.name] <= settings.max_length
         for e in code_tasks.misuse_examples(u, rng, settings.train_sites, settings.far_chars,
                                             settings.train_far_share)], tokenizer, settings.max_length)
    misuse_test = misuse_rows(
        [e for u in test_units if settings.test_min_tokens <= length_of[u.name] <= settings.max_length
         for e in code_tasks.misuse_examples(u, rng, settings.test_sites, settings.far_chars,
                                             settings.test_far_share)], tokenizer, settings.max_length)

    def search_rows(selected: list[code_tasks.Unit]) -> list[SearchRow]:
        pairs = code_tasks.search_pairs([u for u in selected if length_of[u.name] >= settings.search_min_tokens])
        if not pairs:  # undocumented code: no code-search rows (a task that needs them says so, missing_rows)
            return []
        code = tokenizer([p.code for p in pairs], language=[p.language for p in pairs], truncation=True,
                         max_length=settings.max_length)
        queries = tokenizer([p.query for p in pairs], language=None, truncation=True, max_length=64)
        return [SearchRow(Sequence(torch.tensor(ids), torch.tensor(links, dtype=torch.int16).reshape(len(ids), -1),
                                   p.file), torch.tensor(query))
                for p, ids, links, query in zip(pairs, code["input_ids"], code["ast_links"], queries["input_ids"])]

    pieces = _pieces(train_sources, tokenizer, settings.max_length)
    encoded = tokenizer([p[0] for p in pieces], language=[p[1] for p in pieces], truncation=True,
                        max_length=settings.max_length) if pieces else dict(input_ids=[], ast_links=[])
    pretrain, candidates = [], []
    for (_, _, file), ids, links in zip(pieces, encoded["input_ids"], encoded["ast_links"]):
        ids = torch.tensor(ids)
        maskable = copy_candidates(ids, identifier)
        if maskable.any():
            pretrain.append(Sequence(ids, torch.tensor(links, dtype=torch.int16).reshape(len(ids), -1), file))
            candidates.append(maskable)
    buggy_test = [r for r in misuse_test if r.buggy]
    summary = dict(
        sources=len(sources), files_train=len(train_files), files_test=len(sources) - len(train_files),
        languages=sorted({language for _, language, _ in sources}), functions=len(units),
        pretrain_pieces=len(pretrain), pretrain_tokens=sum(len(s.input_ids) for s in pretrain),
        misuse_train=len(misuse_train), misuse_test=len(misuse_test), misuse_test_buggy=len(buggy_test),
        misuse_test_far=sum(r.far for r in buggy_test), misuse_test_beyond_512=sum(r.site >= 512 for r in buggy_test),
        search_train=len(search_rows_train := search_rows(train_units)), search_test=0,
    )
    search_test = search_rows(test_units)
    summary["search_test"] = len(search_test)
    summary["seconds"] = round(time.perf_counter() - started, 1)
    data = TaskData(settings, tokenizer_dir, len(tokenizer), tokenizer.pad_token_id, tokenizer.mask_token_id,
                    identifier, pretrain, candidates, misuse_train, misuse_test, search_rows_train, search_test,
                    summary)
    os.makedirs(cache_dir, exist_ok=True)
    torch.save(data, path)
    progress(f"data: {json.dumps(summary)}")
    return data
