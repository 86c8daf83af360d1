"""Does the structure win on tasks? SASA against RoBERTa-512, full attention, BigBird and Longformer at equal budget.

Every encoder of :mod:`task_encoders` (same width, depth, heads, FFN, vocabulary and tokenizer; they differ only in
which keys a query attends to) is self-pre-trained with the same objective and budget on the training files, then
fine-tuned with the same small heads on ``last_hidden_state`` (:mod:`task_training`), with the same steps, optimiser,
learning-rate rule and seeds:

* **name completion** (the default far-context task): at a use of a local variable in a long held-out function, the
  name's first piece is typed and the rest hidden; the pre-trained masked-LM head must complete it from the name's
  other occurrences. Reported overall and by bucket: evidence near or far (is any other occurrence of the name inside
  the site's window blocks), site within the first 512 tokens or beyond;
* **code search** (documentation → function, MRR over the held-out pool): where structure is not needed;
* on request (``--tasks``), **variable misuse** (GREAT's pointers) and **repair** at a given bug site (the same
  buckets): in this budget neither learns to use far evidence (docs/task-quality.md).

The data (:mod:`task_data`, from :mod:`code_tasks`) is generated from real code with labels correct by construction,
split by file. Each (encoder, seed) runs in its own process (clean peak memory), ``--jobs`` of them at a time (2 by
default, one thread each on 2 cores), and appends its rows to the results file as soon as each task finishes, so an
interrupted run resumes where it stopped (and can span sessions). The full run (9 encoders, 3 seeds) takes about 2.5
hours on 2 cores; SASA's ablations and layout variants (``--encoders`` ... :data:`ABLATIONS`) about 7 minutes each.

    python benchmarks/quality/task_quality.py --quick                         # minutes: the plumbing, 3 encoders, 1 seed
    python benchmarks/quality/task_quality.py --results docs/task_quality.jsonl --png docs/task_quality
    python benchmarks/quality/task_quality.py --corpus '/usr/share/go-1.19/src/**/*.go' --results go.jsonl

The table gives mean ± std over seeds per encoder, the density of its attention, time per pre-training step (and per
fine-tuning step) and peak memory, then the discrimination check (can the benchmark tell full attention from
RoBERTa-512 beyond 512 tokens, and from the window alone on far evidence?) and the targets (:func:`targets`). The
pre-trained weights of every (encoder, seed) are kept in the cache directory, so a task asked for later starts from
them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

#: The encoder every row shares: small enough for a CPU run, as the learned probe.
SIZE = dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, intermediate_size=512)
DEFAULT_ENCODERS = ["SASA (default layout)", "SASA window + global", "SASA random 3", "RoBERTa-512", "RoBERTa full",
                    "BigBird", "BigBird (SASA budget)", "Longformer", "Longformer (SASA budget)"]
#: SASA's own ablations and layout variants, on request (--encoders): about 7 minutes each for 3 seeds.
ABLATIONS = ["SASA AST only", "SASA top-k only", "SASA AST 3", "SASA AST 2 + top-k 2", "SASA block 16",
             "SASA top-k 2 + AST 1", "SASA block 16, top-k 4 + AST 2", "SASA block 16, top-k 6"]
QUICK_ENCODERS = ["SASA (default layout)", "SASA window + global", "RoBERTa-512"]
#: Code search (where structure is not needed) runs by default for the encoders its target and its contrast need; the
#: slow peers' search fine-tuning (BigBird pads the short queries to the full length) would add about an hour.
SEARCH_ENCODERS = ["SASA (default layout)", "SASA window + global", "RoBERTa-512", "RoBERTa full"]
TASKS = ("misuse", "repair", "completion", "search", "types")


@dataclass
class RunSettings:
    pretrain_steps: int = 800
    misuse_steps: int = 800
    search_steps: int = 300
    pretrain_batch: int = 4
    finetune_batch: int = 8
    pretrain_learning_rate: float = 2e-3
    pretrain_masking: str = "pieces"  # task_training.PRETRAIN_MASKINGS
    #: "unlinked": a hidden token has no AST link from or to it (sasa.masking.unlink_hidden; for a completion site the
    #: typed first piece too); "kept": the links parsed from the unmasked code stay (the leak before 2026-12; rows
    #: written before then have no such key and read as "kept"). Only layouts with AST blocks read links.
    hidden_links: str = "unlinked"
    finetune_learning_rate: float = 1e-3
    threads: int = 1  # torch threads per job; build_plan gives each of --jobs its share of the cores
    tasks: tuple[str, ...] = ("completion", "search")
    search_encoders: tuple[str, ...] = tuple(SEARCH_ENCODERS)  # or ("all",)


@dataclass
class Plan:
    data: object  # task_data.DataSettings
    run: RunSettings
    encoders: list[str]
    seeds: list[int]
    cache_dir: str
    results: str
    jobs: int = 1
    extra: dict = field(default_factory=dict)

    def tasks_for(self, encoder: str) -> set[str]:
        """The tasks ``encoder`` runs: code search only for :attr:`RunSettings.search_encoders`."""
        searching = "all" in self.run.search_encoders or encoder in self.run.search_encoders
        return {task for task in self.run.tasks if task != "search" or searching}


def read_results(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def append_result(path: str, row: dict) -> None:
    """Append one row as one line, in a single write to a file opened for appending, so that the rows of parallel
    jobs never interleave."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        line = (json.dumps(row) + "\n").encode("utf-8")
        if os.write(descriptor, line) != len(line):
            raise OSError(f"short write to {path}")
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


