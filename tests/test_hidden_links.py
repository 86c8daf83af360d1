"""The rule that a token hidden from the model leaves no trace in the AST links, in every batch builder of the
benchmarks (the task benchmark's pre-training, repair and name completion; the learned probe; the continued
pre-training benchmark's held-out masks), and in the task benchmark's far reach (``--reach``). The package's own
function and collator are tested in test_masking.py and test_data_collator.py."""

import dataclasses
import json
import os
import random
import sys
import types

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import links_touching, read_snippet

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "quality"))
import code_tasks  # noqa: E402
import task_data  # noqa: E402
import task_training  # noqa: E402

SNIPPETS = (("example.py", "python"), ("example.c", "c"), ("Example.java", "java"), ("example.go", "go"))


def parsed_sequences(tokenizer) -> list[task_data.Sequence]:
    sequences = []
    for name, language in SNIPPETS:
        encoded = tokenizer(read_snippet(name), language=language)
        ids = torch.tensor(encoded["input_ids"])
        sequences.append(task_data.Sequence(ids, torch.tensor(encoded["ast_links"], dtype=torch.int16).reshape(
            len(ids), -1), name))
    assert all((s.ast_links >= 0).any() for s in sequences)
    return sequences


def test_a_hidden_batch_keeps_no_link_of_a_hidden_or_unlinked_token(tokenizer):
    """``task_training.hidden_batch`` (pre-training, repair and completion batches are built with it): hidden tokens
    are ``<mask>``, no link touches a hidden or unlinked token, every other link is the parser's; with
    ``unlink=False`` every link stays, and some touch hidden tokens (the leak)."""
    sequences = parsed_sequences(tokenizer)

    @settings(max_examples=30, deadline=None)
    @given(seed=st.integers(0, 10_000), rate=st.floats(0.01, 0.9), typed=st.booleans())
    def check(seed, rate, typed):
        generator = torch.Generator().manual_seed(seed)
        hidden = [torch.rand(len(s.input_ids), generator=generator) < rate for s in sequences]
        unlinked = [torch.rand(len(s.input_ids), generator=generator) < rate / 2 for s in sequences] if typed else None
        batch, masked, original = task_training.hidden_batch(sequences, hidden, tokenizer.pad_token_id,
                                                             tokenizer.mask_token_id, unlinked)
        leaky, _, _ = task_training.hidden_batch(sequences, hidden, tokenizer.pad_token_id, tokenizer.mask_token_id,
                                                 unlinked, unlink=False)
        parsed = task_training.pad_batch(sequences, tokenizer.pad_token_id)
        cut = masked.clone()
        for row, mask in enumerate(hidden):
            assert torch.equal(masked[row, : len(mask)], mask) and not masked[row, len(mask):].any()
            if unlinked:
                cut[row, : len(unlinked[row])] |= unlinked[row]
        assert (batch["input_ids"][masked] == tokenizer.mask_token_id).all()
        assert torch.equal(original, parsed["input_ids"])
        assert not links_touching(batch["ast_links"], cut).any()
        assert torch.equal(batch["ast_links"], parsed["ast_links"].masked_fill(links_touching(parsed["ast_links"], cut), -1))
        assert torch.equal(leaky["ast_links"], parsed["ast_links"])

    check()


def test_pretraining_batches_keep_no_link_of_a_hidden_token(tokenizer):
    """Every batch the task benchmark pre-trains on (both maskings) has no link from or to a hidden token: the
    encoder is called with what it reads, and the test looks at what it got."""
    from sasa.frequency import identifier_vocabulary
    from sasa.masking import copy_candidates

    sequences = parsed_sequences(tokenizer)
    identifier = identifier_vocabulary(tokenizer)
    data = types.SimpleNamespace(pretrain=sequences, identifier=identifier, pad_id=tokenizer.pad_token_id,
                                 mask_id=tokenizer.mask_token_id, tokenizer_dir=tokenizer.name_or_path,
                                 pretrain_candidates=[copy_candidates(s.input_ids, identifier) for s in sequences])
    seen = []

    class Recorder(torch.nn.Module):
        spec = types.SimpleNamespace(truncate=None)

        def __init__(self):
            super().__init__()
            self.word_embeddings = torch.nn.Embedding(len(tokenizer), 8)

        def forward(self, input_ids, attention_mask, token_type_ids, ast_links):
            seen.append((input_ids.clone(), ast_links.clone()))
            return self.word_embeddings(input_ids)

    for masking in ("pieces", "names"):
        seen.clear()
        task_training.pretrain(Recorder(), data, steps=4, seed=0, batch_size=2, masking=masking)
        assert len(seen) == 4
        for input_ids, links in seen:
            hidden = input_ids == tokenizer.mask_token_id
            assert hidden.any() and (links >= 0).any()
            assert not links_touching(links, hidden).any()


