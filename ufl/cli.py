"""The ``ufl`` command line: one verb per stage, each defined in ``ufl/commands/<verb>.py``.

Command modules define ``add_parser(subparsers)`` and ``run(args) -> int`` and import TensorFlow and Beam
inside ``run`` only, so that ``ufl --help`` answers at once.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import List, Optional

from ufl import __version__
from ufl.errors import UflError

VERBS = ("preprocess", "train", "export", "serve", "features", "evaluate", "run")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ufl",
        description="Unsupervised feature learning: preprocess images into patches (Beam), train sparse "
        "coding / autoencoders / Foldiak networks (tf.distribute), export and serve them (TF-Serving API).",
        epilog="Run 'ufl VERB --help' for a verb's options and examples.",
    )
    parser.add_argument("--version", action="version", version=f"ufl {__version__}")
    subparsers = parser.add_subparsers(dest="verb", metavar="VERB")
    subparsers.required = True
    for verb in VERBS:
        importlib.import_module(f"ufl.commands.{verb}").add_parser(subparsers)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    # TensorFlow's C++ start-up chatter (CPU features, missing CUDA) drowns ufl's own output; users who want
    # it set TF_CPP_MIN_LOG_LEVEL themselves. Set before any verb imports TensorFlow.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "accepts_extra_args", False):
        parser.error("unrecognized arguments: " + " ".join(extra))
    args.extra_args = extra
    try:
        return int(args.run(args) or 0)
    except UflError as error:
        print(f"ufl {args.verb}: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print(f"ufl {args.verb}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
