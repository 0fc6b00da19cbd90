"""The `hami` command: `hami demo` today; scheduler, device plugin, simulate and inspect
arrive with their issues."""

from __future__ import annotations

import argparse
import logging
import sys


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hami", description="Dynamic-MIG GPU scheduler for Kubernetes")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="schedule a stream of pods on an embedded cluster (no Kubernetes)")
    demo.add_argument("--pods", type=int, default=200, help="pods to submit (default 200)")
    demo.add_argument("--seed", type=int, default=7, help="workload seed (default 7)")
    demo.add_argument("--show", type=int, default=25, help="decisions to print (default 25)")
    sub.add_parser("version", help="print the version")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s %(message)s")
    if args.command == "version":
        from hami import __version__

        print(__version__)
        return 0
    if args.command == "demo":
        from hami.sim import demo

        if args.pods < 1:
            print("hami demo: --pods must be at least 1", file=sys.stderr)
            return 2
        return demo.main(args.pods, args.seed, args.show)
    return 2


if __name__ == "__main__":
    sys.exit(main())
