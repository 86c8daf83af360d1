"""The task benchmark: its generators make labels that are right by construction, and its --quick run works end to
end (every encoder, both tasks, results written as they finish and not recomputed on a second run)."""

import json
import os
import random
import re
import sys

import pytest
import torch

from conftest import SNIPPETS, read_snippet
from sasa.ast_languages import EXTENSIONS

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "quality"))
import code_tasks  # noqa: E402
import task_data  # noqa: E402

NAME = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*")


def snippet_units():
    units = []
    for name in sorted(os.listdir(SNIPPETS)):
        language = EXTENSIONS[os.path.splitext(name)[1].lower()]
        units += code_tasks.function_units(read_snippet(name), language, name)
    return units


def test_units_hold_every_local_variable_with_its_occurrences():
    source = "import os\n\nclass C:\n    def m(self, path, mode=1):\n        full = os.path.join(self.root, path)\n" \
             "        for line in open(full):\n            mode += len(line)\n        return mode, full\n"
    (unit,) = code_tasks.function_units(source, "python", "c.py")
    assert unit.code.startswith("def m(self, path, mode=1):\n    full = ")  # the method's indentation removed
    variables = {v.name: v for v in unit.variables}
    assert set(variables) == {"self", "path", "mode", "full", "line"}  # not os, join, root (members), open, len
    for variable in unit.variables:
        assert all(unit.code[start:end] == variable.name for start, end in variable.occurrences)
    assert len(variables["mode"].occurrences) == 3 and variables["mode"].definitions[0] == 0


@pytest.mark.parametrize("language", sorted(set(EXTENSIONS[os.path.splitext(n)[1].lower()] for n in os.listdir(SNIPPETS))))
def test_a_misuse_replaces_exactly_one_use_with_a_variable_defined_before_it(language):
    units = [u for u in snippet_units() if u.language == language]
    examples = [e for u in units for e in code_tasks.misuse_examples(u, random.Random(0), sites=4)]
    assert examples, f"no variable-misuse example in the {language} snippet"
    by_unit = {u.name: u for u in units}
    for buggy, clean in zip(examples[::2], examples[1::2]):
        unit = by_unit[buggy.unit]
        assert buggy.buggy and not clean.buggy
        assert clean.code == unit.code  # the bug-free copy is the original
        start, end = buggy.site
        assert buggy.code[start:end] == buggy.wrong and clean.code[clean.site[0]:clean.site[1]] == buggy.right
        assert buggy.code[:start] == unit.code[:start] and buggy.code[end:] == unit.code[clean.site[1]:]
        assert buggy.wrong != buggy.right and NAME.fullmatch(buggy.wrong)
        wrong = next(v for v in unit.variables if v.name == buggy.wrong)
        assert wrong.introduced < start  # in scope there: defined before the use
        right = next(v for v in unit.variables if v.name == buggy.right)
        assert clean.site in right.occurrences and right.occurrences.index(clean.site) not in right.definitions
        assert buggy.repairs and all(buggy.code[s:e] == buggy.right for s, e in buggy.repairs)
        assert all(clean.code[s:e] == clean.right for s, e in clean.repairs)
        assert buggy.site in buggy.candidates and set(buggy.repairs) <= set(buggy.candidates)
        nearest = min(max(s - clean.site[1], clean.site[0] - e, 0) for s, e in clean.repairs)
        assert buggy.evidence_chars == clean.evidence_chars == nearest


def test_far_sites_are_sampled_first_where_a_function_has_them():
    body = "".join(f"    x{i} = total + {i}\n" for i in range(40))
    source = f"def f(total, other):\n    total = other\n{body}    return total + other\n"
    (unit,) = code_tasks.function_units(source, "python", "f.py")
    far = [e for e in code_tasks.misuse_examples(unit, random.Random(1), sites=1, far_chars=400, far_share=1.0)
           if e.buggy]
    assert far[0].evidence_chars > 400  # the final `total`: its nearest other use is 40 lines up


