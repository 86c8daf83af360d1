"""Draw a block layout: one cell per (query block, key block), coloured by the pattern that selected it."""

from __future__ import annotations

import os

import torch

from .block_layout import PATTERN_CODES, BlockLayout

COLOURS = {"none": "#ffffff", "window": "#4c72b0", "global": "#555555", "top-k": "#dd8452", "ast": "#55a868",
           "random": "#8172b3"}


def pattern_counts(layout: BlockLayout, example: int = 0) -> dict[str, int]:
    """Number of (query block, key block) pairs each pattern selected in one example."""
    sources = layout.sources[example]
    return {name: int((sources == code).sum()) for name, code in PATTERN_CODES.items()}


def plot_layout(layout: BlockLayout, path: str | os.PathLike, example: int = 0, title: str | None = None) -> None:
    """Write a PNG of ``layout`` (one example) to ``path``: rows are query blocks, columns key blocks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    names = ["none", *PATTERN_CODES]
    sources = layout.sources[example].to(torch.int64).cpu().numpy()
    size = max(4.0, min(12.0, layout.num_blocks / 8))
    figure, axes = plt.subplots(figsize=(size + 2.5, size))
    axes.imshow(sources, cmap=ListedColormap([COLOURS[n] for n in names]), vmin=0, vmax=len(names) - 1,
                interpolation="nearest")
    axes.set_xlabel("key block")
    axes.set_ylabel("query block")
    counts = pattern_counts(layout, example)
    axes.set_title(title or f"SASA block layout: {layout.num_blocks} blocks of {layout.block_size} tokens, "
                   f"density {layout.density():.3f}", fontsize=10)
    handles = [Patch(facecolor=COLOURS[n], edgecolor="black", label=f"{n} ({counts[n]})") for n in PATTERN_CODES]
    axes.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