HIDDEN_LINKS = ("unlinked", "kept")


def reads_links(encoder: str) -> bool:
    """Whether ``encoder``'s attention depends on the AST links (a SASA layout with AST blocks)."""
    import task_encoders
    from sasa import SasaConfig

    spec = task_encoders.ENCODERS[encoder]
    return spec.kind == "sasa" and spec.settings.get("num_ast_blocks", SasaConfig().num_ast_blocks) > 0


def same_run(run: dict, encoder: str) -> dict:
    """What makes two rows of one task comparable: the run settings but which tasks and encoders were asked for (each
    row is one task of one encoder) and the number of threads (timing only); ``hidden_links`` only for an encoder
    that reads links (a row without it was written before the rule: ``kept``)."""
    run = {name: value for name, value in json.loads(json.dumps(run)).items()
           if name not in ("tasks", "search_encoders", "threads")}
    run.setdefault("hidden_links", "kept")
    if not reads_links(encoder):
        del run["hidden_links"]
    return run


def pretrained_path(plan: Plan, encoder_name: str, seed: int) -> str:
    """Where the pre-trained encoder and head of (``encoder_name``, ``seed``) are kept, so that a task added later
    starts from the same weights without pre-training again."""
    import hashlib

    settings = {name: value for name, value in asdict(plan.run).items() if name.startswith("pretrain")}
    if reads_links(encoder_name) and plan.run.hidden_links != "kept":  # the weights pre-trained before the rule: kept
        settings["hidden_links"] = plan.run.hidden_links
    text = json.dumps(dict(encoder=encoder_name, seed=seed, data=plan.data.key(), size=SIZE, run=settings),
                      sort_keys=True)
    return os.path.join(plan.cache_dir, "pretrained", hashlib.sha1(text.encode()).hexdigest()[:16] + ".pt")


