"""`ufl evaluate cnn-branch`: the standard Keras MNIST CNN vs the CNN with an extra 10x10-conv branch.

Registered by ``ufl/commands/evaluate.py`` as a subcommand of ``ufl evaluate``.
"""
from __future__ import annotations

import argparse
import json

from ufl.config.base import ConfigError, require

EXAMPLES = """examples:
  ufl evaluate cnn-branch                                   # builtin:mnist (the full 70,000), 30 epochs
  ufl evaluate cnn-branch --epochs 2 --max-examples 2000 --json
  ufl evaluate cnn-branch --data builtin:fashion-mnist
"""


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "cnn-branch", help="standard MNIST CNN vs the CNN with an extra 10x10-conv branch",
        description="Trains the standard Keras MNIST CNN and the modified CNN (extra branch: Conv 10x10x32, "
        "maxpool 5x5, concatenated before the last dense layer) on the same stratified split and prints "
        "accuracy after epoch 1 and the last epoch, and seconds per epoch, for each.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="builtin:mnist",
                        help="a labelled image source as for 'ufl preprocess': builtin:mnist (default), "
                        "npz:PATH (images and labels arrays), tfds:NAME:SPLIT")
    parser.add_argument("--epochs", type=int, default=30, help="epochs per model (default 30, as the reference)")
    parser.add_argument("--batch-size", type=int, default=128, help="examples per step (default 128)")
    parser.add_argument("--test-fraction", type=float, default=0.25, help="held-out fraction (default 0.25)")
    parser.add_argument("--max-examples", type=int, default=None, help="use a random subset of N images (seeded)")
    parser.add_argument("--seed", type=int, default=0, help="seed of split, shuffling and initialization")
    parser.add_argument("--json", action="store_true", help="print the table as one JSON object")
    parser.set_defaults(run=run)


def load_labelled_images(source: str):
    """``(images (n, H, W, C) float32 in [0, 1], labels (n,) int64)`` of a labelled ``ufl preprocess`` source."""
    from ufl.pipeline.sources import load_images

    images, labels = load_images(source)
    if labels is None:
        raise ConfigError(f"data {source!r} is invalid; it has no labels; use a labelled source such as "
                          "builtin:mnist or npz:PATH with a labels array")
    return images, labels

def format_table(result: dict) -> str:
    lines = [f"cnn-branch: {result['train_examples']} train / {result['test_examples']} test images "
             f"{'x'.join(map(str, result['image_shape']))}, {result['epochs']} epochs, batch {result['batch_size']}",
             f"{'model':<10} {'epoch 1 acc':>12} {'epoch ' + str(result['epochs']) + ' acc':>13} "
             f"{'s/epoch':>9} {'params':>10}"]
    for name in ("standard", "modified"):
        row = result[name]
        lines.append(f"{name:<10} {row['epoch_1_accuracy']:>12.4f} {row['last_epoch_accuracy']:>13.4f} "
                     f"{row['seconds_per_epoch']:>9.2f} {row['parameters']:>10d}")
    return "\n".join(lines)


def run(args) -> int:
    from ufl.trainers.cnn_branch import run_cnn_branch_experiment

    require(args.max_examples is None or args.max_examples > 0, "max_examples", args.max_examples,
            "use --max-examples with a positive integer")
    images, labels = load_labelled_images(args.data)
    if args.max_examples and args.max_examples < len(images):
        import numpy as np

        # A random subset: sources may be sorted by label.
        keep = np.random.default_rng(args.seed).choice(len(images), args.max_examples, replace=False)
        images, labels = images[keep], labels[keep]
    result = run_cnn_branch_experiment(images, labels, epochs=args.epochs, batch_size=args.batch_size,
                                       test_fraction=args.test_fraction, seed=args.seed)
    result["data"] = args.data
    print(json.dumps(result) if args.json else format_table(result))
    return 0
