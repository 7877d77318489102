"""The ``byzflower`` command: ``run``, ``bounds``, ``compose``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``byzflower`` console script."""
    parser = argparse.ArgumentParser(
        prog="byzflower",
        description="Byzantine-robust federated learning on Flower.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    from server.launcher import add_arguments

    run = commands.add_parser(
        "run", help="run a local federation of honest and Byzantine clients"
    )
    add_arguments(run)

    bounds = commands.add_parser("bounds", help="print the known bounds on κ*")
    bounds.add_argument("--n", type=int, required=True, help="number of clients")
    bounds.add_argument("--f", type=int, required=True, help="Byzantine clients")
    bounds.add_argument("--m", type=int, default=None, help="MultiKrum's m")
    bounds.add_argument("--rule", default=None, help="one rule only")

    commands.add_parser(
        "compose",
        help="write a docker compose file for n clients, f Byzantine",
        add_help=False,
    )

    args, rest = parser.parse_known_args(argv)
    if args.command == "compose":
        from server.compose import main as compose_main

        return compose_main(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "run":
        from server.launcher import launch

        return launch(args)
    return print_bounds(args)


def print_bounds(args: argparse.Namespace) -> int:
    """``byzflower bounds``: the table of known bounds at n, f, m."""
    from strategies.kappa import bounds_table

    try:
        print(bounds_table(args.rule, args.n, args.f, args.m))
    except ValueError as error:
        print(f"byzflower bounds: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
