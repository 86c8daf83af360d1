"""AST links where a reader expects them, in all eight languages, on real snippets (tests/data/snippets)."""

import re
from pathlib import Path

import numpy as np
import pytest

from sasa import ast_languages
from sasa.ast_languages import QUERIES, SUPPORTED_LANGUAGES, get_parser, get_query, normalize_language
from sasa.ast_relations import DEFAULT_RELATIONS, RELATIONS, char_to_byte_offsets, token_links

SNIPPETS = Path(__file__).parent / "data" / "snippets"
STRUCTURAL = ("statement", "parent", "sibling", "span")  # the first four relations, linking mostly nearby tokens
STATEMENT, PARENT, SIBLING, SPAN, DATAFLOW, CALL, DECLARATION, EXIT = (RELATIONS.index(name) for name in RELATIONS)
FILES = {"python": "example.py", "java": "Example.java", "c": "example.c", "cpp": "example.cpp", "go": "example.go",
         "javascript": "example.js", "ruby": "example.rb", "php": "example.php"}


def tokenize(source: str):
    """Words and single punctuation characters with their character spans: exact, BPE-free tokens for tests."""
    matches = list(re.finditer(r"\w+|[^\w\s]", source))
    return [m.group() for m in matches], [m.span() for m in matches]


class Linked:
    """Tokens of a snippet and their links (all relations, in RELATIONS order), addressed by text and occurrence."""

    def __init__(self, source: str, language: str):
        self.tokens, spans = tokenize(source)
        self.links = token_links(source, spans, language, RELATIONS)

    def index(self, text: str, occurrence: int = 0) -> int:
        return [i for i, token in enumerate(self.tokens) if token == text][occurrence]

    def target(self, text: str, relation: int, occurrence: int = 0) -> int:
        return int(self.links[self.index(text, occurrence), relation])

    def targets(self, first: int, last: int, relation: int) -> list[int]:
        """The links of tokens ``first..last`` (inclusive)."""
        return self.links[first : last + 1, relation].tolist()


def snippet(name: str) -> str:
    return (SNIPPETS / name).read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def linked() -> dict[str, Linked]:
    return {language: Linked(snippet(name), language) for language, name in FILES.items()}


# --- statement, parent, sibling, span ---------------------------------------------------------------------------

def test_python_def_links_its_body_statements(linked):
    python = linked["python"]
    definition = python.index("def")
    for first_token in ("if", "area", "return"):
        assert python.target(first_token, STATEMENT) == definition, first_token
    assert python.target("return", SIBLING) == python.index("area")
    assert python.target("area", SIBLING) == python.index("if", 0)
    assert python.target("raise", STATEMENT) == python.index("if")  # inside the if: its innermost statement


def test_java_method_name_and_closing_brace_share_the_method(linked):
    java = linked["java"]
    method_start = java.index("public", 1)
    assert java.target("sum", STATEMENT) == method_start
    method_close = java.index("private", 1) - 1  # sum's "}", before the next method's modifiers
    assert java.tokens[method_close] == "}" and java.links[method_close, SPAN] == method_start
    assert java.target("return", SIBLING) == java.index("total", 1)


@pytest.mark.parametrize(
    ("language", "function_head", "returned", "previous_statement"),
    [
        ("c", ("int", 3), ("return", 1), ("printf", 0)),  # sum comes after scale
        ("cpp", ("int", 0), ("return", 0), ("for", 0)),
        ("go", ("func", 0), ("return", 0), ("fmt", 1)),
        ("javascript", ("function", 0), ("return", 0), ("console", 0)),
        ("ruby", ("def", 0), ("return", 0), ("puts", 0)),
        ("php", ("function", 0), ("return", 0), ("echo", 0)),
    ],
)
def test_return_belongs_to_its_function_and_follows_its_sibling(linked, language, function_head, returned,
                                                                 previous_statement):
    code = linked[language]
    assert code.target(*returned[:1], STATEMENT, returned[1]) == code.index(*function_head)
    assert code.target(*returned[:1], SIBLING, returned[1]) == code.index(*previous_statement)


def test_parent_and_span_link_node_heads():
    linked = Linked("result = compute(alpha, beta) + 1\n", "python")
    assert linked.target(")", SPAN) == linked.index("compute")  # the call (and only it) ends at ")"
    assert linked.target("1", SPAN) == linked.index("result")  # the whole statement ends at "1"
    assert linked.target("alpha", PARENT) == linked.index("(")  # argument list's head


