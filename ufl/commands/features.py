"""`ufl features`: features of an image source from an exported model (served, in process, or by Beam)."""
import argparse

EPILOG = """examples:
  ufl features --server 127.0.0.1:8500 --model digits --source builtin:digits --out digits.npy
  ufl features --model-dir work/models/digits --source builtin:mnist10k --out mnist.npy
  ufl features --model-dir work/models/digits --source npz:big.npz:images --out feats/part --beam \\
      -- --direct_num_workers 2 --direct_running_mode multi_processing

--out FEATURES.npy gets (N, F) float32 features in source order, and FEATURES.labels.npy the labels when the
source has them. With --beam, --out is a prefix of GZIP TFRecord shards of tf.train.Example (source, features,
label) and options after '--' go to the Beam pipeline.
"""


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "features", help="compute features of an image source with an exported model",
        description="Features of every image of a source from an exported ufl model: over the TF-Serving "
        "gRPC API (--server), in this process (--model-dir), or as a Beam RunInference job (--beam).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--server", metavar="HOST:PORT", help="gRPC address of 'ufl serve' or tensorflow_model_server")
    where.add_argument("--model-dir", metavar="DIR", help="MODELS/NAME or MODELS/NAME/VERSION, run in process")
    parser.add_argument("--model", metavar="NAME", help="served model name (with --server)")
    parser.add_argument("--version", type=int, default=None, help="served version (default: newest)")
    parser.add_argument("--source", required=True, metavar="SPEC",
                        help="image source, as for 'ufl preprocess' (builtin:digits, npz:FILE.npz:images, ...)")
    parser.add_argument("--color", choices=("gray", "rgb"), default=None,
                        help="color mode of the images (default: the model's, from assets/ufl.json, else gray)")
    parser.add_argument("--signature", default="encode_images",
                        help="signature to call (default encode_images: images -> pooled features)")
    parser.add_argument("--out", required=True, metavar="FEATURES.npy", help="where to write the features")
    parser.add_argument("--batch-size", type=int, default=256, help="images per request or call (default 256)")
    parser.add_argument("--beam", action="store_true", help="run as a Beam pipeline (needs --model-dir)")
    parser.add_argument("--num-shards", type=int, default=0, help="TFRecord shards with --beam (0 = runner's choice)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(run=run, accepts_extra_args=True)


def model_color(args) -> str:
    if args.color:
        return args.color
    if args.model_dir:
        from ufl.export.load import read_model_info

        return "rgb" if read_model_info(args.model_dir).get("channels") == 3 else "gray"
    return "gray"


def run(args) -> int:
    import numpy as np

    from ufl.config import ConfigError
    from ufl.export.features import compute_features, features_pipeline, save_features

    extra = [arg for arg in args.extra_args if arg != "--"]
    if extra and not args.beam:
        raise ConfigError(f"arguments {' '.join(extra)!r} are invalid; only --beam takes pipeline options")
    color = model_color(args)
    if args.beam:
        if not args.model_dir:
            raise ConfigError("server is invalid with --beam; Beam workers load the model: give --model-dir")
        from apache_beam.options.pipeline_options import PipelineOptions

        features_pipeline(args.source, args.model_dir, args.out, color=color, num_shards=args.num_shards,
                          pipeline_options=PipelineOptions(extra))
        print(f"features of {args.source} -> {args.out}-*.tfrecord.gz")
        return 0
    from ufl.pipeline import load_images

    images, labels = load_images(args.source, color=color)
    features = compute_features(images, model_dir=args.model_dir, server=args.server, model_name=args.model,
                                signature=args.signature, version=args.version, batch_size=args.batch_size,
                                progress=not args.no_progress)
    labels_path = save_features(args.out, features.astype(np.float32), labels)
    print(f"features {features.shape[0]} x {features.shape[1]} of {args.source} -> {args.out}"
          + (f" (labels -> {labels_path})" if labels_path else ""))
    return 0
