"""Long-code tasks generated from real code, with labels correct by construction: the task benchmark's data.

* :func:`function_units`: the outermost functions and methods of a source file (any language SASA parses), each with
  its local variables (names that have a definition inside the function: parameters, assignments, declarators; from
  the tree-sitter queries of :mod:`sasa.ast_languages`) and every occurrence of them.
* :func:`misuse_examples` (variable misuse: GREAT, ICLR 2020; CuBERT): one use of a local variable replaced by another
  local variable defined before that point; the bug-free copy is the original. Labels: where the bug is, which
  variable belongs there and where its other occurrences are, and how far the nearest of them lies.
* :func:`search_pairs` (code search): a function whose documentation is cut out of it, and the documentation's first
  paragraph as the query.

Everything is in characters of the unit's text; :mod:`task_quality` turns spans into token positions.
"""

from __future__ import annotations

import glob
import hashlib
import os
import random
import re
from dataclasses import dataclass, field

import numpy as np

from sasa.ast_languages import EXTENSIONS, get_parser, get_query, normalize_language
from sasa.ast_relations import char_to_byte_offsets

Span = tuple[int, int]  # [start, end) in characters


@dataclass(frozen=True)
class Variable:
    """A local variable of a unit: its name, every occurrence (sorted) and which of them define it."""

    name: str
    occurrences: tuple[Span, ...]
    definitions: tuple[int, ...]  # indices into occurrences

    @property
    def introduced(self) -> int:
        """Where the variable is first defined (character offset)."""
        return self.occurrences[self.definitions[0]][0]


@dataclass(frozen=True)
class Unit:
    """A function or method cut from a source file, its indentation removed, with its local variables."""

    code: str
    language: str
    file: str  # the file it comes from: splits are by file
    name: str  # file:line
    variables: tuple[Variable, ...] = field(repr=False)
    doc: str | None = None  # the documentation's first paragraph (docstring or leading comment), if any
    doc_span: Span | None = None  # where a docstring sits inside ``code`` (Python), to be cut for code search


@dataclass(frozen=True)
class MisuseExample:
    """One variable-misuse example: ``code`` with one use of ``right`` replaced by ``wrong`` (``buggy``), or the
    original code (not ``buggy``; ``site`` and the rest then describe the use a bug would have replaced)."""

    code: str
    language: str
    file: str
    unit: str
    buggy: bool
    site: Span  # the (replaced) use in ``code``
    right: str  # the variable that belongs at the site
    wrong: str  # the variable a bug puts there
    repairs: tuple[Span, ...]  # the other occurrences of ``right`` in ``code``: pointing at any of them repairs it
    candidates: tuple[Span, ...]  # every occurrence of every local variable in ``code`` (what the pointers rank)
    evidence_chars: int  # characters from the site to the nearest other occurrence of ``right``
    variables: tuple[tuple[Span, ...], ...] = ()  # each local variable's occurrences in ``code``, the site left out
    right_variable: int = 0  # the index in ``variables`` of ``right``


def read_sources(patterns: list[str]) -> list[tuple[str, str, str]]:
    """``(code, language, file)`` from files/globs (language by extension) or ``.jsonl`` records with ``code`` and
    ``language`` (and optionally ``path``, the file a record comes from, for the split; else the line)."""
    import json

    sources = []
    for pattern in patterns:
        paths = sorted(glob.glob(pattern, recursive=True)) or [pattern]
        for path in paths:
            if os.path.isdir(path):
                continue
            if not os.path.isfile(path):
                raise SystemExit(f"--corpus: {path} is not a file")
            if path.endswith(".jsonl"):
                with open(path, encoding="utf-8") as handle:
                    for number, line in enumerate(handle, 1):
                        if not line.strip():
                            continue
                        record = json.loads(line)
                        if not isinstance(record.get("code"), str) or not record.get("language"):
                            raise SystemExit(f"{path}:{number}: a record needs a 'code' string and a 'language'")
                        sources.append((record["code"], normalize_language(record["language"]),
                                        record.get("path", f"{path}:{number}")))
                continue
            language = EXTENSIONS.get(os.path.splitext(path)[1].lower())
            if language is None:
                continue  # other files under a folder glob (README, data)
            with open(path, encoding="utf-8", errors="replace") as handle:
                sources.append((handle.read(), language, path))
    return sources


