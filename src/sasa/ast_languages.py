"""The languages SASA parses: tree-sitter grammars, per-language node types and query patterns.

Everything language-specific lives here; :mod:`.ast_relations` turns what these queries capture into token links and
knows no language by name. Adding a language: a grammar in :data:`GRAMMARS` (a ``tree-sitter-<language>`` wheel),
its file extensions in :data:`EXTENSIONS`, and its patterns in :data:`QUERIES`.

This file is shipped with the tokenizer (imported by :mod:`.ast_relations`); ``tree_sitter`` and the grammar wheels
are imported only when a parse is asked for, so a missing one is an ``ImportError`` naming the package to install.
"""

from __future__ import annotations

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

STATEMENT_SUFFIXES = ("_statement", "_declaration", "_definition")
STATEMENT_TYPES = {"declaration", "method", "singleton_method", "class", "module"}
BLOCK_TYPES = {
    "block", "statement_list", "compound_statement", "statement_block", "body_statement", "program", "module",
    "translation_unit", "source_file", "class_body", "declaration_list", "field_declaration_list", "then", "else",
    "do_block", "switch_block_statement_group",
}

#: Per language and relation group, the tree-sitter query patterns that collect the nodes the relations need (matched
#: in C; ``structure`` serves ``statement``, ``parent``, ``sibling`` and ``span``). Capture names:
#:
#: * ``structure``: ``@node`` every named node.
#: * ``dataflow``: ``@name`` a variable occurrence; ``@member`` a member name that is not a variable even where it is
#:   an identifier (``x`` in ``a.x``); ``@field`` a field of the object itself (``self.x``, ``this.x``, ``@x``, a
#:   field declaration: one occurrence, named by its last name); ``@def`` a definition (a node inside the occurrence
#:   it defines), ``@def.outer`` one that belongs to the scope around its own (a function's name); ``@scope``.
#: * ``call``: ``@callee`` a callee's name; ``@function.name`` the name in a function or method definition.
#: * ``declaration``: ``@use`` a type use; ``@member`` a member access's name; ``@type.name``, ``@field.name``,
#:   ``@function.name`` the names in type, field and method declarations.
#: * ``exit``: ``@return``, ``@break``, ``@continue``, ``@jump`` (goto, labelled break/continue) the exit statements,
#:   ``@jump.label`` the label a jump names; ``@label`` a statement label's name; ``@function``, ``@loop``,
#:   ``@switch`` the constructs they leave.
QUERIES = {
    "python": {
        "dataflow": (
            "(identifier) @name",
            "(attribute attribute: (identifier) @member)",
            "(keyword_argument name: (identifier) @member)",
            '((attribute object: (identifier) @_self attribute: (identifier)) @field (#eq? @_self "self"))',
            "(assignment left: (identifier) @def)",
            "(assignment left: (attribute attribute: (identifier) @def))",
            "(assignment left: [(pattern_list (identifier) @def) (tuple_pattern (identifier) @def) (list_pattern "
            "(identifier) @def)])",
            "(augmented_assignment left: (identifier) @def)",
            "(augmented_assignment left: (attribute attribute: (identifier) @def))",
            "(named_expression name: (identifier) @def)",
            "(for_statement left: (identifier) @def)",
            "(for_in_clause left: (identifier) @def)",
            "(for_statement left: [(pattern_list (identifier) @def) (tuple_pattern (identifier) @def)])",
            "(for_in_clause left: [(pattern_list (identifier) @def) (tuple_pattern (identifier) @def)])",
            "(parameters (identifier) @def)",
            "(lambda_parameters (identifier) @def)",
            "(typed_parameter (identifier) @def)",
            "(list_splat_pattern (identifier) @def)",
            "(dictionary_splat_pattern (identifier) @def)",
            "(default_parameter name: (identifier) @def)",
            "(typed_default_parameter name: (identifier) @def)",
            "(as_pattern alias: (as_pattern_target (identifier) @def))",
            "(import_statement name: (dotted_name . (identifier) @def))",
            "(import_from_statement name: (dotted_name (identifier) @def))",
            "(aliased_import alias: (identifier) @def)",
            "(class_definition name: (identifier) @def)",
            "(function_definition name: (identifier) @def.outer)",
            "[(function_definition) (lambda)] @scope",
        ),
        "call": (
            "(call function: (identifier) @callee)",
            "(call function: (attribute attribute: (identifier) @callee))",
            "(function_definition name: (identifier) @function.name)",
        ),
        "declaration": (
            "(type (identifier) @use)",
            "(type (_ (identifier) @use))",
            "(class_definition superclasses: (argument_list (identifier) @use))",
            "(call function: (identifier) @use)",
            "(attribute attribute: (identifier) @member)",
            "(class_definition name: (identifier) @type.name)",
            '((assignment left: (attribute object: (identifier) @_self attribute: (identifier) @field.name)) (#eq? '
            '@_self "self"))',
            "(function_definition name: (identifier) @function.name)",
        ),
        "exit": (
            "[(return_statement) (raise_statement) (yield)] @return",
            "(break_statement) @break",
            "(continue_statement) @continue",
            "[(function_definition) (lambda)] @function",
            "[(for_statement) (while_statement)] @loop",
        ),
    },
    "java": {
        "dataflow": (
            "(identifier) @name",
            "(field_access field: (identifier) @member)",
            "(method_invocation object: (_) name: (identifier) @member)",
            "(scoped_identifier name: (identifier) @member)",
            "(field_access object: (this) field: (identifier)) @field",
            "(variable_declarator name: (identifier) @def)",
            "(formal_parameter name: (identifier) @def)",
            "(catch_formal_parameter name: (identifier) @def)",
            "(enhanced_for_statement name: (identifier) @def)",
            "(resource name: (identifier) @def)",
            "(class_declaration name: (identifier) @def)",
            "(interface_declaration name: (identifier) @def)",
            "(enum_declaration name: (identifier) @def)",
            "(record_declaration name: (identifier) @def)",
            "(inferred_parameters (identifier) @def)",
            "(lambda_expression parameters: (identifier) @def)",
            "(assignment_expression left: [(identifier) @def (field_access field: (identifier) @def)])",
            "(update_expression [(identifier) @def (field_access field: (identifier) @def)])",
            "(method_declaration name: (identifier) @def.outer)",
            "(constructor_declaration name: (identifier) @def.outer)",
            "[(method_declaration) (constructor_declaration) (lambda_expression)] @scope",
        ),
        "call": (
            "(method_invocation name: (identifier) @callee)",
            "(object_creation_expression type: (type_identifier) @callee)",
            "(method_declaration name: (identifier) @function.name)",
            "(constructor_declaration name: (identifier) @function.name)",
        ),
        "declaration": (
            "(type_identifier) @use",
            "(field_access field: (identifier) @member)",
            "(method_invocation object: (_) name: (identifier) @member)",
            "(class_declaration name: (identifier) @type.name)",
            "(interface_declaration name: (identifier) @type.name)",
            "(enum_declaration name: (identifier) @type.name)",
            "(record_declaration name: (identifier) @type.name)",
            "(annotation_type_declaration name: (identifier) @type.name)",
            "(field_declaration declarator: (variable_declarator name: (identifier) @field.name))",
            "(constant_declaration declarator: (variable_declarator name: (identifier) @field.name))",
            "(enum_constant name: (identifier) @field.name)",
            "(method_declaration name: (identifier) @function.name)",
            "(constructor_declaration name: (identifier) @function.name)",
        ),
        "exit": (
            "[(return_statement) (throw_statement)] @return",
            "[(break_statement) (yield_statement)] @break",
            "(continue_statement) @continue",
            "[(break_statement (identifier) @jump.label) (continue_statement (identifier) @jump.label)] @jump",
            "(labeled_statement . (identifier) @label)",
            "[(method_declaration) (constructor_declaration) (lambda_expression) (static_initializer)] @function",
            "[(for_statement) (enhanced_for_statement) (while_statement) (do_statement)] @loop",
            "(switch_expression) @switch",
        ),
    },
    "c": {
        "dataflow": (
            "(identifier) @name",
            "(init_declarator declarator: (identifier) @def)",
            "(declaration declarator: (identifier) @def)",
            "(pointer_declarator declarator: (identifier) @def)",
            "(array_declarator declarator: (identifier) @def)",
            "(parameter_declaration declarator: (identifier) @def)",
            "(assignment_expression left: (identifier) @def)",
            "(update_expression argument: (identifier) @def)",
            "(function_declarator declarator: (identifier) @def.outer)",
            "(function_definition) @scope",
        ),
        "call": (
            "(call_expression function: (identifier) @callee)",
            "(call_expression function: (field_expression field: (field_identifier) @callee))",
            "(function_definition declarator: (function_declarator declarator: (identifier) @function.name))",
            "(function_definition declarator: (pointer_declarator declarator: (function_declarator declarator: "
            "(identifier) @function.name)))",
        ),
        "declaration": (
            "(type_identifier) @use",
            "(field_expression field: (field_identifier) @member)",
            "(struct_specifier name: (type_identifier) @type.name body: (_))",
            "(union_specifier name: (type_identifier) @type.name body: (_))",
            "(enum_specifier name: (type_identifier) @type.name body: (_))",
            "(type_definition declarator: (type_identifier) @type.name)",
            "(field_declaration declarator: [(field_identifier) @field.name (pointer_declarator declarator: "
            "(field_identifier) @field.name) (array_declarator declarator: (field_identifier) @field.name)])",
            "(function_definition declarator: (function_declarator declarator: (identifier) @function.name))",
            "(function_definition declarator: (pointer_declarator declarator: (function_declarator declarator: "
            "(identifier) @function.name)))",
        ),
        "exit": (
            "(return_statement) @return",
            "(break_statement) @break",
            "(continue_statement) @continue",
            "(goto_statement label: (statement_identifier) @jump.label) @jump",
            "(labeled_statement label: (statement_identifier) @label)",
            "(function_definition) @function",
            "[(for_statement) (while_statement) (do_statement)] @loop",
            "(switch_statement) @switch",
        ),
    },
    "cpp": {
        "dataflow": (
            "(identifier) @name",
            "(field_expression argument: (this) field: (field_identifier)) @field",
            "(field_declaration declarator: (field_identifier) @field @def)",
            "(init_declarator declarator: (identifier) @def)",
            "(declaration declarator: (identifier) @def)",
            "(pointer_declarator declarator: (identifier) @def)",
            "(array_declarator declarator: (identifier) @def)",
            "(parameter_declaration declarator: (identifier) @def)",
            "(optional_parameter_declaration declarator: (identifier) @def)",
            "(for_range_loop declarator: (identifier) @def)",
            "(reference_declarator (identifier) @def)",
            "(structured_binding_declarator (identifier) @def)",
            "(assignment_expression left: [(identifier) @def (field_expression argument: (this) field: (_) @def)])",
            "(update_expression argument: [(identifier) @def (field_expression argument: (this) field: (_) @def)])",
            "(function_declarator declarator: (identifier) @def.outer)",
            "[(function_definition) (lambda_expression)] @scope",
        ),
        "call": (
            "(call_expression function: [(identifier) @callee (field_expression field: (field_identifier) @callee) "
            "(qualified_identifier name: (identifier) @callee) (template_function name: (identifier) @callee)])",
            "(function_definition declarator: (function_declarator declarator: [(identifier) @function.name "
            "(field_identifier) @function.name (qualified_identifier name: (identifier) @function.name)]))",
            "(function_definition declarator: [(pointer_declarator) (reference_declarator)] (function_declarator "
            "declarator: [(identifier) @function.name (field_identifier) @function.name (qualified_identifier name: "
            "(identifier) @function.name)]))",
        ),
        "declaration": (
            "[(type_identifier) (namespace_identifier)] @use",
            "(field_expression field: (field_identifier) @member)",
            "(class_specifier name: (type_identifier) @type.name body: (_))",
            "(struct_specifier name: (type_identifier) @type.name body: (_))",
            "(union_specifier name: (type_identifier) @type.name body: (_))",
            "(enum_specifier name: (type_identifier) @type.name body: (_))",
            "(type_definition declarator: (type_identifier) @type.name)",
            "(alias_declaration name: (type_identifier) @type.name)",
            "(namespace_definition name: (namespace_identifier) @type.name)",
            "(field_declaration declarator: [(field_identifier) @field.name (pointer_declarator declarator: "
            "(field_identifier) @field.name) (reference_declarator (field_identifier) @field.name) (array_declarator "
            "declarator: (field_identifier) @field.name)])",
            "(function_definition declarator: (function_declarator declarator: [(identifier) @function.name "
            "(field_identifier) @function.name (qualified_identifier name: (identifier) @function.name)]))",
            "(function_definition declarator: [(pointer_declarator) (reference_declarator)] (function_declarator "
            "declarator: [(identifier) @function.name (field_identifier) @function.name (qualified_identifier name: "
            "(identifier) @function.name)]))",
        ),
        "exit": (
            "[(return_statement) (throw_statement) (co_return_statement) (co_yield_statement)] @return",
            "(break_statement) @break",
            "(continue_statement) @continue",
            "(goto_statement label: (statement_identifier) @jump.label) @jump",
            "(labeled_statement label: (statement_identifier) @label)",
            "[(function_definition) (lambda_expression)] @function",
            "[(for_statement) (for_range_loop) (while_statement) (do_statement)] @loop",
            "(switch_statement) @switch",
        ),
    },
    "go": {
        "dataflow": (
            "(identifier) @name",
            "(short_var_declaration left: (expression_list (identifier) @def))",
            "(assignment_statement left: (expression_list (identifier) @def))",
            "(range_clause left: (expression_list (identifier) @def))",
            "(receive_statement left: (expression_list (identifier) @def))",
            "(var_spec name: (identifier) @def)",
            "(const_spec name: (identifier) @def)",
            "(parameter_declaration name: (identifier) @def)",
            "(variadic_parameter_declaration name: (identifier) @def)",
            "(inc_statement (identifier) @def)",
            "(dec_statement (identifier) @def)",
            "(type_switch_statement alias: (expression_list (identifier) @def))",
            "(function_declaration name: (identifier) @def.outer)",
            "[(function_declaration) (method_declaration) (func_literal)] @scope",
        ),
        "call": (
            "(call_expression function: [(identifier) @callee (selector_expression field: (field_identifier) "
            "@callee)])",
            "(function_declaration name: (identifier) @function.name)",
            "(method_declaration name: (field_identifier) @function.name)",
        ),
        "declaration": (
            "(type_identifier) @use",
            "(selector_expression field: (field_identifier) @member)",
            "(type_spec name: (type_identifier) @type.name)",
            "(type_alias name: (type_identifier) @type.name)",
            "(field_declaration name: (field_identifier) @field.name)",
            "(function_declaration name: (identifier) @function.name)",
            "(method_declaration name: (field_identifier) @function.name)",
            "(method_elem name: (field_identifier) @function.name)",
        ),
        "exit": (
            "(return_statement) @return",
            "(break_statement) @break",
            "(continue_statement) @continue",
            "[(goto_statement (label_name) @jump.label) (break_statement (label_name) @jump.label)"
            " (continue_statement (label_name) @jump.label)] @jump",
            "(labeled_statement label: (label_name) @label)",
            "[(function_declaration) (method_declaration) (func_literal)] @function",
            "(for_statement) @loop",
            "[(expression_switch_statement) (type_switch_statement) (select_statement)] @switch",
        ),
    },
    "javascript": {
        "dataflow": (
            "[(identifier) (shorthand_property_identifier)] @name",
            "(shorthand_property_identifier_pattern) @name @def",
            "(member_expression object: (this) property: (property_identifier)) @field",
            "(field_definition property: (property_identifier) @field @def)",
            "(variable_declarator name: (identifier) @def)",
            "(assignment_expression left: [(identifier) @def (member_expression object: (this) property: "
            "(property_identifier) @def)])",
            "(augmented_assignment_expression left: [(identifier) @def (member_expression object: (this) property: "
            "(property_identifier) @def)])",
            "(update_expression argument: [(identifier) @def (member_expression object: (this) property: (_) @def)])",
            "(formal_parameters (identifier) @def)",
            "(array_pattern (identifier) @def)",
            "(rest_pattern (identifier) @def)",
            "(assignment_pattern left: (identifier) @def)",
            "(arrow_function parameter: (identifier) @def)",
            "(for_in_statement left: (identifier) @def)",
            "(catch_clause parameter: (identifier) @def)",
            "(import_clause (identifier) @def)",
            "(namespace_import (identifier) @def)",
            "(import_specifier [name: (identifier) @def alias: (identifier) @def])",
            "(class_declaration name: (identifier) @def)",
            "(function_declaration name: (identifier) @def.outer)",
            "(generator_function_declaration name: (identifier) @def.outer)",
            "[(function_declaration) (generator_function_declaration) (function_expression) (generator_function) "
            "(arrow_function) (method_definition)] @scope",
        ),
        "call": (
            "(call_expression function: [(identifier) @callee (member_expression property: (property_identifier) "
            "@callee)])",
            "(function_declaration name: (identifier) @function.name)",
            "(generator_function_declaration name: (identifier) @function.name)",
            "(method_definition name: (property_identifier) @function.name)",
            "(variable_declarator name: (identifier) @function.name value: [(arrow_function) (function_expression) "
            "(generator_function)])",
            "(assignment_expression left: (member_expression property: (property_identifier) @function.name) right: "
            "[(arrow_function) (function_expression) (generator_function)])",
        ),
        "declaration": (
            "(new_expression constructor: (identifier) @use)",
            "(class_heritage (identifier) @use)",
            '(binary_expression operator: "instanceof" right: (identifier) @use)',
            "(member_expression property: (property_identifier) @member)",
            "(class_declaration name: (identifier) @type.name)",
            "(class name: (identifier) @type.name)",
            "(field_definition property: (property_identifier) @field.name)",
            "(assignment_expression left: (member_expression object: (this) property: (property_identifier) "
            "@field.name))",
            "(method_definition name: (property_identifier) @function.name)",
        ),
        "exit": (
            "[(return_statement) (throw_statement) (yield_expression)] @return",
            "(break_statement) @break",
            "(continue_statement) @continue",
            "[(break_statement label: (statement_identifier) @jump.label)"
            " (continue_statement label: (statement_identifier) @jump.label)] @jump",
            "(labeled_statement label: (statement_identifier) @label)",
            "[(function_declaration) (generator_function_declaration) (function_expression) (generator_function) "
            "(arrow_function) (method_definition)] @function",
            "[(for_statement) (for_in_statement) (while_statement) (do_statement)] @loop",
            "(switch_statement) @switch",
        ),
    },
    "ruby": {
        "dataflow": (
            "(identifier) @name",
            "(call receiver: (_) method: (identifier) @member)",
            "[(instance_variable) (class_variable)] @field",
            "(assignment left: [(identifier) (instance_variable) (class_variable)] @def)",
            "(operator_assignment left: [(identifier) (instance_variable) (class_variable)] @def)",
            "(left_assignment_list (identifier) @def)",
            "(method_parameters (identifier) @def)",
            "(lambda_parameters (identifier) @def)",
            "(block_parameters (identifier) @def)",
            "(exception_variable (identifier) @def)",
            "(optional_parameter name: (identifier) @def)",
            "(keyword_parameter name: (identifier) @def)",
            "(splat_parameter name: (identifier) @def)",
            "(hash_splat_parameter name: (identifier) @def)",
            "(block_parameter name: (identifier) @def)",
            "(for pattern: (identifier) @def)",
            "(method name: (identifier) @def.outer)",
            "(singleton_method name: (identifier) @def.outer)",
            "[(method) (singleton_method) (lambda)] @scope",
        ),
        "call": (
            "(call method: (identifier) @callee)",
            "(method name: (identifier) @function.name)",
            "(singleton_method name: (identifier) @function.name)",
        ),
        "declaration": (
            "(constant) @use",
            "(call receiver: (_) method: (identifier) @member)",
            "(instance_variable) @member",
            "(class name: (constant) @type.name)",
            "(module name: (constant) @type.name)",
            "(assignment left: (instance_variable) @field.name)",
            "(method name: (identifier) @function.name)",
            "(singleton_method name: (identifier) @function.name)",
        ),
        "exit": (
            "(return) @return",
            '((call method: (identifier) @_raise) @return (#any-of? @_raise "raise" "fail"))',
            '((identifier) @return (#any-of? @return "raise" "fail"))',
            "(break) @break",
            "(next) @continue",
            "[(method) (singleton_method) (lambda)] @function",
            "[(while) (until) (for) (while_modifier) (until_modifier) (do_block) (block)] @loop",
        ),
    },
    "php": {
        "dataflow": (
            "(variable_name) @name",
            '((member_access_expression object: (variable_name) @_this name: (name)) @field (#eq? @_this "$this"))',
            "(property_element name: (variable_name) @field @def)",
            "(assignment_expression left: [(variable_name) @def (member_access_expression name: (name) @def)])",
            "(augmented_assignment_expression left: [(variable_name) @def (member_access_expression name: (name) "
            "@def)])",
            "(reference_assignment_expression left: [(variable_name) @def (member_access_expression name: (name) "
            "@def)])",
            "(update_expression [(variable_name) @def (member_access_expression name: (name) @def)])",
            "(simple_parameter name: (variable_name) @def)",
            "(variadic_parameter name: (variable_name) @def)",
            "(property_promotion_parameter name: (variable_name) @def)",
            "(catch_clause name: (variable_name) @def)",
            "(static_variable_declaration name: (variable_name) @def)",
            "(foreach_statement (_) [(variable_name) @def (pair (variable_name) @def) (by_ref (variable_name) @def) "
            "(pair (by_ref (variable_name) @def))])",
            "(list_literal (variable_name) @def)",
            "(anonymous_function_use_clause (variable_name) @def)",
            "(global_declaration (variable_name) @def)",
            "[(function_definition) (method_declaration) (anonymous_function) (arrow_function)] @scope",
        ),
        "call": (
            "(function_call_expression function: [(name) @callee (qualified_name (name) @callee .)])",
            "(member_call_expression name: (name) @callee)",
            "(nullsafe_member_call_expression name: (name) @callee)",
            "(scoped_call_expression name: (name) @callee)",
            "(function_definition name: (name) @function.name)",
            "(method_declaration name: (name) @function.name)",
        ),
        "declaration": (
            "(named_type [(name) @use (qualified_name (name) @use .)])",
            "(object_creation_expression [(name) @use (qualified_name (name) @use .)])",
            "(base_clause [(name) @use (qualified_name (name) @use .)])",
            "(class_interface_clause [(name) @use (qualified_name (name) @use .)])",
            "(scoped_call_expression scope: (name) @use)",
            "(member_access_expression name: (name) @member)",
            "(nullsafe_member_access_expression name: (name) @member)",
            "(member_call_expression name: (name) @member)",
            "(nullsafe_member_call_expression name: (name) @member)",
            "(class_declaration name: (name) @type.name)",
            "(interface_declaration name: (name) @type.name)",
            "(trait_declaration name: (name) @type.name)",
            "(enum_declaration name: (name) @type.name)",
            "(property_element name: (variable_name) @field.name)",
            "(function_definition name: (name) @function.name)",
            "(method_declaration name: (name) @function.name)",
        ),
        "exit": (
            "[(return_statement) (throw_expression) (yield_expression)] @return",
            "(break_statement) @break",
            "(continue_statement) @continue",
            "(goto_statement (name) @jump.label) @jump",
            "(named_label_statement (name) @label)",
            "[(function_definition) (method_declaration) (anonymous_function) (arrow_function)] @function",
            "[(for_statement) (foreach_statement) (while_statement) (do_statement)] @loop",
            "(switch_statement) @switch",
        ),
    },
}
#: Dataflow names a field ``x`` of the object itself ``x`` where a bare ``x`` in a method is that field (Java, C++),
#: else ``.x`` (``self.x`` is not ``x``).
FIELD_PREFIX = {"python": b".", "javascript": b".", "ruby": b".", "php": b"."}


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


@cache
def get_query(language: str, groups: frozenset[str]):
    """The tree-sitter ``Query`` of :data:`QUERIES` ``groups`` (and ``"structure"``) for ``language``, compiled once."""
    import tree_sitter

    language = normalize_language(language)
    patterns = ["(_) @node", "(ERROR) @node"] if "structure" in groups else []
    for group in sorted(groups - {"structure"}):
        patterns += QUERIES[language][group]
    return tree_sitter.Query(get_parser(language).language, "\n".join(dict.fromkeys(patterns)))


@cache
def node_kind_tables(language: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per node kind id: is a statement type, is a block (its children are statements), is a container (never one)."""
    grammar = get_parser(language).language
    names = {kind: grammar.node_kind_for_id(kind) for kind in range(grammar.node_kind_count)}
    statement, block, container = (np.zeros(1 << 16, dtype=bool) for _ in range(3))
    for kind, name in names.items():
        statement[kind] = name.endswith(STATEMENT_SUFFIXES) or name in STATEMENT_TYPES
        block[kind] = name in BLOCK_TYPES
        container[kind] = name in BLOCK_TYPES and name not in STATEMENT_TYPES
    return statement, block, container