# --- dataflow ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("language", "returned", "last_assignment", "declaration"),
    [  # "return result" → "result += ..." (its last assignment) → "result = 0" (its declaration)
        ("python", 3, 1, 0),
        ("java", 3, 1, 0),
        ("c", 3, 1, 0),
        ("cpp", 2, 1, 0),
        ("go", 3, 1, 0),
        ("javascript", 3, 1, 0),
        ("ruby", 4, 1, 0),  # the assignment in the do-block is the method's variable
        ("php", 3, 1, 0),
    ],
)
def test_dataflow_links_a_use_to_its_last_assignment_and_that_to_the_declaration(linked, language, returned,
                                                                                 last_assignment, declaration):
    code = linked[language]
    offset = 1 if language == "php" else 0  # "$result" is two tokens here: "$" and "result"; both link to "$"
    assert code.target("result", DATAFLOW, returned) == code.index("result", last_assignment) - offset
    assert code.target("result", DATAFLOW, last_assignment) == code.index("result", declaration) - offset
    if offset:
        assert code.links[code.index("result", returned) - 1, DATAFLOW] == code.index("result", last_assignment) - 1


@pytest.mark.parametrize("language", SUPPORTED_LANGUAGES)
def test_declaration_links_every_use_of_a_variable_to_where_it_is_introduced(linked, language):
    code = linked[language]
    offset = 1 if language == "php" else 0  # "$result": "$" and "result", both link to "$"
    uses = range(1, sum(token == "result" for token in code.tokens))
    assert len(uses) >= 2
    for use in uses:  # the last assignment, the use in a print/echo, the returned value: all → "result = 0"
        assert code.target("result", DECLARATION, use) == code.index("result", 0) - offset, (language, use)
    assert code.target("result", DECLARATION, 0) == -1  # the declaration itself links nowhere


@pytest.mark.parametrize(
    ("language", "use", "definition"),
    [  # the loop variable, used in the loop → its definition in the loop head
        ("python", ("value", 1), ("value", 0)),
        ("java", ("value", 1), ("value", 0)),
        ("cpp", ("value", 1), ("value", 0)),
        ("go", ("value", 1), ("value", 0)),
        ("javascript", ("value", 1), ("value", 0)),
        ("ruby", ("value", 1), ("value", 0)),  # the block parameter |value|
        ("c", ("i", 1), ("i", 0)),
    ],
)
def test_dataflow_links_loop_variables_to_the_loop_head(linked, language, use, definition):
    code = linked[language]
    assert code.target(*use[:1], DATAFLOW, use[1]) == code.index(*definition)


@pytest.mark.parametrize("language", SUPPORTED_LANGUAGES)
def test_dataflow_sees_a_parameter_in_its_own_function_not_a_same_named_variable_elsewhere(linked, language):
    # "value * 2" in scale → scale's parameter "value", not sum's loop variable "value" (used in the call before)
    code = linked[language]
    parameter = code.tokens.index("value", code.index("scale", 0 if language == "c" else 1))
    use = code.tokens.index("value", code.tokens.index(")", parameter))
    head = parameter - 1 if language == "php" else parameter  # "$value": "$"
    assert code.links[use, DATAFLOW] == head


def test_dataflow_links_fields_of_the_object_itself(linked):
    python = linked["python"]  # "self.total = result" in sum → "self.total = 0" in __init__: every token of it
    field = python.index("total", 1)
    assert python.targets(field - 2, field, DATAFLOW) == [python.index("total", 0) - 2] * 3
    java = linked["java"]  # "this.total" → the field declaration "private int total"
    this = java.index("this")
    assert java.targets(this, this + 2, DATAFLOW) == [java.index("total", 0)] * 3
    javascript = linked["javascript"]  # "this.total += value" in add → "this.total = 0" in the constructor
    this = javascript.index("this", 1)
    assert javascript.targets(this, this + 2, DATAFLOW) == [javascript.index("this", 0)] * 3
    php = linked["php"]  # "$this->total" → the property "private $total"
    this = php.index("this")
    assert php.targets(this - 1, this + 3, DATAFLOW) == [php.index("total", 0) - 1] * 5
    ruby = linked["ruby"]  # "@total" in the reader method → "@total = result" in sum
    use = ruby.index("total", 2)
    assert ruby.targets(use - 1, use, DATAFLOW) == [ruby.index("total", 0) - 1] * 2
    go = linked["go"]  # the receiver: "c.total" → "(c *Counter)"
    assert go.target("c", DATAFLOW, 1) == go.index("c", 0)


