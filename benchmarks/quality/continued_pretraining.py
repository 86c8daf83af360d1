"""What conversion costs and continued pre-training gives back, on a small stand-in for CodeBERT (no download).

1. **Tokenizer and data.** A byte-level BPE trained on standard-library files; the standard library cut into pieces
   of 1536..2048 tokens at function/method boundaries (:func:`mlm_probe.stdlib_pieces`) and of 256..512 tokens for
   pre-training, split by file (every 4th file held out). The held-out long pieces get one fixed mask each
   (:func:`sasa.masking.evaluation_mask`, ``tokens``, 15 %, every hidden token ``<mask>``): every row of the table is
   scored on the same hidden tokens.
2. **The original.** A ``RobertaForMaskedLM`` (hidden 128, 2 layers, 4 heads, 512 positions) pre-trained here with
   full attention on the 512-token pieces (RoBERTa's masking, AdamW, linear decay): CodeBERT's situation in small.
3. **Conversion.** :func:`sasa.conversion.convert_roberta_checkpoint` to 2048 tokens with the default layout.
4. **Continued pre-training.** ``examples/run_mlm.py`` from the converted checkpoint on the long training pieces,
   evaluated every ``--eval-every`` steps (``--eval_on_start``: step 0 is the model as converted); once with
   ``--masking tokens`` (``--steps``) and once with ``--masking identifiers`` (``--comparison-steps``), both scored
   on the same ``tokens`` masks, and at the comparison's last step also on whole-identifier masks.
5. **References.** The original cut at 512: on the first 512 tokens, and on the later tokens with the sequence cut
   into windows of ``<s>`` + 511 tokens, each read on its own (how a 512-token model reads long code); and the
   converted model with full attention (window over every block), which separates what the copied positions cost
   from what the sparse layout costs.

Masked-token loss and accuracy by position bucket (positions 0..511, what the original read; 512 and later) and on
far tokens (hidden identifier pieces whose other, visible occurrences all lie outside their window blocks,
:func:`sasa.masking.far_tokens`). Everything is kept in ``--work-dir``: a rerun reuses the tokenizer, data, the
original and the conversion, and resumes each ``run_mlm.py`` run from its last checkpoint; results are written to
``--json`` after every stage.

    python benchmarks/quality/continued_pretraining.py --json docs/continued_pretraining.json      # ~35 min, 1 thread
    python benchmarks/quality/continued_pretraining.py --quick                                      # the plumbing, 1-3 min
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from mlm_probe import stdlib_pieces
from training_loop import decays_matrices_but_embeddings, train_loop

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUN_MLM = os.path.join(ROOT, "examples", "run_mlm.py")
#: The stand-in for CodeBERT: RoBERTa's shape, small.
ORIGINAL = dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, intermediate_size=512,
                max_position_embeddings=514, type_vocab_size=1, pad_token_id=1, hidden_dropout_prob=0.1,
                attention_probs_dropout_prob=0.1)
BOUNDARY = 512


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# ----------------------------------------------------------------------------------------------------------- data


def split_by_file(texts: list[str], groups: list[str], test_every: int = 4) -> tuple[list[str], list[str]]:
    """``(train, held_out)``: the texts of every ``test_every``-th file (sorted) are held out."""
    files = sorted(set(groups))
    held_out = set(files[test_every - 1 :: test_every])
    return ([t for t, g in zip(texts, groups) if g not in held_out], [t for t, g in zip(texts, groups) if g in held_out])


def prepare_data(work: str, vocab_size: int, limit_files: int | None, max_eval: int, seed: int) -> dict:
    """The tokenizer (saved in ``work/tokenizer``) and the JSON-lines files ``run_mlm.py`` reads (cached)."""
    from sasa import SasaTokenizer
    from sasa.demo import stdlib_tokenizer

    paths = {name: os.path.join(work, f"{name}.jsonl") for name in ("long-train", "long-validation", "short-train")}
    tokenizer_dir = os.path.join(work, "tokenizer")
    if not os.path.isdir(tokenizer_dir):
        os.makedirs(tokenizer_dir)
        stdlib_tokenizer(tokenizer_dir, files=300, vocab_size=vocab_size)
    tokenizer = SasaTokenizer.from_pretrained(tokenizer_dir, language="python")
    if not all(os.path.exists(p) for p in paths.values()):
        long_texts, long_groups = stdlib_pieces(tokenizer, 2048, 1536, limit_files=limit_files)
        short_texts, short_groups = stdlib_pieces(tokenizer, BOUNDARY, 256, limit_files=limit_files)
        long_train, long_test = split_by_file(long_texts, long_groups)
        short_train, _ = split_by_file(short_texts, short_groups)
        random.Random(seed).shuffle(long_test)
        for name, texts in (("long-train", long_train), ("long-validation", long_test[:max_eval]),
                            ("short-train", short_train)):
            with open(paths[name], "w", encoding="utf-8") as handle:
                handle.writelines(json.dumps({"code": text, "language": "python"}) + "\n" for text in texts)
    counts = {name: sum(1 for _ in open(path, encoding="utf-8")) for name, path in paths.items()}
    return dict(tokenizer=tokenizer, tokenizer_dir=tokenizer_dir, paths=paths, counts=counts)


def read_codes(path: str) -> list[str]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line)["code"] for line in handle]


def held_out_examples(tokenizer, path: str, masking: str, seed: int) -> list[dict]:
    """The held-out pieces as ``run_mlm.py`` masks them: fixed ``masking`` masks, 15 %, seeded by ``seed``, the
    hidden tokens' AST links dropped (:func:`sasa.masking.unlink_hidden`)."""
    from sasa.masking import MaskingVocabulary, evaluation_mask, unlink_hidden

    vocabulary = MaskingVocabulary.from_tokenizer(tokenizer)
    examples = []
    for code in read_codes(path):
        encoded = tokenizer(code, language="python", truncation=True, max_length=2048)
        inputs, labels = evaluation_mask(encoded["input_ids"], vocabulary, masking, 0.15, seed)
        links = unlink_hidden(torch.tensor(encoded["ast_links"]), torch.tensor(labels) != -100).tolist()
        examples.append(dict(input_ids=inputs, labels=labels, ast_links=links))
    return examples


