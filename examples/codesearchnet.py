"""What the two CodeSearchNet-format scripts share (code search, code summarization): which columns they read, the
language of each example, the Python docstring removed from the code, the splits they need.

CodeSearchNet rows (``google/code_x_glue_tc_nl_code_search_adv``, ``google/code_x_glue_ct_code_to_text``) carry
``code`` (the function's source), ``docstring`` (its whole documentation comment), ``docstring_tokens`` (the
tokens of the docstring's *first paragraph*, CodeSearchNet's summary), ``code_tokens``, ``language``, ...
CodeXGLUE's models read ``' '.join(code_tokens)`` and ``' '.join(docstring_tokens)``. SASA parses real source for
its AST links, so the scripts read ``code``, with one fix: a Python function's docstring is *inside* ``code`` (in
the other languages it is the comment before the function, outside it), and ``code_tokens`` leave it out, so it is
removed here; otherwise the text to find or to write would be in the input. The natural-language side is
``' '.join(docstring_tokens)``, as in CodeXGLUE (``docstring`` would add the parameter sections).
"""

import datasets
from transformers import PreTrainedTokenizerBase, TrainingArguments

from common import DataArguments, keep_long_splits, load_raw_datasets, select_splits
from sasa.ast_languages import get_parser, normalize_language

DEFAULT_LANGUAGE = "python"  # NL-code-search-Adv is Python; code-to-text rows name theirs in the language column


def strip_docstring(code: str) -> str:
    """Python ``code`` without the docstring of its first function or class (and without that line, if it is left
    blank). Code without one is returned as it is; tree-sitter parses Python 2 and broken code too."""
    source = code.encode("utf-8", "surrogatepass")
    for node in get_parser("python").parse(source).root_node.named_children:
        if node.type == "decorated_definition":
            node = node.child_by_field_name("definition")
        if node is None or node.type not in ("function_definition", "class_definition"):
            continue
        body = node.child_by_field_name("body")
        first = body.named_children[0] if body is not None and body.named_children else None
        is_docstring = (first is not None and first.type == "expression_statement"
                        and [child.type for child in first.named_children] in (["string"], ["concatenated_string"]))
        if not is_docstring:
            return code
        start, end = first.start_byte, first.end_byte
        line_start = source.rfind(b"\n", 0, start) + 1
        line_end = source.find(b"\n", end) + 1 or len(source)
        if not (source[line_start:start] + source[end:line_end]).strip():
            start, end = line_start, line_end
        return (source[:start] + source[end:]).decode("utf-8", "surrogatepass")
    return code


def prepare(batch: dict[str, list], language: str | None) -> dict[str, list]:
    """One batch of raw rows → ``code`` (Python docstrings removed), ``text`` (``' '.join(docstring_tokens)``, or
    ``docstring_tokens`` as it is when it is one string) and ``language`` (``--language``, else the row's
    ``language`` column, else Python), canonical names."""
    count = len(batch["code"])
    languages = [normalize_language(name) for name in (
        [language] * count if language is not None else batch.get("language") or [DEFAULT_LANGUAGE] * count)]
    code = [strip_docstring(text) if name == "python" else text for text, name in zip(batch["code"], languages)]
    texts = [tokens if isinstance(tokens, str) else " ".join(tokens) for tokens in batch["docstring_tokens"]]
    return {"code": code, "text": texts, "language": languages}


def only_language(splits: dict[str, datasets.Dataset]) -> str | None:
    """The one language of every example of ``splits`` (canonical name), or ``None`` when they have several."""
    languages = set().union(*(dataset.unique("language") for dataset in splits.values()))
    return languages.pop() if len(languages) == 1 else None


def load_splits(data_args: DataArguments, training_args: TrainingArguments, tokenizer: PreTrainedTokenizerBase,
                task: str = "search") -> dict[str, datasets.Dataset]:
    """The splits this run needs (:func:`common.select_splits`: ``train`` for ``--do_train``, ``validation`` for
    ``--do_eval``, ``test`` for ``--do_predict``, each cut to its ``--max_*_samples``), as ``code``/``text``/
    ``language`` rows (:func:`prepare`) and, with ``--long_only``, only the examples whose code is longer than
    ``--long_threshold``. Every check (``task``'s columns, their rows' values and languages, an empty split) runs
    here, before a model is built."""
    raw = load_raw_datasets(data_args, task)
    splits = {split: dataset.map(prepare, fn_kwargs={"language": data_args.language}, batched=True,
                                 remove_columns=dataset.column_names, num_proc=data_args.preprocessing_num_workers,
                                 desc=f"Removing Python docstrings from the {split} code")
              for split, dataset in select_splits(raw, data_args, training_args).items()}
    return keep_long_splits(splits, tokenizer, "code", data_args) if data_args.long_only else splits
