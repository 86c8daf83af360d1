"""Real long code that every machine has: functions of the running interpreter's Python standard library.

:func:`documented_functions` returns functions with a docstring, the docstring cut out of the code and its first
paragraph kept as the function's natural-language summary: a code-search (query → function) and summarization
(function → summary) data set that needs no download. Files are read in sorted order, so the data set is the same on
every run with the same Python; :func:`split_by_file` keeps all functions of one file on the same side of a split.
"""

from __future__ import annotations

import ast
import glob
import os
import re
import sysconfig
import textwrap
from dataclasses import dataclass

#: Standard-library folders that are tests, demos or vendored code rather than library code.
EXCLUDED = ("test", "tests", "idlelib", "site-packages", "lib2to3", "turtledemo", "ensurepip", "__phello__")


@dataclass(frozen=True)
class Function:
    code: str  # the function's source, dedented, without its docstring
    docstring: str  # the first paragraph of its docstring, whitespace normalised
    path: str  # the file, relative to the standard library's folder
    name: str  # qualified name inside the file


def stdlib_files(root: str | None = None) -> list[str]:
    """The standard library's ``.py`` files (top level and one package level down), sorted, tests excluded."""
    root = root or sysconfig.get_paths()["stdlib"]
    paths = glob.glob(os.path.join(root, "*.py")) + glob.glob(os.path.join(root, "*", "*.py"))
    return sorted(p for p in paths if not set(os.path.relpath(p, root).split(os.sep)[:-1]) & set(EXCLUDED))


def documented_functions(min_chars: int = 2000, root: str | None = None) -> list[Function]:
    """Functions and methods with a docstring whose source (docstring removed) has at least ``min_chars`` characters
    (2000 characters is about 500 tokens of a code BPE: the paper's "long" functions)."""
    root = root or sysconfig.get_paths()["stdlib"]
    functions = []
    for path in stdlib_files(root):
        try:
            with open(path, encoding="utf-8") as handle:
                source = handle.read()
            tree = ast.parse(source)
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        lines = source.splitlines(keepends=True)
        for node, qualname in _functions(tree):
            docstring = ast.get_docstring(node)
            if not docstring:
                continue
            summary = " ".join(docstring.split("\n\n")[0].split())
            body = node.body[0]  # the docstring expression: drop its lines
            kept = lines[node.lineno - 1 : body.lineno - 1] + lines[body.end_lineno : node.end_lineno]
            if node.decorator_list:
                kept = lines[node.decorator_list[0].lineno - 1 : node.lineno - 1] + kept
            code = textwrap.dedent("".join(kept))
            if len(code) >= min_chars and summary and re.search(r"\w", summary):
                functions.append(Function(code, summary, os.path.relpath(path, root), qualname))
    return functions


def _functions(tree: ast.AST, prefix: str = ""):
    """``(node, qualified name)`` of every function and method, outer before inner."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node, prefix + node.name
            yield from _functions(node, f"{prefix}{node.name}.")
        elif isinstance(node, ast.ClassDef):
            yield from _functions(node, f"{prefix}{node.name}.")


def split_by_file(functions: list[Function], test_every: int = 4) -> tuple[list[Function], list[Function]]:
    """``(train, test)``: the functions of every ``test_every``-th file (in sorted order) are test functions."""
    files = sorted({f.path for f in functions})
    test_files = set(files[test_every - 1 :: test_every])
    return [f for f in functions if f.path not in test_files], [f for f in functions if f.path in test_files]