def test_token_positions_agree_with_the_tokens(tokenizer):
    """The site, repair and candidate positions are the tokens that hold the first character of those names."""
    units = snippet_units()
    examples = [e for u in units for e in code_tasks.misuse_examples(u, random.Random(0), sites=3)]
    rows = task_data.misuse_rows(examples, tokenizer, max_length=1024)
    assert len(rows) == len(examples)
    for example, row in zip(examples, rows):
        offsets = tokenizer(example.code, language=None, return_offsets_mapping=True)["offset_mapping"]
        assert tokenizer(example.code, language=None)["input_ids"] == row.input_ids.tolist()

        def holds(token: int, span: tuple[int, int], offsets=offsets) -> bool:
            return offsets[token][0] <= span[0] < offsets[token][1]

        assert holds(row.site, example.site)
        # the use's tokens: from the one holding its first character to the one holding its last
        assert holds(row.site_end - 1, (example.site[1] - 1, example.site[1]))
        after = offsets[row.site_end] if row.site_end < len(offsets) else (0, 0)  # (0, 0): </s>
        assert tuple(after) == (0, 0) or after[0] >= example.site[1]
        assert example.code[example.site[0]:example.site[1]] == (example.wrong if example.buggy else example.right)
        assert sorted(row.repairs.tolist()) == sorted({t for span in example.repairs for t in range(len(offsets))
                                                       if holds(t, span)})
        assert row.site in row.candidates.tolist() and set(row.repairs.tolist()) <= set(row.candidates.tolist())
        assert row.evidence_tokens == min(abs(r - row.site) for r in row.repairs.tolist())


def test_repair_input_hides_every_piece_of_the_wrong_name(tokenizer):
    """Repair with the site given: all of the bug's pieces are <mask> (a leftover piece of the wrong name would point
    at the wrong variable), every other token is the buggy code's own."""
    import task_training

    units = snippet_units()
    examples = [e for u in units for e in code_tasks.misuse_examples(u, random.Random(0), sites=3) if e.buggy]
    rows = task_data.misuse_rows(examples, tokenizer, max_length=1024)
    assert any(row.site_end - row.site > 1 for row in rows), "no wrong name of several pieces to test with"
    batch, sites = task_training._repair_batch(rows, tokenizer.pad_token_id, tokenizer.mask_token_id)
    for index, row in enumerate(rows):
        masked = batch["input_ids"][index, : len(row.input_ids)] == tokenizer.mask_token_id
        assert masked.nonzero().flatten().tolist() == list(range(row.site, row.site_end))
        kept = ~masked
        assert torch.equal(batch["input_ids"][index, : len(row.input_ids)][kept], row.input_ids[kept])
        assert int(sites[index]) == row.site


def test_completion_sites_are_variable_uses_with_evidence_and_hide_all_but_the_first_piece(tokenizer):
    """Name completion: each site is a use of a local variable whose name has several pieces and occurs again in the
    unit; the input hides exactly the pieces after the first; ``far`` agrees with the other occurrences found by
    searching the code's text (not the token ids); each unit is used once, however many bug-free copies it has."""
    import task_training

    filler = "".join(f"    total += other_value * {k}\n" for k in range(30))
    far_use = f"def handle(other_value):\n    total = 0\n{filler}    request_data = total\n{filler}" \
        "    return request_data, total\n"  # request_data: far from its definition, and outside the global block
    units = snippet_units() + code_tasks.function_units(far_use, "python", "far.py")
    examples = [e for u in units for e in code_tasks.misuse_examples(u, random.Random(0), sites=3)]
    rows = task_data.misuse_rows(examples, tokenizer, max_length=1024)
    sites = task_data.completion_sites(rows, tokenizer, per_unit=1000)
    assert sites and any(site.far for site in sites) and any(not site.far for site in sites)
    assert len({(s.unit, s.start) for s in sites}) == len(sites)
    assert len({rows[s.unit].file + rows[s.unit].input_ids.numpy().tobytes().hex() for s in sites}) == \
        len({s.unit for s in sites})  # one copy of each unit
    for site in sites:
        row, example = rows[site.unit], examples[site.unit]
        assert not row.buggy and site.end - site.start >= 2 and site.start in row.candidates.tolist()
        offsets = tokenizer(example.code, language=None, return_offsets_mapping=True)["offset_mapping"]
        name = example.code[offsets[site.start][0] : offsets[site.end - 1][1]].strip()
        assert NAME.fullmatch(name), name
        whole_words = [m.start() for m in re.finditer(rf"(?<![A-Za-z0-9_$]){re.escape(name)}(?![A-Za-z0-9_$])",
                                                      example.code)]
        tokens = [next(t for t, (a, b) in enumerate(offsets) if a <= start < b) for start in whole_words]
        others = [t for t in tokens if t != site.start]
        assert site.start in tokens and others
        assert site.far == task_data._is_far(site.start, others)
        assert site.evidence_tokens == min(abs(t - site.start) for t in others)
    batch, masked = task_training.completion_batch(sites, rows, tokenizer.pad_token_id, tokenizer.mask_token_id)
    for index, site in enumerate(sites):
        row = rows[site.unit]
        assert masked[index].nonzero().flatten().tolist() == list(range(site.start + 1, site.end))
        assert (batch["input_ids"][index][masked[index]] == tokenizer.mask_token_id).all()
        kept = ~masked[index, : len(row.input_ids)]
        assert torch.equal(batch["input_ids"][index, : len(row.input_ids)][kept], row.input_ids[kept])


