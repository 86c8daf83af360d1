"""Time and peak memory of one model run, each measurement in a fresh Python process.

Used by ``sasa demo`` and ``benchmarks/``. CPU memory is the process's peak resident set (Linux ``VmHWM``) above the
resident set just before the measured run, so allocator state from other runs never leaks into a number; on CUDA it
is ``torch.cuda.max_memory_allocated`` above the memory held before the run.

Run as ``python -m sasa.profiling '<json spec>'``; prints one JSON line. Spec fields: ``model`` (``"sasa"`` or
``"roberta"``), ``backend`` (attention implementation), ``length``, ``mode`` (``"infer"`` or ``"train"``),
``repeats``, ``size`` (config fields), ``layout`` (SASA sparse fields), ``device``, ``ast_links_per_token`` (random
AST links per token, so the AST blocks are spent as on real code; SASA only).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

SMALL = dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024)


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
    """The model a spec names, randomly initialised from a fixed seed, dropout off."""
    import torch
    from transformers import RobertaConfig, RobertaModel

    from .configuration_sasa import SasaConfig
    from .modeling_sasa import SasaModel

    torch.manual_seed(0)
    size = dict(SMALL, **spec.get("size", {}))
    common = dict(vocab_size=spec.get("vocab_size", 50265), max_position_embeddings=spec["length"] + 2,
                  hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **size)
    if spec["model"] == "roberta":
        return RobertaModel._from_config(RobertaConfig(**common), attn_implementation=spec.get("backend", "sdpa"))
    config = SasaConfig(**common, **spec.get("layout", {}))
    return SasaModel._from_config(config, attn_implementation=spec.get("backend", "sasa_blocks"))


def measure(spec: dict) -> dict:
    """Build the model, run it ``repeats + 1`` times (first run: memory; the rest: median time)."""
    import torch

    device = torch.device(spec.get("device", "cpu"))
    model = build_model(spec).to(device)
    train = spec.get("mode", "infer") == "train"
    model.train(train)
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(3, model.config.vocab_size, (spec.get("batch", 1), spec["length"]), generator=generator)
    input_ids[:, 0] = 0
    input_ids = input_ids.to(device)
    inputs = dict(input_ids=input_ids)
    if spec.get("ast_links_per_token") and spec["model"] == "sasa":
        shape = (*input_ids.shape, spec["ast_links_per_token"])
        inputs["ast_links"] = torch.randint(-1, spec["length"], shape, generator=generator).to(device)

    def step() -> None:
        if train:
            model(**inputs).last_hidden_state.float().pow(2).mean().backward()
            model.zero_grad(set_to_none=True)
        else:
            with torch.inference_mode():
                model(**inputs)
        if device.type == "cuda":
            torch.cuda.synchronize()

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
    times = []
    for _ in range(spec.get("repeats", 3)):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return dict(spec, median_ms=1000 * statistics.median(times), first_ms=1000 * first_seconds,
                peak_increment_mb=(peak - resting) / 2**20, resting_mb=resting / 2**20)


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
