"""`ufl evaluate`: feature evaluations — `linear-probe` (encoder features vs raw pixels) and `cnn-branch`."""
import argparse
import importlib

EPILOG = """examples:
  ufl evaluate linear-probe --run work/run --data builtin:digits
  ufl evaluate linear-probe --model-dir work/models/digits --data builtin:mnist10k --json
  ufl evaluate linear-probe --run work/fashion-run --data builtin:fashion-mnist --split source
  ufl evaluate linear-probe --run work/run --data builtin:fashion-mnist --max-images 10000
"""


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("evaluate", help="evaluate learned features (linear probe, CNN branch)",
                                   description="Evaluate learned features.",
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    evaluations = parser.add_subparsers(dest="evaluation", metavar="EVALUATION")
    evaluations.required = True
    probe = evaluations.add_parser(
        "linear-probe", help="logistic regression on encoder features vs on raw pixels",
        description="Train the same logistic-regression probe (standardized inputs, L2) on the encoder's "
        "features and on raw pixels, with the same stratified split, and compare test accuracies. Patch "
        "models give pooled features (codes of every grid patch, split by sign, summed over quadrants).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    model = probe.add_mutually_exclusive_group(required=True)
    model.add_argument("--run", dest="run_dir", metavar="RUN", help="a trained RUN/ (evaluated in process)")
    model.add_argument("--model-dir", metavar="DIR", help="an exported MODELS/NAME or MODELS/NAME/VERSION")
    probe.add_argument("--data", required=True, metavar="SOURCE",
                       help="labelled image source (builtin:digits, builtin:mnist, npz:FILE.npz, or a DATA/ dir)")
    probe.add_argument("--split", choices=("stratified", "source"), default="stratified",
                       help="stratified: a stratified --test-size split of all images (default); source: train on "
                       "the source's own train images, score on its test images (builtin:mnist, "
                       "builtin:fashion-mnist)")
    probe.add_argument("--test-size", type=float, default=0.25,
                       help="held-out fraction per class with --split stratified (default 0.25)")
    probe.add_argument("--seed", type=int, default=0, help="seed of the split and of --max-images (default 0)")
    probe.add_argument("--C", type=float, default=None, help="inverse L2 strength of the probe (default 0.1)")
    probe.add_argument("--max-images", type=int, default=None,
                       help="use a stratified subset of this many images (with --split source: of the training "
                       "images; the test images are all used)")
    probe.add_argument("--grid-stride", type=int, default=None, help="patch grid stride with --run (default P//4)")
    probe.add_argument("--pool-grid", type=int, default=2, help="pooling regions per side with --run (default 2)")
    probe.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    probe.set_defaults(run=run_linear_probe)
    try:
        cnn_branch = importlib.import_module("ufl.commands.evaluate_cnn_branch")
    except ModuleNotFoundError as error:
        if error.name != "ufl.commands.evaluate_cnn_branch":
            raise
    else:
        cnn_branch.add_parser(evaluations)


def format_table(result: dict) -> str:
    rows = [("encoder features", result["feature_accuracy"], result["feature_dim"],
             result["feature_seconds"] + result["feature_fit_seconds"]),
            ("raw pixels", result["raw_accuracy"], result["raw_dim"], result["raw_fit_seconds"])]
    split = ("the source's own split" if result.get("split") == "source"
             else f"stratified, seed {result['seed']}")
    lines = [f"linear probe on {result['data']} ({result['n_train']} train / {result['n_test']} test, "
             f"{split}, C={result['C']})",
             f"{'':18}{'accuracy':>10}{'feature size':>14}{'seconds':>10}"]
    lines += [f"{name:18}{accuracy:>10.4f}{size:>14d}{seconds:>10.1f}" for name, accuracy, size, seconds in rows]
    return "\n".join(lines)


def run_linear_probe(args) -> int:
    import json

    from ufl.config import ConfigError
    from ufl.export.evaluate import (DEFAULT_C, check_image_size, linear_probe, model_dir_encoder, run_encoder,
                                     source_of, source_split, stratified_subset)
    from ufl.pipeline import load_images

    if args.max_images is not None and args.max_images < 10:
        raise ConfigError(f"max_images {args.max_images} is invalid; use --max-images >= 10 or omit it")
    if args.run_dir:
        encode, info = run_encoder(args.run_dir, grid_stride=args.grid_stride, pool_grid=args.pool_grid)
    else:
        encode, info = model_dir_encoder(args.model_dir)
    source = source_of(args.data)
    color = "rgb" if info.get("channels") == 3 else "gray"
    split = None
    if args.split == "source":
        images, labels, split = source_split(source, color=color, max_images=args.max_images, seed=args.seed)
    else:
        images, labels = load_images(source, color=color)
        if labels is not None:
            keep = stratified_subset(labels, args.max_images, seed=args.seed)
            images, labels = images[keep], labels[keep]
    check_image_size(images, info, source)
    result = linear_probe(images, labels, encode, test_size=args.test_size, seed=args.seed,
                          C=DEFAULT_C if args.C is None else args.C, split=split)
    result.update({"data": source, "model": args.run_dir or args.model_dir, "kind": info.get("kind"),
                   "image_mode": info.get("image_mode"), "n_images": int(len(labels)), "split": args.split})
    print(json.dumps(result, sort_keys=True) if args.json else format_table(result))
    return 0
