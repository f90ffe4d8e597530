"""`ufl preprocess`: images -> normalized patch TFRecords in DATA/, with Apache Beam."""
from __future__ import annotations

import argparse
import difflib
import importlib

from ufl.config.preprocess import COLOR_MODES, EVAL_SPLITS, EXTRACT_MODES

DESCRIPTION = """Cut patches from images, normalize them and write DATA/ (sharded GZIP TFRecords,
metadata.json, stats.npz, rejected.jsonl) with an Apache Beam pipeline.

sources (--source SCHEME:ARG):
  builtin:natural | builtin:digits | builtin:faces | builtin:mnist10k    bundled images, no download
  builtin:mnist | builtin:fashion-mnist   the full datasets, 60,000 train + 10,000 test, found in the folder
                       named by $UFL_DATASETS, in Keras' cache (~/.keras/datasets) or Debian's
                       /usr/share/datasets/fashion-mnist, else downloaded by tf_keras when online
  images:GLOB          PNG/JPEG/BMP/GIF files (local, gs://, s3:// ... through Beam's FileSystems)
  npy:PATH             N x H x W [x C] array
  npz:PATH[:KEY]       array KEY (default 'images'); labels from 'labels' when present; without KEY a
                       file in Keras' layout (x_train, x_test, y_train, y_test) keeps its train/test split
  mat:PATH[:KEY]       MATLAB file: (P*P, N) one patch per column, (H, W, N) or (H, W, C, N)
  tfds:NAME[:SPLIT]    a TensorFlow Datasets image dataset (see --tfds-data-dir)

Options this command does not know go to Beam when Beam knows them (--runner, --direct_num_workers,
--direct_running_mode, --dask_client_address, --flink_master, --project ...); any other is refused. Without
--runner it runs on the DirectRunner with 2 worker processes."""

EXAMPLES = """examples:
  ufl preprocess --source builtin:natural --out data/natural                # 16x16, contrast,zca
  ufl preprocess --source builtin:natural --out data/nat8 --patch-size 8 --patches-per-image 5000 \\
      --normalize contrast,zca --zca-epsilon 0.1 --min-std 0.02
  ufl preprocess --source builtin:digits --extract full --normalize none --out data/digits
  ufl preprocess --source 'images:photos/*.jpg' --color rgb --extract grid --stride 8 --out data/photos
  ufl preprocess --source mat:patches.mat:patches --extract full --normalize mean --out data/olshausen
  ufl preprocess --source builtin:natural --out data/demo --patch-size 16 --patches-per-image 2000 \\
      --normalize zca,variance --target-variance 0.0005                     # sparse-coding-demo
  ufl preprocess --source builtin:mnist10k --extract full --out data/mnist10k --direct_running_mode=in_memory
  ufl preprocess --source builtin:mnist --extract full --normalize none --eval-split source --out data/mnist
  ufl preprocess --source builtin:natural --out data/natural \\
      --runner=apache_beam.runners.dask.dask_runner.DaskRunner --dask_client_address=127.0.0.1:8786
"""


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "preprocess", help="images -> normalized patch TFRecords (Apache Beam)", description=DESCRIPTION,
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True, help="image source, SCHEME:ARG (see above)")
    parser.add_argument("--out", required=True, help="the DATA/ directory to write")
    parser.add_argument("--patch-size", type=int, default=None,
                        help="side P of the P x P patches (default 16; with --extract full: the images' size)")
    parser.add_argument("--color", choices=COLOR_MODES, default="gray", help="gray (1 channel) or rgb (3)")
    parser.add_argument("--extract", choices=EXTRACT_MODES, default="random",
                        help="random patches, a grid, one center crop, or the full image (default random)")
    parser.add_argument("--patches-per-image", type=int, default=1000,
                        help="patches per image with --extract random (default 1000)")
    parser.add_argument("--stride", type=int, default=None,
                        help="grid step with --extract grid (default: the patch size)")
    parser.add_argument("--min-std", type=float, default=0.0,
                        help="drop patches whose pixel std (in [0,1] units) is below this (default 0)")
    parser.add_argument("--eval-fraction", type=float, default=0.1,
                        help="fraction of images held out for eval, by a stable hash of their key (default 0.1)")
    parser.add_argument("--eval-split", choices=EVAL_SPLITS, default="hash",
                        help="hash: hold out --eval-fraction of the images by a stable hash of their key "
                        "(default); source: the source's own test images (builtin:mnist, builtin:fashion-mnist)")
    parser.add_argument("--normalize", default="contrast,zca",
                        help="comma-separated steps from none, scale, contrast, mean, zca, variance "
                        "(default contrast,zca)")
    parser.add_argument("--zca-epsilon", type=float, default=0.01,
                        help="added to the covariance eigenvalues before ZCA whitening (default 0.01)")
    parser.add_argument("--target-variance", type=float, default=1.0,
                        help="pixel variance of the patches after the variance step (default 1.0)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random patch positions (default 0)")
    parser.add_argument("--num-shards", type=int, default=4, help="TFRecord files per split (default 4)")
    parser.add_argument("--max-reject-fraction", type=float, default=0.5,
                        help="fail when more than this fraction of the inputs is unusable (default 0.5)")
    parser.add_argument("--tfds-data-dir", default=None, help="where tfds: sources find prepared datasets")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing complete DATA/")
    parser.set_defaults(run=run, accepts_extra_args=True,
                        ufl_options=tuple(option for action in parser._actions for option in action.option_strings))


