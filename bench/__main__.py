"""`make bench`: run every bench/bench_*.py, print one table, write bench/results/latest.json."""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
from pathlib import Path

import bench
from bench.common import Figure, print_table

RESULTS = Path(__file__).parent / "results" / "latest.json"


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run)")
    parser.add_argument("only", nargs="*", help="benchmark module names (default: all)")
    args = parser.parse_args()
    names = sorted(
        info.name
        for info in pkgutil.iter_modules(bench.__path__)
        if info.name.startswith("bench_") and (not args.only or info.name in args.only)
    )
    figures: list[Figure] = []
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        figures.extend(module.run(quick=args.quick))
    print_table(figures)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({f.name: f.to_json() for f in figures}, indent=2) + "\n")
    print(f"\nwritten to {RESULTS}")
    return 0 if all(f.ok for f in figures) else 1


if __name__ == "__main__":
    sys.exit(main())
