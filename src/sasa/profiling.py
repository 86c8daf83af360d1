"""Time and peak memory of one model run, each measurement in a fresh Python process.

Used by ``sasa demo`` and ``benchmarks/``. CPU memory is the process's peak resident set (Linux ``VmHWM``) above the
resident set just before the measured run, so allocator state from other runs never leaks into a number; on CUDA it
is ``torch.cuda.max_memory_allocated`` above the memory held before the run.

Run as ``python -m sasa.profiling '<json spec>'``; prints one JSON line. Spec fields: ``model`` (``"sasa"``,
``"roberta"``, ``"bigbird"``, ``"longformer"``, or ``"attention"`` for the attention function alone), ``backend``
(attention implementation; ``"dense_sdpa"`` for full attention in the attention-only case), ``length``, ``mode``
(``"infer"`` or ``"train"``), ``repeats``, ``size`` (``"small"`` or ``"base"``), ``layout`` (overrides of SASA's
layout fields, ``configuration_sasa.LAYOUT_FIELDS``; default: the config's default layout, built by the model's own
code), ``ast_links_per_token`` (random AST links, so the AST budget is spent as on real code), ``compile`` (wrap the
model in ``torch.compile``), ``autocast`` (a dtype name: the model runs under ``torch.autocast``), ``batch``,
``device``. Token ids are drawn from a working set of :data:`WORKING_SET` ids, so tokens
recur as names do in code and the default (input) top-k source finds blocks to choose.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

SMALL = dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024)
BASE = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)
SIZES = {"small": SMALL, "base": BASE}
#: Random inputs draw their ids from this many distinct ids (code reuses its names; every model gets the same ids).
WORKING_SET = 1000


def _rss_field(name: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(name + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{name} not in /proc/self/status")


def _reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")  # resets VmHWM to the current resident set


def build_model(spec: dict):
    """The model a spec names (``sasa``, ``roberta``, ``bigbird``, ``longformer``), random weights from a fixed
    seed, dropout off."""
    import torch
    from transformers import BigBirdConfig, BigBirdModel, LongformerConfig, LongformerModel, RobertaConfig, RobertaModel

    from .configuration_sasa import SasaConfig
    from .modeling_sasa import SasaModel

    torch.manual_seed(0)
    size = dict(SIZES[spec.get("size", "small")], **spec.get("size_fields", {}))
    length = spec["length"]
    common = dict(vocab_size=spec.get("vocab_size", 50265), hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                  **size)
    kind = spec["model"]
    if kind == "roberta":
        return RobertaModel._from_config(RobertaConfig(max_position_embeddings=length + 2, **common),
                                         attn_implementation=spec.get("backend", "sdpa"))
    if kind == "bigbird":
        config = BigBirdConfig(max_position_embeddings=length, attention_type="block_sparse", block_size=64,
                               num_random_blocks=3, **common)
        return BigBirdModel(config)
    if kind == "longformer":
        config = LongformerConfig(max_position_embeddings=length + 2, attention_window=spec.get("window", 512),
                                  **common)
        return LongformerModel(config)
    config = SasaConfig(max_position_embeddings=length + 2, **spec.get("layout", {}), **common)
    return SasaModel._from_config(config, attn_implementation=spec.get("backend", "sasa_blocks"))


def _model_inputs(spec: dict, model, device) -> dict:
    import torch

    generator = torch.Generator().manual_seed(1)
    shape = (spec.get("batch", 1), spec["length"])
    input_ids = torch.randint(3, min(model.config.vocab_size, 3 + WORKING_SET), shape, generator=generator)
    input_ids[:, 0] = 0
    inputs = dict(input_ids=input_ids)
    if spec.get("ast_links_per_token") and spec["model"] == "sasa":
        inputs["ast_links"] = torch.randint(-1, spec["length"], (*shape, spec["ast_links_per_token"]),
                                            generator=generator)
    if spec["model"] == "longformer":
        inputs["global_attention_mask"] = torch.zeros(shape, dtype=torch.long)
        inputs["global_attention_mask"][:, 0] = 1  # <s> global, as SASA's first block
    return {name: tensor.to(device) for name, tensor in inputs.items()}


def _attention_case(spec: dict, device):
    """Attention alone: ``(step(train), flops)`` for one backend on random q/k/v ``[1, H, L, D]``."""
    import torch
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    from .sparse_attention import eager_attention_forward, prepare_attention_mask, sasa_flex_attention_forward

    heads, head_dim, length = spec.get("heads", 12), spec.get("head_dim", 64), spec["length"]
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, length, heads, head_dim, generator=generator).transpose(1, 2).to(device)
               for _ in range(3))
    # The layout of the default model (or spec["layout"]) for random code-like inputs, built by the model's code.
    layout_model = build_model(dict(spec, model="sasa", size="small", backend="sasa_blocks", size_fields=dict(
        hidden_size=heads, num_hidden_layers=1, num_attention_heads=1, intermediate_size=1))).to(device)
    inputs = _model_inputs(dict(spec, model="sasa", ast_links_per_token=spec.get("ast_links_per_token", 2)),
                           layout_model, device)
    layout = layout_model.layout(inputs["input_ids"], ast_links=inputs.get("ast_links"))
    size = layout.block_size
    backend = spec.get("backend", "sasa_blocks")
    computed = layout.block_mask.sum().item() * size * size if backend != "dense_sdpa" else length * length
    flops = 4 * computed * heads * head_dim  # QK^T and PV, 2 flops per multiply-add

    class Caller(torch.nn.Module):
        is_causal = False

    caller = Caller()
    if backend == "dense_sdpa":
        def attend(q, k, v):
            return torch.nn.functional.scaled_dot_product_attention(q, k, v)
    else:
        function = {"eager": eager_attention_forward, "flex_attention": sasa_flex_attention_forward}.get(
            backend) or ALL_ATTENTION_FUNCTIONS[backend]
        mask = prepare_attention_mask(layout, backend)

        def attend(q, k, v):
            return function(caller, q, k, v, mask, scaling=head_dim**-0.5)[0]

    def step(train: bool) -> None:
        if train:
            leaves = [t.detach().requires_grad_() for t in (q, k, v)]
            attend(*leaves).sum().backward()
        else:
            with torch.inference_mode():
                attend(q, k, v)

    return step, flops * (3 if spec.get("mode") == "train" else 1)


def measure(spec: dict) -> dict:
    """Build the case, run it ``repeats + 1`` times (first run: memory and warm-up/compile; the rest: median time)."""
    import torch

    device = torch.device(spec.get("device", "cpu"))
    train = spec.get("mode", "infer") == "train"
    if spec["model"] == "attention":
        attention_step, flops = _attention_case(spec, device)

        def run() -> None:
            attention_step(train)
    else:
        flops = None
        model = build_model(spec).to(device)
        model.train(train)
        inputs = _model_inputs(spec, model, device)
        if spec.get("compile"):  # torch.compile (inductor); the first run, reported apart, includes the compilation
            model = torch.compile(model)

        autocast = spec.get("autocast")  # e.g. "bfloat16": the forward under torch.autocast, as Trainer's --bf16

        def run() -> None:
            with torch.autocast(device.type, dtype=getattr(torch, autocast or "bfloat16"), enabled=bool(autocast)):
                if train:
                    hidden = model(**inputs).last_hidden_state
                else:
                    with torch.inference_mode():
                        model(**inputs)
                    return
            hidden.float().pow(2).mean().backward()
            model.zero_grad(set_to_none=True)

    def step() -> None:
        run()
        if device.type == "cuda":
            torch.cuda.synchronize()

    # This host's speed drifts (other tenants), memory-bound code more than matmul: attention rows time one matmul
    # after each of their timed runs, so their GFLOP/s has a yardstick taken under the same load.
    yardstick = matmul_timer(spec.get("yardstick_size", 4096)) if flops is not None and device.type == "cpu" else None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        resting = torch.cuda.memory_allocated()
    else:
        _reset_peak_rss()
        resting = _rss_field("VmRSS")
    start = time.perf_counter()
    step()
    first_seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else _rss_field("VmHWM")
    times, yardsticks = [], []
    for _ in range(spec.get("repeats", 3)):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
        if yardstick is not None:
            yardsticks.append(yardstick())
    median = statistics.median(times)
    result = dict(spec, median_ms=1000 * median, first_ms=1000 * first_seconds,
                  peak_increment_mb=(peak - resting) / 2**20, resting_mb=resting / 2**20)
    if flops is not None:
        result["gflops"] = flops / median / 1e9
    if yardsticks:
        result["matmul_gflops"] = statistics.median(yardsticks)
    return result


def matmul_timer(size: int = 4096):
    """A function that times one dense fp32 ``size``-square matmul (into a buffer it keeps) and returns its GFLOP/s."""
    import torch

    a, b, out = torch.randn(size, size), torch.randn(size, size), torch.empty(size, size)
    torch.mm(a, b, out=out)  # warm: BLAS setup, pages of `out`

    def gflops() -> float:
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        return 2 * size**3 / (time.perf_counter() - start) / 1e9

    return gflops


def matmul_gflops(size: int = 4096, repeats: int = 3) -> float:
    """This machine's dense fp32 matmul rate (GFLOP/s, median of ``repeats``), the yardstick for the sparse kernels."""
    timer = matmul_timer(size)
    return statistics.median(timer() for _ in range(repeats))


def measure_in_subprocess(spec: dict, timeout: float = 1800) -> dict:
    """:func:`measure` in a fresh Python; a failure (e.g. out of memory) comes back as ``{"error": ...}``."""
    result = subprocess.run([sys.executable, "-m", "sasa.profiling", json.dumps(spec)], capture_output=True,
                            text=True, timeout=timeout, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        return dict(spec, error=(result.stderr.strip().splitlines() or ["no output"])[-1])
    return json.loads(lines[-1])


if __name__ == "__main__":
    print(json.dumps(measure(json.loads(sys.argv[1]))))
