"""``python -m bench [--json] [--quick] [--peers N]``: run every benchmark and print the figures."""

from __future__ import annotations

import argparse
import json

from bench.figures import run_all


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true", help="one JSON object")
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--peers", type=int, default=100_000, metavar="N",
                        help="peers in the hub's store for the fleet figures (default "
                             "100000; CI runs fewer)")
    args = parser.parse_args()
    figures = run_all(quick=args.quick, peers=max(args.peers, 20))
    if args.json:
        print(json.dumps(figures))
        return
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