# --- call -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("language", SUPPORTED_LANGUAGES)
def test_call_links_the_callee_to_the_defined_function_name(linked, language):
    code = linked[language]
    call, definition = (1, 0) if language == "c" else (0, 1)  # C defines scale before sum
    assert code.tokens[code.index("scale", definition) + 1] == "("  # "scale(" of the definition
    assert code.target("scale", CALL, call) == code.index("scale", definition)
    assert code.target("scale", CALL, definition) == -1  # the definition's name is no call


def test_call_links_only_functions_defined_in_the_source(linked):
    assert linked["javascript"].target("log", CALL) == -1  # console.log
    assert linked["c"].target("printf", CALL) == -1
    assert linked["go"].target("Println", CALL) == -1


def test_call_prefers_the_nearest_preceding_definition_else_the_first():
    source = "def f(): pass\nf()\ndef f(): pass\nf()\ndef g(): h()\ndef h(): pass\n"
    linked = Linked(source, "python")
    assert linked.target("f", CALL, 1) == linked.index("f", 0)
    assert linked.target("f", CALL, 3) == linked.index("f", 2)
    assert linked.target("h", CALL, 0) == linked.index("h", 1)  # defined later: the first definition
    assert linked.target("f", CALL, 0) == -1


# --- declaration ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("language", "use", "declared"),
    [  # type uses → the type's declaration
        ("java", ("Example", 3), ("Example", 0)),  # new Example()
        ("java", ("Example", 1), ("Example", 0)),  # a return type
        ("c", ("counter", 1), ("counter", 0)),  # struct counter *counter
        ("cpp", ("Accumulator", 1), ("Accumulator", 0)),
        ("go", ("Counter", 1), ("Counter", 0)),  # the receiver's type
        ("javascript", ("Counter", 1), ("Counter", 0)),  # new Counter()
        ("php", ("Counter", 1), ("Counter", 0)),
    ],
)
def test_declaration_links_type_uses_to_the_type(linked, language, use, declared):
    code = linked[language]
    assert code.target(*use[:1], DECLARATION, use[1]) == code.index(*declared)
    assert code.target(*declared[:1], DECLARATION, declared[1]) == -1  # the declaration itself links nothing


@pytest.mark.parametrize(
    ("language", "access", "declared", "offset"),
    [  # member accesses → the field's declaration (Python, JavaScript, Ruby: its first assignment)
        ("python", ("total", 1), ("total", 0), 0),  # self.total → self.total = 0 in __init__
        ("python", ("name", 3), ("name", 1), 0),  # self.name in describe → self.name = name
        ("java", ("total", 2), ("total", 0), 0),  # other.total
        ("java", ("total", 3), ("total", 0), 0),  # this.total
        ("c", ("total", 1), ("total", 0), 0),  # counter->total
        ("cpp", ("total", 0), ("total", 1), 0),  # this->total, declared after the method
        ("go", ("total", 1), ("total", 0), 0),  # c.total
        ("javascript", ("total", 1), ("total", 0), 0),  # this.total = 0 in the constructor
        ("php", ("total", 1), ("total", 0), -1),  # $this->total → private $total ("$")
        ("ruby", ("total", 2), ("total", 0), -1),  # @total → @total = result ("@")
    ],
)
def test_declaration_links_member_accesses_to_the_field(linked, language, access, declared, offset):
    code = linked[language]
    assert code.target(*access[:1], DECLARATION, access[1]) == code.index(*declared) + offset


def test_declaration_links_a_method_access_without_a_field_to_the_method():
    source = "class A {\n  int size() { return 1; }\n  int twice(A other) { return other.size() * 2; }\n}\n"
    linked = Linked(source, "java")
    assert linked.target("size", DECLARATION, 1) == linked.index("size", 0)
    assert linked.target("A", DECLARATION, 1) == linked.index("A", 0)


