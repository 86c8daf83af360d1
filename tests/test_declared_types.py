"""The declared-type task: its questions are right by construction (the type written at the declaration of the name
used), on hand-written functions in each language whose answers are known; and it runs end to end in the task
benchmark on a generated corpus."""

import json
import os
import random
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "quality"))
import code_tasks  # noqa: E402
import declared_types  # noqa: E402

CASES = {
    "go": ("func f(a int, b []byte) error {\n\tvar n int64 = 1\n\tvar s string\n\tx := 3\n\ts = string(b)\n"
           "\tn += int64(a + x)\n\treturn fmt.Errorf(\"%s %d\", s, n)\n}\n",
           {("a", "int"), ("b", "[]byte"), ("s", "string"), ("n", "int64")}),
    "java": ("class C {\n    int count(List<String> names, int limit) {\n        int total = 0;\n"
             "        for (String name : names) {\n            if (total < limit) { total += name.length(); }\n"
             "        }\n        var extra = 1;\n        return total + extra;\n    }\n}\n",
             {("names", "List<String>"), ("limit", "int"), ("total", "int"), ("name", "String")}),
    "c": ("static long sum(const char *p, size_t n) {\n    long total = 0;\n    size_t i;\n"
          "    for (i = 0; i < n; i++) total += p[i];\n    return total;\n}\n",
          {("n", "size_t"), ("total", "long"), ("i", "size_t")}),
}


@pytest.mark.parametrize("language", sorted(CASES))
def test_each_question_asks_the_type_written_at_the_declaration_of_the_name_used(language):
    """Every use after its declaration of a variable declared with a written type is a question, and its answer is
    that type; untyped (``:=``, ``var``) and pointer declarations are not asked about."""
    code, expected = CASES[language]
    (unit,) = code_tasks.function_units(code, language, f"f.{language}")
    examples = declared_types.type_examples(unit, random.Random(0), sites=100)
    asked = {(unit.code[e.site[0] : e.site[1]], e.types[e.right]) for e in examples}
    assert asked == expected
    for example in examples:
        assert sorted(example.types) == list(example.types) and len(example.types) >= 2
        assert unit.code[example.declaration[0] : example.declaration[1]] == example.types[example.right]
        assert example.site[0] > example.declaration[1]
        for text, (start, end) in zip(example.types, example.type_spans):
            assert unit.code[start:end] == text
    uses = {name: sum(1 for e in examples if unit.code[e.site[0] : e.site[1]] == name) for name, _ in expected}
    variables = {v.name: v for v in unit.variables}
    for name, count in uses.items():  # every use after the declaration, once
        declared = declared_types.typed_declarations(unit.code, language)[name][0]
        assert count == sum(1 for start, _ in variables[name].occurrences if start > declared[1])


def test_a_name_declared_twice_or_a_function_of_one_type_asks_nothing():
    twice = "func f(a int) {\n\tif a > 0 {\n\t\tvar a string\n\t\t_ = a\n\t}\n\tvar b int64\n\t_ = a + b\n}\n"
    (unit,) = code_tasks.function_units(twice, "go", "f.go")
    declared = declared_types.typed_declarations(unit.code, "go")
    assert "a" not in declared and declared["b"][2] == "int64"
    assert declared_types.type_examples(unit, random.Random(0), 100) == []  # one type left: nothing to choose
    one_type = "func g(a int, b int) int {\n\treturn a + b\n}\n"
    (unit,) = code_tasks.function_units(one_type, "go", "g.go")
    assert declared_types.type_examples(unit, random.Random(0), 100) == []


