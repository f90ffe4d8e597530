"""`ufl features`: not implemented yet."""
import argparse


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("features", help="(features: in progress)",
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.set_defaults(run=run)


def run(args) -> int:
    raise SystemExit("ufl features is not implemented yet")