def standard_library_sources() -> list[tuple[str, str, str]]:
    """The running interpreter's standard library (tests excluded), as ``(code, "python", relative path)``."""
    import sysconfig

    from sasa.stdlib_corpus import stdlib_files

    root = sysconfig.get_paths()["stdlib"]
    sources = []
    for path in stdlib_files(root):
        with open(path, encoding="utf-8", errors="replace") as handle:
            sources.append((handle.read(), "python", os.path.relpath(path, root)))
    return sources


# ------------------------------------------------------------------------------------------------------------ units

COMMENTS = {"comment", "line_comment", "block_comment"}
DOC_MARKERS = re.compile(r"^\s*(/\*\*?|\*/|\*|//+|#+)\s?|\s*\*+/\s*$", re.MULTILINE)


def _captures(source: bytes, language: str) -> tuple[object, dict]:
    import tree_sitter

    tree = get_parser(language).parse(source)
    cursor = tree_sitter.QueryCursor(get_query(language, frozenset({"dataflow"})))
    return tree, cursor.captures(tree.root_node)


def _outermost(nodes: list) -> list:
    """The nodes not inside another node of the list, by start."""
    nodes = sorted(nodes, key=lambda n: (n.start_byte, -n.end_byte))
    kept, end = [], -1
    for node in nodes:
        if node.start_byte >= end:
            kept.append(node)
            end = node.end_byte
    return kept


def _leading_doc(node, source: bytes) -> str | None:
    """The first paragraph of the comment block right before ``node`` (nothing but whitespace between), if any."""
    comments, current = [], node.prev_sibling
    end = node.start_byte
    while current is not None and current.type in COMMENTS and not source[current.end_byte : end].strip():
        comments.insert(0, current)
        end = current.start_byte
        current = current.prev_sibling
    if not comments:
        return None
    text = DOC_MARKERS.sub("", "\n".join(c.text.decode("utf-8", "replace") for c in comments))
    return _first_paragraph(text)


def _first_paragraph(text: str) -> str | None:
    paragraph = " ".join(re.split(r"\n\s*\n", text.strip())[0].split())
    return paragraph if re.search(r"[A-Za-z]{3}", paragraph) else None


def _python_docstring(node) -> tuple[object | None, str | None]:
    """The docstring statement of a Python function node and its first paragraph."""
    body = node.child_by_field_name("body")
    first = body.named_children[0] if body is not None and body.named_children else None
    if first is None or first.type != "expression_statement" or [c.type for c in first.named_children] != ["string"]:
        return None, None
    text = first.text.decode("utf-8", "replace")
    return first, _first_paragraph(re.sub(r"^[rRbBuU]*('''|\"\"\"|'|\")|('''|\"\"\"|'|\")$", "", text.strip()))