def test_rows_point_at_the_use_and_the_declaration_and_score_each_choice(tokenizer):
    code, _ = CASES["go"]
    (unit,) = code_tasks.function_units(code, "go", "f.go")
    examples = declared_types.type_examples(unit, random.Random(0), sites=100)
    rows = declared_types.type_rows(examples, tokenizer, max_length=512)
    assert len(rows) == len(examples)
    for row, example in zip(rows, examples):
        encoding = tokenizer(example.code, language="go", return_offsets_mapping=True)
        start, end = encoding["offset_mapping"][row.site]
        assert start <= example.site[0] < end
        covered = "".join(tokenizer.convert_tokens_to_string([tokenizer.convert_ids_to_tokens(int(i))])
                          for i in row.input_ids[list(row.evidence)])
        assert covered.strip() == example.types[example.right]
        assert len(row.type_ids) == len(example.types)
        blocks = {token // 32 for token in row.evidence}
        assert row.far == (row.site // 32 >= 1 and all(abs(b - row.site // 32) > 1 and b >= 1 for b in blocks))
    logits = torch.zeros(len(tokenizer))
    right = rows[0].type_ids[rows[0].right]
    logits[right] = 5.0
    scores = declared_types._type_scores(logits, rows[0])
    assert int(scores.argmax()) == rows[0].right


def synthetic_go(index: int, rng: random.Random) -> str:
    """A long Go function: typed locals declared near the top, used again far below, filler between."""
    types = rng.sample(["int", "int64", "string", "[]byte", "float64", "bool", "uint32", "error"], 4)
    names = [f"value{index}_{k}" for k in range(4)]
    lines = [f"func work{index}(count int) int {{"]
    words = ["alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "theta"]

    def filler(count: int) -> list[str]:
        return [f'\tfmt.Println("{rng.choice(words)} {rng.choice(words)}", {rng.randrange(1000)})' for _ in range(count)]

    lines += filler(12)  # the declarations outside the global first block
    lines += [f"\tvar {name} {kind}" for name, kind in zip(names, types)]
    lines += filler(40)
    lines += [f"\t_ = {name}" for name in names]
    lines += ["\treturn count", "}"]
    return "\n".join(lines) + "\n"


def test_the_task_runs_in_the_task_benchmark(tmp_path):
    """``--tasks types`` on a generated Go corpus: a row with accuracy in [0, 1] and chance below 1 per encoder."""
    import task_quality

    rng = random.Random(0)
    corpus = tmp_path / "go.jsonl"
    corpus.write_text("".join(json.dumps({"code": synthetic_go(i, rng), "language": "go", "path": f"f{i}.go"}) + "\n"
                              for i in range(60)))
    results = tmp_path / "results.jsonl"
    arguments = ["--quick", "--in-process", "--corpus", str(corpus), "--results", str(results), "--cache-dir",
                 str(tmp_path / "cache"), "--tasks", "types", "--encoders", "SASA (default layout)",
                 "SASA window + global"]
    assert task_quality.main(arguments) == 0
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert {(r["encoder"], r["task"]) for r in rows} == {("SASA (default layout)", "types"),
                                                         ("SASA window + global", "types")}
    for row in rows:
        metrics = row["metrics"]
        assert metrics["examples"] > 0 and 0.0 <= metrics["types"] <= 1.0 and 0.0 < metrics["chance"] < 1.0
        assert metrics["count_far"] > 0


def test_a_python_corpus_has_no_declared_types_and_says_so(tmp_path):
    import task_quality

    corpus = tmp_path / "py.jsonl"
    corpus.write_text("".join(json.dumps({"code": f"def f{i}(a, b):\n    return a + b\n" * 40, "language": "python",
                                          "path": f"f{i}.py"}) + "\n" for i in range(20)))
    with pytest.raises(SystemExit, match="types: no training or held-out rows"):
        task_quality.main(["--quick", "--in-process", "--corpus", str(corpus), "--results",
                           str(tmp_path / "r.jsonl"), "--cache-dir", str(tmp_path / "cache"), "--tasks", "types"])


def test_type_reach_is_what_the_layout_lets_the_use_see(tokenizer):
    """From the layout alone: the window alone never reaches a far declaration (far means outside it), a layout of
    every block always does, and the AST blocks reach it through the use's link to its declaration."""
    import task_encoders
    from sasa.frequency import identifier_vocabulary

    rng = random.Random(0)
    units = [u for i in range(6) for u in code_tasks.function_units(synthetic_go(i, rng), "go", f"f{i}.go")]
    rows = declared_types.type_rows([e for u in units for e in declared_types.type_examples(u, rng, sites=8,
                                                                                              far_share=1.0)],
                                    tokenizer, max_length=2048)
    assert sum(row.far for row in rows) >= 4
    size = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)

    def reach(**settings) -> float:
        spec = task_encoders.EncoderSpec("sasa", settings)
        encoder = task_encoders.build_encoder("layout", len(tokenizer), len(tokenizer), 2048, size,
                                              tokenizer.pad_token_id, 0, matchable=identifier_vocabulary(tokenizer),
                                              spec=spec)
        return declared_types.type_reach(encoder, rows, tokenizer.pad_token_id)["types_far_reach"]

    assert reach(num_topk_blocks=0, num_ast_blocks=0) == 0.0
    assert reach(window_radius=100, num_topk_blocks=0, num_ast_blocks=0) == 1.0
    assert reach(num_topk_blocks=0, num_ast_blocks=2) > 0.5