def build_config(args):
    from ufl.config import PreprocessConfig

    patch_size = args.patch_size
    if patch_size is None and args.extract != "full":
        patch_size = 16
    return PreprocessConfig(
        source=args.source, out=args.out, patch_size=patch_size, color=args.color, extract=args.extract,
        patches_per_image=args.patches_per_image, stride=args.stride, min_std=args.min_std,
        eval_fraction=args.eval_fraction, eval_split=args.eval_split, normalize=args.normalize,
        zca_epsilon=args.zca_epsilon,
        target_variance=args.target_variance, seed=args.seed, num_shards=args.num_shards,
        max_reject_fraction=args.max_reject_fraction, overwrite=args.overwrite, tfds_data_dir=args.tfds_data_dir)


def run(args) -> int:
    import logging

    from ufl.pipeline import preprocess

    # The DirectRunner re-logs every worker warning (start-up notices) through this logger.
    logging.getLogger("apache_beam.runners.portability.local_job_service").setLevel(logging.ERROR)

    config = build_config(args)
    beam_args = list(getattr(args, "extra_args", []) or [])
    check_beam_args(beam_args, getattr(args, "ufl_options", ()))
    metadata = preprocess(config, beam_args, verbose=True)
    counts = metadata["counts"]
    print(f"ufl preprocess: wrote {config.out}: {counts['patches']['train']} train and "
          f"{counts['patches']['eval']} eval patches of {metadata['patch_size'][0]}x{metadata['patch_size'][1]}"
          f"x{metadata['channels']} from {counts['images_read'] - counts['images_rejected']} images "
          f"({counts['images_rejected']} rejected)")
    return 0


def check_beam_args(beam_args, ufl_options=()) -> None:
    """Refuses, before any work, arguments that neither ``ufl preprocess`` nor Beam knows (Beam would drop
    them silently), suggesting the closest option name of either."""
    from ufl.config import ConfigError

    actions = beam_actions(beam_args)
    index = 0
    while index < len(beam_args):
        arg = beam_args[index]
        index += 1
        if not arg.startswith("-"):
            raise ConfigError(f"argument {arg!r} is invalid; pass Beam options as --name=value "
                              "(e.g. --direct_running_mode=in_memory)")
        name = arg.split("=", 1)[0]
        if name not in actions:
            guess = difflib.get_close_matches(name, list(ufl_options) + sorted(actions), n=1)
            hint = f"did you mean {guess[0]}?" if guess else "see 'ufl preprocess --help' for ufl's options"
            raise ConfigError(f"option {name} is not an option of ufl preprocess or of Beam; {hint}")
        takes_value = actions[name].nargs != 0
        if "=" not in arg and takes_value and index < len(beam_args) and not beam_args[index].startswith("-"):
            index += 1  # --name value


def beam_actions(beam_args) -> dict:
    """Beam's pipeline options (every ``PipelineOptions`` subclass, with the chosen runner's) by flag."""
    from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

    runner = next((arg.split("=", 1)[1] for arg in beam_args if arg.startswith("--runner=")), "")
    if "--runner" in beam_args[:-1]:
        runner = beam_args[beam_args.index("--runner") + 1]
    # A runner's module registers its options when imported: Dask's always (it is cheap), a runner given by
    # its dotted path too.
    modules = ["apache_beam.runners.dask.dask_runner"] + ([runner.rsplit(".", 1)[0]] if "." in runner else [])
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception:  # Beam reports an unknown runner itself, with its own message
            pass
    parser = _BeamArgumentParser(allow_abbrev=False)
    classes = {}
    for cls in PipelineOptions.__subclasses__():  # as PipelineOptions.get_all_options collects them
        classes.setdefault(str(cls), cls)
    for cls in classes.values():
        cls._add_argparse_args(parser)
    return {option: action for action in parser._actions for option in action.option_strings}
