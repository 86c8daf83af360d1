"""AST relations with tree-sitter: which tokens of a piece of code are linked in its syntax tree.

:func:`token_links` parses the source with the language's tree-sitter grammar, aligns tokens to nodes by *byte*
offsets (tree-sitter counts bytes, tokenizers count characters; the two differ on non-ASCII source), and returns, for
each token and each relation, the index of the token it is linked to (``-1`` for none). The model turns these links
into AST block scores (the number of linked token pairs between two blocks).

Relations (:data:`RELATIONS`; a tokenizer may use any subset, in any order):

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

A token belongs to the node that contains its first byte (BPE tokens may straddle node boundaries, as in ``):``).
Code that does not parse still gets links: tree-sitter recovers with ``ERROR`` nodes, which are walked like any
other node. Grammars come from the per-language wheels (``tree-sitter-python``, ``tree-sitter-java``, ...), imported
lazily so a missing one is an ``ImportError`` naming the package to install.

This file is shipped with the tokenizer; ``tree_sitter`` is imported only when a parse is asked for.
"""

from __future__ import annotations

import bisect
import importlib
from functools import cache

import numpy as np

#: language → (grammar module, function returning the grammar pointer)
GRAMMARS = {
    "python": ("tree_sitter_python", "language"),
    "java": ("tree_sitter_java", "language"),
    "c": ("tree_sitter_c", "language"),
    "cpp": ("tree_sitter_cpp", "language"),
    "go": ("tree_sitter_go", "language"),
    "javascript": ("tree_sitter_javascript", "language"),
    "ruby": ("tree_sitter_ruby", "language"),
    "php": ("tree_sitter_php", "language_php"),
}
ALIASES = {"py": "python", "c++": "cpp", "js": "javascript", "rb": "ruby", "golang": "go"}
SUPPORTED_LANGUAGES = tuple(GRAMMARS)
EXTENSIONS = {".py": "python", ".java": "java", ".c": "c", ".h": "c", ".cpp": "cpp", ".cc": "cpp", ".cxx": "cpp",
              ".hpp": "cpp", ".go": "go", ".js": "javascript", ".mjs": "javascript", ".rb": "ruby", ".php": "php"}
RELATIONS = ("statement", "parent", "sibling", "span")

STATEMENT_SUFFIXES = ("_statement", "_declaration", "_definition")
STATEMENT_TYPES = {"declaration", "method", "singleton_method", "class", "module"}
BLOCK_TYPES = {
    "block", "statement_list", "compound_statement", "statement_block", "body_statement", "program", "module",
    "translation_unit", "source_file", "class_body", "declaration_list", "field_declaration_list", "then", "else",
    "do_block", "switch_block_statement_group",
}


def supported_languages_text() -> str:
    """``"supported: python, java, ... (aliases py, ...), or language=None for no AST links"``, for error messages."""
    return (f"supported: {', '.join(SUPPORTED_LANGUAGES)} (aliases {', '.join(ALIASES)}), "
            "or language=None for no AST links")


def normalize_language(language: str | None) -> str | None:
    """The canonical name of ``language`` (case-insensitive, aliases accepted).

    ``ValueError`` if ``language`` is neither a string nor ``None``, or names an unsupported language.
    """
    if language is None:
        return None
    if not isinstance(language, str):
        raise ValueError(f"a language must be a language name (str) or None, got {language!r} "
                         f"({type(language).__name__}); {supported_languages_text()}.")
    name = ALIASES.get(language.lower(), language.lower())
    if name not in GRAMMARS:
        raise ValueError(f"unsupported language {language!r}; {supported_languages_text()}.")
    return name


def validate_relations(relations) -> tuple[str, ...]:
    relations = tuple(relations)
    unknown = [r for r in relations if r not in RELATIONS]
    if unknown or not relations or len(set(relations)) != len(relations):
        raise ValueError(f"ast_relations must be distinct names from {RELATIONS}, got {relations}.")
    return relations


@cache
def get_parser(language: str):
    """A tree-sitter ``Parser`` for ``language`` (grammar wheel imported on first use)."""
    language = normalize_language(language)
    module_name, function_name = GRAMMARS[language]
    package = "tree-sitter-" + language
    try:
        import tree_sitter

        grammar = getattr(importlib.import_module(module_name), function_name)()
    except ImportError as error:
        raise ImportError(
            f"parsing {language} needs the packages tree-sitter and {package}: pip install tree-sitter {package}"
        ) from error
    return tree_sitter.Parser(tree_sitter.Language(grammar))


