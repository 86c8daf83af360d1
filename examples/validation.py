"""The data checks of the four task scripts: every row of every split, before anything is tokenized or a model built.

One table, :data:`TASK_COLUMNS`, says what each task's columns must hold (a :class:`Rule` per column). The checks
run on the Arrow columns (``pyarrow.compute``, no Python loop per row for the types ``datasets`` gives these
columns), so a split of millions of rows is checked in seconds. A bad row stops the run (``--bad_rows stop``, the
default) with one message naming the split, the file, the first bad rows (their line in a JSON-lines file), the
column, the value and what was expected; ``--bad_rows skip`` leaves them out instead and logs how many, per split
and column.

Before ``datasets`` reads a JSON file, :func:`check_json_file` looks for what its JSON reader turns into an error
deep inside (or into a crash at tokenization): an empty file, bytes that are not UTF-8. When the reader fails all
the same, :func:`read_json_lines` parses it line by line, to name the lines that are not JSON objects and check the
rows in Python (:func:`check_objects`, :func:`mixed_types`).
"""

import codecs
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sasa.ast_languages import ALIASES, SUPPORTED_LANGUAGES, normalize_language

#: ``--bad_rows``: stop at bad data (the default), or leave the bad rows out (and repair non-UTF-8 bytes).
STOP, SKIP = "stop", "skip"
#: How many bad rows (or lines) a message lists, and how many characters of a bad value it shows.
LISTED, SHOWN = 5, 60
FIX = "Fix or drop them, or pass --bad_rows skip to leave such rows out (counted in the log)."


# --- the rules ------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Rule:
    """What one column must hold.

    ``is_valid(value)`` is the definition, on one Python value; ``valid_mask(column)`` computes the same for a whole
    Arrow column of a type it knows (a boolean array, null counting as invalid) and returns ``None`` for other types,
    which are then checked value by value. ``required``: a missing column is an error (else the column is checked
    only where present).
    """

    expected: str
    is_valid: Callable[[object], bool]
    valid_mask: Callable[[pa.ChunkedArray], pa.ChunkedArray | None]
    required: bool = True


def _is_string(array_type: pa.DataType) -> bool:
    return pa.types.is_string(array_type) or pa.types.is_large_string(array_type)


def _is_text(value: object) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _text_mask(column: pa.ChunkedArray) -> pa.ChunkedArray | None:
    """Strings with something besides white space (``utf8_is_space`` stops at the first other character)."""
    if not _is_string(column.type):
        return None
    blank = pc.or_(pc.equal(pc.binary_length(column), 0), pc.utf8_is_space(column))
    return pc.invert(blank)


def _is_label(value: object) -> bool:
    return isinstance(value, bool) or (isinstance(value, (int, float)) and value in (0, 1))


def _label_mask(column: pa.ChunkedArray) -> pa.ChunkedArray | None:
    if pa.types.is_boolean(column.type):
        return pc.is_valid(column)
    if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
        return pc.is_in(column, value_set=pa.array([0, 1], column.type))
    return None


def _is_summary(value: object) -> bool:
    if isinstance(value, list):
        return all(isinstance(token, str) for token in value) and _is_text(" ".join(value))
    return _is_text(value)


def _summary_mask(column: pa.ChunkedArray) -> pa.ChunkedArray | None:
    """Token lists whose ``' '.join`` is not blank (a null token makes the join null: invalid), or strings."""
    if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
        if not _is_string(column.type.value_type):
            return None
        return _text_mask(pc.binary_join(column, " "))
    return _text_mask(column)


