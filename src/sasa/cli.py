"""The ``sasa`` command.

``sasa demo``          the main job: fine-tune, save a Hub-ready checkpoint, reload it, predict
``sasa convert``       RoBERTa-family checkpoint → SASA checkpoint
``sasa topk``          top-k frequency table over a corpus: from a full-attention encoder's attention (``--model``),
                       or without a teacher, from the corpus' identifiers (``--tokenizer`` only)
``sasa show-layout``   PNG of a source file's block layout, and its density
"""

from __future__ import annotations

import argparse
import sys


def _add_sparse_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per block-layout field of SasaConfig (``--block-size`` ...), its default the config's."""
    from .configuration_sasa import LAYOUT_FIELDS, TOPK_SOURCES, layout_defaults

    group = parser.add_argument_group("block layout (SasaConfig fields; default: the config's)")
    for name, default in layout_defaults().items():
        choices = TOPK_SOURCES if name == "topk_source" else None
        group.add_argument("--" + name.replace("_", "-"), type=type(default), default=default, choices=choices,
                           help=f"{LAYOUT_FIELDS[name]} (default: {default})")


def _sparse_fields(args: argparse.Namespace) -> dict[str, int | float | str]:
    from .configuration_sasa import LAYOUT_FIELDS

    return {name: getattr(args, name) for name in LAYOUT_FIELDS}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sasa", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    convert = commands.add_parser("convert", help="convert a RoBERTa-family checkpoint (CodeBERT, ...) to SASA")
    convert.add_argument("source", help="local checkpoint directory, or Hub id (needs network)")
    convert.add_argument("output_dir")
    convert.add_argument("--max-position-embeddings", type=int, default=None,
                         help="new position table size; RoBERTa's offset leaves this minus pad_token_id+1 tokens "
                         "(default: SasaConfig's, 2048 tokens)")
    convert.add_argument("--head", default="auto", choices=["auto", "base", "masked-lm", "sequence-classification"])
    _add_sparse_arguments(convert)

    demo = commands.add_parser("demo", help="the main job: fine-tune a small code-search model on the standard "
                               "library, save a Hub-ready checkpoint, reload it without the package, predict")
    demo.add_argument("--output-dir", default="out/sasa-code-search-demo", help="where the checkpoint is kept")
    demo.add_argument("--steps", type=int, default=300, help="fine-tuning steps (batches of 8)")
    demo.add_argument("--seed", type=int, default=0)

    topk = commands.add_parser("topk", help="top-k frequency table over a corpus: a teacher's attention pairs "
                               "(--model), or without a teacher the corpus' identifiers weighted by rarity")
    topk.add_argument("--model", help="full-attention teacher encoder (local dir, or Hub id when online); without "
                      "it the table pairs every identifier token with itself, weighted by inverse document frequency")
    topk.add_argument("--tokenizer", help="tokenizer (default: the model's, or without --model the --install-into "
                      "checkpoint's)")
    corpus = topk.add_mutually_exclusive_group(required=True)
    corpus.add_argument("--files", nargs="+", help="local files, directories or globs (.jsonl: one record a line)")
    corpus.add_argument("--dataset", help="a `datasets` dataset name (Hub, needs network) or local data dir")
    topk.add_argument("--dataset-config", help="the dataset's configuration name")
    topk.add_argument("--split", default="train")
    topk.add_argument("--column", default="code", help="text field of .jsonl records or dataset rows")
    topk.add_argument("--output", required=True, help="safetensors file to write")
    topk.add_argument("--top-k", type=int, default=8, help="keys counted per query, layer and head (teacher)")
    topk.add_argument("--partners", type=int, default=32, help="partners kept per vocabulary id (teacher)")
    topk.add_argument("--idf-power", type=float, default=None,
                      help="power of the inverse document frequency (without teacher; default 1)")
    topk.add_argument("--max-length", type=int, help="tokens read per text (default: 512 with a teacher, all without)")
    topk.add_argument("--batch-size", type=int, default=8)
    topk.add_argument("--device", help="where the teacher runs (default: cuda when a GPU is visible, else cpu)")
    topk.add_argument("--limit", type=int, help="use at most this many texts")
    topk.add_argument("--install-into", help="also install the table into this SASA checkpoint (saved in place)")

    show = commands.add_parser("show-layout", help="draw the block layout of a source file")
    show.add_argument("file", help="source file (decoded as UTF-8, invalid bytes replaced)")
    show.add_argument("--checkpoint", required=True, help="SASA checkpoint with its tokenizer")
    show.add_argument("--language", help="default: from the file extension")
    show.add_argument("--output", default="layout.png")

    args = parser.parse_args(argv)
    if args.command == "convert":
        from .conversion import convert_roberta_checkpoint

        model = convert_roberta_checkpoint(args.source, args.output_dir, args.max_position_embeddings, args.head,
                                           **_sparse_fields(args))
        print(f"saved {type(model).__name__} ({model.config.max_sequence_length} tokens) to {args.output_dir}")
        print(next_step(args.output_dir, model.config.max_sequence_length))
    elif args.command == "topk":
        _topk(args)
    elif args.command == "show-layout":
        _show_layout(args)
    else:
        from .demo import DemoDidNotLearn, run_demo

        try:
            run_demo(output_dir=args.output_dir, max_steps=args.steps, seed=args.seed)
        except DemoDidNotLearn as failure:
            print(failure, file=sys.stderr)
            return 1
    return 0