def char_to_byte_offsets(text: str) -> np.ndarray:
    """``[len(text) + 1]`` int64: the UTF-8 byte offset of every character offset of ``text``."""
    codepoints = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    widths = 1 + (codepoints >= 0x80).astype(np.int64) + (codepoints >= 0x800) + (codepoints >= 0x10000)
    offsets = np.zeros(len(text) + 1, dtype=np.int64)
    np.cumsum(widths, out=offsets[1:])
    return offsets


def _is_statement(node, parent) -> bool:
    kind = node.type
    if kind in BLOCK_TYPES and kind not in STATEMENT_TYPES:  # containers (block, compound_statement) are not
        return False
    return (kind.endswith(STATEMENT_SUFFIXES) or kind in STATEMENT_TYPES
            or (parent is not None and parent.type in BLOCK_TYPES))


def token_links(
    source: str,
    token_spans: list[tuple[int, int]],
    language: str,
    relations: tuple[str, ...] = RELATIONS,
) -> np.ndarray:
    """AST links between tokens.

    Args:
        source: The code.
        token_spans: ``(start, end)`` *character* offsets of the tokens into ``source``, in order. Empty spans
            (special tokens) and whitespace-only tokens get no links.
        language: One of :data:`SUPPORTED_LANGUAGES` (or an alias).
        relations: Which relations, in which column order (see the module docstring).

    Returns:
        ``[len(token_spans), len(relations)]`` int64; entry ``[t, r]`` is the index (into ``token_spans``) of the token
        that token ``t`` is linked to by relation ``r``, or ``-1``.
    """
    relations = validate_relations(relations)
    links = np.full((len(token_spans), len(relations)), -1, dtype=np.int64)
    spans = np.asarray(token_spans, dtype=np.int64).reshape(-1, 2)
    # Tokens with text that is not only whitespace (special tokens have empty spans; indentation links nothing).
    content = np.asarray([t for t, (a, b) in enumerate(token_spans) if b > a and not source[a:b].isspace()],
                         dtype=np.int64)
    if content.size == 0:
        return links
    encoded = source.encode("utf-8", "surrogatepass")
    if len(encoded) == len(source):
        starts = spans[content, 0]
    else:
        starts = char_to_byte_offsets(source)[spans[content, 0]]
    starts = starts.tolist()  # byte starts of the content tokens, ascending
    tree = get_parser(language).parse(encoded)

    column = {name: index for index, name in enumerate(relations)}
    local = np.full((len(starts), len(RELATIONS)), -1, dtype=np.int64)  # over content tokens, all relations
    statement, parent_link, sibling, span = (local[:, i] for i in range(4))

    # Pre-order walk (explicit stack: deep trees must not hit Python's recursion limit). Each entry carries the
    # parent's first token, so a node's relations are set when it is visited; outer nodes come before inner ones.
    stack = [(tree.root_node, None, -1)]
    while stack:
        node, parent, parent_first = stack.pop()
        first = bisect.bisect_left(starts, node.start_byte)
        last = bisect.bisect_left(starts, node.end_byte) - 1
        if first > last:
            continue  # no token starts inside this node (nor inside its children)
        if parent is not None:  # the root links nothing itself
            if _is_statement(node, parent):
                statement[first + 1 : last + 1] = first
            if parent_first >= 0 and parent_first != first and parent_link[first] < 0:
                parent_link[first] = parent_first
            if last > first and span[last] < 0:
                span[last] = first
        previous_statement = -1
        children = node.named_children
        for child in children:
            if _is_statement(child, node):
                child_first = bisect.bisect_left(starts, child.start_byte)
                if child_first < len(starts) and starts[child_first] < child.end_byte:
                    if previous_statement >= 0 and previous_statement != child_first:
                        sibling[child_first] = previous_statement
                    previous_statement = child_first
        stack.extend((child, node, first) for child in reversed(children))

    for name, index in column.items():
        chosen = local[:, RELATIONS.index(name)]
        linked = chosen >= 0
        links[content[linked], index] = content[chosen[linked]]
    return links