def test_code_search_pairs_cut_the_documentation_out_of_the_code():
    python = 'def load(path):\n    """Read a config file.\n\n    More words.\n    """\n    return open(path).read()\n'
    java = "class A {\n  /** Sum the values.\n   * Second line. */\n  int sum(int[] values) {\n    int total = 0;\n" \
           "    for (int v : values) total += v;\n    return total;\n  }\n}\n"
    (py_pair,) = code_tasks.search_pairs(code_tasks.function_units(python, "python", "a.py"))
    assert py_pair.query == "Read a config file." and '"""' not in py_pair.code and "return open" in py_pair.code
    (java_pair,) = code_tasks.search_pairs(code_tasks.function_units(java, "java", "A.java"))
    assert java_pair.query == "Sum the values. Second line." and java_pair.code.startswith("int sum(")


def test_splits_keep_every_file_on_one_side():
    units = [code_tasks.Unit("x", "python", f"f{i % 40}.py", f"f{i % 40}.py:{i}", ()) for i in range(400)]
    train, test = code_tasks.split_by_file(units)
    assert not {u.file for u in train} & {u.file for u in test} and train and test
    assert code_tasks.unique_units(units[:3] + [code_tasks.Unit(" x ", "python", "g.py", "g:1", ())]) == units[:1]


