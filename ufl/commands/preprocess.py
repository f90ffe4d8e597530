"""`ufl preprocess`: not implemented yet."""
import argparse


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("preprocess", help="(preprocess: in progress)",
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.set_defaults(run=run)


def run(args) -> int:
    raise SystemExit("ufl preprocess is not implemented yet")
