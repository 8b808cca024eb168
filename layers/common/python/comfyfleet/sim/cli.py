"""``comfyfleet sim``: the fleet simulation from the command line.

Exit codes as the rest of the CLI: 0 done, 2 a usage error (argparse) or an unreadable trace.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from comfyfleet.cli_common import EXIT_OK, EXIT_USAGE
from comfyfleet.router import POLICIES
from comfyfleet.sim.workload import DEFAULT_PRICE_PER_HOUR, SCENARIOS


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be at least 1")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} must be a positive number")
    return value


def add_parser(commands: Any) -> None:
    """Register ``sim`` on the CLI's subcommands."""
    sim = commands.add_parser(
        "sim",
        help="simulate a fleet on the real router, promotion and cache policy",
        description="A seeded discrete-event simulation of the fleet (docs/capacity.md).",
    )
    sim.add_argument(
        "--scenario",
        choices=sorted(SCENARIOS),
        metavar="NAME",
        help=f"one of {', '.join(sorted(SCENARIOS))}",
    )
    sim.add_argument(
        "--policy",
        default="all",
        choices=[*POLICIES, "all"],
        metavar="POLICY",
        help=f"routing policy: {'|'.join(POLICIES)}|all (default all)",
    )
    sim.add_argument("--nodes", type=_positive_int, metavar="N", help="GPU nodes")
    sim.add_argument("--jobs", type=_positive_int, metavar="J", help="jobs submitted")
    sim.add_argument("--seed", type=int, default=1, metavar="S", help="random seed (default 1)")
    sim.add_argument(
        "--trace",
        metavar="CSV",
        help="arrivals from a CSV trace (at_s,account,tier,workflow,models)",
    )
    sim.add_argument(
        "--price",
        type=_positive_float,
        default=DEFAULT_PRICE_PER_HOUR,
        metavar="USD",
        help="instance price per hour (default g5.xlarge, 1.006)",
    )
    sim.add_argument(
        "--costs",
        action="store_true",
        help="the platform's own AWS cost per 1,000 jobs beside the GPU cost (scenario "
        "default: steady)",
    )
    sim.add_argument("--json", action="store_true", help="print one JSON object")
    sim.add_argument("--plot", metavar="DIR", help="write PNG charts into DIR")
    sim.set_defaults(handler=cmd_sim)


def cmd_sim(args: argparse.Namespace) -> int:
    from comfyfleet.settings import get_settings
    from comfyfleet.sim import scenario, simulate
    from comfyfleet.sim.workload import TraceError, read_trace

    settings = get_settings()
    if args.scenario is None:
        if not args.costs:
            return _usage("--scenario is required (or --costs)")
        args.scenario = "steady"
    chosen = scenario(args.scenario, nodes=args.nodes, jobs=args.jobs)
    trace = None
    if args.trace:
        try:
            trace = read_trace(Path(args.trace), frozenset(settings.tiers))
        except TraceError as exc:
            return _usage(str(exc))
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            return _usage("--plot needs matplotlib: pip install 'comfyfleet[dev]'")
    policies = list(POLICIES) if args.policy == "all" else [args.policy]
    report = simulate(
        chosen,
        policies,
        seed=args.seed,
        settings=settings,
        trace=trace,
        price_per_hour=args.price,
        keep_spans=bool(args.plot),
    )
    if args.plot:
        from comfyfleet.sim.plot import write_charts

        try:
            written = write_charts(report, Path(args.plot))
        except OSError as exc:
            return _usage(f"cannot write charts into {args.plot}: {exc}")
        for path in written:
            print(f"wrote {path}", file=sys.stderr)
    if args.costs:
        return _print_costs(report.to_json(), args.scenario, policies)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(_table(report.to_json(), report.details()))
    return EXIT_OK


def _print_costs(document: dict[str, Any], name: str, policies: list[str]) -> int:
    from comfyfleet.sim import costs

    policy = "cost" if "cost" in policies else policies[0]
    gpu = document["policies"][policy]["cost_per_1000_images"]
    print(costs.report(gpu, f"{gpu:.4f} USD per 1,000 images ({name}, {policy} routing)"))
    return EXIT_OK


def _usage(message: str) -> int:
    print(f"comfyfleet sim: {message}", file=sys.stderr)
    return EXIT_USAGE


def _table(document: dict[str, Any], details: dict[str, dict[str, Any]]) -> str:
    head = (
        "policy",
        "p50 s",
        "p95 s",
        "p99 s",
        "cold",
        "downloaded",
        "GPU util",
        "Jain",
        "$/1000 img",
        "done",
        "rejected",
    )
    rows = [head]
    for name, f in document["policies"].items():
        d = details[name]
        rows.append(
            (
                name,
                f"{f['p50_wait_s']:.1f}",
                f"{f['p95_wait_s']:.1f}",
                f"{f['p99_wait_s']:.1f}",
                f"{f['cold_start_fraction']:.1%}",
                f"{f['bytes_downloaded'] / 1e12:.2f} TB",
                f"{f['gpu_utilisation']:.1%}",
                f"{f['jain_index']:.3f}",
                f"{f['cost_per_1000_images']:.2f}",
                str(d["completed"]),
                str(d["rejected"]),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = [f"scenario {document['scenario']}, seed {document['seed']}"]
    for index, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
