"""The ``sasa`` command: ``sasa demo`` (the main-job demonstration) and ``sasa convert`` (RoBERTa → SASA)."""

from __future__ import annotations

import argparse
import sys


def _add_sparse_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("block layout (see SasaConfig)")
    group.add_argument("--block-size", type=int, default=32)
    group.add_argument("--window-radius", type=int, default=1)
    group.add_argument("--num-global-blocks", type=int, default=1)
    group.add_argument("--num-topk-blocks", type=int, default=3)
    group.add_argument("--num-ast-blocks", type=int, default=3)
    group.add_argument("--num-random-blocks", type=int, default=0)


def _sparse_fields(args: argparse.Namespace) -> dict[str, int]:
    names = ("block_size", "window_radius", "num_global_blocks", "num_topk_blocks", "num_ast_blocks",
             "num_random_blocks")
    return {name: getattr(args, name) for name in names}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sasa", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    convert = commands.add_parser("convert", help="convert a RoBERTa-family checkpoint (CodeBERT, ...) to SASA")
    convert.add_argument("source", help="local checkpoint directory, or Hub id (needs network)")
    convert.add_argument("output_dir")
    convert.add_argument("--max-position-embeddings", type=int, default=2050,
                         help="new position table size; RoBERTa's offset leaves this minus pad_token_id+1 tokens")
    convert.add_argument("--head", default="auto", choices=["auto", "base", "masked-lm", "sequence-classification"])
    _add_sparse_arguments(convert)

    demo = commands.add_parser("demo", help="encode a long input with a small SASA model; compare with full attention")
    demo.add_argument("--length", type=int, default=4096, help="tokens to encode")
    demo.add_argument("--repeats", type=int, default=3, help="timed runs per model (median reported)")

    args = parser.parse_args(argv)
    if args.command == "convert":
        from .conversion import convert_roberta_checkpoint

        model = convert_roberta_checkpoint(args.source, args.output_dir, args.max_position_embeddings, args.head,
                                           **_sparse_fields(args))
        print(f"saved {type(model).__name__} ({model.config.max_sequence_length} tokens) to {args.output_dir}")
        return 0
    from .demo import run_demo

    run_demo(length=args.length, repeats=args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