# ------------------------------------------------------------------------------------------------------ the original


def sinusoidal_positions(model) -> None:
    """Start a RoBERTa's learned position table from sinusoids (Vaswani et al.) scaled to the initialisation's size,
    at RoBERTa's offset (rows ``pad_token_id + 1`` on); the table is trained as usual afterwards."""
    table = model.roberta.embeddings.position_embeddings.weight
    offset = model.config.pad_token_id + 1
    count, width = table.shape[0] - offset, table.shape[1]
    position = torch.arange(count, dtype=torch.float32)[:, None]
    frequency = torch.exp(torch.arange(0, width, 2, dtype=torch.float32) * (-math.log(10000.0) / width))
    values = torch.zeros(count, width)
    values[:, 0::2], values[:, 1::2] = torch.sin(position * frequency), torch.cos(position * frequency)
    with torch.no_grad():
        table[offset:] = values * model.config.initializer_range * math.sqrt(2)


def mimetic_attention(model, std: float) -> None:
    """``W_q = W_k`` (mimetic initialisation, Trockman & Kolter 2023), biases zero, and identity value, attention
    output and head projections (:func:`mlm_probe.build_model`'s recipe): from the first step a token attends to
    tokens like itself and, through the position embeddings, to its neighbours, and what it attends to reaches the
    tied decoder unchanged. From RoBERTa's initialisation a model this small stays at the unigram loss for
    thousands of steps."""
    eye = torch.eye(model.config.hidden_size)
    with torch.no_grad():
        for layer in model.roberta.encoder.layer:
            attention = layer.attention.self
            attention.query.weight.normal_(0.0, std)
            attention.key.weight.copy_(attention.query.weight)
            attention.query.bias.zero_()
            attention.key.bias.zero_()
            for linear in (attention.value, layer.attention.output.dense):
                linear.weight.copy_(eye)
                linear.bias.zero_()
        model.lm_head.dense.weight.copy_(eye)
        model.lm_head.dense.bias.zero_()