@pytest.mark.slow
def test_quick_run_writes_every_row_and_resumes(tmp_path, capsys):
    import task_quality

    arguments = ["--quick", "--in-process", "--results", str(tmp_path / "results.jsonl"), "--cache-dir",
                 str(tmp_path / "cache"), "--json", str(tmp_path / "summary.json"), "--limit-sources", "30"]
    assert task_quality.main(arguments) == 0
    rows = [json.loads(line) for line in open(tmp_path / "results.jsonl")]
    assert {(r["encoder"], r["task"]) for r in rows} == {(e, t) for e in task_quality.QUICK_ENCODERS
                                                          for t in ("completion", "search")}
    for row in rows:
        values = [row["metrics"]["mrr"]] if row["task"] == "search" else [
            row["metrics"][key] for key in ("completion", "completion_far", "completion_near")]
        assert all(0.0 <= value <= 1.0 for value in values) and row["ms_per_step"] > 0
    summary = json.load(open(tmp_path / "summary.json"))
    assert [entry["encoder"] for entry in summary["summary"]] == task_quality.QUICK_ENCODERS
    capsys.readouterr()
    assert task_quality.main(arguments) == 0  # everything is there: nothing runs again
    assert len(open(tmp_path / "results.jsonl").readlines()) == len(rows)
    assert "pre-training 10 steps" not in capsys.readouterr().out
    # Tasks added later start from the kept pre-trained weights: the pointer tasks' plumbing, without pre-training.
    encoder = task_quality.QUICK_ENCODERS[0]
    assert task_quality.main(arguments + ["--tasks", "misuse", "repair", "--encoders", encoder]) == 0
    out = capsys.readouterr().out
    assert "pre-trained weights from" in out and "pre-training 10 steps" not in out
    added = [json.loads(line) for line in open(tmp_path / "results.jsonl")][len(rows):]
    assert sorted(r["task"] for r in added) == ["misuse", "repair"] and {r["encoder"] for r in added} == {encoder}
    misuse, repair = sorted(added, key=lambda r: r["task"])
    assert all(0.0 <= misuse["metrics"][key] <= 1.0 for key in ("classification", "localization", "repair", "joint"))
    assert 0.0 <= repair["metrics"]["repair"] <= 1.0 and 0.0 < repair["metrics"]["chance"] < 1.0
    # Two runs at a time, each in its own process: every row arrives whole, once.
    before = len(open(tmp_path / "results.jsonl").readlines())
    parallel = [a for a in arguments if a != "--in-process"] + ["--jobs", "2", "--seeds", "1", "--tasks", "completion"]
    assert task_quality.main(parallel) == 0
    added = [json.loads(line) for line in open(tmp_path / "results.jsonl").readlines()[before:]]
    assert sorted(r["encoder"] for r in added) == sorted(task_quality.QUICK_ENCODERS)
    assert {(r["task"], r["seed"], r["run"]["threads"]) for r in added} == {("completion", 1, 1)}
    # The layouts' far reach, without training: a layout that holds every block reaches every far name, and the
    # default (window + global + extra blocks) reaches at least what its window + global reach.
    layouts = json.dumps({"every block": {"window_radius": 40}})
    assert task_quality.main(arguments + ["--reach", "--json", str(tmp_path / "reach.json"), "--layouts", layouts]) == 0
    reach = {row["layout"]: row for row in json.load(open(tmp_path / "reach.json"))["reach"]}
    assert list(reach) == ["SASA (default layout)", "SASA window + global", "every block"]
    assert reach["every block"]["far_sites"] > 0 and reach["every block"]["far_reach"] == 1.0
    assert reach["every block"]["density"] == pytest.approx(1.0)
    assert reach["SASA window + global"]["far_reach"] <= reach["SASA (default layout)"]["far_reach"]
    with pytest.raises(SystemExit, match="window_radious"):
        task_quality.main(arguments + ["--reach", "--layouts", '{"typo": {"window_radious": 2}}'])
    # Time per step, alternately in one process: a row per encoder, the window alone at ratio 1.
    assert task_quality.main(arguments + ["--step-time", "--json", str(tmp_path / "times.json")]) == 0
    times = {row["encoder"]: row for row in json.load(open(tmp_path / "times.json"))["step_times"]}
    assert list(times) == task_quality.QUICK_ENCODERS and times["SASA window + global"]["ratio_to_window"] == 1.0
    assert all(row["ms_per_step"] > 0 and len(row["rounds"]) == 1 for row in times.values())


