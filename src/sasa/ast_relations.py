"""AST relations with tree-sitter: which tokens of a piece of code are linked in its syntax tree.

:func:`token_links` parses the source with the language's tree-sitter grammar, aligns tokens to nodes by *byte*
offsets (tree-sitter counts bytes, tokenizers count characters; the two differ on non-ASCII source), and returns, for
each token and each relation, the index of the token it is linked to (``-1`` for none). The model turns these links
into AST block scores (the number of linked token pairs between two blocks); only links that leave a token's local
window add anything, so the relations that reach *far* (``dataflow``, ``call``, ``declaration``, ``exit``) matter most.

Relations (:data:`RELATIONS`; a tokenizer may use any subset, in any order; :data:`DEFAULT_RELATIONS` is the
tokenizer's default):

``statement``
    every token → the first token of its innermost enclosing *statement* (a node whose type ends in ``_statement``,
    ``_declaration`` or ``_definition``, a few per-language types such as Ruby's ``method``, or any child of a block
    such as Python's ``block``, Java's ``block``, C's ``compound_statement``, Ruby's ``body_statement``; the blocks
    themselves are containers, not statements). The first token of a statement links to the first token of the
    statement around it.
``parent``
    the first token of a node → the first token of its parent node (taking the outermost node that starts at that
    token): parent–child links between node heads, e.g. a method's first token → its class body's ``{``.
``sibling``
    the first token of a statement → the first token of the previous statement in the same block.
``span``
    the last token of a node → its first token (outermost node ending there), e.g. a method's closing ``}`` → the
    method's first token, a call's ``)`` → the callee.
``dataflow``
    every token of a variable occurrence → the first token of the occurrence its value comes from: the last
    preceding *definition* of the same name that is in scope (assignment or augmented-assignment target,
    declarator, parameter, ``for``/``foreach``/``with``/``except``/``catch`` variable, import, function or class
    name), else the previous occurrence of the name. A definition links the same way to the definition before it,
    so chains reach back to the declaration. Variables are identifiers (PHP: ``$name``); fields accessed through
    the object itself (``self.x``, ``this.x``, ``$this->x``, ``@x``, and field declarations) are one occurrence
    each, named by the field and visible everywhere. Scopes are approximated by the innermost enclosing
    function, method or lambda (blocks, loops and classes are no scopes; Ruby's ``do`` blocks share their method's);
    a definition is seen from its scope and the scopes inside it, and a function's own name is defined in the scope
    around it. Names are compared by their text.
``call``
    the tokens of a callee's name (the function or method name, the last name of ``a.b.c(``; Java also the class of
    ``new X(``, for its constructor) → the first token of the name in the definition of the function or method with
    that name in the same source: the nearest preceding definition, else the first one.
``declaration``
    every token of a variable occurrence → the first token of its *declaration*: the first definition of its name
    in the innermost scope that defines it (scopes and definitions as for ``dataflow``), else the name's first
    occurrence in the source. Type uses (type identifiers, ``new X``, base classes, annotations; Python also
    ``X(...)``, Ruby constants) → the name in the declaration of that type (class, struct, interface, enum, type
    alias); member accesses (``obj.field``, ``this.field``, ``obj.method()``, Ruby ``@field``) → the name in the
    declaration of that field (field declaration; Python: first assignment of ``self.field``; Ruby: of ``@field``;
    JavaScript: of ``this.field``), else of a method with that name; the first such declaration in the source
    counts, and a type or member the source does not declare falls back to the variable rule. Where ``dataflow``
    follows a value step by step (mostly to nearby code), ``declaration`` jumps to where the name was introduced:
    the far link.
``exit``
    the tokens of a ``return``/``yield``/``throw``/``raise`` statement → the first token of the function, method or
    lambda it leaves; of a ``break`` → the innermost enclosing loop or ``switch``/``select`` (Ruby: also a block);
    of a ``continue`` (Ruby ``next``) → the innermost enclosing loop; of a ``goto`` or a labelled ``break``/
    ``continue`` → the statement with that label (in the same function).

A token belongs to the node that contains its first byte (BPE tokens may straddle node boundaries, as in ``):``).
Special tokens (empty spans) and whitespace-only tokens get no links and are never linked to. Code that does not
parse still gets links: tree-sitter recovers with ``ERROR`` nodes, and the query patterns match whatever it did
recognise. Only the code up to the end of the last token's line is parsed (what a tokenizer's truncation cut off
cannot be linked), unless that prefix has an error well before its end (a cut inside a long string): then all of it
is. Nodes are collected with the per-language tree-sitter queries of :mod:`.ast_languages` (matched in C) and the
links computed with numpy, so the cost is one parse plus a few array operations; nothing recurses, so deep nesting
is fine.

This file is shipped with the tokenizer; ``tree_sitter`` is imported only when a parse is asked for.
"""

