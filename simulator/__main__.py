"""``python -m simulator``: traffic for streamrec.

    python -m simulator demo --clicks 20 [--rate 20] [--seed 0]   a few clicks, slates printed
"""

from __future__ import annotations

import argparse
import logging
import sys

from stream.settings import get_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulator", description="streamrec traffic")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="send a few clicks and print the slates that come back")
    demo.add_argument("--clicks", type=int, default=20)
    demo.add_argument("--rate", type=float, default=20.0, help="clicks per second")
    demo.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from simulator.demo import run_demo

    seen = run_demo(get_settings(), args.clicks, args.rate, args.seed)
    return 0 if seen == args.clicks else 1


if __name__ == "__main__":
    sys.exit(main())