def misuse_and_completion_rows(tokenizer):
    filler = "".join(f"    total += other_value * {k}\n" for k in range(30))
    far_use = f"def handle(other_value):\n    total = 0\n{filler}    request_data = total\n{filler}" \
        "    return request_data, total\n"
    units = []
    for name, language in SNIPPETS:
        units += code_tasks.function_units(read_snippet(name), language, name)
    units += code_tasks.function_units(far_use, "python", "far.py")
    examples = [e for u in units for e in code_tasks.misuse_examples(u, random.Random(0), sites=3)]
    return task_data.misuse_rows(examples, tokenizer, max_length=1024)


def test_completion_and_repair_batches_unlink_the_whole_name(tokenizer):
    """Name completion: no link from or to any piece of the name, the typed first piece included (a half-typed name
    resolves to nothing), though that piece stays visible; repair at a given site: no link of the masked name."""
    rows = misuse_and_completion_rows(tokenizer)
    sites = task_data.completion_sites(rows, tokenizer, per_unit=1000)
    batch, masked = task_training.completion_batch(sites, rows, tokenizer.pad_token_id, tokenizer.mask_token_id)
    parsed = task_training.pad_batch([rows[s.unit] for s in sites], tokenizer.pad_token_id)
    name = torch.zeros_like(masked)
    for row, site in enumerate(sites):
        name[row, site.start : site.end] = True
        assert batch["input_ids"][row, site.start] == rows[site.unit].input_ids[site.start]  # typed, visible
    assert links_touching(parsed["ast_links"], name).any(), "the sites' names have no links to drop: nothing is tested"
    assert not links_touching(batch["ast_links"], name).any()
    assert torch.equal(batch["ast_links"], parsed["ast_links"].masked_fill(links_touching(parsed["ast_links"], name), -1))

    buggy = [row for row in rows if row.buggy]
    batch, _ = task_training._repair_batch(buggy, tokenizer.pad_token_id, tokenizer.mask_token_id)
    hidden = batch["input_ids"] == tokenizer.mask_token_id
    assert hidden.any() and not links_touching(batch["ast_links"], hidden).any()


def test_the_completion_reach_of_an_ast_only_layout_is_its_reach_without_the_sites_links(tokenizer):
    """``--reach`` of an AST-only layout on the completion sites equals its reach on copies of the units whose site's
    links (the whole name's, to and from) were removed by hand; with the links kept it reaches more (the leak)."""
    import task_encoders
    from sasa.frequency import identifier_vocabulary

    rows = misuse_and_completion_rows(tokenizer)
    sites = task_data.completion_sites(rows, tokenizer, per_unit=1000)
    spec = task_encoders.EncoderSpec("sasa", dict(num_topk_blocks=0, num_ast_blocks=2, block_size=16))
    encoder = task_encoders.build_encoder("AST only", len(tokenizer), len(tokenizer), 1024, dict(
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32), tokenizer.pad_token_id, 0,
        matchable=identifier_vocabulary(tokenizer), spec=spec)
    by_hand, own_sites = [], []
    for index, site in enumerate(sites):
        unit = rows[site.unit]
        links = unit.ast_links.clone()
        name = set(range(site.start, site.end))
        for position in range(links.shape[0]):
            for slot in range(links.shape[1]):
                if position in name or int(links[position, slot]) in name:
                    links[position, slot] = -1
        by_hand.append(dataclasses.replace(unit, ast_links=links))
        own_sites.append(dataclasses.replace(site, unit=index))
    pad, mask = tokenizer.pad_token_id, tokenizer.mask_token_id
    fair = task_training.completion_reach(encoder, sites, rows, pad, mask)
    assert fair["far_sites"] > 0
    assert fair == task_training.completion_reach(encoder, own_sites, by_hand, pad, mask, unlink=False)
    leaky = task_training.completion_reach(encoder, sites, rows, pad, mask, unlink=False)
    assert leaky["far_reach"] > fair["far_reach"]


def test_the_learned_probe_batches_keep_no_link_of_a_hidden_token(tokenizer):
    import mlm_probe

    vocab = mlm_probe.vocabulary(tokenizer)
    texts, languages = zip(*[(read_snippet(name), language) for name, language in SNIPPETS])
    examples = mlm_probe.encode_examples(list(texts), list(languages), tokenizer, vocab)
    generator = torch.Generator().manual_seed(0)
    masks = [torch.rand(len(e.input_ids), generator=generator) < 0.3 for e in examples]
    batch = mlm_probe._batch(examples, masks, vocab, block_size=32)
    assert batch["masked"].any() and (batch["ast_links"] >= 0).any()
    assert not links_touching(batch["ast_links"], batch["masked"]).any()


def test_the_continued_pretraining_held_out_masks_keep_no_link_of_a_hidden_token(tokenizer, tmp_path):
    import continued_pretraining

    path = tmp_path / "held-out.jsonl"
    path.write_text("".join(json.dumps({"code": read_snippet("example.py")}) + "\n" for _ in range(2)))
    for masking in ("tokens", "identifiers"):
        examples = continued_pretraining.held_out_examples(tokenizer, str(path), masking, seed=0)
        for example in examples:
            links = torch.tensor(example["ast_links"])[None]
            hidden = (torch.tensor(example["labels"]) != -100)[None]
            assert hidden.any() and (links >= 0).any()
            assert not links_touching(links, hidden).any()


