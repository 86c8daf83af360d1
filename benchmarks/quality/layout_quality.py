"""Layout quality: do SASA's blocks reach the far dependencies of real long code, and does a model learn more with them?

*Reach*: for every kind of far dependency (:mod:`far_dependencies`: data flow, call → definition, closing → opening
bracket, return → function), the share of far pairs whose key block is in the query block's layout, and the layout's
density, for layouts at equal budgets: window + global alone, each AST relation alone, today's four structural
relations, all relations, the default relations, the teacher-free top-k table, AST + top-k, random blocks (BigBird)
and the oracle (the best blocks for the data-flow pairs, which no model can know).

*Learned* (:mod:`mlm_probe`): a tiny SASA pre-trained from scratch with masked-LM per layout, 3 seeds; held-out
masked-token accuracy overall and on far tokens.

    python benchmarks/quality/layout_quality.py                          # reach + learned on the standard library
    python benchmarks/quality/layout_quality.py --quick                  # minutes: the plumbing on a few functions
    python benchmarks/quality/layout_quality.py --corpus code.jsonl 'src/**/*.java' --json out.json

Input: ``--corpus`` JSONL files (fields ``code`` and ``language``) or source files/globs (language from the
extension); default: long functions (400–2048 tokens) of this interpreter's standard library plus the test snippets
(every language). The teacher-free top-k table is cross-fitted: the corpus is dealt into four folds by file, and each
fold is measured with a table built from the other three.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from far_dependencies import KINDS, dependencies, far_pairs  # noqa: E402
from sasa import SasaConfig, SasaModel  # noqa: E402
from sasa.ast_languages import EXTENSIONS  # noqa: E402
from sasa.ast_relations import DEFAULT_RELATIONS, RELATIONS  # noqa: E402
from sasa.block_layout import (  # noqa: E402
    BlockLayout,
    ast_block_scores,
    build_layout,
    highest_scoring_blocks,
)

SNIPPETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "data", "snippets")
STRUCTURAL = ("statement", "parent", "sibling", "span")


@dataclass
class Source:
    code: str
    language: str
    name: str  # file (for the split) and function


@dataclass
class Example:
    source: Source
    input_ids: torch.Tensor  # [L]
    links: torch.Tensor  # [L, len(RELATIONS)]
    dependencies: dict[str, np.ndarray] = field(default_factory=dict)  # kind → [P, 2] (all, near and far)


@dataclass(frozen=True)
class LayoutSpec:
    """One row: which patterns fill the extra budget (``relations``: AST relations scored, by ``score``)."""

    name: str
    relations: tuple[str, ...] = ()
    ast_blocks: int = 0
    topk_blocks: int = 0
    random_blocks: int = 0
    oracle_blocks: int = 0
    score: str = "count"  # "count": links between the blocks (the model's rule, ast_block_scores with reverse_weight);
    # "per relation": each relation's votes over the free blocks normalised to 1; "share": relations take turns
    # picking their best free block
    reverse_weight: float = SasaConfig().ast_reverse_weight  # links counted backwards (1: both directions equally)
    topk_source: str = SasaConfig().topk_source  # "input" (the tokens blocks share) or "table" (cross-fitted table)
    matchable: str = "identifiers"  # ids the input source matches: the tokenizer's identifiers, or "every id"


def standard_library_sources(min_chars: int = 1600) -> list[Source]:
    from sasa.stdlib_corpus import documented_functions

    return [Source(f.code, "python", f"{f.path}::{f.name}") for f in documented_functions(min_chars)]


def snippet_sources() -> list[Source]:
    return read_sources([os.path.join(SNIPPETS, "*")])


def read_sources(patterns: list[str]) -> list[Source]:
    """``.jsonl`` records (``code``, ``language``, optional ``name``) or whole source files (language by extension)."""
    sources = []
    for pattern in patterns:
        paths = sorted(glob.glob(pattern, recursive=True)) or [pattern]
        for path in paths:
            if not os.path.isfile(path):
                raise SystemExit(f"--corpus: {path} is not a file")
            if path.endswith(".jsonl"):
                with open(path, encoding="utf-8") as handle:
                    for number, line in enumerate(handle, 1):
                        if line.strip():
                            record = json.loads(line)
                            if "code" not in record or "language" not in record:
                                raise SystemExit(f"{path}:{number}: a record needs 'code' and 'language' fields")
                            sources.append(Source(record["code"], record["language"],
                                                  record.get("name", f"{path}:{number}")))
                continue
            language = EXTENSIONS.get(os.path.splitext(path)[1].lower())
            if language is None:
                raise SystemExit(f"--corpus: cannot tell the language of {path} from its extension")
            with open(path, encoding="utf-8", errors="replace") as handle:
                sources.append(Source(handle.read(), language, path))
    return sources


def folds(sources: list[Source], count: int = 4) -> list[list[Source]]:
    """The sources in ``count`` folds by file (the name before ``::``), files dealt out in sorted order."""
    files = sorted({s.name.split("::")[0] for s in sources})
    fold_of = {name: index % count for index, name in enumerate(files)}
    return [[s for s in sources if fold_of[s.name.split("::")[0]] == fold] for fold in range(count)]


def prepare(sources: list[Source], tokenizer, min_tokens: int, max_tokens: int) -> list[Example]:
    """Tokenize with every relation, find the dependencies; keep sources of ``min_tokens``..``max_tokens`` tokens
    (longer ones are cut to ``max_tokens``)."""
    examples = []
    for source in sources:
        encoding = tokenizer(source.code, language=source.language, truncation=True, max_length=max_tokens,
                             return_offsets_mapping=True)
        if len(encoding["input_ids"]) < min_tokens:
            continue
        spans = [tuple(span) for span in encoding["offset_mapping"]]
        examples.append(Example(source, torch.tensor(encoding["input_ids"]), torch.tensor(encoding["ast_links"]),
                                dependencies(source.code, spans, source.language)))
    return examples


def _padded(tensor: torch.Tensor, length: int, value: int) -> torch.Tensor:
    """``tensor`` (``[L]`` or ``[L, R]``) padded along its first axis to ``length`` with ``value``."""
    extra = length - tensor.shape[0]
    return torch.nn.functional.pad(tensor, (0, extra) if tensor.dim() == 1 else (0, 0, 0, extra), value=value)


def relation_scores(links: torch.Tensor, spec: LayoutSpec, free: torch.Tensor, block_size: int) -> torch.Tensor:
    """``[1, n, n]`` AST block scores of the spec's relations (``links`` has every relation's column)."""
    columns = [RELATIONS.index(r) for r in spec.relations]
    score, budget = spec.score, spec.ast_blocks
    if score == "count":
        return ast_block_scores(links[None, :, columns], block_size, spec.reverse_weight)
    votes = [ast_block_scores(links[None, :, [column]], block_size, spec.reverse_weight) * free
             for column in columns]
    if score == "per relation":  # each relation's votes over the blocks still free sum to 1 per query block
        return sum(v / v.sum(-1, keepdim=True).clamp(min=1) for v in votes)
    if score == "share":  # relations take turns: each picks its best block still free, in the order given
        order = torch.zeros(free.shape)
        available = free.clone()
        for turn in range(budget * len(votes)):
            pick = highest_scoring_blocks(votes[turn % len(votes)], 1, available & (order == 0))
            order += pick * (budget * len(votes) - turn)  # earlier turns score higher
            available &= ~pick
        return order
    raise ValueError(f"unknown score {score!r}")


def oracle_scores(pairs: np.ndarray, num_blocks: int, block_size: int) -> torch.Tensor:
    scores = torch.zeros(1, num_blocks, num_blocks)
    for query, key in pairs:
        scores[0, query // block_size, key // block_size] += 1
    return scores


def layout_model(spec: LayoutSpec, args, tokenizer) -> SasaModel:
    """A SASA model (tiny width: only its layout is used) whose config holds ``spec``'s layout, so every layout is
    built by the model's own code; its input top-k source matches the tokenizer's identifiers (or every id)."""
    from sasa.frequency import install_identifier_tokens

    config = SasaConfig(vocab_size=len(tokenizer), hidden_size=8, num_hidden_layers=1, num_attention_heads=1,
                        intermediate_size=8, max_position_embeddings=args.max_tokens + args.block_size + 2,
                        block_size=args.block_size, window_radius=args.window_radius,
                        num_global_blocks=args.num_global_blocks, num_topk_blocks=spec.topk_blocks,
                        topk_source=spec.topk_source, num_ast_blocks=spec.ast_blocks,
                        ast_reverse_weight=spec.reverse_weight, num_random_blocks=spec.random_blocks,
                        random_seed=args.seed)
    model = SasaModel(config).eval()
    if spec.matchable == "identifiers":
        install_identifier_tokens(model, tokenizer)
    return model


@torch.no_grad()
def layout_of(example: Example, spec: LayoutSpec, model, table) -> BlockLayout:
    """``example``'s layout under ``spec``: the model's own for link counts (``score="count"``); the research
    alternatives (per-relation votes, turns, the oracle) replace only its AST scores."""
    config = model.config
    if spec.topk_blocks and spec.topk_source == "table":
        model.set_frequency_table(*table)  # the table cross-fitted for this example's fold
    links = example.links[None][..., [RELATIONS.index(r) for r in spec.relations]] if spec.relations else None
    if spec.score == "count" and not spec.oracle_blocks:
        return model.layout(example.input_ids[None], ast_links=links)
    size = config.block_size
    length = -(-example.input_ids.shape[0] // size) * size
    input_ids = _padded(example.input_ids, length, 1)[None]
    token_valid = torch.arange(length)[None] < example.input_ids.shape[0]
    free = ~build_layout(token_valid, size, config.window_radius, config.num_global_blocks).block_mask
    if spec.oracle_blocks:
        ast_scores, ast_blocks = oracle_scores(example.dependencies["data flow"], length // size, size), spec.oracle_blocks
    else:
        ast_scores, ast_blocks = relation_scores(_padded(example.links, length, -1), spec, free, size), spec.ast_blocks
    topk_scores = model.frequency_table.block_scores(input_ids, token_valid, config) if spec.topk_blocks else None
    return build_layout(token_valid, size, config.window_radius, config.num_global_blocks, spec.topk_blocks,
                        ast_blocks, 0, topk_scores, ast_scores)


def reach(examples: list[Example], tables: list, specs: list[LayoutSpec], args, tokenizer) -> list[dict]:
    """One row per layout: far-pair recall per kind (pooled over the corpus), their count, and the density.
    ``tables[i]``: the top-k table ``(ids, weights)`` example ``i`` is measured with."""
    rows = []
    far_blocks = [{kind: far_pairs(example.dependencies[kind], args.block_size, args.window_radius,
                                   args.num_global_blocks) // args.block_size for kind in KINDS}
                  for example in examples]  # the same for every layout
    for spec in specs:
        model = layout_model(spec, args, tokenizer)
        covered = dict.fromkeys(KINDS, 0)
        total = dict.fromkeys(KINDS, 0)
        selected = pairs = 0
        for example, table, far in zip(examples, tables, far_blocks):
            layout = layout_of(example, spec, model, table)
            mask = layout.block_mask[0]
            real = int(layout.real_blocks.sum())
            selected += int(mask.sum())
            pairs += real * real
            for kind in KINDS:
                total[kind] += len(far[kind])
                if len(far[kind]):
                    covered[kind] += int(mask[far[kind][:, 0], far[kind][:, 1]].sum())
        recall = {kind: covered[kind] / total[kind] if total[kind] else float("nan") for kind in KINDS}
        rows.append(dict(layout=spec.name, recall=recall, far_pairs=total, density=selected / max(pairs, 1),
                         spec=spec.__dict__))
    return rows


def reach_specs(budget: int) -> list[LayoutSpec]:
    """The layouts compared, each with ``budget`` extra blocks per query block except where its name says."""
    default = SasaConfig()  # the default split of the extra blocks between AST and top-k
    ast, topk, reverse = default.num_ast_blocks, default.num_topk_blocks, default.ast_reverse_weight
    specs = [LayoutSpec("window + global (no extra blocks)")]
    specs += [LayoutSpec(f"AST {budget}: {name}", (name,), ast_blocks=budget) for name in RELATIONS]
    specs += [
        LayoutSpec(f"AST {budget}: statement+parent+sibling+span, both directions (old default)", STRUCTURAL,
                   ast_blocks=budget, reverse_weight=1.0),
        LayoutSpec(f"AST {budget}: all relations", RELATIONS, ast_blocks=budget),
        LayoutSpec(f"AST {budget}: default relations", DEFAULT_RELATIONS, ast_blocks=budget),
        LayoutSpec(f"AST {ast}: default relations, reverse weight {reverse} (the default layout's AST blocks alone)",
                   DEFAULT_RELATIONS, ast_blocks=ast),
        LayoutSpec(f"AST {ast}: default relations, forward links only", DEFAULT_RELATIONS, ast_blocks=ast,
                   reverse_weight=0.0),
        LayoutSpec(f"AST {ast}: default relations, reverse weight 0.5", DEFAULT_RELATIONS, ast_blocks=ast,
                   reverse_weight=0.5),
        LayoutSpec(f"AST {ast}: default relations, both directions equally", DEFAULT_RELATIONS, ast_blocks=ast,
                   reverse_weight=1.0),
        LayoutSpec(f"AST {ast}: default relations, per-relation votes", DEFAULT_RELATIONS, ast_blocks=ast,
                   score="per relation"),
        LayoutSpec(f"AST {ast}: default relations, budget shared by turns", DEFAULT_RELATIONS, ast_blocks=ast,
                   score="share"),
        LayoutSpec(f"top-k {budget}: input source (shared identifiers, the default source)", topk_blocks=budget),
        LayoutSpec(f"top-k {budget}: input source over every id", topk_blocks=budget, matchable="every id"),
        LayoutSpec(f"top-k {budget}: teacher-free table (sasa topk --files)", topk_blocks=budget,
                   topk_source="table"),
        LayoutSpec(f"AST {ast} + top-k {topk}, input source (default layout)", DEFAULT_RELATIONS, ast_blocks=ast,
                   topk_blocks=topk),
        LayoutSpec(f"AST {ast} + top-k {topk}, input source over every id", DEFAULT_RELATIONS, ast_blocks=ast,
                   topk_blocks=topk, matchable="every id"),
        LayoutSpec(f"AST {ast} + top-k {topk}, teacher-free table", DEFAULT_RELATIONS, ast_blocks=ast,
                   topk_blocks=topk, topk_source="table"),
        LayoutSpec(f"random {budget} (BigBird)", random_blocks=budget),
        LayoutSpec(f"oracle {budget} (best blocks for data flow)", oracle_blocks=budget),
    ]
    return specs


def print_reach(rows: list[dict]) -> None:
    width = max(len(r["layout"]) for r in rows)
    header = "".join(f"{kind:>20}" for kind in KINDS)
    print(f"{'layout':<{width}}{header}{'density':>9}")
    for row in rows:
        cells = "".join(f"{row['recall'][kind]:>20.3f}" for kind in KINDS)
        print(f"{row['layout']:<{width}}{cells}{row['density']:>9.3f}")
    counts = ", ".join(f"{kind} {rows[0]['far_pairs'][kind]}" for kind in KINDS)
    print(f"far pairs measured: {counts}")


def learned(quick: bool, seeds: list[int]) -> dict:
    """The learned measurement (:mod:`mlm_probe`: every layout, ``seeds``; ``quick``: one seed, a few steps), as the
    JSON it writes: ``runs`` (one per layout and seed) and ``summary`` (mean, std over seeds per layout)."""
    import mlm_probe

    with tempfile.TemporaryDirectory() as scratch:
        path = os.path.join(scratch, "learned.json")
        mlm_probe.main((["--quick"] if quick else []) + ["--seeds", *map(str, seeds), "--json", path])
        with open(path) as handle:
            return json.load(handle)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", nargs="+", help="JSONL (code, language) or source files/globs")
    parser.add_argument("--tokenizer", help="vocab.json + merges.txt folder (default: a BPE trained on the stdlib)")
    parser.add_argument("--min-tokens", type=int, default=400)
    parser.add_argument("--max-tokens", type=int, default=2048)
    parser.add_argument("--block-size", type=int, default=32)
    parser.add_argument("--window-radius", type=int, default=1)
    parser.add_argument("--num-global-blocks", type=int, default=1)
    parser.add_argument("--budget", type=int, default=3, help="extra blocks per query block")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="a few functions, the plumbing only")
    parser.add_argument("--reach-only", action="store_true", help="skip the learned measurement")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of the learned runs")
    parser.add_argument("--json", help="write every row to this JSON file")
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)

    from sasa import SasaTokenizer
    from sasa.frequency import identifier_frequency_table

    started = time.perf_counter()
    if args.corpus:
        sources = read_sources(args.corpus)[: 48 if args.quick else None]
    else:
        sources = standard_library_sources()[: 40 if args.quick else None] + snippet_sources()
    with tempfile.TemporaryDirectory() as scratch:
        if args.tokenizer:
            tokenizer = SasaTokenizer.from_pretrained(args.tokenizer, ast_relations=RELATIONS)
        else:
            from sasa.demo import stdlib_tokenizer

            stdlib_tokenizer(scratch, files=60 if args.quick else 300)
            tokenizer = SasaTokenizer.from_pretrained(scratch, ast_relations=RELATIONS)
    examples, tables = [], []
    for fold in folds(sources):
        others = [s for s in sources if s not in fold]
        table = identifier_frequency_table((s.code for s in others), tokenizer, progress=False)[:2]
        prepared = prepare(fold, tokenizer, 0 if args.quick else args.min_tokens, args.max_tokens)
        examples += prepared
        tables += [table] * len(prepared)
    tokens = sum(e.input_ids.shape[0] for e in examples)
    print(f"reach: {len(examples)} sources ({tokens} tokens, languages "
          f"{sorted({e.source.language for e in examples})}), block {args.block_size}, window radius "
          f"{args.window_radius}, {args.num_global_blocks} global, {args.budget} extra blocks; top-k tables "
          "cross-fitted over 4 folds")
    rows = reach(examples, tables, reach_specs(args.budget), args, tokenizer)
    print_reach(rows)
    languages = sorted({e.source.language for e in examples})
    result = dict(arguments=vars(args), reach=rows, languages=[
        dict(language=name, sources=sum(e.source.language == name for e in examples),
             tokens=sum(e.input_ids.shape[0] for e in examples if e.source.language == name)) for name in languages])
    if not args.reach_only:
        print("\nlearned:", flush=True)
        result["learned"] = learned(args.quick, args.seeds)
    result["seconds"] = time.perf_counter() - started
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