def next_step(output_dir: str, max_length: int) -> str:
    """What ``sasa convert`` advises next: continued masked-LM pre-training on long code, with the command."""
    return ("next: continue masked-LM pre-training on long code, so the model learns its new positions and its "
            "sparse layout before fine-tuning (docs/continued-pretraining.md), e.g.\n"
            f"  python examples/run_mlm.py --model_name_or_path {output_dir} \\\n"
            f"      --dataset_name google/code_x_glue_ct_code_to_text --dataset_config_name python --long_only \\\n"
            f"      --max_source_length {max_length} --do_train --do_eval --output_dir {output_dir}-mlm")


def _topk(args: argparse.Namespace) -> None:
    from .frequency import IDENTIFIER_IDF_POWER, compute_frequency_table, compute_identifier_table, read_corpus

    if args.model is None and not (args.tokenizer or args.install_into):
        raise SystemExit("sasa topk: give --model (a teacher), or for a table without a teacher --tokenizer or "
                         "--install-into (whose tokenizer is used)")
    if args.model is not None and args.idf_power is not None:
        raise SystemExit("sasa topk: --idf-power is for tables without a teacher; drop it or drop --model")
    if args.files:
        texts = read_corpus(args.files, args.column)
    else:
        from datasets import load_dataset

        rows = load_dataset(args.dataset, args.dataset_config, split=args.split)
        texts = (row[args.column] for row in rows)
    if args.model is not None:
        ids, weights = compute_frequency_table(args.model, texts, args.output, args.top_k, args.partners,
                                               args.max_length or 512, args.batch_size, args.limit, args.tokenizer,
                                               args.device)
    else:
        vocab_size = None
        if args.install_into:
            from transformers import AutoConfig

            vocab_size = AutoConfig.from_pretrained(args.install_into, trust_remote_code=True).vocab_size
        power = IDENTIFIER_IDF_POWER if args.idf_power is None else args.idf_power
        ids, weights = compute_identifier_table(args.tokenizer or args.install_into, texts, args.output, vocab_size,
                                                power, args.max_length, args.limit)
    covered = int((weights > 0).any(1).sum())
    print(f"wrote {args.output}: {ids.shape[0]} ids x {ids.shape[1]} partners, {covered} ids with partners")
    if args.install_into:
        from transformers import AutoModel

        model = AutoModel.from_pretrained(args.install_into, trust_remote_code=True)
        model.base_model.set_frequency_table(ids, weights)
        model.save_pretrained(args.install_into)
        print(f"installed into {args.install_into}")


def _show_layout(args: argparse.Namespace) -> None:
    import os

    import torch
    from transformers import AutoModel, AutoTokenizer

    from .ast_languages import EXTENSIONS
    from .visualize import pattern_counts, plot_layout

    language = args.language or EXTENSIONS.get(os.path.splitext(args.file)[1].lower())
    if language is None:
        raise SystemExit(f"cannot tell the language of {args.file}: pass --language")
    with open(args.file, "rb") as handle:
        source = handle.read()
    tokenizer = AutoTokenizer.from_pretrained(args.checkpoint, trust_remote_code=True)
    model = AutoModel.from_pretrained(args.checkpoint, trust_remote_code=True).eval()
    encoding = tokenizer(source, language=language, truncation=True, max_length=model.config.max_sequence_length,
                         return_tensors="pt")
    with torch.no_grad():
        layout = model.layout(encoding["input_ids"], encoding["attention_mask"], encoding["ast_links"])
    plot_layout(layout, args.output, title=f"{os.path.basename(args.file)} ({language}): "
                f"{layout.num_blocks} blocks, density {layout.density():.3f}")
    counts = ", ".join(f"{name} {count}" for name, count in pattern_counts(layout).items())
    print(f"{args.file}: {encoding['input_ids'].shape[1]} tokens, {layout.num_blocks} blocks of "
          f"{layout.block_size}, density {layout.density():.3f} ({counts} block pairs) -> {args.output}")


if __name__ == "__main__":
    sys.exit(main())
