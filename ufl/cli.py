"""The ``ufl`` command line: one verb per stage, each defined in ``ufl/commands/<verb>.py``.

Command modules define ``add_parser(subparsers)`` and ``run(args) -> int`` and import TensorFlow and Beam
inside ``run`` only, so that ``ufl --help`` answers at once. Every verb ends in one line on a failure:
``UflError`` as it is, disk full / permission denied / I/O errors as a ``StorageError`` naming the path and
the fix, anything else with its type and "run with --verbose for the traceback".
"""
from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from typing import List, Optional

from ufl import __version__, quiet
from ufl.errors import StorageError, UflError, first_line, storage_failure

VERBS = ("preprocess", "train", "export", "serve", "features", "evaluate", "run")
#: Verbs whose Beam pipelines start worker processes (they inherit a silenced stderr unless --verbose).
STARTS_WORKERS = ("preprocess", "features", "run")
#: The option naming each verb's output, for the advice of a StorageError.
OUTPUT_OPTIONS = {"preprocess": "out", "train": "out", "features": "out", "export": "model_base",
                  "run": "workdir"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ufl",
        description="Unsupervised feature learning: preprocess images into patches (Beam), train sparse "
        "coding / autoencoders / Foldiak networks (tf.distribute), export and serve them (TF-Serving API).",
        epilog="Run 'ufl VERB --help' for a verb's options and examples.",
    )
    parser.add_argument("--version", action="version", version=f"ufl {__version__}")
    parser.add_argument("--verbose", action="store_true",
                        help="show TensorFlow's and Beam's own log lines and the traceback of a failure")
    subparsers = parser.add_subparsers(dest="verb", metavar="VERB")
    subparsers.required = True
    for verb in VERBS:
        importlib.import_module(f"ufl.commands.{verb}").add_parser(subparsers)
    for subparser in subparsers.choices.values():  # 'ufl VERB --verbose' works as well
        subparser.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS,
                               help="show TensorFlow's and Beam's log lines and the traceback of a failure")
    return parser


def storage_error(error: BaseException, args) -> Optional[StorageError]:
    """A StorageError naming the verb's output when ``error`` is a failed write (disk full, permissions, I/O)."""
    failure = storage_failure(error)
    if failure is None:
        return None
    what, advice, path = failure
    option = OUTPUT_OPTIONS.get(args.verb)
    output = getattr(args, option, None) if option else None
    where = f"writing {output}" if output else "writing an output"
    at = f" ({path})" if path and path != output else ""
    fix = f"{advice} or choose another --{option.replace('_', '-')}" if option else advice
    return StorageError(f"{where} failed: {what}{at}; {fix}")


def main(argv: Optional[List[str]] = None) -> int:
    """Runs one ``ufl`` command; ``argv`` None means ufl is the program (it then owns stderr's descriptor)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "accepts_extra_args", False):
        parser.error("unrecognized arguments: " + " ".join(extra))
    args.extra_args = extra
    with quiet.terminal(args.verb, verbose=args.verbose, own_process=argv is None,
                        starts_workers=args.verb in STARTS_WORKERS):
        try:
            return int(args.run(args) or 0)
        except UflError as error:
            print(f"ufl {args.verb}: error: {error}", file=sys.stderr)
            return error.exit_code
        except KeyboardInterrupt:
            print(f"ufl {args.verb}: interrupted", file=sys.stderr)
            return 130
        except Exception as error:  # one line (or the traceback with --verbose), never a wall of text
            if args.verbose:
                traceback.print_exc(file=sys.stderr)
            stored = storage_error(error, args)
            if stored is not None:
                print(f"ufl {args.verb}: error: {stored}", file=sys.stderr)
                return stored.exit_code
            print(f"ufl {args.verb}: error: {first_line(error, with_type=True)}", file=sys.stderr)
            if not args.verbose:
                print(f"ufl {args.verb}: run with --verbose for the traceback", file=sys.stderr)
            return 1


if __name__ == "__main__":
    sys.exit(main())