def test_the_schedule_starts_the_slowest_runs_first_and_searches_only_where_asked():
    import task_encoders
    import task_quality

    assert sorted(task_encoders.ENCODERS) == sorted(task_quality.DEFAULT_ENCODERS + task_quality.ABLATIONS)
    args = task_quality.argparse.Namespace(corpus=None, encoders=None, seeds=[0, 1], quick=False, limit_sources=None,
                                           steps=None, tasks=None, search_encoders=None, jobs=2, cache_dir="c",
                                           results="r")
    plan = task_quality.build_plan(args)
    assert plan.tasks_for("RoBERTa full") == {"completion", "search"} and plan.tasks_for("BigBird") == {"completion"}
    done = {("Longformer", 0): {"completion"}, ("RoBERTa full", 0): {"completion"}}
    order = task_quality.schedule(plan, lambda encoder, seed: done.get((encoder, seed), set()))
    assert order[:2] == [("BigBird", 0), ("Longformer (SASA budget)", 0)]  # Longformer seed 0 is done
    assert ("RoBERTa full", 0) in order  # its search is still to do
    assert len(order) == 2 * len(task_quality.DEFAULT_ENCODERS) - 1
    assert order[len(task_quality.DEFAULT_ENCODERS) - 1] == ("Longformer", 1)  # seed 1 after every run of seed 0
    assert plan.run.threads == max(1, (os.cpu_count() or 1) // 2)
    for wrong in (dict(encoders=["Longformer (budget)"]), dict(steps={"pretrain_step": 5}), dict(jobs=0)):
        with pytest.raises(SystemExit):
            task_quality.build_plan(task_quality.argparse.Namespace(**(vars(args) | wrong)))
    every = task_quality.build_plan(task_quality.argparse.Namespace(**(vars(args) | dict(search_encoders=["all"]))))
    assert every.tasks_for("BigBird") == {"completion", "search"}


def test_discrimination_needs_seeds_and_a_gap_of_three_standard_deviations():
    import task_quality

    def entry(name, seeds, beyond_512):
        return {"encoder": name, "repair.seeds": seeds, "repair.repair_beyond_512": beyond_512}

    one_seed = [entry("RoBERTa full", [0], (0.30, 0.0)), entry("RoBERTa-512", [0], (0.10, 0.0))]
    (line,) = task_quality.discrimination(one_seed)
    assert "undecided" in line and "discriminates" not in line
    clear = [entry("RoBERTa full", [0, 1, 2], (0.30, 0.02)), entry("RoBERTa-512", [0, 1, 2], (0.20, 0.03))]
    assert task_quality.discrimination(clear)[0].endswith(": discriminates")  # 0.10 > 3 x 0.03
    close = [entry("RoBERTa full", [0, 1, 2], (0.30, 0.02)), entry("RoBERTa-512", [0, 1, 2], (0.25, 0.03))]
    assert task_quality.discrimination(close)[0].endswith("does NOT discriminate")


def test_pretraining_hides_single_pieces_or_whole_names(tokenizer):
    """``pieces`` hides recurring identifier pieces only; ``names`` hides every piece of a name with such a piece,
    and never part of a name."""
    import task_training
    from mlm_probe import copy_candidates
    from sasa.frequency import identifier_vocabulary
    from sasa.masking import MaskingVocabulary, word_ids

    code = "def total_value(items_list):\n    total_value = 0\n    for item in items_list:\n" \
           "        total_value += item.price_in_cents\n    return total_value, items_list\n"
    input_ids = torch.tensor(tokenizer(code, language=None)["input_ids"])
    candidates = copy_candidates(input_ids, identifier_vocabulary(tokenizer))
    vocabulary = MaskingVocabulary.from_tokenizer(tokenizer)
    words = word_ids(input_ids, vocabulary)
    assert any((words == w).sum() > 1 for w in words[candidates].tolist()), "no name of several pieces to test with"
    for seed in range(5):
        pieces = task_training.pretrain_mask(input_ids, candidates, "pieces", 0.5, torch.Generator().manual_seed(seed))
        assert pieces.any() and not (pieces & ~candidates).any()
        names = task_training.pretrain_mask(input_ids, candidates, "names", 0.5, torch.Generator().manual_seed(seed),
                                            vocabulary)
        assert names.any()
        for word in words[names].unique().tolist():
            assert names[words == word].all() and candidates[words == word].any()
    with pytest.raises(ValueError, match="masking"):
        task_training.pretrain_mask(input_ids, candidates, "lines", 0.5, torch.Generator())


def test_targets_compare_sasa_with_every_peer_that_ran():
    import task_quality

    def entry(name, far, ms, mrr=None):
        row = {"encoder": name, "completion.completion_far": far, "pretrain.ms_per_step": ms}
        return row | ({"search.mrr": mrr} if mrr else {})

    summary = [entry("SASA (default layout)", (0.30, 0.01), 200, (0.20, 0.01)),
               entry("SASA window + global", (0.10, 0.01), 150), entry("RoBERTa full", (0.32, 0.01), 400, (0.23, 0.02)),
               entry("BigBird", (0.29, 0.01), 300)]
    lines = task_quality.targets(summary)
    assert any("BigBird 0.290" in line and line.endswith("NOT met") for line in lines)  # 1 std apart
    assert any("SASA window + global 0.100" in line and line.endswith(": met") for line in lines)
    assert any("closes 91% of the gap" in line and line.endswith(": met") for line in lines)
    assert any(line.startswith("time per pre-training step: 200 ms, more than SASA window + global (150 ms, ×1.33): "
                               "NOT met") for line in lines)
    assert any(line.startswith("search MRR: 0.200 vs full attention 0.230: NOT met") for line in lines)
    summary[0]["search.mrr"] = (0.25, 0.01)  # above full attention: no loss
    assert any(line.startswith("search MRR: 0.250 vs full attention 0.230: met") for line in task_quality.targets(summary))
    assert task_quality.targets(summary[1:]) == []  # no SASA row: nothing to say


def test_an_encoder_cut_at_512_is_pretrained_on_the_part_it_reads(tokenizer):
    """RoBERTa-512 is pre-trained as CodeBERT was, on what it reads: its maskable pieces lie in the first tokens and
    recur there; an encoder that reads everything gets the sequence's own."""
    import types

    import task_training
    from sasa.frequency import identifier_vocabulary
    from sasa.masking import copy_candidates

    filler = "".join(f"    total += value_{k % 7} * {k}\n" for k in range(120))
    code = f"def f(value_0):\n    total = zebra = 0\n{filler}    return total, zebra\n"  # zebra: again past 512
    encoding = tokenizer(code, language=None, return_offsets_mapping=True)
    ids = torch.tensor(encoding["input_ids"])
    identifier = identifier_vocabulary(tokenizer)
    data = types.SimpleNamespace(pretrain=[task_data.Sequence(ids, torch.zeros(len(ids), 1), "f.py")],
                                 pretrain_candidates=[copy_candidates(ids, identifier)], identifier=identifier)
    assert len(ids) > 512
    assert torch.equal(task_training.maskable_pieces(data, 0), data.pretrain_candidates[0])
    visible = task_training.maskable_pieces(data, 0, visible=512)
    assert len(visible) == 512 and visible.any()
    assert torch.equal(visible, copy_candidates(ids[:512], identifier))
    first = code.index("zebra")
    zebra = [t for t, (a, b) in enumerate(encoding["offset_mapping"]) if a < first + 5 and b > first]
    assert zebra and data.pretrain_candidates[0][zebra].all() and not visible[zebra].any()


def test_a_corpus_without_documentation_stops_code_search_with_a_clear_error(tmp_path):
    """JSONL of undocumented code: the data is prepared (no code-search rows), and asking for code search stops with
    a message naming what the corpus lacks, not an error from inside the tokenizer."""
    import ast
    import sysconfig

    import task_quality

    root = sysconfig.get_paths()["stdlib"]
    records = []
    for name in sorted(os.listdir(root)):
        if not name.endswith(".py") or len(records) == 30:
            continue
        try:
            tree = ast.parse(open(os.path.join(root, name), encoding="utf-8").read())
        except (SyntaxError, UnicodeDecodeError):
            continue
        for node in ast.walk(tree):  # no docstrings; ast.unparse drops the comments
            body = getattr(node, "body", None)
            if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and isinstance(
                    getattr(body[0], "value", None), ast.Constant) and isinstance(body[0].value.value, str):
                body[0] = ast.Pass()
        records.append({"code": ast.unparse(tree), "language": "python", "path": name})
    corpus = tmp_path / "undocumented.jsonl"
    corpus.write_text("".join(json.dumps(record) + "\n" for record in records))
    arguments = ["--quick", "--in-process", "--corpus", str(corpus), "--results", str(tmp_path / "results.jsonl"),
                 "--cache-dir", str(tmp_path / "cache")]
    with pytest.raises(SystemExit, match=r"search: no training or held-out rows; the corpus needs documented"):
        task_quality.main(arguments + ["--tasks", "completion", "search"])
    assert task_quality.main(arguments + ["--reach"]) == 0  # what the corpus can give still runs


def test_prepared_data_finds_its_tokenizer_from_any_working_directory(tmp_path, monkeypatch):
    """A cache made with a relative --cache-dir is read by runs started elsewhere (the tokenizer lies beside it)."""
    settings = task_data.DataSettings(vocab_size=1000, max_length=768, min_unit_tokens=200, test_min_tokens=300,
                                      train_sites=2, test_sites=2, limit_sources=30)
    (tmp_path / "here").mkdir()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    made = task_data.prepare(settings, "cache", progress=lambda line: None)
    monkeypatch.chdir(tmp_path / "elsewhere")
    loaded = task_data.prepare(settings, str(tmp_path / "here" / "cache"))
    assert len(task_data.load_tokenizer(loaded)) == made.vocab_size