from __future__ import annotations

from itertools import chain
from operator import attrgetter

import numpy as np

from .ast_languages import FIELD_PREFIX, get_parser, get_query, node_kind_tables, normalize_language

RELATIONS = ("statement", "parent", "sibling", "span", "dataflow", "call", "declaration", "exit")
#: The tokenizer's default relations (one column each, in this order). Chosen by ``benchmarks/quality/layout_quality.py``
#: (far data flow, calls and returns reached at the lowest density) and ``benchmarks/speed/tokenizer_throughput.py``:
#: ``span`` adds closing brackets (rare far pairs in functions) but needs every node of the tree, which puts the
#: tokenizer above 1.5x plain BPE.
DEFAULT_RELATIONS = ("declaration", "call", "exit")


#: Characters ``str.isspace`` accepts: a token made only of them is whitespace and links nothing.
_SPACES = np.array([*range(9, 14), *range(28, 33), 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B), 0x2028, 0x2029,
                    0x202F, 0x205F, 0x3000])
_ASCII_SPACE = np.isin(np.arange(256), _SPACES[_SPACES < 128])
_START, _END = attrgetter("start_byte"), attrgetter("end_byte")
_STRUCTURE = tuple(map(attrgetter, ("start_byte", "end_byte", "descendant_count", "kind_id")))
#: which query groups each relation needs
_GROUPS = {"statement": ("structure",), "parent": ("structure",), "sibling": ("structure",), "span": ("structure",),
           "dataflow": ("dataflow",), "call": ("call",), "declaration": ("declaration", "dataflow"), "exit": ("exit",)}


def validate_relations(relations) -> tuple[str, ...]:
    relations = tuple(relations)
    unknown = [r for r in relations if r not in RELATIONS]
    if unknown or not relations or len(set(relations)) != len(relations):
        raise ValueError(f"ast_relations must be distinct names from {RELATIONS}, got {relations}.")
    return relations


def _byte_ranges(nodes: list) -> np.ndarray:
    """``[n, 2]`` int64 (start byte, end byte) of tree-sitter nodes."""
    ranges = np.empty((len(nodes), 2), dtype=np.int64)
    ranges[:, 0] = np.fromiter(map(_START, nodes), dtype=np.int64, count=len(nodes))
    ranges[:, 1] = np.fromiter(map(_END, nodes), dtype=np.int64, count=len(nodes))
    return ranges