# --- exit -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("language", "returned", "function_head"),
    [
        ("python", ("return", 2), ("def", 4)),  # in sum
        ("python", ("raise", 0), ("def", 0)),
        ("java", ("return", 0), ("public", 1)),  # the method starts at its modifiers
        ("java", ("return", 1), ("private", 1)),
        ("c", ("return", 1), ("int", 3)),
        ("c", ("return", 0), ("static", 0)),
        ("cpp", ("return", 0), ("int", 0)),
        ("go", ("return", 2), ("func", 2)),  # a method with a receiver
        ("javascript", ("return", 2), ("add", 0)),  # a class method starts at its name
        ("ruby", ("return", 0), ("def", 0)),
        ("php", ("return", 2), ("public", 0)),
    ],
)
def test_exit_links_the_whole_return_statement_to_its_function_head(linked, language, returned, function_head):
    code = linked[language]
    start = code.index(*returned)
    assert code.targets(start, start + 1, EXIT) == [code.index(*function_head)] * 2  # the keyword and what follows


@pytest.mark.parametrize(
    ("language", "loop"),
    [("python", "for"), ("java", "for"), ("c", "for"), ("cpp", "for"), ("go", "for"), ("javascript", "for"),
     ("php", "foreach"), ("ruby", "do")],  # Ruby's break leaves the block
)
def test_exit_links_break_to_its_loop(linked, language, loop):
    code = linked[language]
    assert code.target("break", EXIT) == code.index(loop)
    assert code.target("if", EXIT) == -1  # the if around it is not an exit


def test_exit_break_in_a_switch_leaves_the_switch_and_continue_the_loop():
    source = ("int f(int n) {\n  for (int i = 0; i < n; i++) {\n    switch (i) {\n      case 1: break;\n"
              "      default: continue;\n    }\n  }\n  return n;\n}\n")
    linked = Linked(source, "c")
    assert linked.target("break", EXIT) == linked.index("switch")
    assert linked.target("continue", EXIT) == linked.index("for")
    assert linked.target("return", EXIT) == linked.index("int", 0)


@pytest.mark.parametrize(
    ("language", "source", "jump", "label"),
    [
        ("c", "void f(void) {\n  goto done;\n  g();\ndone:\n  h();\n}\n", ("goto", 0), ("done", 1)),
        ("java", "class A { void f() { outer: for (;;) { for (;;) { break outer; } } } }\n", ("break", 0),
         ("outer", 0)),
        ("go", "package p\nfunc f() {\nouter:\n\tfor {\n\t\tfor {\n\t\t\tcontinue outer\n\t\t}\n\t}\n}\n",
         ("continue", 0), ("outer", 0)),
        ("javascript", "function f() { outer: for (;;) { for (;;) { break outer; } } }\n", ("break", 0),
         ("outer", 0)),
        ("php", "<?php\nfunction f() {\n  goto done;\n  done:\n  g();\n}\n", ("goto", 0), ("done", 1)),
    ],
)
def test_exit_links_goto_and_labelled_jumps_to_the_label(language, source, jump, label):
    linked = Linked(source, language)
    assert linked.target(*jump[:1], EXIT, jump[1]) == linked.index(*label)


# --- all relations: alignment, robustness, configuration --------------------------------------------------------

def test_non_ascii_source_aligns_by_bytes():
    source = "def größe(wert):\n    ergebnis = 'ä' * wert\n    return ergebnis\n\nx = größe(2)\n"
    linked = Linked(source, "python")
    assert linked.target("return", STATEMENT) == linked.index("def")
    assert linked.target("return", SIBLING) == linked.index("ergebnis")
    assert linked.target("wert", STATEMENT, 1) == linked.index("ergebnis")  # "wert" in the assignment
    assert linked.target("wert", DATAFLOW, 1) == linked.index("wert", 0)
    assert linked.target("ergebnis", DATAFLOW, 1) == linked.index("ergebnis", 0)
    assert linked.target("größe", CALL, 1) == linked.index("größe", 0)
    assert linked.target("return", EXIT) == linked.index("def")
    offsets = char_to_byte_offsets("aé€😀b")
    assert offsets.tolist() == [0, 1, 3, 6, 10, 11]