def function_units(code: str, language: str, file: str) -> list[Unit]:
    """The outermost functions and methods of one source file, each with its local variables.

    A local variable is a name with a definition inside the function (``@def`` of the language's data-flow query:
    parameters, assignments, declarators, loop variables); its occurrences are the variable occurrences (``@name``,
    not member names ``a.x``, not ``self.x``/``this.x`` fields) of that name inside the function, nested functions
    and lambdas included. The unit's text runs from the start of the function's first line, with the function's own
    indentation removed from every line.
    """
    language = normalize_language(language)
    source = code.encode("utf-8", "surrogatepass")
    tree, captures = _captures(source, language)
    scopes = _outermost([n for n in captures.get("scope", []) if n.type != "lambda"])
    excluded = {(n.start_byte, n.end_byte) for name in ("member", "def.outer") for n in captures.get(name, [])}
    fields = [(n.start_byte, n.end_byte) for n in captures.get("field", [])]
    definitions = {(n.start_byte, n.end_byte) for n in captures.get("def", [])}
    names = sorted((n for n in captures.get("name", []) if (n.start_byte, n.end_byte) not in excluded
                    and not any(s <= n.start_byte and n.end_byte <= e for s, e in fields)),
                   key=lambda n: n.start_byte)
    starts = np.array([n.start_byte for n in names], dtype=np.int64)
    byte_of_char = char_to_byte_offsets(code)
    units = []
    for scope in scopes:
        line_start = source.rfind(b"\n", 0, scope.start_byte) + 1
        indent = scope.start_byte - line_start
        if source[line_start : scope.start_byte].strip():
            continue  # the function does not start its line (e.g. a one-line lambda assignment)
        first_char, last_char = (int(np.searchsorted(byte_of_char, b)) for b in (line_start, scope.end_byte))
        text, char_map = _dedent(code[first_char:last_char], indent)
        inside = names[np.searchsorted(starts, scope.start_byte) : np.searchsorted(starts, scope.end_byte)]
        by_name: dict[str, list] = {}
        for node in inside:
            by_name.setdefault(node.text.decode("utf-8", "replace"), []).append(node)
        variables = []
        for name, nodes in by_name.items():
            spans = tuple((int(char_map[np.searchsorted(byte_of_char, n.start_byte) - first_char]),
                           int(char_map[np.searchsorted(byte_of_char, n.end_byte) - first_char])) for n in nodes)
            defined = tuple(i for i, n in enumerate(nodes) if (n.start_byte, n.end_byte) in definitions)
            if defined and all(text[s:e] == name for s, e in spans):
                variables.append(Variable(name, spans, defined))
        doc, doc_span = None, None
        if language == "python":
            statement, doc = _python_docstring(scope)
            if statement is not None:
                doc_span = tuple(int(char_map[np.searchsorted(byte_of_char, b) - first_char])
                                 for b in (statement.start_byte, statement.end_byte))
        else:
            doc = _leading_doc(scope, source)
        line = code.count("\n", 0, first_char) + 1
        units.append(Unit(text, language, file, f"{file}:{line}", tuple(variables), doc, doc_span))
    return units


def _dedent(text: str, indent: int) -> tuple[str, np.ndarray]:
    """``text`` with up to ``indent`` leading spaces/tabs removed from every line, and the new offset of each old
    character offset (``[len(text) + 1]``; a removed character maps to where the next kept one lands)."""
    keep = np.ones(len(text), dtype=bool)
    position = 0
    for line in text.split("\n"):
        leading = len(line) - len(line.lstrip(" \t"))
        keep[position : position + min(indent, leading)] = False
        position += len(line) + 1
    new = np.zeros(len(text) + 1, dtype=np.int64)
    np.cumsum(keep, out=new[1:])
    kept = "".join(np.array(list(text), dtype=object)[keep]) if len(text) else ""
    return kept, new


def unique_units(units: list[Unit]) -> list[Unit]:
    """The units with whitespace-normalised text seen for the first time (duplicate functions removed)."""
    seen, kept = set(), []
    for unit in units:
        key = hashlib.sha1(" ".join(unit.code.split()).encode("utf-8", "surrogatepass")).hexdigest()
        if key not in seen:
            seen.add(key)
            kept.append(unit)
    return kept


def split_by_file(units: list, test_every: int = 4, salt: str = "") -> tuple[list, list]:
    """``(train, test)`` with every file on one side: a file is a test file when a hash of its name (and ``salt``)
    falls in the last ``1 / test_every`` (stable across runs and machines, independent of which files exist)."""
    def is_test(name: str) -> bool:
        digest = hashlib.sha1((salt + name).encode("utf-8", "surrogatepass")).digest()
        return int.from_bytes(digest[:4], "big") % test_every == test_every - 1

    return [u for u in units if not is_test(u.file)], [u for u in units if is_test(u.file)]


# --------------------------------------------------------------------------------------------------- variable misuse

