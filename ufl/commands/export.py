"""`ufl export RUN --model-base MODELS --name NAME`: a trained run as a TF-Serving SavedModel version."""
import argparse

EPILOG = """examples:
  ufl export work/run --model-base work/models --name patches
  ufl export work/run --model-base work/models --name patches --version 7 --xla

writes MODELS/NAME/VERSION/ (signatures serving_default, reconstruct, encode_images; raw pixels in [0,1]
in, the training normalization inside the graph), and MODELS/models.config, models.container.config and
batching.config for 'ufl serve' or tensorflow_model_server:
  tensorflow_model_server --port=8500 --rest_api_port=8501 --model_config_file=MODELS/models.config
"""


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "export", help="export a trained RUN/ as a versioned TF-Serving SavedModel",
        description="Export a trained RUN/ as MODELS/NAME/VERSION/, a SavedModel TensorFlow Serving serves.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", metavar="RUN", help="the RUN/ directory written by 'ufl train'")
    parser.add_argument("--model-base", required=True, metavar="MODELS",
                        help="root of the served models; the version goes to MODELS/NAME/VERSION/")
    parser.add_argument("--name", required=True, help="served model name (letters, digits, '-', '_')")
    parser.add_argument("--version", type=int, default=None,
                        help="version number (default: highest existing + 1; never overwrites)")
    parser.add_argument("--xla", action="store_true",
                        help="save serving functions with jit_compile=True (experimental in TF-Serving; "
                        "recorded in assets/ufl.json)")
    parser.add_argument("--grid-stride", type=int, default=None,
                        help="stride of the patch grid of encode_images (default: patch size // 4)")
    parser.add_argument("--pool-grid", type=int, default=2,
                        help="encode_images pools codes over POOL_GRID x POOL_GRID image regions (default 2)")
    parser.add_argument("--warmup-requests", type=int, default=4,
                        help="warmup PredictRequests stored in assets.extra/ (default 4; 0 for none)")
    parser.set_defaults(run=run)


def run(args) -> int:
    from ufl.config import ExportConfig
    from ufl.export.saved_model import export_run

    config = ExportConfig(run=args.run_dir, model_base=args.model_base, name=args.name, version=args.version,
                          xla=args.xla, grid_stride=args.grid_stride, pool_grid=args.pool_grid,
                          warmup_requests=args.warmup_requests)
    path = export_run(config)
    print(f"exported {args.run_dir} -> {path}")
    print(f"serve it: ufl serve --model_config_file={config.model_base}/models.config --port=8500 "
          "--rest_api_port=8501")
    return 0
