"""Far dependencies of real code: the token pairs a long-code encoder must connect, found independently of SASA's
AST relations (so a layout is not graded by the rule that built it).

Kinds (each a ``(query token, key token)`` pair; the key is what the query depends on):

``data flow``
    an identifier occurrence → the first occurrence of the same name in the source (the name's declaration,
    parameter or first assignment in a function: GraphCodeBERT's "comes from" edges, as the issue measured them).
``first → later``
    the same pairs the other way round: a name's first occurrence → each later occurrence (what a masked or unclear
    declaration is recovered from; attention is needed in both directions).
``call → definition``
    the callee name of a call → the name in the definition of the function/method of that name in the same source.
``closing → opening``
    a closing bracket ``)``/``]``/``}`` → its opening bracket.
``return → function``
    a ``return`` → the first token of the function it leaves.

A pair is *far* when the key's block is outside the query block's window and neither block is global: only the
extra (top-k, AST, random) blocks can cover it. :func:`far_pairs` keeps those.
"""

from __future__ import annotations

import bisect

import numpy as np

from sasa.ast_languages import get_parser
from sasa.ast_relations import char_to_byte_offsets

KINDS = ("data flow", "first → later", "call → definition", "closing → opening", "return → function")

IDENTIFIERS = {
    "identifier", "field_identifier", "property_identifier", "type_identifier", "shorthand_property_identifier",
    "shorthand_property_identifier_pattern", "package_identifier", "namespace_identifier", "statement_identifier",
    "private_property_identifier", "name", "constant", "instance_variable", "class_variable", "global_variable",
}
#: call node → the fields that hold its callee (the callee's last identifier is the called name)
CALLS = {
    "call": ("method", "function"), "call_expression": ("function",), "method_invocation": ("name",),
    "function_call_expression": ("function",), "member_call_expression": ("name",),
    "scoped_call_expression": ("name",), "nullsafe_member_call_expression": ("name",),
}
DEFINITIONS = {
    "function_definition", "function_declaration", "method_declaration", "method_definition", "method",
    "singleton_method", "constructor_declaration", "generator_function_declaration",
}
RETURNS = {"return_statement", "return"}
OPENING = {")": "(", "]": "[", "}": "{"}


def _leaves(node):
    """Leaf nodes under ``node``, in source order (explicit stack: no recursion limit)."""
    stack = [node]
    while stack:
        current = stack.pop()
        if current.child_count == 0:
            yield current
        else:
            stack.extend(reversed(current.children))


def _last_identifier(node):
    names = [leaf for leaf in _leaves(node) if leaf.type in IDENTIFIERS]
    return names[-1] if names else None


def _definition_name(node):
    name = node.child_by_field_name("name")
    if name is not None:
        return _last_identifier(name) if name.type not in IDENTIFIERS else name
    declarator = node.child_by_field_name("declarator")  # C/C++: int *f(...) → pointer_declarator → function_declarator
    while declarator is not None and declarator.child_by_field_name("declarator") is not None:
        declarator = declarator.child_by_field_name("declarator")
    return None if declarator is None else _last_identifier(declarator)


def dependencies(source: str, token_spans: list[tuple[int, int]], language: str) -> dict[str, np.ndarray]:
    """Every dependency of every kind (near and far) as ``[P, 2]`` int64 token-index pairs ``(query, key)``.

    ``token_spans`` are character offsets (as a tokenizer's ``offset_mapping``); empty spans (special tokens) are
    never part of a pair.
    """
    content = [t for t, (a, b) in enumerate(token_spans) if b > a]
    to_bytes = char_to_byte_offsets(source)
    starts = [int(to_bytes[token_spans[t][0]]) for t in content]
    tree = get_parser(language).parse(source.encode("utf-8", "surrogatepass"))

    def token_at(byte: int) -> int:
        index = bisect.bisect_right(starts, byte) - 1
        return content[index] if index >= 0 else -1

    pairs = {kind: [] for kind in KINDS}
    first_occurrence: dict[bytes, int] = {}
    definitions: dict[bytes, int] = {}
    calls, returns = [], []
    stack = [(tree.root_node, -1)]  # (node, first token of the innermost enclosing definition)
    while stack:
        node, function_head = stack.pop()
        kind = node.type
        if kind in DEFINITIONS:
            function_head = token_at(node.start_byte)
            name = _definition_name(node)
            if name is not None:
                definitions.setdefault(name.text, token_at(name.start_byte))
        if kind in CALLS:
            callee = next((node.child_by_field_name(f) for f in CALLS[kind] if node.child_by_field_name(f)), None)
            name = None if callee is None else (callee if callee.type in IDENTIFIERS else _last_identifier(callee))
            if name is not None:
                calls.append(name)
        if kind in RETURNS and node.child_count and function_head >= 0:
            returns.append((token_at(node.start_byte), function_head))
        if node.child_count == 0:
            if kind in IDENTIFIERS:
                token = token_at(node.start_byte)
                first = first_occurrence.setdefault(node.text, token)
                pairs["data flow"].append((token, first))
            continue
        openers = []
        for child in node.children:
            if child.type in OPENING.values():
                openers.append(child)
            elif child.type in OPENING and openers and openers[-1].type == OPENING[child.type]:
                pairs["closing → opening"].append((token_at(child.start_byte), token_at(openers.pop().start_byte)))
        stack.extend((child, function_head) for child in reversed(node.children))
    for name in calls:
        target = definitions.get(name.text)
        token = token_at(name.start_byte)
        if target is not None:
            pairs["call → definition"].append((token, target))
    pairs["return → function"] = returns
    pairs["first → later"] = [(first, token) for token, first in pairs["data flow"]]
    # A pair inside one token (the ``()`` of ``f()``) connects nothing.
    return {kind: np.asarray([(q, k) for q, k in found if q != k], dtype=np.int64).reshape(-1, 2)
            for kind, found in pairs.items()}


def far_pairs(pairs: np.ndarray, block_size: int, window_radius: int, num_global_blocks: int) -> np.ndarray:
    """The pairs no window or global block covers (rows of ``pairs`` kept, same layout)."""
    query_block, key_block = pairs[:, 0] // block_size, pairs[:, 1] // block_size
    far = (np.abs(query_block - key_block) > window_radius) & (query_block >= num_global_blocks)
    return pairs[far & (key_block >= num_global_blocks)]
