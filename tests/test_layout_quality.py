"""benchmarks/quality/layout_quality.py: the dependencies it grades layouts by, and its quick run end to end (the numbers it
prints are measurements, not asserted; the invariants every correct measurement keeps are)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import read_snippet

BENCHMARKS = Path(__file__).parents[1] / "benchmarks" / "quality"
sys.path.insert(0, str(BENCHMARKS))

from far_dependencies import KINDS, dependencies, far_pairs  # noqa: E402


def pairs_as_text(source, tokenizer, language, kind):
    encoding = tokenizer(source, language=None, return_offsets_mapping=True)
    spans = [tuple(span) for span in encoding["offset_mapping"]]
    found = dependencies(source, spans, language)[kind]
    text = [source[a:b].strip() for a, b in spans]
    return {(text[q], text[k], q > k) for q, k in found.tolist()}, found, spans


def test_data_flow_points_every_later_occurrence_at_the_first(tokenizer):
    source = read_snippet("example.py")
    _, found, spans = pairs_as_text(source, tokenizer, "python", "data flow")
    assert len(found) and all(q > k for q, k in found.tolist())  # the key is always the earlier occurrence
    starts = [spans[t][0] for t in range(len(spans))]
    for name in ("result", "total", "value"):  # (radius also occurs inside a string)
        occurrences = [t for t in range(len(spans)) if spans[t][1] > starts[t]
                       and source.startswith(name, starts[t]) and not source[starts[t] - 1].isalnum()
                       and not source[starts[t] + len(name)].isalnum()]
        expected = {(later, occurrences[0]) for later in occurrences[1:]}
        assert expected and expected <= {tuple(pair) for pair in found.tolist()}, name


@pytest.mark.parametrize("file, language, callee", [
    ("example.py", "python", "scale"), ("example.js", "javascript", "scale"),
])
def test_calls_point_at_the_definition_and_brackets_at_their_openers(tokenizer, file, language, callee):
    source = read_snippet(file)
    calls, found, spans = pairs_as_text(source, tokenizer, language, "call → definition")
    assert (callee, callee, False) in calls  # scale(value) is called before `def scale` / `function scale`
    definition = found[0, 1]
    assert source[: spans[definition][0]].rstrip().endswith(("def", "function"))
    brackets, found, _ = pairs_as_text(source, tokenizer, language, "closing → opening")
    assert len(found) and all(q > k for q, k in found.tolist())
    assert all(set(closing) & set(")]}") and set(opening) & set("([{") for closing, opening, _ in brackets)


def test_first_to_later_pairs_are_the_data_flow_pairs_reversed(tokenizer):
    source = read_snippet("example.py")
    encoding = tokenizer(source, language=None, return_offsets_mapping=True)
    found = dependencies(source, [tuple(span) for span in encoding["offset_mapping"]], "python")
    assert len(found["first → later"]) and found["first → later"].tolist() == found["data flow"][:, ::-1].tolist()


def test_probe_token_kinds_tell_identifiers_from_keywords_comments_and_strings(tokenizer):
    import re

    from mlm_probe import IDENTIFIER, OTHER_CODE, PROSE, token_kinds

    source = 'def total_size(items):  # sum the sizes\n    """Add item sizes."""\n    return sum(items)\n'
    comment = range(source.index("#"), source.index("\n"))
    docstring = range(source.index('"""') + 3, source.rindex('"""'))
    names = [range(m.start(), m.end()) for m in re.finditer(r"\b(total_size|items|sum)\b", source)]

    def expected(start: int, end: int) -> int:
        if start == end:
            return OTHER_CODE  # <s>, </s>
        if start in comment or start in docstring:
            return PROSE
        return IDENTIFIER if any(start in name for name in names) else OTHER_CODE  # keywords, brackets, quotes

    encoding = tokenizer(source, language="python", return_offsets_mapping=True)
    spans = [tuple(span) for span in encoding["offset_mapping"]]
    kinds = token_kinds(source, spans, "python").tolist()
    assert kinds == [expected(*span) for span in spans]
    assert {IDENTIFIER, PROSE, OTHER_CODE} == set(kinds)
    assert token_kinds(source, spans, None).eq(OTHER_CODE).all()


def test_probe_reach_counts_an_unmasked_copy_in_an_attended_block():
    import torch

    from mlm_probe import occurrence_reached

    input_ids = torch.tensor([0, 7, 5, 5, 5, 5, 5, 7])  # id 7 at 1 (block 0) and 7 (block 3), blocks of 2
    masked = torch.zeros(8, dtype=torch.bool)
    masked[7] = True
    block_mask = torch.eye(4, dtype=torch.bool)
    assert occurrence_reached(input_ids, masked, block_mask, 2).tolist() == [False]
    block_mask[3, 0] = True
    assert occurrence_reached(input_ids, masked, block_mask, 2).tolist() == [True]
    masked[1] = True  # the copy is masked too: nothing to copy from
    assert occurrence_reached(input_ids, masked, block_mask, 2).tolist() == [False, False]


def test_far_pairs_are_those_outside_window_and_global_blocks():
    import numpy as np

    pairs = np.array([[40, 2], [40, 50], [40, 100], [200, 100], [100, 200], [10, 200]])
    kept = far_pairs(pairs, block_size=32, window_radius=1, num_global_blocks=1)
    # (40, 2): key in the global block 0; (40, 50): key in the window; (10, 200): the query block is global
    assert kept.tolist() == [[40, 100], [200, 100], [100, 200]]


def test_quick_run_measures_every_layout_and_keeps_the_invariants(tmp_path):
    output = tmp_path / "quality.json"
    environment = dict(os.environ, HF_HUB_OFFLINE="1")
    completed = subprocess.run([sys.executable, str(BENCHMARKS / "layout_quality.py"), "--quick", "--json",
                                str(output)], capture_output=True, text=True, env=environment, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(output.read_text())
    rows = {row["layout"]: row for row in result["reach"]}
    assert "window + global" in completed.stdout
    baseline = rows["window + global (no extra blocks)"]
    oracle = next(row for name, row in rows.items() if name.startswith("oracle"))
    assert all(value == 0 for value in baseline["recall"].values() if value == value)  # far = outside these blocks
    assert baseline["far_pairs"]["data flow"] > 0
    for name, row in rows.items():
        assert set(row["recall"]) == set(KINDS)
        assert row["density"] >= baseline["density"] - 1e-9, name
        # the oracle takes, per query block, the blocks holding the most far data-flow pairs: nothing covers more
        assert row["recall"]["data flow"] <= oracle["recall"]["data flow"] + 1e-9, name
    languages = {row["language"] for row in result.get("languages", [])}
    assert languages >= {"python"}
    learned = result["learned"]
    assert {row["layout"] for row in learned["summary"]} >= {"full attention", "window only"}
    for run in learned["runs"]:
        assert 0.0 <= run["accuracy"] <= 1.0 and 0.0 <= run["far_accuracy"] <= 1.0
        assert run["masked_tokens"] > 0
        assert 0 < run["far_name_tokens"] + run["far_prose_tokens"] <= run["far_tokens"]
    # far tokens are defined against the window: full attention reaches a copy of each of them, the window none
    summary = {row["layout"]: row for row in learned["summary"]}
    assert summary["full attention"]["far_reach"][0] == 1.0
    assert summary["window only"]["far_reach"][0] == 0.0


def test_the_learned_probe_writes_each_run_as_it_finishes_and_resumes(tmp_path, capsys):
    """mlm_probe --json: every run is in the file when it finishes; a rerun with the same settings keeps them, and
    runs written before the hidden-links rule (no ``rule`` key) are not reused."""
    import mlm_probe

    path = tmp_path / "probe.json"
    arguments = ["--quick", "--limit-files", "12", "--json", str(path)]
    assert mlm_probe.main(arguments + ["--layouts", "window only"]) == 0
    first = json.loads(path.read_text())
    assert first["rule"] == mlm_probe.RULE and [(r["name"], r["seed"]) for r in first["runs"]] == [("window only", 0)]
    capsys.readouterr()
    assert mlm_probe.main(arguments + ["--layouts", "window only", "AST 2, no top-k"]) == 0
    assert "window only, seed 0: from" in capsys.readouterr().out
    second = json.loads(path.read_text())
    assert second["runs"][0] == first["runs"][0]
    assert [r["layout"] for r in second["summary"]] == ["window only", "AST 2, no top-k"]
    del second["rule"]
    path.write_text(json.dumps(second))
    assert mlm_probe.main(arguments + ["--layouts", "window only"]) == 0
    assert "from" not in capsys.readouterr().out
