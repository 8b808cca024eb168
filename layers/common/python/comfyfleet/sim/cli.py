"""``comfyfleet sim``: the fleet simulation from the command line.

Exit codes as the rest of the CLI: 0 done, 2 a usage error (argparse) or an unreadable trace.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from comfyfleet.autoscaling import DEFAULT_IDLE_MINUTES, DEFAULT_JOBS_PER_NODE, ScalingRules
from comfyfleet.cli_common import EXIT_OK, EXIT_USAGE
from comfyfleet.router import POLICIES
from comfyfleet.sim.fleet_size import COLD_BOOT_SECONDS, Autoscale
from comfyfleet.sim.workload import DEFAULT_PRICE_PER_HOUR, SCENARIOS

if TYPE_CHECKING:
    from comfyfleet.sim import Report


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


def _fleet_range(text: str) -> tuple[int, int]:
    """``MIN:MAX`` of --autoscale: 0 <= MIN <= MAX, MAX >= 1."""
    low, colon, high = text.partition(":")
    try:
        bounds = int(low), int(high)
    except ValueError:
        bounds = (-1, -1)
    if not colon or bounds[0] < 0 or bounds[1] < max(1, bounds[0]):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not MIN:MAX with whole numbers 0 <= MIN <= MAX and MAX >= 1"
        )
    return bounds


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
    sim.add_argument(
        "--nodes", type=_positive_int, metavar="N", help="GPU nodes (ignored with --autoscale)"
    )
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
    _add_autoscale_arguments(sim)
    sim.add_argument("--json", action="store_true", help="print one JSON object")
    sim.add_argument("--plot", metavar="DIR", help="write PNG charts into DIR")
    sim.set_defaults(handler=cmd_sim)


def _add_autoscale_arguments(sim: argparse.ArgumentParser) -> None:
    sim.add_argument(
        "--autoscale",
        type=_fleet_range,
        metavar="MIN:MAX",
        help="scale the fleet with the stack's rules between MIN and MAX nodes, starting at "
        "MIN; MAX replaces --nodes (and sets the arrivals' rate)",
    )
    sim.add_argument(
        "--boot-seconds",
        type=_positive_float,
        default=COLD_BOOT_SECONDS,
        metavar="S",
        help=f"with --autoscale: launch to taking jobs (default {COLD_BOOT_SECONDS:.0f}, the "
        "bootstrap from scratch)",
    )
    sim.add_argument(
        "--warm-seconds",
        type=_positive_float,
        metavar="S",
        help="with --autoscale: a warm pool; every scale-out starts in S seconds instead",
    )
    sim.add_argument(
        "--idle-minutes",
        type=_positive_int,
        default=DEFAULT_IDLE_MINUTES,
        metavar="M",
        help="scale in to MIN after M minutes without a job (--autoscale 0:MAX); also the "
        f"idle period of the first-after-idle figure (default {DEFAULT_IDLE_MINUTES})",
    )
    sim.add_argument(
        "--jobs-per-node",
        type=_positive_float,
        default=DEFAULT_JOBS_PER_NODE,
        metavar="X",
        help="with --autoscale: target tracking's target, jobs waiting or running per node "
        f"taking jobs (default {DEFAULT_JOBS_PER_NODE}, the stack's jobs_per_node)",
    )


def _autoscale(args: argparse.Namespace) -> Autoscale | None:
    """The --autoscale options, or None for a fixed fleet."""
    if args.autoscale is None:
        return None
    low, high = args.autoscale
    rules = ScalingRules(low, high, args.jobs_per_node, args.idle_minutes)
    return Autoscale(rules, args.boot_seconds, args.warm_seconds)


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
        autoscale=_autoscale(args),
        idle_minutes=args.idle_minutes,
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
        print(_table(report.to_json(), report.details(), _describe(report)))
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


def _table(
    document: dict[str, Any], details: dict[str, dict[str, Any]], autoscaled: str | None
) -> str:
    elastic = autoscaled is not None
    head = [
        "policy",
        "p50 s",
        "p95 s",
        "p99 s",
        "cold",
        "downloaded",
        "GPU util",
        "Jain",
        "$/1000 img",
        "node-h",
        "done",
        "rejected",
    ]
    if elastic:
        head += ["peak nodes", "1st after idle p95 s"]
    rows = [head]
    for name, figures in document["policies"].items():
        rows.append(_row(name, figures, details[name], elastic))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = [f"scenario {document['scenario']}, seed {document['seed']}"]
    if elastic:
        lines[0] += f", autoscaled {autoscaled}"
    for index, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _row(name: str, f: dict[str, Any], d: dict[str, Any], elastic: bool) -> list[str]:
    row = [
        name,
        f"{f['p50_wait_s']:.1f}",
        f"{f['p95_wait_s']:.1f}",
        f"{f['p99_wait_s']:.1f}",
        f"{f['cold_start_fraction']:.1%}",
        f"{f['bytes_downloaded'] / 1e12:.2f} TB",
        f"{f['gpu_utilisation']:.1%}",
        f"{f['jain_index']:.3f}",
        f"{f['cost_per_1000_images']:.2f}",
        f"{f['node_hours']:.1f}",
        str(d["completed"]),
        str(d["rejected"]),
    ]
    if elastic:
        after_idle = f"{f['first_after_idle_p95_s']:.1f}" if d["jobs_after_idle"] else "none"
        row += [str(d["peak_nodes"]), after_idle]
    return row


def _describe(report: Report) -> str | None:
    """How the fleet was autoscaled, for the table's first line (None: a fixed fleet)."""
    autoscale = report.autoscale
    if autoscale is None:
        return None
    rules = autoscale.rules
    start = (
        f"warm pool {autoscale.warm_seconds:g} s"
        if autoscale.warm_seconds is not None
        else f"boot {autoscale.boot_seconds:g} s"
    )
    return f"{rules.min_nodes}:{rules.max_nodes}, {start}, idle {rules.scale_in_idle_minutes} min"
