"""``python -m bench [--json] [--quick] [--peers N] [--only NAME[,NAME]] [--list]``:
run the benchmarks and print the figures (bench/run.py names them)."""

from __future__ import annotations

import argparse
import json
import sys

from bench.run import GROUPS, Options, run, select


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true", help="one JSON object")
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--peers", type=int, default=100_000, metavar="N",
                        help="peers in the hub's store for the fleet figures (default "
                             "100000; CI runs fewer)")
    parser.add_argument("--only", metavar="NAME[,NAME]",
                        help="only these figures: a group, a group prefix (tunnel) or a "
                             "key it reports (cli_help_ms); see --list")
    parser.add_argument("--list", action="store_true", help="list the groups and their keys")
    args = parser.parse_args()
    if args.list:
        for group in GROUPS:
            print(f"{group.name}: {', '.join(group.keys)}")
        return
    try:
        groups = select(args.only.split(",") if args.only else None)
    except ValueError as exc:
        sys.exit(f"bench: {exc}")
    figures = run(groups, Options(quick=args.quick, peers=max(args.peers, 20)))
    print(json.dumps(figures) if args.json else json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
