"""AST links where a reader expects them, in all eight languages, on real snippets (tests/data/snippets)."""

import re
from pathlib import Path

import numpy as np
import pytest

from sasa import ast_relations
from sasa.ast_relations import (
    RELATIONS,
    SUPPORTED_LANGUAGES,
    char_to_byte_offsets,
    get_parser,
    normalize_language,
    token_links,
)

SNIPPETS = Path(__file__).parent / "data" / "snippets"
STATEMENT, PARENT, SIBLING, SPAN = (RELATIONS.index(name) for name in RELATIONS)


def tokenize(source: str):
    """Words and single punctuation characters with their character spans: exact, BPE-free tokens for tests."""
    matches = list(re.finditer(r"\w+|[^\w\s]", source))
    return [m.group() for m in matches], [m.span() for m in matches]


class Linked:
    """Tokens of a snippet and their links, addressed by token text and occurrence."""

    def __init__(self, source: str, language: str):
        self.tokens, spans = tokenize(source)
        self.links = token_links(source, spans, language)

    def index(self, text: str, occurrence: int = 0) -> int:
        return [i for i, token in enumerate(self.tokens) if token == text][occurrence]

    def target(self, text: str, relation: int, occurrence: int = 0) -> int:
        return int(self.links[self.index(text, occurrence), relation])


def snippet(name: str) -> str:
    return (SNIPPETS / name).read_text(encoding="utf-8")


def test_python_def_links_its_body_statements():
    linked = Linked(snippet("example.py"), "python")
    definition = linked.index("def")
    for first_token in ("if", "area", "return"):
        assert linked.target(first_token, STATEMENT) == definition, first_token
    assert linked.target("return", SIBLING) == linked.index("area")
    assert linked.target("area", SIBLING) == linked.index("if", 0)
    assert linked.target("raise", STATEMENT) == linked.index("if")  # inside the if: its innermost statement


def test_java_method_name_and_closing_brace_share_the_method():
    linked = Linked(snippet("Example.java"), "java")
    method_start = linked.index("public", 1)
    assert linked.target("sum", STATEMENT) == method_start
    method_close = len(linked.tokens) - 2  # the method's "}", before the class's
    assert linked.tokens[method_close] == "}" and linked.links[method_close, SPAN] == method_start
    assert linked.target("return", SIBLING) == linked.index("total", 1)


@pytest.mark.parametrize(
    ("file", "language", "function_head", "previous_statement"),
    [
        ("example.c", "c", ("int", 0), ("printf", 0)),
        ("example.cpp", "cpp", ("int", 0), ("for", 0)),
        ("example.go", "go", ("func", 0), ("fmt", 1)),
        ("example.js", "javascript", ("function", 0), ("console", 0)),
        ("example.rb", "ruby", ("def", 0), ("puts", 0)),
        ("example.php", "php", ("function", 0), ("echo", 0)),
    ],
)
def test_return_belongs_to_its_function_and_follows_its_sibling(file, language, function_head, previous_statement):
    linked = Linked(snippet(file), language)
    assert linked.target("return", STATEMENT) == linked.index(*function_head)
    assert linked.target("return", SIBLING) == linked.index(*previous_statement)


def test_parent_and_span_link_node_heads():
    linked = Linked("result = compute(alpha, beta) + 1\n", "python")
    assert linked.target(")", SPAN) == linked.index("compute")  # the call (and only it) ends at ")"
    assert linked.target("1", SPAN) == linked.index("result")  # the whole statement ends at "1"
    assert linked.target("alpha", PARENT) == linked.index("(")  # argument list's head


def test_non_ascii_source_aligns_by_bytes():
    source = "def größe(wert):\n    ergebnis = 'ä' * wert\n    return ergebnis\n"
    linked = Linked(source, "python")
    assert linked.target("return", STATEMENT) == linked.index("def")
    assert linked.target("return", SIBLING) == linked.index("ergebnis")
    assert linked.target("wert", STATEMENT, 1) == linked.index("ergebnis")  # "wert" in the assignment
    offsets = char_to_byte_offsets("aé€😀b")
    assert offsets.tolist() == [0, 1, 3, 6, 10, 11]


def test_code_that_does_not_parse_still_gets_links():
    source = "def broken(:\n    x = = 1\n    return x +\n"
    tokens, spans = tokenize(source)
    links = token_links(source, spans, "python")
    assert links.shape == (len(tokens), len(RELATIONS))
    assert (links >= 0).sum() > 5


def test_deep_nesting_does_not_hit_the_recursion_limit():
    source = "x = " + "(" * 3000 + "1" + ")" * 3000 + "\n"
    tokens, spans = tokenize(source)
    assert token_links(source, spans, "python").shape == (len(tokens), len(RELATIONS))


def test_special_and_whitespace_tokens_get_no_links():
    source = "x = 1\n"
    links = token_links(source, [(0, 0), (0, 1), (1, 2), (2, 3), (4, 5), (0, 0)], "python")
    assert (links[[0, 2, 5]] == -1).all()
    assert links[4, STATEMENT] == 1  # "1" → "x"


def test_relation_subset_and_order_are_configurable():
    source = "def f():\n    a = 1\n    return a\n"
    tokens, spans = tokenize(source)
    full = token_links(source, spans, "python")
    subset = token_links(source, spans, "python", ("span", "statement"))
    assert np.array_equal(subset, full[:, [SPAN, STATEMENT]])
    with pytest.raises(ValueError, match="ast_relations"):
        token_links(source, spans, "python", ("statement", "bogus"))


def test_unknown_language_is_a_value_error_listing_the_supported_ones():
    with pytest.raises(ValueError, match="python, java, c, cpp, go, javascript, ruby, php"):
        normalize_language("cobol")
    assert normalize_language("C++") == "cpp" and normalize_language("JS") == "javascript"
    assert set(SUPPORTED_LANGUAGES) == {"python", "java", "c", "cpp", "go", "javascript", "ruby", "php"}


@pytest.mark.parametrize("language", [123, ["python"], b"python"], ids=["int", "list", "bytes"])
def test_a_language_that_is_not_a_string_is_a_value_error_saying_what_is_expected(language):
    with pytest.raises(ValueError, match=r"language name \(str\) or None, got .* \((int|list|bytes)\); supported"):
        normalize_language(language)


def test_missing_grammar_is_an_import_error_naming_the_package(monkeypatch):
    monkeypatch.setitem(ast_relations.GRAMMARS, "go", ("tree_sitter_go_not_installed", "language"))
    get_parser.cache_clear()
    try:
        with pytest.raises(ImportError, match="pip install tree-sitter tree-sitter-go"):
            get_parser("go")
    finally:
        get_parser.cache_clear()
