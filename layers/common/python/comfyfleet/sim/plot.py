"""PNG charts of a simulated run: queue-wait CDF per policy, GPU utilisation over time."""

from __future__ import annotations

from pathlib import Path

from comfyfleet.sim import Report
from comfyfleet.sim.metrics import utilisation_timeline


def write_charts(report: Report, directory: Path) -> list[Path]:
    """Write ``<scenario>-wait-cdf.png`` and ``<scenario>-utilisation.png``; return them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    name = report.scenario.name
    title = f"{name}: {report.scenario.nodes} nodes, seed {report.seed}"

    figure, axes = plt.subplots(figsize=(6.4, 4.0), dpi=80)
    for policy, out in report.outcomes.items():
        waits = sorted(max(w, 0.01) for w in out.waits)
        if waits:
            axes.step(waits, [(i + 1) / len(waits) for i in range(len(waits))], label=policy)
    axes.set_xscale("log")
    axes.set_xlabel("wait from submit to sampling start (s, log)")
    axes.set_ylabel("fraction of jobs")
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    axes.legend()
    cdf = directory / f"{name}-wait-cdf.png"
    figure.tight_layout()
    figure.savefig(cdf)
    plt.close(figure)

    figure, axes = plt.subplots(figsize=(6.4, 4.0), dpi=80)
    for policy, out in report.outcomes.items():
        timeline = utilisation_timeline(out)
        axes.plot([t / 60 for t, _ in timeline], [u for _, u in timeline], label=policy)
    axes.set_xlabel("minutes")
    axes.set_ylabel("GPUs sampling (fraction of the fleet)")
    axes.set_ylim(0, 1.05)
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    axes.legend()
    utilisation = directory / f"{name}-utilisation.png"
    figure.tight_layout()
    figure.savefig(utilisation)
    plt.close(figure)
    return [cdf, utilisation]
