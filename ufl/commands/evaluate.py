"""`ufl evaluate`: not implemented yet."""
import argparse


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("evaluate", help="(evaluate: in progress)",
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.set_defaults(run=run)


def run(args) -> int:
    raise SystemExit("ufl evaluate is not implemented yet")