def _is_language(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        normalize_language(value)
    except ValueError:
        return False
    return True


def _language_mask(column: pa.ChunkedArray) -> pa.ChunkedArray | None:
    """Each distinct name checked once, then looked up for every row."""
    if not _is_string(column.type):
        return None
    known = [name for name in pc.unique(column).to_pylist() if _is_language(name)]
    return pc.is_in(column, value_set=pa.array(known, column.type))


CODE = Rule("the code as a non-empty string", _is_text, _text_mask)
LABEL = Rule("true/false or 0/1", _is_label, _label_mask)
SUMMARY = Rule("a non-empty list of string tokens (or a non-empty string)", _is_summary, _summary_mask)
LANGUAGE = Rule(f"a language SASA parses: {', '.join(SUPPORTED_LANGUAGES)} (aliases {', '.join(ALIASES)}); or give "
                "--language to parse every row as one", _is_language, _language_mask, required=False)

#: The columns each task script reads, and what they must hold.
TASK_COLUMNS: dict[str, dict[str, Rule]] = {
    "defect": {"func": CODE, "target": LABEL},
    "clone": {"func1": CODE, "func2": CODE, "label": LABEL},
    "search": {"code": CODE, "docstring_tokens": SUMMARY, "language": LANGUAGE},
    "summarization": {"code": CODE, "docstring_tokens": SUMMARY, "language": LANGUAGE},
    "mlm": {"code": CODE, "language": LANGUAGE},
}


def python_values(column: pa.ChunkedArray) -> list:
    """The column's values as Python objects; a JSON column (``datasets``' ``Json`` feature, which it infers for a
    JSON column of mixed types) decoded."""
    if isinstance(column.type, pa.BaseExtensionType):
        texts = pa.chunked_array([chunk.storage for chunk in column.chunks], column.type.storage_type).to_pylist()
        return [None if text is None else json.loads(text) for text in texts]
    return column.to_pylist()


def valid_rows(column: pa.ChunkedArray, rule: Rule) -> np.ndarray:
    """``[rows]`` bool: where ``column`` holds what ``rule`` expects (vectorised for the usual types)."""
    mask = rule.valid_mask(column)
    if mask is None:
        return np.fromiter((rule.is_valid(value) for value in python_values(column)), bool, len(column))
    return pc.fill_null(mask, False).to_numpy(zero_copy_only=False).astype(bool, copy=False)


# --- where a row is -------------------------------------------------------------------------------------------------

@dataclass
class Source:
    """Where a split came from, to name it: ``path`` of a local file (``flag`` is ``--train_file`` etc.), or a Hub
    dataset's ``name``. ``line_numbers``: the line of each row in ``path``, where ``datasets`` read a copy of it
    without some lines (:func:`compact_copy`)."""

    split: str
    path: str | None = None
    flag: str | None = None
    name: str | None = None
    line_numbers: np.ndarray | None = None

    def __str__(self) -> str:
        if self.path is None:
            return f"split {self.split!r} of {self.name}"
        return f"split {self.split!r} ({self.flag} {self.path})"

    def lines(self, rows: list[int]) -> dict[int, int]:
        """The 1-based line of each of ``rows`` (0-based, as ``dataset[row]``) in a JSON-lines file, whose reader skips
        blank lines; ``{}`` for other sources. Reads the file up to the last row asked for."""
        if self.line_numbers is not None:
            return {row: int(self.line_numbers[row]) for row in rows}
        if self.path is None or not self.path.endswith((".jsonl", ".json")) or not rows or is_json_array(self.path):
            return {}
        wanted, found, row = set(rows), {}, -1
        with open(self.path, "rb") as handle:
            for number, line in enumerate(handle, 1):
                if line.strip():
                    row += 1
                    if row in wanted:
                        found[row] = number
                        if len(found) == len(wanted):
                            break
        return found


def is_json_array(path: str) -> bool:
    """Whether a JSON file holds one array (of rows) rather than JSON lines (one row a line)."""
    with open(path, "rb") as handle:
        return handle.read(4096).lstrip().startswith(b"[")


def shorten(value: object) -> str:
    """``repr(value)``, cut to :data:`SHOWN` characters."""
    text = repr(value)
    return text if len(text) <= SHOWN else text[:SHOWN - 3] + "..."


# --- one split ------------------------------------------------------------------------------------------------------

def check_split(dataset: datasets.Dataset, columns: Mapping[str, Rule], source: Source,
                policy: str = STOP) -> tuple[datasets.Dataset, str]:
    """``dataset`` checked against ``columns``: every required column present, every row's values as its rule
    expects. Returns the dataset (with ``policy`` :data:`SKIP`, without its bad rows) and a one-line report for the
    log. A ``ValueError`` for a missing column, an empty split (also once the bad rows are left out) or, with
    :data:`STOP`, bad rows: the first :data:`LISTED` named, with how many in all, by column."""
    check_columns(dataset.column_names, columns, source)
    if len(dataset) == 0:
        raise ValueError(f"{source} has no rows.")
    table = dataset.with_format("arrow")[:]  # zero-copy for a dataset as loaded (no indices mapping)
    checked = {name: rule for name, rule in columns.items() if name in table.column_names}
    valid = {name: valid_rows(table.column(name), rule) for name, rule in checked.items()}
    bad = BadRows.find(valid, checked, source, lambda name, row: python_values(table.column(name).slice(row, 1))[0])
    if bad is None:
        return dataset, f"{len(dataset)} rows checked ({', '.join(checked)}): all good"
    if policy != SKIP:
        raise ValueError(bad.error())
    return dataset.select(np.flatnonzero(~bad.mask)), bad.skipped()


def check_columns(present: list[str], columns: Mapping[str, Rule], source: Source) -> None:
    """``ValueError`` naming the required ``columns`` not in ``present``, and those there are."""
    missing = [name for name, rule in columns.items() if rule.required and name not in present]
    if missing:
        raise ValueError(f"{source} lacks the column(s) {missing}: this task needs "
                         f"{[name for name, rule in columns.items() if rule.required]}; the split has {present}.")


@dataclass
class BadRows:
    """The rows of a split that break its columns' rules: ``mask`` (``[rows]``, True where bad), how many by column,
    and the first :data:`LISTED` bad rows described (row and line, column, value, what was expected)."""

    source: Source
    mask: np.ndarray
    counts: dict[str, int]
    listed: str

    @classmethod
    def find(cls, valid: Mapping[str, np.ndarray], columns: Mapping[str, Rule], source: Source,
             value_at: Callable[[str, int], object]) -> "BadRows | None":
        """The bad rows given ``valid`` (``[rows]`` bool per column); ``value_at(column, row)`` reads one value for
        the description. ``None`` when every row is good."""
        if not valid:
            return None
        bad = ~np.logical_and.reduce(list(valid.values()))
        if not bad.any():
            return None
        order = {name: index for index, name in enumerate(valid)}  # within a row, the columns in the table's order
        pairs = sorted(((int(row), name) for name, mask in valid.items() for row in np.flatnonzero(~mask)[:LISTED]),
                       key=lambda pair: (pair[0], order[pair[1]]))
        rows = sorted({row for row, _ in pairs})[:LISTED]
        lines = source.lines(rows)
        described = [f"  row {row}" + (f" (line {lines[row]})" if row in lines else "")
                     + f": {name!r} is {shorten(value_at(name, row))}; expected {columns[name].expected}"
                     for row, name in pairs if row in rows]
        counts = {name: int((~mask).sum()) for name, mask in valid.items() if not mask.all()}
        return cls(source, bad, counts, "\n".join(described))

    def by_column(self) -> str:
        return ", ".join(f"{name!r} {count}" for name, count in self.counts.items())

    def error(self) -> str:
        """The message that stops the run."""
        return (f"{self.source}: {int(self.mask.sum())} of {len(self.mask)} rows hold bad data (by column: "
                f"{self.by_column()}); the first:\n{self.listed}\n{FIX}")

    def skipped(self) -> str:
        """The report of ``--bad_rows skip``; a ``ValueError`` if no row is left."""
        if self.mask.all():
            raise ValueError(f"{self.source}: every one of its {len(self.mask)} rows is bad (by column: "
                             f"{self.by_column()}); the first:\n{self.listed}")
        return (f"skipped {int(self.mask.sum())} of {len(self.mask)} rows with bad data (--bad_rows skip; by column: "
                f"{self.by_column()}); the first:\n{self.listed}")


def check_objects(objects: list[dict], columns: Mapping[str, Rule], source: Source) -> BadRows | None:
    """:func:`check_split` for rows ``datasets`` could not read (JSON objects parsed one by one, e.g. a column of
    mixed types with a ``datasets`` that has no ``Json`` feature): the same rules, value by value."""
    check_columns(list(dict.fromkeys(name for row in objects for name in row)), columns, source)
    present = {name: rule for name, rule in columns.items() if any(name in row for row in objects)}
    valid = {name: np.fromiter((rule.is_valid(row.get(name)) for row in objects), bool, len(objects))
             for name, rule in present.items()}
    return BadRows.find(valid, present, source, lambda name, row: objects[row].get(name))


def mixed_types(objects: list[dict], line_numbers: list[int]) -> str | None:
    """The first key whose JSON type changes from object to object (nulls aside; integers and floats are numbers):
    ``"'id' holds a str at line 1 and an int at line 4"``; ``None`` if none does."""
    first: dict[str, tuple[str, int]] = {}
    for row, number in zip(objects, line_numbers):
        for name, value in row.items():
            if value is None:
                continue
            kind = "number" if type(value) in (int, float) else type(value).__name__
            seen = first.setdefault(name, (kind, number))
            if seen[0] != kind:
                return f"{name!r} holds a {seen[0]} at line {seen[1]} and a {kind} at line {number}"
    return None


# --- JSON files, before datasets reads them -------------------------------------------------------------------------

def check_json_file(path: str, flag: str, policy: str = STOP, workdir: str | None = None,
                    chunk_size: int = 1 << 24) -> tuple[str, str | None]:
    """A ``.json``/``.jsonl`` file checked before ``datasets`` reads it: not empty, UTF-8 throughout.

    Returns the path to read and a report for the log: ``path`` itself, or with ``policy`` :data:`SKIP` and
    non-UTF-8 bytes a repaired copy in ``workdir`` (each bad byte replaced by U+FFFD; the lines keep their numbers)
    and how many lines were repaired. A ``ValueError`` names an empty file, and with :data:`STOP` the first lines
    that are not UTF-8 (and how many in all). Reads the file in chunks of ``chunk_size`` bytes, decoded in C; only a
    file with bad bytes is read again line by line.
    """
    has_content, utf8 = False, True
    decoder = codecs.getincrementaldecoder("utf-8")()
    with open(path, "rb") as handle:
        try:
            while chunk := handle.read(chunk_size):
                has_content = has_content or not chunk.isspace()
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            utf8 = False
    if utf8 and not has_content:
        raise ValueError(f"{flag} {path} is empty: no rows to read.")
    if utf8:
        return path, None
    bad = []
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as error:
                bad.append((number, error.start, line))
    if policy != SKIP or workdir is None:
        listed = "\n".join(f"  line {number}, byte {start + 1}: {shorten(line[max(0, start - 20):start + 20])}"
                           for number, start, line in bad[:LISTED])
        raise ValueError(f"{flag} {path}: {len(bad)} line(s) hold bytes that are not UTF-8; the first:\n{listed}\n"
                         "Re-encode the file as UTF-8 (e.g. iconv -f latin1 -t utf-8), or pass --bad_rows skip to "
                         "replace such bytes with U+FFFD (counted in the log).")
    repaired = os.path.join(workdir, "utf8-" + os.path.basename(path))
    with open(path, "rb") as source, open(repaired, "w", encoding="utf-8", newline="") as target:
        target.writelines(line.decode("utf-8", "replace") for line in source)
    return repaired, (f"{flag} {path}: replaced the non-UTF-8 bytes of {len(bad)} line(s) with U+FFFD "
                      f"(--bad_rows skip; the first: line {bad[0][0]})")


def read_json_lines(path: str) -> tuple[list[dict], list[int], list[tuple[int, str, bytes]]]:
    """Every line of a JSON-lines file parsed: the JSON objects (the rows ``datasets`` would read) with their line
    numbers, and the other lines (``(line number, why, line)``); blank lines are skipped, as the reader does. Called
    when ``datasets`` could not read the file: a Python pass."""
    objects, numbers, bad = [], [], []
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except ValueError as error:
                bad.append((number, f"not JSON ({getattr(error, 'msg', error)})", line))
                continue
            if isinstance(value, dict):
                objects.append(value)
                numbers.append(number)
            else:
                bad.append((number, f"a JSON {type(value).__name__}, not an object", line))
    return objects, numbers, bad


def bad_json_lines_message(path: str, flag: str, bad: list[tuple[int, str, bytes]], lines: int) -> str:
    """The error for lines that are not JSON objects: the first :data:`LISTED`, and how many in all."""
    listed = "\n".join(f"  line {number}: {why}: {shorten(line.decode('utf-8', 'replace').rstrip())}"
                       for number, why, line in bad[:LISTED])
    return (f"{flag} {path}: {len(bad)} of {lines} lines are not one JSON object each; the first:\n{listed}\n"
            "Fix or drop them, or pass --bad_rows skip to leave such lines out (counted in the log).")


def json_array_problem(readable: str, flag: str, path: str) -> str | None:
    """What is wrong with a JSON-array file ``datasets`` could not read (an empty array, a syntax error and where,
    an element that is not an object), or ``None`` if this finds nothing."""
    try:
        with open(readable, encoding="utf-8") as handle:
            rows = json.load(handle)
    except json.JSONDecodeError as error:
        return f"{flag} {path}: not JSON at line {error.lineno}, column {error.colno}: {error.msg}."
    if rows == []:
        return f"{flag} {path} is an empty array: no rows to read."
    if isinstance(rows, list):
        others = [index for index, row in enumerate(rows) if not isinstance(row, dict)]
        if others:
            return (f"{flag} {path}: {len(others)} of the array's {len(rows)} elements are not JSON objects (rows); "
                    f"the first: element {others[0]}, {shorten(rows[others[0]])}.")
    return None


def compact_copy(path: str, dropped: set[int], workdir: str) -> tuple[str, np.ndarray]:
    """A copy of the JSON-lines file ``path`` in ``workdir`` without its blank lines and the lines ``dropped``
    (1-based), and the line in ``path`` of each row of the copy. ``datasets`` 4 fails on blank lines in a file whose
    column of mixed types it re-encodes as JSON; the copy reads."""
    copy, numbers = os.path.join(workdir, "kept-" + os.path.basename(path)), []
    with open(path, "rb") as source, open(copy, "wb") as target:
        for number, line in enumerate(source, 1):
            if line.strip() and number not in dropped:
                target.write(line if line.endswith(b"\n") else line + b"\n")
                numbers.append(number)
    return copy, np.array(numbers, dtype=np.int64)