def misuse_sites(unit: Unit) -> list[tuple[Variable, int, list[Variable]]]:
    """Every use that a bug may replace: ``(variable, occurrence index, variables that may replace it)``.

    A use is an occurrence that does not define the variable and is not its only occurrence; a replacement is
    another local variable of the unit defined (first) before the use, with another name.
    """
    sites = []
    for variable in unit.variables:
        if len(variable.occurrences) < 2:
            continue
        for index, (start, _) in enumerate(variable.occurrences):
            if index in variable.definitions:
                continue
            others = [v for v in unit.variables if v.name != variable.name and v.introduced < start]
            if others:
                sites.append((variable, index, others))
    return sites


def _nearest_other(variable: Variable, index: int) -> int:
    start, end = variable.occurrences[index]
    return min(max(s - end, start - e, 0) for i, (s, e) in enumerate(variable.occurrences) if i != index)


def misuse_examples(unit: Unit, rng: random.Random, sites: int = 1, far_chars: int = 400,
                    far_share: float = 0.5) -> list[MisuseExample]:
    """Up to ``sites`` bug sites of ``unit``, each as a buggy example and its bug-free copy (the original).

    Sites are sampled so that about ``far_share`` of them have their evidence (the nearest other occurrence of the
    right variable) more than ``far_chars`` characters away, where the unit has such sites: at random sites the
    evidence is usually close, and the far cases are the ones that tell long-range encoders apart.
    """
    candidates = misuse_sites(unit)
    if not candidates:
        return []
    far = [c for c in candidates if _nearest_other(c[0], c[1]) > far_chars]
    near = [c for c in candidates if _nearest_other(c[0], c[1]) <= far_chars]
    chosen = []
    for _ in range(min(sites, len(candidates))):
        pool = far if far and (not near or rng.random() < far_share) else near
        pick = pool.pop(rng.randrange(len(pool)))
        chosen.append(pick)
    examples = []
    for variable, index, others in chosen:
        wrong = rng.choice(others).name
        examples.append(_misuse(unit, variable, index, wrong, buggy=True))
        examples.append(_misuse(unit, variable, index, wrong, buggy=False))
    return examples


def _misuse(unit: Unit, variable: Variable, index: int, wrong: str, buggy: bool) -> MisuseExample:
    start, end = variable.occurrences[index]
    shift = len(wrong) - (end - start) if buggy else 0

    def moved(span: Span) -> Span:
        return (span[0] + shift, span[1] + shift) if span[0] >= end else span

    code = unit.code[:start] + wrong + unit.code[end:] if buggy else unit.code
    site = (start, start + len(wrong)) if buggy else (start, end)
    repairs = tuple(moved(s) for i, s in enumerate(variable.occurrences) if i != index)
    candidates = tuple(sorted(site if (v is variable and i == index) else moved(s)
                              for v in unit.variables for i, s in enumerate(v.occurrences)))
    variables = tuple(tuple(moved(s) for i, s in enumerate(v.occurrences) if not (v is variable and i == index))
                      for v in unit.variables)
    return MisuseExample(code, unit.language, unit.file, unit.name, buggy, site, variable.name, wrong, repairs,
                         candidates, _nearest_other(variable, index), variables, unit.variables.index(variable))


# ------------------------------------------------------------------------------------------------------ code search

@dataclass(frozen=True)
class SearchPair:
    query: str
    code: str
    language: str
    file: str
    unit: str


def search_pairs(units: list[Unit]) -> list[SearchPair]:
    """(documentation, function) pairs: the units with documentation; a Python docstring is cut out of the code
    (with its line when nothing else is on it); other languages' leading comments are outside the unit already."""
    pairs = []
    for unit in units:
        if not unit.doc:
            continue
        code = unit.code
        if unit.doc_span is not None:
            start, end = unit.doc_span
            line_start = code.rfind("\n", 0, start) + 1
            line_end = code.find("\n", end)
            line_end = len(code) if line_end < 0 else line_end + 1
            if not (code[line_start:start] + code[end:line_end]).strip():
                start, end = line_start, line_end
            code = code[:start] + code[end:]
        pairs.append(SearchPair(unit.doc, code, unit.language, unit.file, unit.name))
    return pairs
