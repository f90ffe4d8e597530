"""`ufl evaluate cnn-branch`: the Lasagne MNIST CNN vs the same CNN with an extra 10x10-conv branch.

Registered by ``ufl/commands/evaluate.py`` as a subcommand of ``ufl evaluate``. Both CNNs are the presets
``cnn-standard`` and ``cnn-branch``, trained by ``ufl train``'s loop into WORKDIR/standard and
WORKDIR/modified (a rerun resumes them); the table is read from their runs.
"""
from __future__ import annotations

import argparse
import json
import os

from ufl.config.base import require

EXAMPLES = """examples:
  ufl preprocess --source builtin:mnist --extract full --normalize none --eval-split source --out work/mnist
  ufl evaluate cnn-branch --data work/mnist --workdir work/cnn               # 30 epochs each
  ufl evaluate cnn-branch --data work/mnist --workdir work/cnn-short --epochs 2 --json
"""

#: Table rows: name, preset, run folder under --workdir.
VARIANTS = (("standard", "cnn-standard", "standard"), ("modified", "cnn-branch", "modified"))


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "cnn-branch", help="the Lasagne MNIST CNN vs the CNN with an extra 10x10-conv branch",
        description="Trains the presets cnn-standard (the Lasagne MNIST CNN) and cnn-branch (the same CNN plus "
        "a Conv 10x10x32 / maxpool 5x5 branch concatenated before the softmax) with 'ufl train' on the same "
        "DATA/ and prints test accuracy after epoch 1 and after the last epoch, and seconds per epoch, beside "
        "the published figures.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, metavar="DATA",
                        help="a DATA/ of whole labelled 28x28 images whose eval split is the test set "
                        "(ufl preprocess --extract full --normalize none --eval-split source)")
    parser.add_argument("--workdir", required=True, metavar="DIR",
                        help="where the two runs go (DIR/standard, DIR/modified); a rerun resumes them")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per model (default: the presets' 30)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a training setting for both runs, as for 'ufl train --set'")
    parser.add_argument("--json", action="store_true", help="print the table as one JSON object")
    parser.set_defaults(run=run)


def format_table(result: dict) -> str:
    reference = result["reference"]
    lines = [f"cnn-branch on {result['data']}: test accuracy after epoch 1 / the last epoch, seconds per epoch",
             f"{'model':<10} {'epoch 1':>9} {'last':>9} {'epochs':>7} {'s/epoch':>9}   "
             f"{'published (epoch 1 / 30)':>26}"]
    for name in ("standard", "modified"):
        row, published = result[name], reference[name]
        seconds = f"{row['seconds_per_epoch']:.1f}" if row["seconds_per_epoch"] else "-"
        lines.append(f"{name:<10} {row['epoch_1_accuracy']:>9.4f} {row['last_epoch_accuracy']:>9.4f} "
                     f"{row['epochs']:>7d} {seconds:>9}   "
                     f"{published['epoch_1_accuracy']:>12.4f} / {published['epoch_30_accuracy']:.4f}")
    return "\n".join(lines)


def run(args) -> int:
    from ufl.commands.train import build_train_config
    from ufl.config.train import parse_assignment
    from ufl.trainers.cnn_branch import experiment_table
    from ufl.trainers.strategy import choose_strategy
    from ufl.trainers.train_loop import train

    require(args.epochs is None or args.epochs > 0, "epochs", args.epochs, "use --epochs with a positive integer")
    overrides = dict(parse_assignment(text) for text in args.overrides)
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    runs = {}
    for name, preset, folder in VARIANTS:
        runs[name] = os.path.join(args.workdir, folder)
        config = build_train_config(preset, data=args.data, out=runs[name], overrides=overrides)
        train(config, strategy=choose_strategy(config.strategy))
    result = {**experiment_table(runs), "data": args.data}
    print(json.dumps(result) if args.json else format_table(result))
    return 0
