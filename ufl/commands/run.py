"""`ufl run`: not implemented yet."""
import argparse


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("run", help="(run: in progress)",
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.set_defaults(run=run)


def run(args) -> int:
    raise SystemExit("ufl run is not implemented yet")