def _code_points(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def _byte_offsets(code_points: np.ndarray) -> np.ndarray:
    widths = 1 + (code_points >= 0x80).astype(np.int64) + (code_points >= 0x800) + (code_points >= 0x10000)
    offsets = np.zeros(len(code_points) + 1, dtype=np.int64)
    np.cumsum(widths, out=offsets[1:])
    return offsets


def char_to_byte_offsets(text: str) -> np.ndarray:
    """``[len(text) + 1]`` int64: the UTF-8 byte offset of every character offset of ``text``."""
    return _byte_offsets(_code_points(text))


def _content_tokens(source: str, encoded: bytes, spans: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the tokens with text that is not only whitespace, and their byte starts (ascending)."""
    spans = np.minimum(spans, len(source))
    limit = int(spans[:, 1].max())
    ascii_only = len(encoded) == len(source)
    codes = np.frombuffer(encoded, dtype=np.uint8, count=limit) if ascii_only else _code_points(source[:limit])
    solid = np.zeros(limit + 1, dtype=np.int64)  # solid[i]: characters before i that are not whitespace
    np.cumsum(~_ASCII_SPACE[codes] if ascii_only else ~np.isin(codes, _SPACES), out=solid[1:])
    content = np.flatnonzero(solid[spans[:, 1]] > solid[spans[:, 0]])
    starts = spans[content, 0]
    return content, starts if ascii_only else _byte_offsets(codes)[starts]


class _Nesting:
    """Laminar intervals ``[starts, ends)`` (any two nested or disjoint, none empty), for innermost-enclosing queries.

    An interval's *depth* is the number of intervals containing its start that come before it in pre-order (start
    ascending, end descending; identical intervals: the later one in input order is inside). The intervals of one
    depth are disjoint, so the innermost interval containing a point is the last one starting at or before it among
    those of the point's depth (the number of intervals containing it): one ``searchsorted`` on (depth, start) keys.
    """

    def __init__(self, starts: np.ndarray, ends: np.ndarray, inner_first: np.ndarray | None = None):
        keys = (inner_first, -ends, starts) if inner_first is not None else (-ends, starts)
        self.order = np.lexsort(keys)
        self.starts = starts[self.order]
        self.sorted_ends = np.sort(ends)
        self.depth = np.arange(1, len(starts) + 1) - np.searchsorted(self.sorted_ends, self.starts, "right")
        self.scale = int(max(ends.max(), starts.max()) + 2) if len(starts) else 1
        keys = self.depth * self.scale + self.starts
        self.by_key = np.argsort(keys, kind="stable")
        self.keys = keys[self.by_key]

    def _find(self, depth: np.ndarray, points: np.ndarray) -> np.ndarray:
        found = np.searchsorted(self.keys, depth * self.scale + points, "right") - 1
        return np.where(depth > 0, self.order[self.by_key[np.maximum(found, 0)]], -1)

    def innermost(self, points: np.ndarray) -> np.ndarray:
        """Index (input order) of the innermost interval containing each point, ``-1`` for none."""
        if not len(self.starts):
            return np.full(len(points), -1, dtype=np.int64)
        depth = np.searchsorted(self.starts, points, "right") - np.searchsorted(self.sorted_ends, points, "right")
        return self._find(depth, points)

    def parents(self) -> np.ndarray:
        """Index (input order) of each interval's innermost enclosing interval, ``-1`` for the outermost ones."""
        parents = np.empty(len(self.order), dtype=np.int64)
        parents[self.order] = self._find(self.depth - 1, self.starts)
        return parents


#: Captures whose nodes are compared by their text; the ``_TRAILING`` ones by their last name (``self.x``, ``@x`` → x).
_NAMED = {"name", "field", "member", "callee", "function.name", "use", "type.name", "field.name", "label", "jump.label"}
_TRAILING = {"field", "member", "field.name"}
_HASH_BASE = np.uint64(0x9E3779B97F4A7C15)  # odd, so invertible modulo 2**64
_powers: list[np.ndarray] = []  # [0]: _HASH_BASE ** k, [1]: its inverse ** k, for k = 0 .. n (modulo 2**64)


def _hash_powers(count: int) -> list[np.ndarray]:
    """``[B**k, B**-k]`` for ``k = 0 .. >= count`` (modulo 2**64), grown on demand."""
    if not _powers or len(_powers[0]) <= count:
        size = max(count + 1, 2 * len(_powers[0]) if _powers else 1 << 16)
        tables = []
        for base in (_HASH_BASE, np.uint64(pow(int(_HASH_BASE), -1, 1 << 64))):
            table = np.ones(size, dtype=np.uint64)
            np.cumprod(np.full(size - 1, base, dtype=np.uint64), out=table[1:])
            tables.append(table)
        _powers[:] = tables
    return _powers


START, END, FIRST, STOP, ID = range(5)  # the columns of a capture's table in _Source


class _Source:
    """One parsed source: each capture's nodes as a table, sorted by start, with the columns byte ``START`` and
    ``END``, the tokens ``[FIRST, STOP)`` starting inside, and ``ID`` an id of the node's text (``-1`` for the
    captures not compared by text), all gathered in one pass over the captured nodes.

    Texts are compared through a polynomial hash modulo 2**64 of their bytes (``sum c_j B**(e-1-j)``), computed for
    all nodes at once from prefix sums: with ``S[i] = sum_{j<i} c_j B**-(j+1)``, the hash of ``[s, e)`` is
    ``B**e (S[e] - S[s])``. Equal ids mean equal texts but for a 2**-64 chance.
    """

    def __init__(self, encoded: bytes, starts: np.ndarray, captures: dict, language: str, root: tuple[int, int]):
        self.encoded, self.starts, self.language, self.count = encoded, starts, language, len(starts)
        self.captures, self.root = captures, root  # root: the tree's root's byte range
        groups = [name for name in captures if not name.startswith("_") and name != "node"]  # "node": see _span
        nodes = list(chain.from_iterable(captures[name] for name in groups))
        table = np.empty((len(nodes), 5), dtype=np.int64)
        table[:, START : END + 1] = _byte_ranges(nodes)
        group = np.repeat(np.arange(len(groups)), [len(captures[name]) for name in groups])
        order = np.argsort(group << 40 | table[:, START])  # by capture, then start (sources under 1 TB)
        table, group = table[order], group[order]
        empty = table[:, END] <= table[:, START]  # zero-width (missing) nodes hold nothing
        if empty.any():
            table, group = table[~empty], group[~empty]
        table[:, FIRST : STOP + 1] = starts.searchsorted(table[:, START : END + 1])
        table[:, ID] = -1
        named = np.array([name in _NAMED for name in groups] + [False])[group]
        if named.any():
            trailing = np.array([name in _TRAILING for name in groups] + [False])[group[named]]
            table[named, ID] = self._text_ids(table[named], trailing)
        self.table, self.names = table, int(table[:, ID].max(initial=-1)) + 1
        bounds = group.searchsorted(np.arange(len(groups) + 1)).tolist()
        self.slices = {name: slice(bounds[i], bounds[i + 1]) for i, name in enumerate(groups)}

    def _text_ids(self, table: np.ndarray, trailing: np.ndarray) -> np.ndarray:
        begin, end = table[:, START], table[:, END]
        size = int(end.max())
        codes = np.frombuffer(self.encoded, dtype=np.uint8, count=size)
        if trailing.any():  # start after the last byte that cannot be in a name ("." "->" "@" "$" "::" " ")
            separator = ~((codes >= 0x80) | (codes == 0x5F) | ((codes | 0x20) - 0x61 < 26) | (codes - 0x30 < 10))
            last = np.maximum.accumulate(np.where(separator, np.arange(size), -1))
            begin = np.where(trailing, np.maximum(begin, last[end - 1] + 1), begin)
        power, inverse = _hash_powers(size)
        prefix = np.zeros(size + 1, dtype=np.uint64)
        with np.errstate(over="ignore"):
            np.cumsum((codes.astype(np.uint64) + np.uint64(1)) * inverse[1 : size + 1], out=prefix[1:])
            hashes = power[end] * (prefix[end] - prefix[begin])
        return np.unique(hashes, return_inverse=True)[1].reshape(-1)

    def get(self, name: str) -> np.ndarray:
        """The table of a capture's nodes (``[n, 5]``; empty if none)."""
        return self.table[self.slices.get(name, slice(0, 0))]

    def none(self) -> np.ndarray:
        return np.full(self.count, -1, dtype=np.int64)

    def paint(self, first: np.ndarray, stop: np.ndarray, values: np.ndarray) -> np.ndarray:
        """``[count]``: each token's value from the innermost of the token ranges ``[first, stop)`` holding it."""
        order = np.argsort(first, kind="stable")
        first, stop, values = first[order], stop[order], values[order]
        if (stop[:-1] <= first[1:]).all():
            return self.paint_leaves(first, stop, values)
        keep = stop > first
        inside = _Nesting(first[keep], stop[keep]).innermost(np.arange(self.count))
        return _take(values[keep], inside)

    def paint_leaves(self, first: np.ndarray, stop: np.ndarray, values: np.ndarray) -> np.ndarray:
        """:meth:`paint` for disjoint token ranges sorted by start (leaves of the tree)."""
        tokens = np.arange(self.count)
        inside = first.searchsorted(tokens, "right") - 1
        inside[tokens >= _take(stop, inside)] = -1
        return _take(values, inside)


def _take(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``values[index]``, ``-1`` where ``index`` is ``-1`` or ``len(values)`` (just past the end)."""
    return np.append(values, -1)[index]


def _first_of(keys: np.ndarray, positions: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct keys (sorted) and the value of each one's first entry by position."""
    order = np.lexsort((positions, keys))
    unique, index = np.unique(keys[order], return_index=True)
    return unique, values[order][index]


def _nearest_before_else_first(keys: np.ndarray, starts: np.ndarray, heads: np.ndarray, query_keys: np.ndarray,
                               query_starts: np.ndarray, scale: np.int64) -> np.ndarray:
    """For each query, the head of the entry with the same key that starts nearest before it, else of the first entry
    with that key (``-1`` for none). Keys are ``>= 0``; starts (byte offsets) ``< scale``."""
    combined = keys * scale + starts
    order = np.argsort(combined)
    combined, heads = combined[order], heads[order]
    before = combined.searchsorted(query_keys * scale + query_starts) - 1
    found = np.where(_take(combined, before) // scale == query_keys, before, combined.searchsorted(query_keys * scale))
    found[_take(combined, found) // scale != query_keys] = -1
    return _take(heads, found)


def _find(unique: np.ndarray, values: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """The value of each query in (``unique`` sorted, ``values``), ``-1`` where absent."""
    at = unique.searchsorted(queries)
    return np.where(_take(unique, at) == queries, _take(values, at), -1)


# --- the old four: statement, parent, sibling, span -----------------------------------------------------------------

class _Structure:
    """Every named node with tokens, in pre-order, with its parent, token range and statement flag."""

    def __init__(self, source: _Source):
        nodes = source.captures.get("node", [])
        start, end, descendants, kind = (np.fromiter(map(attribute, nodes), dtype=np.int64, count=len(nodes))
                                         for attribute in _STRUCTURE)
        first, stop = source.starts.searchsorted(start), source.starts.searchsorted(end)
        keep = stop > first  # nodes without tokens link nothing (nor do their children)
        nesting = _Nesting(start[keep], end[keep], inner_first=-descendants[keep])
        order = nesting.order  # pre-order; a node comes before a child with the same range (more descendants)
        self.first, self.stop, kind = first[keep][order], stop[keep][order], kind[keep][order]
        rank = np.empty(len(order), dtype=np.int64)
        rank[order] = np.arange(len(order))
        self.parent = _take(rank, nesting.parents()[order])
        statement, block, container = node_kind_tables(source.language)
        has_parent = self.parent >= 0  # the root links nothing itself
        in_block = has_parent & block[kind[np.maximum(self.parent, 0)]]
        self.statement = has_parent & ~container[kind] & (statement[kind] | in_block)
        self.count = source.count


def _first_per(keys: np.ndarray, values: np.ndarray, count: int, last: bool = False) -> np.ndarray:
    """``[count]``: for each key, the value of its first (``last``: last) occurrence in array order; ``-1`` else."""
    column = np.full(count, -1, dtype=np.int64)
    if last:
        keys, values = keys[::-1], values[::-1]
    unique, index = np.unique(keys, return_index=True)
    column[unique] = values[index]
    return column


def _statement(structure: _Structure) -> np.ndarray:
    # Each token → the innermost statement holding it after that statement's first token.
    first, stop = structure.first[structure.statement], structure.stop[structure.statement]
    inner = stop > first + 1
    column = np.full(structure.count, -1, dtype=np.int64)
    if inner.any():
        inside = _Nesting(first[inner] + 1, stop[inner]).innermost(np.arange(structure.count))
        column = _take(first[inner], inside)
    return column


def _parent(structure: _Structure) -> np.ndarray:
    # The outermost node starting at a token (first in pre-order whose parent starts at an earlier token).
    parent_first = _take(structure.first, structure.parent)
    chosen = (parent_first >= 0) & (parent_first < structure.first)
    return _first_per(structure.first[chosen], parent_first[chosen], structure.count)


def _sibling(structure: _Structure) -> np.ndarray:
    # Statements grouped by parent, in order; a block's walk overwrites its ancestors' (later parents win).
    index = np.flatnonzero(structure.statement)
    index = index[np.lexsort((index, structure.parent[index]))]
    first, parent = structure.first[index], structure.parent[index]
    follows = np.zeros(len(index), dtype=bool)
    follows[1:] = (parent[1:] == parent[:-1]) & (first[1:] != first[:-1])
    return _first_per(first[follows], np.roll(first, 1)[follows], structure.count, last=True)


def _span(source: _Source) -> np.ndarray:
    # The last token of a node → its first (the outermost node ending there: the smallest first token).
    ranges = _byte_ranges(source.captures.get("node", []))
    first, stop = source.starts.searchsorted(ranges).T
    last = stop - 1
    chosen = last > first
    root = np.flatnonzero((ranges[:, 0] == source.root[0]) & (ranges[:, 1] == source.root[1]))[:1]
    chosen[root] = False  # the root links nothing (a node with the same range links the same)
    column = np.full(source.count, source.count, dtype=np.int64)
    np.minimum.at(column, last[chosen], first[chosen])
    column[column == source.count] = -1
    return column


# --- the far-reaching ones: dataflow, call, declaration, exit --------------------------------------------------------

def _dataflow(source: _Source) -> np.ndarray:
    return _variable_links(source, declaration=False)


def _variable_links(source: _Source, declaration: bool) -> np.ndarray:
    """Each variable occurrence → (``declaration=False``) the last preceding definition of its name in scope, else
    its previous occurrence; (``declaration=True``) the first definition of its name in the innermost scope that
    defines it, else the name's first occurrence. Per token, ``-1`` for none (and never to itself)."""
    names, fields, members = source.get("name"), source.get("field"), source.get("member")[:, START]
    if len(members):  # member names are no variables
        names = names[_take(members, members.searchsorted(names[:, START])) != names[:, START]]
    is_field = None
    if len(fields):  # a field of the object itself is one occurrence (its names are not variables)
        holder = fields[:, START].searchsorted(names[:, START], "right") - 1
        names = names[names[:, START] >= _take(fields[:, END], holder)]
        if source.language in FIELD_PREFIX:  # "self.x" is not "x"
            fields = fields + np.array([0, 0, 0, 0, source.names])
        occurrences = np.concatenate([names, fields])
        order = np.argsort(occurrences[:, START], kind="stable")
        occurrences, is_field = occurrences[order], order >= len(names)
    else:
        occurrences = names
    count = len(occurrences)
    if not count:
        return source.none()
    at, ids = occurrences[:, START], occurrences[:, ID]

    # Definitions: the occurrences holding a definition capture's node; a function's own name (outer) is defined in
    # the scope around it; fields are seen from every scope.
    defined, outer = source.get("def")[:, START], source.get("def.outer")[:, START]
    holder = at.searchsorted(np.concatenate([defined, outer]), "right") - 1
    holds = np.concatenate([defined, outer]) < _take(occurrences[:, END], holder)
    is_def = np.zeros(count + 1, dtype=bool)
    is_def[holder[holds]] = True
    is_def = is_def[:count]
    outer = holder[len(defined) :][holds[len(defined) :]]
    scopes = source.get("scope")
    if len(scopes):
        nesting = _Nesting(scopes[:, START], scopes[:, END])
        up = np.concatenate([[-1], nesting.parents() + 1])  # scope ids shifted by one: 0 is the file (parent -1)
        scope = nesting.innermost(at) + 1
        scope[outer] = np.maximum(up[scope[outer]], 0)
    else:
        up, scope = np.array([-1]), np.zeros(count, dtype=np.int64)
    if is_field is not None:
        scope[is_field] = 0

    # The last preceding definition with this name in this scope, else in the scopes around it, ...
    position = np.arange(count, dtype=np.int64)
    width = np.int64(len(up))
    definitions = np.flatnonzero(is_def)
    keys = np.sort((ids[definitions] * width + scope[definitions]) * count + definitions)
    target = np.full(count, -1, dtype=np.int64)
    pending, current = np.ones(count, dtype=bool), scope
    while len(keys) and pending.any():
        group = ids * width + current
        if declaration:  # the group's first definition
            candidate = _take(keys, keys.searchsorted(group * count))
        else:  # the group's last definition before this occurrence
            candidate = _take(keys, keys.searchsorted(group * count + position) - 1)
        hit = pending & (candidate >= 0) & (candidate // count == group)
        target[hit] = candidate[hit] % count
        pending &= ~hit & (current > 0)
        current = np.where(pending, up[current], 0)
    # ... else the previous (declaration: the first) occurrence of the name.
    by_name = np.argsort(ids * count + position)
    if declaration:
        fallback = by_name[ids[by_name].searchsorted(ids)]
    else:
        same = ids[by_name[1:]] == ids[by_name[:-1]]
        fallback = np.full(count, -1, dtype=np.int64)
        fallback[by_name[1:][same]] = by_name[:-1][same]
    target = np.where(target >= 0, target, fallback)
    target[target == position] = -1  # a declaration links nowhere itself
    return source.paint_leaves(occurrences[:, FIRST], occurrences[:, STOP], _take(occurrences[:, FIRST], target))


def _call(source: _Source) -> np.ndarray:
    callees, functions = source.get("callee"), source.get("function.name")
    if not len(callees) or not len(functions):
        return source.none()
    # The nearest definition with the callee's name before the call, else the first.
    targets = _nearest_before_else_first(functions[:, ID], functions[:, START], functions[:, FIRST], callees[:, ID],
                                         callees[:, START], np.int64(len(source.encoded) + 1))
    return source.paint_leaves(callees[:, FIRST], callees[:, STOP], targets)


def _declaration(source: _Source) -> np.ndarray:
    variables = _variable_links(source, declaration=True)  # where no type, field or method declaration applies
    uses, members = source.get("use"), source.get("member")
    if not len(uses) and not len(members):
        return variables
    # The first declaration of each (kind, name): kind 0 types, 1 fields, 2 functions and methods.
    declared = [source.get(capture) for capture in ("type.name", "field.name", "function.name")]
    kinds = np.repeat(np.arange(3), [len(table) for table in declared])
    declared = np.concatenate(declared)
    unique, heads = _first_of(kinds * source.names + declared[:, ID], declared[:, START], declared[:, FIRST])
    targets = _find(unique, heads, np.concatenate([uses[:, ID], source.names + members[:, ID],
                                                   2 * source.names + members[:, ID]]))
    to_type, to_field, to_method = np.split(targets, [len(uses), len(uses) + len(members)])
    targets = np.concatenate([to_type, np.where(to_field >= 0, to_field, to_method)])
    first = np.concatenate([uses[:, FIRST], members[:, FIRST]])
    targets[targets == first] = -1  # a declaration does not link to itself
    column = source.paint(first, np.concatenate([uses[:, STOP], members[:, STOP]]), targets)
    return np.where(column >= 0, column, variables)


def _exit(source: _Source) -> np.ndarray:
    exits = [source.get(capture) for capture in ("return", "break", "continue")]
    jumps = source.get("jump")
    if not any(len(table) for table in exits) and not len(jumps):
        return source.none()
    # What each exit leaves: the innermost enclosing construct, then outwards until one of the kind it leaves.
    constructs = [source.get(capture) for capture in ("function", "loop", "switch")]
    kind = np.repeat(np.arange(3), [len(table) for table in constructs])
    constructs = np.concatenate(constructs)
    nesting = _Nesting(constructs[:, START], constructs[:, END])
    leaves = np.array([[True, False, False], [False, True, True], [False, True, False]])  # exit kind × construct kind
    exit_kind = np.repeat(np.arange(3), [len(table) for table in exits])
    exits = np.concatenate(exits)
    target = nesting.innermost(exits[:, START])
    wrong = (target >= 0) & ~leaves[exit_kind, _take(kind, target)]
    if wrong.any():
        parents = nesting.parents()
        while wrong.any():
            target[wrong] = parents[target[wrong]]
            wrong = (target >= 0) & ~leaves[exit_kind, _take(kind, target)]
    targets = _take(constructs[:, FIRST], target)
    labels, jump_labels = source.get("label"), source.get("jump.label")
    if len(jumps) and len(labels) and len(jumps) == len(jump_labels):
        # goto, labelled break/continue → the statement with that label in the same function (nearest before, else
        # the first); jumps do not nest, so the sorted jumps and their sorted labels pair up.
        functions = source.get("function")
        function_of = _Nesting(functions[:, START], functions[:, END])
        width = np.int64(len(functions) + 2)
        label_keys = labels[:, ID] * width + function_of.innermost(labels[:, START]) + 1
        jump_keys = jump_labels[:, ID] * width + function_of.innermost(jumps[:, START]) + 1
        labelled = _nearest_before_else_first(label_keys, labels[:, START], labels[:, FIRST], jump_keys,
                                              jumps[:, START], np.int64(len(source.encoded) + 1))
        exits = np.concatenate([exits, jumps])  # last: a labelled break is also a break, and the label wins
        targets = np.concatenate([targets, labelled])
    return source.paint(exits[:, FIRST], exits[:, STOP], targets)


_STRUCTURE_RELATIONS = {"statement": _statement, "parent": _parent, "sibling": _sibling}
_SOURCE_RELATIONS = {"span": _span, "dataflow": _dataflow, "call": _call, "declaration": _declaration, "exit": _exit}


#: Bytes before the end of a parsed prefix where an error may start without a longer prefix being parsed.
_CUT_ERROR_MARGIN = 256
#: Characters after the last token at which the prefixes tried end (at the end of that line), before the whole source.
_PREFIX_EXTENSIONS = (0, 1024)


def _error_before(node, before: int) -> bool:
    """Whether the first ``ERROR`` or missing node under ``node`` starts before byte ``before``."""
    while node is not None and node.has_error:
        if node.is_error or node.is_missing:
            return node.start_byte < before
        node = next((child for child in node.children if child.has_error), None)
    return False


def _parse(parser, source: str, last: int) -> tuple[str, bytes, object]:
    """The source parsed up to the end of the line of character ``last`` (the last token's end), and that prefix.

    Nothing after the last token can be linked (a tokenizer's truncation keeps a prefix), and the parse is most of
    the cost. But when the prefix has an error that starts well before its end (a cut inside a long string or
    literal, or code that does not parse), a longer prefix is parsed, then the whole source, so that the tokens get
    the structure they have in it.
    """
    for extra in _PREFIX_EXTENSIONS:
        end = source.find("\n", last + extra) + 1
        if not 0 < end < len(source):
            break
        encoded = source[:end].encode("utf-8", "surrogatepass")
        tree = parser.parse(encoded)
        if not _error_before(tree.root_node, len(encoded) - _CUT_ERROR_MARGIN):
            return source[:end], encoded, tree
    encoded = source.encode("utf-8", "surrogatepass")
    return source, encoded, parser.parse(encoded)


def token_links(
    source: str,
    token_spans,
    language: str,
    relations: tuple[str, ...] = DEFAULT_RELATIONS,
) -> np.ndarray:
    """AST links between tokens.

    Args:
        source: The code.
        token_spans: ``[T, 2]`` ``(start, end)`` *character* offsets of the tokens into ``source``, in order (a list of
            pairs or an integer array). Empty spans (special tokens) and whitespace-only tokens get no links.
        language: One of :data:`.ast_languages.SUPPORTED_LANGUAGES` (or an alias).
        relations: Which relations, in which column order (see the module docstring).

    Returns:
        ``[T, len(relations)]`` int64; entry ``[t, r]`` is the index (into ``token_spans``) of the token that token
        ``t`` is linked to by relation ``r``, or ``-1``.
    """
    relations = validate_relations(relations)
    spans = np.asarray(token_spans, dtype=np.int64).reshape(-1, 2)
    links = np.full((len(spans), len(relations)), -1, dtype=np.int64)
    if not len(spans):
        return links
    source, encoded, tree = _parse(get_parser(language), source, int(spans[:, 1].max()))
    content, starts = _content_tokens(source, encoded, spans)
    if content.size == 0:
        return links
    import tree_sitter

    language = normalize_language(language)
    groups = frozenset(chain.from_iterable(_GROUPS[name] for name in relations))
    cursor = tree_sitter.QueryCursor(get_query(language, groups))
    cursor.set_byte_range(0, int(starts[-1]) + 1)  # nodes after the last token link nothing
    parsed = _Source(encoded, starts, cursor.captures(tree.root_node), language, tree.root_node.byte_range)
    structure = _Structure(parsed) if any(name in _STRUCTURE_RELATIONS for name in relations) else None
    for index, name in enumerate(relations):
        if name in _STRUCTURE_RELATIONS:
            column = _STRUCTURE_RELATIONS[name](structure)
        else:
            column = _SOURCE_RELATIONS[name](parsed)
        linked = column >= 0
        links[content[linked], index] = content[column[linked]]
    return links