def test_code_that_does_not_parse_still_gets_links():
    source = "def broken(:\n    x = = 1\n    return x +\n"
    tokens, spans = tokenize(source)
    links = token_links(source, spans, "python", RELATIONS)
    assert links.shape == (len(tokens), len(RELATIONS))
    assert (links[:, :4] >= 0).sum() > 5
    assert links[tokens.index("x", tokens.index("return")), DATAFLOW] == tokens.index("x")


def test_deep_nesting_does_not_hit_the_recursion_limit():
    source = "x = " + "(" * 3000 + "1" + ")" * 3000 + "\n"
    tokens, spans = tokenize(source)
    assert token_links(source, spans, "python", RELATIONS).shape == (len(tokens), len(RELATIONS))
    source = "x = 1\nf = " + "lambda: " * 400 + "x\n"  # 400 nested scopes between the use and the definition
    tokens, spans = tokenize(source)
    links = token_links(source, spans, "python", ("dataflow",))
    assert links[len(tokens) - 1, 0] == 0


def test_special_and_whitespace_tokens_get_no_links():
    source = "x = 1\nprint(x)\n"
    spans = [(0, 0), (0, 1), (1, 2), (2, 3), (4, 5), (5, 6), (6, 11), (11, 12), (12, 13), (13, 14), (0, 0)]
    links = token_links(source, spans, "python", RELATIONS)
    assert (links[[0, 2, 5, 10]] == -1).all()
    assert links[4, STATEMENT] == 1  # "1" → "x"
    assert links[8, DATAFLOW] == 1  # "x" in print(x) → "x ="
    assert not np.isin(links, [0, 2, 5, 10]).any()  # nothing links to them either


def test_truncated_tokens_keep_the_links_they_have_in_the_whole_source():
    # Only the code up to the last token's line is parsed (or all of it when that prefix does not parse well).
    source = ('def f(a):\n    """' + "word word word\n" * 100 + '"""\n    b = {\n' + "        1: a,\n" * 100
              + "    }\n    return b\n\ndef g(b):\n    return b\n")
    tokens, spans = tokenize(source)
    full = token_links(source, spans, "python", RELATIONS)
    for cut in (150, 500, len(tokens) - 8):  # inside the docstring, inside the dict, before "def g"
        truncated = token_links(source, spans[:cut], "python", RELATIONS)
        # The nodes cut short end at the last token, which may gain a span link; all else is as in the whole source.
        assert np.array_equal(truncated[: cut - 1], full[: cut - 1]), cut
        assert np.array_equal(np.delete(truncated[cut - 1], SPAN), np.delete(full[cut - 1], SPAN)), cut


def test_relation_subset_and_order_are_configurable():
    source = "def f():\n    a = 1\n    return a\n"
    tokens, spans = tokenize(source)
    full = token_links(source, spans, "python", RELATIONS)
    subset = token_links(source, spans, "python", ("exit", "span", "statement", "dataflow"))
    assert np.array_equal(subset, full[:, [EXIT, SPAN, STATEMENT, DATAFLOW]])
    default = token_links(source, spans, "python")
    assert np.array_equal(default, full[:, [RELATIONS.index(name) for name in DEFAULT_RELATIONS]])
    with pytest.raises(ValueError, match="ast_relations"):
        token_links(source, spans, "python", ("statement", "bogus"))


def test_default_relations_are_known_and_reach_far():
    assert set(DEFAULT_RELATIONS) <= set(RELATIONS) and len(set(DEFAULT_RELATIONS)) == len(DEFAULT_RELATIONS)
    assert {"declaration", "call", "exit"} <= set(DEFAULT_RELATIONS)


@pytest.mark.parametrize("language", SUPPORTED_LANGUAGES)
def test_every_language_has_a_query_for_every_relation_group(language):
    assert set(QUERIES[language]) == {"dataflow", "call", "declaration", "exit"}
    query = get_query(language, frozenset({"structure", "dataflow", "call", "declaration", "exit"}))
    assert query.pattern_count > 20


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
    monkeypatch.setitem(ast_languages.GRAMMARS, "go", ("tree_sitter_go_not_installed", "language"))
    get_parser.cache_clear()
    try:
        with pytest.raises(ImportError, match="pip install tree-sitter tree-sitter-go"):
            get_parser("go")
    finally:
        get_parser.cache_clear()