def pretrain_original(work: str, data: dict, steps: int, batch_size: int, learning_rate: float, seed: int,
                      position_init: str = "random", mimetic_std: float = 0.0) -> str:
    """Pre-train the RoBERTa stand-in with full attention on the 512-token pieces; saved with its tokenizer.
    ``position_init``: ``random`` (RoBERTa's) or ``sinusoidal`` (:func:`sinusoidal_positions`); ``mimetic_std``:
    :func:`mimetic_attention` (0: RoBERTa's initialisation)."""
    from transformers import RobertaConfig, RobertaForMaskedLM

    from sasa import SasaDataCollatorForMaskedLM

    directory = os.path.join(work, "original")
    if os.path.exists(os.path.join(directory, "config.json")):
        return directory
    tokenizer = data["tokenizer"]
    torch.manual_seed(seed)
    model = RobertaForMaskedLM(RobertaConfig(vocab_size=len(tokenizer), **ORIGINAL))
    if position_init == "sinusoidal":
        sinusoidal_positions(model)
    if mimetic_std:
        mimetic_attention(model, mimetic_std)
    texts = read_codes(data["paths"]["short-train"])
    features = [dict(input_ids=ids) for ids in tokenizer(texts, language=None, truncation=True,
                                                          max_length=BOUNDARY)["input_ids"]]
    collator = SasaDataCollatorForMaskedLM(tokenizer, pad_to_multiple_of=8)
    generator = torch.Generator().manual_seed(seed)
    order: list[int] = []
    model.train()

    def loss_of_step(step: int) -> torch.Tensor:
        if len(order) < batch_size:
            order.extend(torch.randperm(len(features), generator=generator).tolist())
        batch = collator([features[i] for i in order[:batch_size]])
        del order[:batch_size]
        hidden = model.roberta(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        scored = batch["labels"] != -100  # the head on the hidden tokens only: the same loss, a third of the time
        return F.cross_entropy(model.lm_head(hidden[scored]), batch["labels"][scored])

    trained = train_loop(model.named_parameters(), loss_of_step, steps, learning_rate,
                         decays=decays_matrices_but_embeddings, schedule="linear", log=log,
                         log_every=max(1, steps // 10), label="  original, ")
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    with open(os.path.join(directory, "pretraining.json"), "w") as handle:
        json.dump(dict(steps=steps, batch_size=batch_size, learning_rate=learning_rate, position_init=position_init,
                       mimetic_std=mimetic_std, losses=trained["losses"], seconds=trained["seconds"]), handle)
    return directory


# ------------------------------------------------------------------------------------------------------- evaluation


def _pad(rows: list[list], value, width: int) -> torch.Tensor:
    return torch.tensor([row + [value] * (width - len(row)) for row in rows])


@torch.no_grad()
def evaluate(model, examples: list[dict], identifier: torch.Tensor, window: dict, cut: int | None = None,
             batch_size: int = 4) -> dict:
    """:func:`sasa.masking.bucket_metrics` of ``model`` on the fixed-mask ``examples``.

    ``cut``: the model reads at most ``cut`` positions: the sequence after ``<s>`` is cut into windows of
    ``cut - 1`` tokens, each read on its own after an ``<s>`` (the first window is the first ``cut`` tokens). Far
    tokens are the same in every case (the full sequence, ``window``: the converted layout's window).
    """
    from sasa.masking import bucket_metrics, token_statistics

    model.eval()
    stats, labels = [], []
    width = max(len(e["input_ids"]) for e in examples)
    width = -(-width // 32) * 32
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        input_ids = _pad([e["input_ids"] for e in chunk], 1, width)
        batch_labels = _pad([e["labels"] for e in chunk], -100, width)
        attention_mask = _pad([[1] * len(e["input_ids"]) for e in chunk], 0, width)
        if cut is None:
            ast_links = _pad([e["ast_links"] for e in chunk], [-1] * len(chunk[0]["ast_links"][0]), width)
            logits = model(input_ids=input_ids, attention_mask=attention_mask, ast_links=ast_links).logits
        else:
            logits = _windowed_logits(model, input_ids, attention_mask, cut)
        stats.append(token_statistics(logits, batch_labels, input_ids, identifier, **window))
        labels.append(batch_labels)
    return bucket_metrics(torch.cat(stats), torch.cat(labels), BOUNDARY)


def _windowed_logits(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, cut: int) -> torch.Tensor:
    """``[B, L, V]`` logits of a ``cut``-position model reading ``<s>`` + ``cut - 1`` tokens at a time."""
    batch, length = input_ids.shape
    pieces = []
    for begin in range(1, length, cut - 1):
        end = min(begin + cut - 1, length)
        ids = torch.cat([input_ids[:, :1], input_ids[:, begin:end]], 1)
        mask = torch.cat([attention_mask[:, :1], attention_mask[:, begin:end]], 1)
        keep = mask[:, 1:].any(1)
        logits = torch.zeros(batch, end - begin + 1, model.config.vocab_size)
        if keep.any():
            logits[keep] = model(input_ids=ids[keep], attention_mask=mask[keep]).logits
        pieces.append(logits[:, 1:] if pieces else logits)  # <s>'s own logits from the first window
    return torch.cat(pieces, 1)


# ---------------------------------------------------------------------------------------------------- continuation


def continue_pretraining(work: str, converted: str, data: dict, masking: str, steps: int, eval_every: int,
                         batch_size: int, learning_rate: float, warmup: int, seed: int, threads: int) -> str:
    """``examples/run_mlm.py`` from the converted checkpoint (a subprocess; resumes from its last checkpoint)."""
    output_dir = os.path.join(work, f"run_mlm-{masking}")
    if os.path.exists(os.path.join(output_dir, "all_results.json")):
        return output_dir
    command = [sys.executable, RUN_MLM, "--model_name_or_path", converted,
               "--train_file", data["paths"]["long-train"], "--validation_file", data["paths"]["long-validation"],
               "--language", "python", "--max_source_length", "2048", "--masking", masking, "--eval_masking", "tokens",
               "--do_train", "--do_eval", "--eval_on_start", "--eval_strategy", "steps", "--eval_steps",
               str(eval_every), "--max_steps", str(steps), "--save_strategy", "steps", "--save_steps", str(eval_every),
               "--per_device_train_batch_size", str(batch_size),
               "--per_device_eval_batch_size", "4", "--learning_rate", str(learning_rate), "--warmup_steps",
               str(warmup), "--lr_scheduler_type", "constant_with_warmup", "--weight_decay", "0.01",
               "--adam_beta2", "0.98", "--adam_epsilon", "1e-6", "--logging_steps", str(max(1, eval_every // 4)),
               "--seed", str(seed), "--output_dir", output_dir, "--report_to", "none", "--use_cpu",
               "--disable_tqdm", "true", "--dataloader_num_workers", "0"]
    environment = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1")
    log(f"  {' '.join(command[1:])}")
    with open(os.path.join(work, f"run_mlm-{masking}.log"), "a", encoding="utf-8") as handle:
        subprocess.run(command, check=True, stdout=handle, stderr=subprocess.STDOUT, env=environment, cwd=ROOT)
    return output_dir


def evaluations(output_dir: str) -> list[dict]:
    """The evaluations of a ``run_mlm.py`` run by step, from its ``trainer_state.json`` (metrics without
    ``eval_``)."""
    with open(os.path.join(output_dir, "trainer_state.json"), encoding="utf-8") as handle:
        history = json.load(handle)["log_history"]
    rows = {}
    for entry in history:
        if "eval_masked_loss" in entry:
            rows[entry["step"]] = {k[len("eval_"):]: v for k, v in entry.items() if k.startswith("eval_")}
    return [dict(step=step, **rows[step]) for step in sorted(rows)]


# ---------------------------------------------------------------------------------------------------------- report


COLUMNS = (("masked_loss_first_512", "loss 0-511"), ("masked_loss_after_512", "loss 512+"),
           ("accuracy_first_512", "acc 0-511"), ("accuracy_after_512", "acc 512+"),
           ("far_masked_loss", "far loss"), ("far_accuracy", "far acc"))


def print_table(rows: list[dict]) -> None:
    width = max(len(r["model"]) for r in rows)
    print(f"{'model':<{width}}  " + "  ".join(f"{title:>10}" for _, title in COLUMNS))
    for row in rows:
        cells = "  ".join(f"{row[key]:>10.3f}" if not math.isnan(row[key]) else f"{'-':>10}" for key, _ in COLUMNS)
        print(f"{row['model']:<{width}}  {cells}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", default=os.path.join(ROOT, "out", "continued-pretraining"))
    parser.add_argument("--json", help="write the results here (after every stage)")
    parser.add_argument("--quick", action="store_true", help="the plumbing: few files and steps")
    parser.add_argument("--vocab-size", type=int, default=4000)
    parser.add_argument("--limit-files", type=int, help="read only the first N standard-library files")
    parser.add_argument("--max-eval", type=int, default=32, help="held-out long pieces scored")
    parser.add_argument("--pretrain-steps", type=int, default=900)
    parser.add_argument("--pretrain-batch-size", type=int, default=8)
    parser.add_argument("--pretrain-learning-rate", type=float, default=2e-3)
    parser.add_argument("--position-init", choices=["random", "sinusoidal"], default="sinusoidal",
                        help="the original's position table at the start of its pre-training")
    parser.add_argument("--mimetic-std", type=float, default=0.15, help="W_q = W_k initialisation (0: RoBERTa's)")
    parser.add_argument("--steps", type=int, default=600, help="continued pre-training steps (run_mlm.py)")
    parser.add_argument("--comparison-steps", type=int, default=300,
                        help="steps of the runs with the other maskings")
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=2, help="continued pre-training sequences per step")
    parser.add_argument("--learning-rate", type=float, default=3e-4)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--maskings", nargs="+", default=["tokens", "identifiers"], choices=["tokens", "identifiers"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.quick:
        args.limit_files = args.limit_files or 40
        args.max_eval, args.pretrain_steps, args.steps, args.eval_every = min(args.max_eval, 4), 20, 10, 5
        args.comparison_steps = 10
        args.work_dir = args.work_dir + "-quick"
    torch.set_num_threads(args.threads)
    os.makedirs(args.work_dir, exist_ok=True)
    started = time.perf_counter()
    results: dict = dict(arguments=vars(args), rows=[], curves={})

    def save() -> None:
        results["seconds"] = time.perf_counter() - started
        if args.json:
            with open(args.json, "w") as handle:
                json.dump(results, handle, indent=2)

    from transformers import RobertaForMaskedLM

    from sasa import SasaForMaskedLM
    from sasa.conversion import convert_roberta_checkpoint
    from sasa.masking import MaskingVocabulary

    log("data and tokenizer")
    data = prepare_data(args.work_dir, args.vocab_size, args.limit_files, args.max_eval, args.seed)
    results["data"] = data["counts"]
    log(f"  {data['counts']} pieces (long: 1536..2048 tokens, short: 256..512)")
    tokenizer = data["tokenizer"]
    identifier = MaskingVocabulary.from_tokenizer(tokenizer).identifier
    examples = {masking: held_out_examples(tokenizer, data["paths"]["long-validation"], masking, args.seed)
                for masking in ("tokens", "identifiers")}

    log(f"the original: RobertaForMaskedLM {ORIGINAL}, {args.pretrain_steps} steps of {args.pretrain_batch_size} "
        f"x <= {BOUNDARY} tokens")
    original_dir = pretrain_original(args.work_dir, data, args.pretrain_steps, args.pretrain_batch_size,
                                     args.pretrain_learning_rate, args.seed, args.position_init, args.mimetic_std)
    converted_dir = os.path.join(args.work_dir, "converted")
    if not os.path.exists(os.path.join(converted_dir, "config.json")):
        convert_roberta_checkpoint(original_dir, converted_dir, max_position_embeddings=2050)
    converted = SasaForMaskedLM.from_pretrained(converted_dir)
    config = converted.config
    window = dict(block_size=config.block_size, window_radius=config.window_radius,
                  num_global_blocks=config.num_global_blocks)
    results["layout"] = {name: getattr(config, name) for name in (
        "block_size", "window_radius", "num_global_blocks", "num_topk_blocks", "topk_source", "num_ast_blocks",
        "num_random_blocks")}

    log("references: the original cut at 512, the converted model with full attention")
    original = RobertaForMaskedLM.from_pretrained(original_dir)
    rows = results["rows"]
    rows.append(dict(model=f"original, full attention, cut at {BOUNDARY} (windows of <s> + {BOUNDARY - 1})",
                     **evaluate(original, examples["tokens"], identifier, window, cut=BOUNDARY)))
    dense = SasaForMaskedLM.from_pretrained(converted_dir, window_radius=2048 // config.block_size)
    rows.append(dict(model="converted, full attention (window over every block)",
                     **evaluate(dense, examples["tokens"], identifier, window)))
    rows.append(dict(model="converted, default layout, step 0 (here)",
                     **evaluate(converted, examples["tokens"], identifier, window)))
    save()

    for index, masking in enumerate(args.maskings):
        steps = args.steps if index == 0 or args.comparison_steps is None else args.comparison_steps
        log(f"continued pre-training, --masking {masking}: {steps} steps of {args.batch_size} x <= 2048 tokens")
        output_dir = continue_pretraining(args.work_dir, converted_dir, data, masking, steps, args.eval_every,
                                          args.batch_size, args.learning_rate, args.warmup, args.seed, args.threads)
        curve = evaluations(output_dir)
        results["curves"][masking] = curve
        for point in curve:
            rows.append(dict(model=f"run_mlm.py --masking {masking}, step {point['step']}", **point))
        # Both maskings at the same step (the comparison runs' last), on whole-identifier masks too.
        compared = min(args.steps, args.comparison_steps or args.steps)
        checkpoint = SasaForMaskedLM.from_pretrained(os.path.join(output_dir, f"checkpoint-{compared}"))
        results.setdefault("whole_identifier_masks", {})[masking] = dict(
            step=compared, **evaluate(checkpoint, examples["identifiers"], identifier, window))
        save()

    print_table(rows)
    print("held-out: {} long pieces, {} hidden tokens (positions 0-511: {}, 512+: {}, far: {})".format(
        len(examples["tokens"]), rows[0]["tokens"], rows[0][f"tokens_first_{BOUNDARY}"],
        rows[0][f"tokens_after_{BOUNDARY}"], rows[0]["far_tokens"]))
    for masking, metrics in results.get("whole_identifier_masks", {}).items():
        print(f"--masking {masking}, step {metrics['step']}, on whole-identifier masks: loss {metrics['masked_loss']:.3f}, "
              f"accuracy {metrics['accuracy']:.3f} (0-511 {metrics['accuracy_first_512']:.3f}, 512+ "
              f"{metrics['accuracy_after_512']:.3f}, far {metrics['far_accuracy']:.3f})")
    save()
    log(f"total {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
