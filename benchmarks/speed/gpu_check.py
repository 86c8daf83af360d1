"""The GPU acceptance check's measurements (``scripts/gpu_check`` runs this after ``tests/test_gpu.py``): about 4
minutes on one H100/H200.

Sections, each recorded in the JSON report (default ``docs/benchmarks/gpu-check.json``) and summarised on stdout:

1. ``default_backend``: what ``"sasa_auto"`` runs on this device (expected: ``flex_attention``).
2. ``flex_vs_sasa_blocks``: FlexAttention at SASA block sizes 32/64/128, bf16 autocast, outputs and gradients against
   ``sasa_blocks`` (the composite path) on a 2-layer model, head size 64, ~2000 tokens with AST links and a frequency
   table.
3. ``recompiles``: compiled graphs of FlexAttention over 4 lengths (2 length buckets: expected 2).
4. ``autocast_training``: a masked-LM model with a frequency table, trained 5 steps under bf16 autocast on real code
   (the standard library, tokenized with its AST links): finite losses; the layout under autocast equals fp32's.
5. ``host_syncs``: CUDA host synchronisations in one training step (``torch.cuda.set_sync_debug_mode``), per backend.
6. ``timings``: ms per training step (batch 1, bf16 autocast, base size) and peak memory above the weights for
   ``sasa_blocks``, ``flex_attention`` and RoBERTa-SDPA at 2048-16384 tokens.
7. ``fused_kernel``: the CPU kernel was never built or loaded on this GPU run.

Exits 1 when a correctness section fails, 2 when no CUDA device is visible (``--allow-cpu`` runs the sections that
can on the CPU, small, to check this script itself).

    python benchmarks/speed/gpu_check.py                       # the whole check
    python benchmarks/speed/gpu_check.py --quick               # timings at 2048 and 4096 only
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
import traceback
import warnings

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
DEFAULT_JSON = os.path.join(ROOT, "docs", "benchmarks", "gpu-check.json")


def small_config(block_size: int, length: int, **overrides):
    from sasa import SasaConfig

    fields = dict(vocab_size=2000, hidden_size=256, num_hidden_layers=2, num_attention_heads=4, intermediate_size=512,
                  max_position_embeddings=length + 2, block_size=block_size, hidden_dropout_prob=0.0,
                  attention_probs_dropout_prob=0.0)
    return SasaConfig(**dict(fields, **overrides))


def random_inputs(config, lengths, device, seed=0):
    generator = torch.Generator().manual_seed(seed)
    width = max(lengths)
    input_ids = torch.randint(3, 600, (len(lengths), width), generator=generator)  # ids recur, as names in code do
    attention_mask = (torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]).long()
    input_ids = input_ids.masked_fill(attention_mask == 0, config.pad_token_id)
    input_ids[:, 0] = 0
    ast_links = torch.randint(-1, width, (len(lengths), width, 2), generator=generator)
    return {k: v.to(device) for k, v in dict(input_ids=input_ids, attention_mask=attention_mask,
                                              ast_links=ast_links).items()}


def with_table(model, seed=0):
    generator = torch.Generator().manual_seed(seed)
    vocab = model.config.vocab_size
    model.base_model.set_frequency_table(torch.randint(0, vocab, (vocab, 8), generator=generator),
                                         torch.rand(vocab, 8, generator=generator))
    return model


def pair(config, backends, device, cls=None):
    from sasa import SasaModel

    cls = cls or SasaModel
    torch.manual_seed(0)
    first = with_table(cls._from_config(copy.deepcopy(config), attn_implementation=backends[0]))
    second = cls._from_config(copy.deepcopy(config), attn_implementation=backends[1])
    with_table(second)
    second.load_state_dict(first.state_dict())
    return first.to(device), second.to(device)


def step_outputs(model, inputs, dtype, train=True):
    real = inputs["attention_mask"].bool()
    model.train(train)
    model.zero_grad(set_to_none=True)
    with torch.autocast(inputs["input_ids"].device.type, dtype=dtype, enabled=dtype is not None), \
            torch.set_grad_enabled(train):
        hidden = model(**inputs).last_hidden_state
    if not train:
        return hidden.float()[real], {}
    hidden[real].float().pow(2).mean().backward()
    return hidden.detach().float()[real], {n: p.grad.float() for n, p in model.named_parameters() if p.grad is not None}


def check_default_backend(device) -> dict:
    from sasa.sparse_attention import resolve_backend

    chosen = resolve_backend("sasa_auto", device, head_dim=64, attention_dropout=False)
    with_dropout = resolve_backend("sasa_auto", device, head_dim=64, attention_dropout=True)
    return dict(chosen=chosen, training_with_attention_dropout=with_dropout,
                ok=chosen == ("flex_attention" if device.type == "cuda" else "sasa_blocks"))


def check_flex_vs_blocks(device, length: int) -> dict:
    rows, train = {}, device.type == "cuda"  # FlexAttention has no CPU backward
    for block_size in (32, 64, 128):
        config = small_config(block_size, length)
        blocks, flex = pair(config, ("sasa_blocks", "flex_attention"), device)
        inputs = random_inputs(config, [length, length * 2 // 3], device)
        dtype = torch.bfloat16 if device.type == "cuda" else None
        (out_ref, grads_ref), (out, grads) = (step_outputs(m, inputs, dtype, train) for m in (blocks, flex))
        output_error = float((out - out_ref).abs().max())
        grad_error = max((float((grads[n] - g).abs().max() / g.abs().max().clamp(min=1e-3)) for n, g in
                          grads_ref.items()), default=0.0)
        tolerance = 5e-2 if dtype is not None else 1e-4
        rows[block_size] = dict(output_max_abs_error=output_error, grad_max_rel_error=grad_error,
                                ok=output_error <= tolerance and grad_error <= tolerance and grads.keys() == grads_ref.keys())
    return dict(rows=rows, dtype="bfloat16 autocast" if device.type == "cuda" else "fp32, inference (CPU)",
                ok=all(r["ok"] for r in rows.values()))


def check_recompiles(device) -> dict:
    from torch._dynamo.utils import counters

    from sasa import sparse_attention

    torch._dynamo.reset()
    sparse_attention._compiled_flex.clear()
    config = small_config(32, 3072)
    _, flex = pair(config, ("sasa_blocks", "flex_attention"), device)
    counters.clear()
    lengths = [(1900, 1000), (2000, 1500), (2900, 100), (3000, 2000)]  # buckets: 2048, 2048, 3072, 3072 tokens
    seconds = []
    for pair_lengths in lengths:
        start = time.perf_counter()
        with torch.no_grad():
            flex.eval()(**random_inputs(config, list(pair_lengths), device))
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds.append(round(time.perf_counter() - start, 2))
    graphs = counters["stats"]["unique_graphs"]
    return dict(lengths=lengths, graphs=graphs, seconds_per_call=seconds, ok=graphs <= 2)


def code_batch(device, length: int, count: int = 4):
    """Real code: the longest standard-library files, tokenized with AST links (a BPE trained on them here)."""
    import glob
    import sysconfig

    from tokenizers import ByteLevelBPETokenizer

    from sasa import SasaTokenizer
    from sasa.data_collator import SasaDataCollator

    paths = sorted(glob.glob(os.path.join(sysconfig.get_paths()["stdlib"], "*.py")), key=os.path.getsize)[-count:]
    texts = [open(path, encoding="utf-8", errors="replace").read() for path in paths]
    with tempfile.TemporaryDirectory() as directory:
        trainer = ByteLevelBPETokenizer()
        trainer.train_from_iterator(texts, vocab_size=2000, min_frequency=2, show_progress=False,
                                    special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
        trainer.save_model(directory)
        tokenizer = SasaTokenizer.from_pretrained(directory)
    encoded = tokenizer(texts, language="python", truncation=True, max_length=length)
    features = [{k: encoded[k][i] for k in ("input_ids", "attention_mask", "ast_links")} for i in range(count)]
    batch = SasaDataCollator(tokenizer, pad_to_multiple_of=32)(features)
    generator = torch.Generator().manual_seed(0)
    batch["labels"] = batch["input_ids"].masked_fill(torch.rand(batch["input_ids"].shape, generator=generator) > 0.15,
                                                     -100)
    return {k: v.to(device) for k, v in batch.items()}, len(tokenizer)


def check_autocast_training(device, length: int) -> dict:
    from sasa import SasaForMaskedLM

    batch, vocab = code_batch(device, length)
    config = small_config(32, length, vocab_size=vocab)
    torch.manual_seed(0)
    model = with_table(SasaForMaskedLM(config)).to(device)  # the default backend
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    dtype = torch.bfloat16
    for _ in range(5):
        with torch.autocast(device.type, dtype=dtype):
            loss = model.train()(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    args = (batch["input_ids"], batch["attention_mask"], batch["ast_links"])
    fp32 = model.sasa.layout(*args)
    with torch.autocast(device.type, dtype=dtype):
        mixed = model.sasa.layout(*args)
    linked = int((batch["ast_links"] >= 0).sum())
    same = bool(torch.equal(fp32.block_mask, mixed.block_mask))
    return dict(losses=losses, ast_links=linked, layout_equal_to_fp32=same,
                extra_blocks_chosen=int((fp32.sources >= 3).sum()),
                ok=all(map(lambda x: x == x and abs(x) != float("inf"), losses)) and same and linked > 0)


def count_host_syncs(device, length: int) -> dict:
    if device.type != "cuda":
        return dict(skipped="CPU: no host synchronisation to count", ok=True)
    rows = {}
    for backend in ("sasa_auto", "sasa_blocks"):
        config = small_config(32, length)
        model, _ = pair(config, (backend, backend), device)
        inputs = random_inputs(config, [length], device)
        step_outputs(model, inputs, torch.bfloat16)  # warm-up (compiles)
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                step_outputs(model, inputs, torch.bfloat16)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        syncs = [str(w.message).splitlines()[0] for w in caught if "synchroniz" in str(w.message).lower()]
        rows[backend] = dict(syncs=len(syncs), first=syncs[:5])
    return dict(rows=rows, ok=True)


def timings(device, lengths: list[int], repeats: int) -> dict:
    from sasa.profiling import measure

    rows = []
    for length in lengths:
        for name, spec in (("sasa_blocks", dict(model="sasa", backend="sasa_blocks")),
                           ("flex_attention", dict(model="sasa", backend="flex_attention")),
                           ("roberta_sdpa", dict(model="roberta", backend="sdpa"))):
            spec = dict(spec, size="base", length=length, mode="train", repeats=repeats, autocast="bfloat16",
                        ast_links_per_token=2, device=device.type)
            try:
                result = measure(spec)
                rows.append(dict(name=name, length=length, ms_per_step=round(result["median_ms"], 1),
                                 first_ms=round(result["first_ms"]), peak_mb=round(result["peak_increment_mb"])))
            except Exception as error:  # e.g. out of memory: recorded, the others still run
                rows.append(dict(name=name, length=length, error=f"{type(error).__name__}: {error}"[:300]))
            if device.type == "cuda":
                torch.cuda.empty_cache()
            print(f"  {rows[-1]}", flush=True)
    return dict(rows=rows, ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="timings at 2048 and 4096 tokens only")
    parser.add_argument("--lengths", default=None, help="timing lengths, comma-separated (default 2048..16384)")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per row (median)")
    parser.add_argument("--json", default=DEFAULT_JSON, help="where to write the report ('' for nowhere)")
    parser.add_argument("--only", default=None, help="run these sections only, comma-separated")
    parser.add_argument("--allow-cpu", action="store_true", help="run what can on the CPU, small (checks the script)")
    args = parser.parse_args(argv)

    if not torch.cuda.is_available() and not args.allow_cpu:
        print("gpu_check: no CUDA device is visible to torch (torch.cuda.is_available() is False, torch "
              f"{torch.__version__}): nothing to check here. Run it on a machine with an NVIDIA GPU and a CUDA build "
              "of torch.", file=sys.stderr)
        return 2
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    on_gpu = device.type == "cuda"
    lengths = ([int(x) for x in args.lengths.split(",")] if args.lengths else
               [2048, 4096] if args.quick else [2048, 4096, 8192, 16384])
    if not on_gpu:
        lengths = lengths[:1] if args.lengths else [512]

    from sasa import fused_block_attention

    report = dict(torch=torch.__version__, device=torch.cuda.get_device_name() if on_gpu else "cpu",
                  cuda=torch.version.cuda, started=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()))
    sections = [
        ("default_backend", lambda: check_default_backend(device)),
        ("flex_vs_sasa_blocks", lambda: check_flex_vs_blocks(device, 2000 if on_gpu else 300)),
        ("recompiles", lambda: check_recompiles(device)),
        ("autocast_training", lambda: check_autocast_training(device, 2048 if on_gpu else 1024)),
        ("host_syncs", lambda: count_host_syncs(device, 2048)),
        ("timings", lambda: timings(device, lengths, args.repeats)),
    ]
    if args.only:
        sections = [(name, run) for name, run in sections if name in args.only.split(",")]
    failed = []
    for name, run in sections:
        start = time.perf_counter()
        print(f"== {name}", flush=True)
        try:
            result = run()
        except Exception:
            result = dict(ok=False, error=traceback.format_exc()[-2000:])
        result["seconds"] = round(time.perf_counter() - start, 1)
        report[name] = result
        print(json.dumps(result, default=str)[:1500], flush=True)
        if not result.get("ok"):
            failed.append(name)
    if on_gpu:  # nothing here runs the CPU kernel: its C++ build must never have started
        built = fused_block_attention._module is not None or fused_block_attention._failed
        report["fused_kernel"] = dict(built_or_tried=built, ok=not built)
        if built:
            failed.append("fused_kernel")
    report["failed"] = failed
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=2, default=str)
            handle.write("\n")
    print("gpu_check:", "all sections passed" if not failed else f"FAILED: {', '.join(failed)}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