def _peak_rss_reset() -> None:
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def _rss(name: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(name + ":"):
                return int(line.split()[1]) * 1024
    return 0


def run_one(plan: Plan, encoder_name: str, seed: int, done_tasks: set[str], log=print) -> None:
    """Pre-train one encoder with one seed, then fine-tune and evaluate it on each task not yet in the results."""
    import copy

    import torch

    import task_data
    import task_encoders
    import task_training

    torch.set_num_threads(plan.run.threads)
    unlink = plan.run.hidden_links == "unlinked"
    data = task_data.prepare(plan.data, plan.cache_dir, log)
    encoder = task_encoders.build_encoder(encoder_name, data.vocab_size, data.vocab_size, plan.data.max_length, SIZE,
                                          data.pad_id, seed, matchable=data.identifier)
    key = dict(encoder=encoder_name, seed=seed, data=plan.data.key(), run=asdict(plan.run), size=SIZE)
    saved = pretrained_path(plan, encoder_name, seed)
    if os.path.exists(saved):
        log(f"{encoder_name}, seed {seed}: pre-trained weights from {saved}")
        kept = torch.load(saved, weights_only=False)
        head = task_training.MaskedLMHead(encoder.word_embeddings)
        encoder.load_state_dict(kept["encoder"])
        head.load_state_dict(kept["head"])
        pretrained, pretrain_peak = kept["pretrained"], kept["peak"]
    else:
        log(f"{encoder_name}, seed {seed}: pre-training {plan.run.pretrain_steps} steps")
        resting = _rss("VmRSS")
        _peak_rss_reset()
        head, pretrained = task_training.pretrain(encoder, data, plan.run.pretrain_steps, seed,
                                                  plan.run.pretrain_batch, plan.run.pretrain_learning_rate,
                                                  masking=plan.run.pretrain_masking, unlink=unlink, log=log)
        pretrain_peak = _rss("VmHWM") - resting
        os.makedirs(os.path.dirname(saved), exist_ok=True)
        torch.save(dict(encoder=encoder.state_dict(), head=head.state_dict(), pretrained=pretrained,
                        peak=pretrain_peak), saved + ".part")
        os.replace(saved + ".part", saved)
    state, head_state = copy.deepcopy(encoder.state_dict()), copy.deepcopy(head.state_dict())
    sample = task_training.pad_batch(data.misuse_test[:16], data.pad_id)
    density = encoder.density(sample["input_ids"], sample["attention_mask"], sample["ast_links"])
    for task in plan.run.tasks:
        if task in done_tasks or task not in plan.tasks_for(encoder_name):
            continue
        encoder.load_state_dict(state)
        head.load_state_dict(head_state)
        task_started = time.perf_counter()
        resting = _rss("VmRSS")
        _peak_rss_reset()
        if task == "misuse":
            heads, trained = task_training.finetune_misuse(encoder, data, plan.run.misuse_steps, seed,
                                                           plan.run.finetune_batch, plan.run.finetune_learning_rate,
                                                           log=log)
            peak = _rss("VmHWM") - resting
            metrics = task_training.evaluate_misuse(encoder, heads, data.misuse_test, data.pad_id)
        elif task == "repair":
            # The pre-trained masked-LM head alone, before fine-tuning: how much of the repair pre-training already gives.
            before = task_training.evaluate_repair(encoder, head, data.misuse_test, data.pad_id, data.mask_id,
                                                   unlink=unlink)
            _peak_rss_reset()
            trained = task_training.finetune_repair(encoder, head, data, plan.run.misuse_steps, seed,
                                                    plan.run.finetune_batch, plan.run.finetune_learning_rate,
                                                    unlink=unlink, log=log)
            peak = _rss("VmHWM") - resting
            metrics = task_training.evaluate_repair(encoder, head, data.misuse_test, data.pad_id, data.mask_id,
                                                    unlink=unlink)
            metrics.update({f"before_finetuning_{key}": value for key, value in before.items()
                            if key.startswith("repair")})
        elif task == "completion":  # no fine-tuning: the pre-training (hiding recurring name pieces) is its training
            sites = task_data.completion_sites(data.misuse_test, task_data.load_tokenizer(data),
                                               seed=plan.data.seed)
            trained, peak = None, pretrain_peak
            metrics = task_training.evaluate_completion(encoder, head, sites, data.misuse_test, data.pad_id,
                                                        data.mask_id, unlink=unlink)
        elif task == "types":  # nothing hidden: the AST links are the parser's, and legitimate input
            import declared_types

            rows = declared_types.prepare(plan.data, plan.cache_dir, task_data.load_tokenizer(data), log)
            trained = declared_types.finetune_types(encoder, head, rows.train, data.pad_id, plan.run.misuse_steps,
                                                    seed, plan.run.finetune_batch, plan.run.finetune_learning_rate,
                                                    log=log)
            peak = _rss("VmHWM") - resting
            metrics = declared_types.evaluate_types(encoder, head, rows.test, data.pad_id)
        else:
            trained = task_training.finetune_search(encoder, data, plan.run.search_steps, seed,
                                                    plan.run.finetune_batch, plan.run.finetune_learning_rate, log=log)
            peak = _rss("VmHWM") - resting
            metrics = task_training.evaluate_search(encoder, data.search_test, data.pad_id)
        row = dict(key, task=task, metrics=metrics, density=density, pretrain=pretrained, finetune=trained,
                   ms_per_step=1000 * (trained or pretrained)["seconds_per_step"], peak_mb=peak / 2**20,
                   task_seconds=time.perf_counter() - task_started)  # fine-tuning (if any) and evaluation
        append_result(plan.results, row)
        log(f"{encoder_name}, seed {seed}, {task}: {json.dumps(metrics)}")


# ------------------------------------------------------------------------------------------------------- reporting

def _mean_std(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if not (isinstance(v, float) and math.isnan(v))]
    if not values:
        return float("nan"), float("nan")
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


MISUSE_COLUMNS = ("joint", "joint_far", "joint_near", "joint_beyond_512", "localization", "repair", "classification")
REPAIR_COLUMNS = ("repair", "repair_far", "repair_near", "repair_beyond_512", "chance")
COMPLETION_COLUMNS = ("completion", "completion_far", "completion_near", "completion_beyond_512")
TYPES_COLUMNS = ("types", "types_far", "types_near", "types_beyond_512", "chance")
TASK_COLUMNS = (("misuse", MISUSE_COLUMNS), ("repair", REPAIR_COLUMNS), ("completion", COMPLETION_COLUMNS),
                ("search", ("mrr",)), ("types", TYPES_COLUMNS))


def summarize(rows: list[dict], encoders: list[str]) -> list[dict]:
    summary = []
    for name in encoders:
        entry = dict(encoder=name)
        for task, columns in TASK_COLUMNS:
            selected = [r for r in rows if r["encoder"] == name and r["task"] == task]
            if not selected:
                continue
            for column in columns:
                entry[f"{task}.{column}"] = _mean_std([r["metrics"][column] for r in selected])
            entry[f"{task}.seeds"] = sorted(r["seed"] for r in selected)
            entry[f"{task}.ms_per_step"] = statistics.mean(r["ms_per_step"] for r in selected)
            entry[f"{task}.peak_mb"] = statistics.mean(r["peak_mb"] for r in selected)
            entry["density"] = statistics.mean(r["density"] for r in selected)
            entry["pretrain.ms_per_step"] = statistics.mean(1000 * r["pretrain"]["seconds_per_step"] for r in selected)
        summary.append(entry)
    return summary


def _cell(value: tuple[float, float]) -> str:
    mean, std = value
    return "—" if math.isnan(mean) else f"{mean:.3f} ± {std:.3f}"


def print_table(summary: list[dict]) -> None:
    """One Markdown table: the density, every task's columns that some row has, time per step and peak memory."""
    columns = [(f"misuse.{c}", f"misuse {c}") for c in MISUSE_COLUMNS]
    columns += [(f"repair.{c}", f"given location: {c}") for c in REPAIR_COLUMNS]
    columns += [(f"completion.{c}", c.replace("_", " ")) for c in COMPLETION_COLUMNS] + [("search.mrr", "search MRR")]
    columns += [(f"types.{c}", f"declared type: {c.replace('types_', '').replace('types', 'all')}")
                for c in TYPES_COLUMNS]
    columns = [(key, label) for key, label in columns if any(key in entry for entry in summary)]
    # Time per step: pre-training (the same for every task), and the first fine-tuned task's; peak memory: of that
    # task's fine-tuning, or of pre-training when the task (completion) is scored right after it.
    timed = next((task for task, _ in TASK_COLUMNS if any(f"{task}.ms_per_step" in e for e in summary)), "misuse")
    tuned = next((task for task, _ in TASK_COLUMNS
                  if task != "completion" and any(f"{task}.ms_per_step" in e for e in summary)), None)
    header = ["encoder", "seeds", "density", *(label for _, label in columns), "pre-training ms/step"]
    header += [f"{tuned} ms/step"] if tuned else []
    header += [f"{'pre-training' if timed == 'completion' else timed} MB"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for entry in summary:
        seeds = sorted({seed for task, _ in TASK_COLUMNS for seed in entry.get(f"{task}.seeds", [])})
        cells = [entry["encoder"], " ".join(map(str, seeds)) or "—", f"{entry.get('density', float('nan')):.3f}"]
        cells += [_cell(entry.get(key, (math.nan, math.nan))) for key, _ in columns]
        numbers = [entry.get("pretrain.ms_per_step", math.nan)]
        numbers += [entry.get(f"{tuned}.ms_per_step", math.nan)] if tuned else []
        numbers.append(entry.get(f"{timed}.peak_mb", math.nan))
        cells += ["—" if math.isnan(number) else f"{number:.0f}" for number in numbers]
        print("| " + " | ".join(cells) + " |")


def _gap(high: tuple[float, float], low: tuple[float, float]) -> tuple[float, float, str]:
    """Two rows' (mean, std): the difference of the means, the spread it is measured in (the larger std), and the
    difference in units of that spread, as text."""
    difference, spread = high[0] - low[0], max(high[1], low[1])
    text = f"{difference / spread:.1f} std" if spread > 0 else "seeds agree exactly"
    return difference, spread, text


def discrimination(summary: list[dict]) -> list[str]:
    """Can the benchmark tell layouts apart? Full attention against RoBERTa-512 on bugs beyond 512 tokens, and against
    the window alone on far evidence: each gap should exceed 3 standard deviations (the larger of the two rows')."""
    by_name = {e["encoder"]: e for e in summary}
    lines = []
    for better, worse, column in (("RoBERTa full", "RoBERTa-512", "misuse.joint_beyond_512"),
                                  ("RoBERTa full", "SASA window + global", "misuse.joint_far"),
                                  ("RoBERTa full", "RoBERTa-512", "repair.repair_beyond_512"),
                                  ("RoBERTa full", "SASA window + global", "repair.repair_far"),
                                  ("RoBERTa full", "RoBERTa-512", "completion.completion_beyond_512"),
                                  ("RoBERTa full", "SASA window + global", "completion.completion_far"),
                                  ("RoBERTa full", "RoBERTa-512", "types.types_beyond_512"),
                                  ("RoBERTa full", "SASA window + global", "types.types_far")):
        if better in by_name and worse in by_name and column in by_name[better] and column in by_name[worse]:
            high, low = by_name[better][column], by_name[worse][column]
            task = column.split(".", 1)[0]
            seeds = min(len(by_name[better][f"{task}.seeds"]), len(by_name[worse][f"{task}.seeds"]))
            head = f"{better} vs {worse} on {column.split('.', 1)[1]}: {high[0]:.3f} vs {low[0]:.3f}"
            if seeds < 2:  # one seed has no spread: no verdict
                lines.append(f"{head}: undecided (a standard deviation needs 2 or more seeds; {seeds} run)")
                continue
            difference, spread, gap = _gap(high, low)
            verdict = "discriminates" if difference > 3 * spread else "does NOT discriminate"
            lines.append(f"{head} (gap {gap}, {seeds} seeds): {verdict}")
    return lines


#: The issue's targets: on far evidence, SASA's default above each of these by more than 2 standard deviations.
PEERS = ("BigBird", "BigBird (SASA budget)", "Longformer", "Longformer (SASA budget)", "RoBERTa-512",
         "SASA window + global", "SASA random 3")


def targets(summary: list[dict], sasa: str = "SASA (default layout)") -> list[str]:
    """The targets on far evidence (name completion, the declared type, variable misuse's joint accuracy where they
    were run): SASA's default above every peer by more than 2 standard deviations (the larger of the two rows'),
    closing at least 80 % of the gap between the window alone and full attention, at no more pre-training time per
    step than any peer; and code search no more than 1 standard deviation below full attention (no loss where
    structure is not needed)."""
    by_name = {e["encoder"]: e for e in summary}
    ours = by_name.get(sasa)
    if ours is None:
        return []
    window, full = by_name.get("SASA window + global", {}), by_name.get("RoBERTa full", {})
    lines = []
    for column in ("completion.completion_far", "types.types_far", "misuse.joint_far"):
        if column not in ours:
            continue
        mean = ours[column][0]
        for peer in PEERS:
            if peer in by_name and column in by_name[peer]:
                difference, spread, gap = _gap(ours[column], by_name[peer][column])
                verdict = "met" if difference > 2 * spread else "NOT met"
                lines.append(f"{column}: {sasa} {mean:.3f} vs {peer} {by_name[peer][column][0]:.3f} (gap {gap}): "
                             f"{verdict}")
        if column in window and column in full and full[column][0] > window[column][0]:
            closed = (mean - window[column][0]) / (full[column][0] - window[column][0])
            lines.append(f"{column}: closes {closed:.0%} of the gap between the window alone and full attention "
                         f"(target 80 %): {'met' if closed >= 0.8 else 'NOT met'}")
    ms = ours.get("pretrain.ms_per_step", math.inf)
    slower = [(peer, by_name[peer]["pretrain.ms_per_step"]) for peer in PEERS
              if peer in by_name and ms > by_name[peer].get("pretrain.ms_per_step", math.inf)]
    lines.append(f"time per pre-training step: {ms:.0f} ms, " + (
        "more than " + ", ".join(f"{peer} ({peer_ms:.0f} ms, ×{ms / peer_ms:.2f})" for peer, peer_ms in slower)
        + ": NOT met" if slower else "no more than any peer run: met"))
    if "search.mrr" in ours and "search.mrr" in full:
        difference, spread, _ = _gap(ours["search.mrr"], full["search.mrr"])
        lines.append(f"search MRR: {ours['search.mrr'][0]:.3f} vs full attention {full['search.mrr'][0]:.3f}: "
                     f"{'met' if difference >= -spread else 'NOT met'} (no more than 1 std = {spread:.3f} below)")
    return lines


def layout_reach(plan: Plan, data, layouts: dict[str, dict], types=None) -> list[dict]:
    """The far reach and density of each SASA layout: the SASA encoders of the plan, and ``layouts`` (name →
    :class:`~sasa.SasaConfig` layout settings), on the completion sites and, given ``types``
    (:func:`declared_types.prepare`), on the declared-type questions, from the layouts alone (seconds; no weights
    involved, no training). A far name whose evidence the layout does not reach is one that training cannot find."""
    import declared_types
    import task_data
    import task_encoders
    import task_training
    from sasa import SasaConfig

    known = SasaConfig().to_dict()
    for name, settings in layouts.items():
        unknown = sorted(set(settings) - set(known))
        if unknown:
            raise SystemExit(f"--layouts {name!r}: unknown SasaConfig settings {unknown}")
    specs = {name: task_encoders.ENCODERS[name] for name in plan.encoders if task_encoders.ENCODERS[name].kind == "sasa"}
    specs |= {name: task_encoders.EncoderSpec("sasa", settings) for name, settings in layouts.items()}
    sites = task_data.completion_sites(data.misuse_test, task_data.load_tokenizer(data), seed=plan.data.seed)
    sample = task_training.pad_batch(data.misuse_test[:16], data.pad_id)
    rows = []
    for name, spec in specs.items():
        encoder = task_encoders.build_encoder(name, data.vocab_size, data.vocab_size, plan.data.max_length, SIZE,
                                              data.pad_id, 0, matchable=data.identifier, spec=spec)
        row = dict(layout=name, settings=spec.settings,
                   density=encoder.density(sample["input_ids"], sample["attention_mask"], sample["ast_links"]))
        row.update(task_training.completion_reach(encoder, sites, data.misuse_test, data.pad_id, data.mask_id,
                                                  unlink=plan.run.hidden_links == "unlinked"))
        if types is not None:
            row.update(declared_types.type_reach(encoder, types.test, data.pad_id))
        rows.append(row)
    return rows


def step_times(plan: Plan, data, rounds: int = 3, steps: int = 40) -> list[dict]:
    """Time per pre-training step of each encoder of the plan, timed alternately in this process (``rounds`` rounds of
    ``steps`` steps each, encoder after encoder, one thread): drift of the machine's speed reaches every encoder alike,
    so the ratios hold where one-off timings on a busy machine do not. Each row: the median over the rounds of each
    round's median step, and its ratio to the window alone (when it is among the encoders)."""
    import torch

    import task_encoders
    import task_training

    torch.set_num_threads(1)
    encoders = {name: task_encoders.build_encoder(name, data.vocab_size, data.vocab_size, plan.data.max_length, SIZE,
                                                  data.pad_id, 0, matchable=data.identifier) for name in plan.encoders}
    medians: dict[str, list[float]] = {name: [] for name in encoders}
    for _ in range(rounds):
        for name, encoder in encoders.items():
            _, numbers = task_training.pretrain(encoder, data, steps, seed=0, batch_size=plan.run.pretrain_batch,
                                                learning_rate=plan.run.pretrain_learning_rate,
                                                masking=plan.run.pretrain_masking,
                                                unlink=plan.run.hidden_links == "unlinked")
            medians[name].append(1000 * numbers["seconds_per_step"])
    rows = [dict(encoder=name, ms_per_step=statistics.median(values), rounds=values) for name, values in medians.items()]
    window = next((row["ms_per_step"] for row in rows if row["encoder"] == "SASA window + global"), None)
    for row in rows:
        row["ratio_to_window"] = row["ms_per_step"] / window if window else None
    return rows


def print_step_times(rows: list[dict]) -> None:
    print("| encoder | ms per pre-training step (median of rounds) | × the window alone | rounds |")
    print("|---|---|---|---|")
    for row in rows:
        ratio = "—" if row["ratio_to_window"] is None else f"{row['ratio_to_window']:.3f}"
        print(f"| {row['encoder']} | {row['ms_per_step']:.0f} | {ratio} | "
              f"{' '.join(f'{value:.0f}' for value in row['rounds'])} |")


def print_reach(rows: list[dict]) -> None:
    types = bool(rows) and "types_far_reach" in rows[0]
    print("| layout | settings | density | far reach | far reach beyond 512 |" + (" declared type: far reach |"
                                                                             if types else ""))
    print("|---|---|---|---|---|" + ("---|" if types else ""))
    for row in rows:
        settings = ", ".join(f"{key}={value}" for key, value in row["settings"].items()) or "defaults"
        print(f"| {row['layout']} | {settings} | {row['density']:.3f} | {row['far_reach']:.3f} | "
              f"{row['far_reach_beyond_512']:.3f} |" + (f" {row['types_far_reach']:.3f} |" if types else ""))
    print(f"({rows[0]['far_sites'] if rows else 0} far sites"
          + (f", {rows[0]['types_far_questions']} far declared-type questions)" if types else ")"))


def plot(rows: list[dict], summary: list[dict], prefix: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(task, column, label) for task, column, label in (
        ("misuse", "joint_far", "variable misuse: joint accuracy, far"),
        ("repair", "repair_far", "repair at a given site: accuracy, far"),
        ("completion", "completion_far", "name completion: accuracy, far"),
        ("search", "mrr", "code search: MRR")) if any(f"{task}.{column}" in entry for entry in summary)]
    figure, axes = plt.subplots(1, max(1, len(panels)), figsize=(6 * max(1, len(panels)), 5), squeeze=False)
    for axis, (task, column, label) in zip(axes[0], panels):
        for entry in summary:
            key = f"{task}.{column}"
            if key not in entry:
                continue
            seconds = [r["pretrain"]["seconds"] + (r["finetune"] or {}).get("seconds", 0.0) for r in rows
                       if r["encoder"] == entry["encoder"] and r["task"] == task]
            mean, std = entry[key]
            axis.errorbar(statistics.mean(seconds) / 60, mean, yerr=std, fmt="o", capsize=3)
            axis.annotate(entry["encoder"], (statistics.mean(seconds) / 60, mean), fontsize=7,
                          textcoords="offset points", xytext=(4, 4))
        axis.set_xlabel("training time per seed (pre-training + fine-tuning), minutes, as run")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(f"{prefix}.png", dpi=120)
    plt.close(figure)


# ------------------------------------------------------------------------------------------------------------ main

def build_plan(args: argparse.Namespace) -> Plan:
    import task_data

    data = task_data.DataSettings(corpus=tuple(args.corpus or ()))
    run = RunSettings()
    encoders, seeds = args.encoders or DEFAULT_ENCODERS, args.seeds
    if args.quick:
        data = task_data.DataSettings(corpus=data.corpus, vocab_size=1000, max_length=768, train_sites=2,
                                      test_sites=2, min_unit_tokens=200, test_min_tokens=300,
                                      limit_sources=args.limit_sources or 60)
        run = RunSettings(pretrain_steps=10, misuse_steps=10, search_steps=5, finetune_batch=4)
        encoders, seeds = args.encoders or QUICK_ENCODERS, seeds[:1]
    elif args.limit_sources:
        data = task_data.DataSettings(corpus=data.corpus, limit_sources=args.limit_sources)
    if args.jobs < 1:
        raise SystemExit(f"--jobs must be at least 1, got {args.jobs}")
    run.threads = max(1, (os.cpu_count() or 1) // args.jobs)
    for name, value in (args.steps or {}).items():
        if not hasattr(run, name):
            raise SystemExit(f"--steps: unknown setting {name!r}; settings: {sorted(asdict(run))}")
        setattr(run, name, value)
    if run.hidden_links not in HIDDEN_LINKS:
        raise SystemExit(f"--steps: hidden_links must be one of {HIDDEN_LINKS}, got {run.hidden_links!r}")
    if args.tasks:
        run.tasks = tuple(args.tasks)
    if args.search_encoders:
        run.search_encoders = tuple(args.search_encoders)
    unknown = [name for name in [*encoders, *run.search_encoders]
               if name not in DEFAULT_ENCODERS + ABLATIONS and name != "all"]
    if unknown:
        raise SystemExit(f"unknown encoders {unknown}; encoders: {DEFAULT_ENCODERS + ABLATIONS}")
    return Plan(data, run, encoders, seeds, args.cache_dir, args.results, jobs=args.jobs)


def schedule(plan: Plan, done) -> list[tuple[str, int]]:
    """The (encoder, seed) runs with a task still to do (``done(encoder, seed)``: the tasks already in the results):
    seed by seed, so that an interrupted run has whole seeds; within a seed, the slowest encoders first
    (:attr:`task_encoders.EncoderSpec.cost`), so that parallel jobs end together; among equals, in the order asked
    for."""
    import task_encoders

    todo = [(encoder, seed) for seed in plan.seeds for encoder in plan.encoders
            if not plan.tasks_for(encoder) <= done(encoder, seed)]
    return sorted(todo, key=lambda run: (plan.seeds.index(run[1]), -task_encoders.ENCODERS[run[0]].cost))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", nargs="+", help="source files/globs or JSONL (code, language[, path])")
    parser.add_argument("--encoders", nargs="+",
                        help=f"default: {DEFAULT_ENCODERS}; also SASA's ablations {ABLATIONS}")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--results", default="benchmarks/results/task_quality.jsonl",
                        help="JSONL results, one row per (encoder, task, seed), appended as they finish")
    parser.add_argument("--cache-dir", default="benchmarks/results/task_cache", help="prepared data and tokenizer")
    parser.add_argument("--png", help="write PREFIX.png: quality against training time")
    parser.add_argument("--json", help="write the summary (and the discrimination check) to this JSON file")
    parser.add_argument("--quick", action="store_true", help="the plumbing: few sources and steps, 3 encoders")
    parser.add_argument("--limit-sources", type=int, help="read only the first N source files")
    parser.add_argument("--steps", type=json.loads, help='JSON overrides of the run settings, e.g. {"misuse_steps": 400}')
    parser.add_argument("--tasks", nargs="+", choices=TASKS,
                        help="default: completion and search. completion: a name's first piece is typed, the rest "
                             "predicted from its other uses; misuse: GREAT's variable misuse (bug and repair "
                             "pointers); repair: variable misuse with the bug's position given; search: code search; "
                             "types: the declared type of a local variable at a use (Go, Java, C, C++; nothing "
                             "hidden, declared_types.py)")
    parser.add_argument("--search-encoders", nargs="+",
                        help=f"the encoders that also run code search (or 'all'); default: {SEARCH_ENCODERS}")
    parser.add_argument("--jobs", type=int, default=2,
                        help="runs at a time, each in its own process with its share of the cores (default 2: the "
                             "published rows ran as 2 one-thread jobs on 2 cores); time per step is comparable only "
                             "between rows run with the same --jobs")
    parser.add_argument("--reach", action="store_true",
                        help="train nothing: the far reach and density of each SASA layout (--encoders, --layouts) "
                             "on the completion sites, in seconds")
    parser.add_argument("--layouts", type=json.loads, default={},
                        help='with --reach, layouts of your own: \'{"AST 3": {"num_topk_blocks": 0, '
                             '"num_ast_blocks": 3}}\' (SasaConfig settings)')
    parser.add_argument("--step-time", action="store_true",
                        help="train nothing to the end: time pre-training steps of each encoder (--encoders), "
                             "alternately in one process with one thread, and their ratio to the window alone")
    parser.add_argument("--report", action="store_true",
                        help="run nothing: the table, checks, JSON and PNG of the rows already in --results")
    parser.add_argument("--run-one", nargs=2, metavar=("ENCODER", "SEED"), help=argparse.SUPPRESS)
    parser.add_argument("--in-process", action="store_true", help="run every encoder in this process (tests)")
    args = parser.parse_args(argv)
    plan = build_plan(args)
    rows = read_results(plan.results)

    def comparable(row: dict) -> bool:
        return row["data"] == plan.data.key() and same_run(row["run"], row["encoder"]) == same_run(
            asdict(plan.run), row["encoder"])

    def done(encoder: str, seed: int) -> set[str]:
        return {r["task"] for r in rows if r["encoder"] == encoder and r["seed"] == seed and comparable(r)}

    if args.run_one:
        encoder, seed = args.run_one[0], int(args.run_one[1])
        run_one(plan, encoder, seed, done(encoder, seed))
        return 0

    import task_data

    started = time.perf_counter()
    data = task_data.prepare(plan.data, plan.cache_dir)
    print(f"data: {json.dumps(data.summary)}", flush=True)
    asked = ["completion"] + (["types"] if "types" in plan.run.tasks else []) if args.reach else (
        [] if args.step_time else list(plan.run.tasks))
    missing = task_data.missing_rows(data, [task for task in asked if task != "types"])
    types = None
    if "types" in asked:
        import declared_types

        types = declared_types.prepare(plan.data, plan.cache_dir, task_data.load_tokenizer(data))
        missing += declared_types.missing_rows(types)
    if missing:
        raise SystemExit("the corpus cannot give every asked task its data (choose others with --tasks):\n  "
                         + "\n  ".join(missing))
    if args.reach:
        reach = layout_reach(plan, data, args.layouts, types)
        print_reach(reach)
        if args.json:
            with open(args.json, "w", encoding="utf-8") as handle:
                json.dump(dict(data=data.summary, hidden_links=plan.run.hidden_links, reach=reach), handle, indent=2)
        return 0
    if args.step_time:
        times = step_times(plan, data, rounds=1 if args.quick else 3, steps=3 if args.quick else 40)
        print_step_times(times)
        if args.json:
            with open(args.json, "w", encoding="utf-8") as handle:
                json.dump(dict(data=data.summary, run=asdict(plan.run), step_times=times), handle, indent=2)
        return 0
    todo = [] if args.report else schedule(plan, done)
    if args.in_process:
        for encoder, seed in todo:
            run_one(plan, encoder, seed, done(encoder, seed))
            rows = read_results(plan.results)
    else:
        # Each (encoder, seed) in a process of its own (clean peak memory), --jobs of them at a time; each appends
        # its rows as its tasks finish. A failed run lets the others finish before the error is raised.
        common = ["--results", plan.results, "--cache-dir", plan.cache_dir, "--jobs", str(plan.jobs)]
        common += ["--quick"] if args.quick else []
        common += ["--corpus", *args.corpus] if args.corpus else []
        common += ["--limit-sources", str(args.limit_sources)] if args.limit_sources else []
        common += ["--steps", json.dumps(args.steps)] if args.steps else []
        common += ["--tasks", *args.tasks] if args.tasks else []
        common += ["--search-encoders", *args.search_encoders] if args.search_encoders else []
        commands = [[sys.executable, os.path.abspath(__file__), "--run-one", encoder, str(seed), *common]
                    for encoder, seed in todo]
        with ThreadPoolExecutor(max_workers=plan.jobs) as pool:
            for _ in pool.map(lambda command: subprocess.run(command, check=True), commands):
                pass
    rows = [r for r in read_results(plan.results) if comparable(r)]
    summary = summarize(rows, plan.encoders)
    print_table(summary)
    checks = discrimination(summary)
    goals = targets(summary)
    for line in checks + goals:
        print(line)
    print(f"total {time.perf_counter() - started:.0f} s")
    if args.png:
        plot(rows, summary, args.png)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(dict(data=data.summary, plan=dict(encoders=plan.encoders, seeds=plan.seeds,
                                                        run=asdict(plan.run), size=SIZE),
                           summary=summary, discrimination=checks, targets=goals), handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
