"""`ufl serve`: not implemented yet."""
import argparse


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("serve", help="(serve: in progress)",
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.set_defaults(run=run)


def run(args) -> int:
    raise SystemExit("ufl serve is not implemented yet")
