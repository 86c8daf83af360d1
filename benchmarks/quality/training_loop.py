"""The one training loop of the quality benchmarks (the task benchmark, the learned probe, continued pre-training's
original): AdamW, a warm-up then a decay (the schedule an argument), gradients clipped at 1, the loss of each step
from a function of the step. What each benchmark trains, and on what, stays in the benchmark.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable

import torch
from torch import nn

#: The learning-rate shapes after the warm-up: to zero along a half cosine, or along a straight line.
SCHEDULES = ("cosine", "linear")


def decays_matrices(name: str, parameter: nn.Parameter) -> bool:
    """Weight decay on every matrix (embeddings included), none on biases and norms (the task benchmark's rule)."""
    return parameter.dim() >= 2


def decays_matrices_but_embeddings(name: str, parameter: nn.Parameter) -> bool:
    """Weight decay on every matrix but the embedding tables (RoBERTa's rule; the probe and the original)."""
    return parameter.dim() >= 2 and "embeddings" not in name


def learning_rate_factor(step: int, steps: int, warmup: float = 0.05, schedule: str = "cosine") -> float:
    """The factor of the peak learning rate at ``step``: linear warm-up over ``warmup * steps`` steps (at least one),
    then ``schedule`` down to 0 at ``steps``."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    warmup_steps = max(1, int(warmup * steps))
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, steps - warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * progress)) if schedule == "cosine" else max(0.0, 1.0 - progress)


def train_loop(named_parameters: Iterable[tuple[str, nn.Parameter]], loss_of_step: Callable[[int], torch.Tensor],
               steps: int, learning_rate: float, *, weight_decay: float = 0.01,
               decays: Callable[[str, nn.Parameter], bool] = decays_matrices, warmup: float = 0.05,
               schedule: str = "cosine", log: Callable[[str], None] | None = None, log_every: int = 100,
               label: str = "", after_step: Callable[[int], None] | None = None) -> dict:
    """Train for ``steps`` steps: ``loss_of_step(step)`` builds the batch and returns its loss; AdamW (betas 0.9,
    0.98, eps 1e-6; ``weight_decay`` on the parameters ``decays`` names), :func:`learning_rate_factor`, gradients
    clipped at 1.

    Args:
        named_parameters: ``(name, parameter)`` pairs; a parameter given twice (tied weights) is trained once.
        log, log_every, label: Print ``label`` and the mean loss of the last ``log_every`` steps (0: never).
        after_step: Called with the number of steps done after each step (an intermediate evaluation).

    Returns:
        ``final_loss`` (mean over the last 10 % of steps), ``seconds_per_step`` (median), ``seconds``, ``losses``.
    """
    unique = list({id(parameter): (name, parameter) for name, parameter in named_parameters}.values())
    groups = [dict(params=[p for n, p in unique if decays(n, p)], weight_decay=weight_decay),
              dict(params=[p for n, p in unique if not decays(n, p)], weight_decay=0.0)]
    parameters = [parameter for _, parameter in unique]
    optimizer = torch.optim.AdamW(groups, lr=learning_rate, betas=(0.9, 0.98), eps=1e-6)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: learning_rate_factor(step, steps, warmup, schedule))
    losses, times = [], []
    started = time.perf_counter()
    for step in range(steps):
        begun = time.perf_counter()
        loss = loss_of_step(step)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        times.append(time.perf_counter() - begun)
        if log and log_every and (step + 1) % log_every == 0:
            recent = losses[-log_every:]
            log(f"{label}step {step + 1}/{steps}: loss {sum(recent) / len(recent):.3f} "
                f"({time.perf_counter() - started:.0f} s)")
        if after_step:
            after_step(step + 1)
    tail = losses[-max(1, steps // 10):]
    return dict(final_loss=sum(tail) / len(tail) if tail else float("nan"),
                seconds_per_step=sorted(times)[len(times) // 2] if times else float("nan"),
                seconds=time.perf_counter() - started, losses=losses)
