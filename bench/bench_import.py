"""Cold start of the Lambda handlers: each measured in a fresh interpreter, against a bare
``import boto3`` measured in the same run (goal: at most 1.5x, Logger, Metrics and Tracer in
place; the first row, a naive stack, has measured 2.8x on these machines).

Two figures per handler:

- *import*: loading functions/<name>/app.py, what Lambda's init phase pays. The goal
  applies here: the entry points import only Powertools' Logger (and Metrics) and a light
  helper; the application is built on the first request (under SnapStart during init:
  bench_snapstart measures that path).
- *import + build*: the same plus that first build (settings, boto3 clients, Powertools'
  resolver and the routes' models, and Tracer with the X-Ray SDK as in Lambda), i.e. the
  whole cold start before the first request is served. Reported against the same baseline,
  so the lazy imports cannot hide a cost, only move it.

The first row imports a naive stack (boto3, pydantic, the resolver, Logger, Metrics and
Tracer, all at start-up) for scale.

Each sample is the time inside the child from before the first import to after the last
(interpreter start-up is the same for all and left out). Samples of all kinds are taken
in turn, so background load spreads evenly over them. Bytecode caches are warmed
first: every kind runs with its .pyc files present.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bench.common import Figure, Timing

GOAL_RATIO = 1.5
ROOT = Path(__file__).resolve().parents[1]
FUNCTIONS = ROOT / "functions"
# Each handler module and its LazyHandler, whose build runs on the first request.
HANDLERS = {"api": "_app", "authorizer": "_authorize"}
# Lambda's own environment for a traced function; dummy credentials, nothing is called.
LAMBDA_ENV = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_LAMBDA_FUNCTION_NAME": "comfyfleet-bench",
    "POWERTOOLS_TRACE_DISABLED": "false",
    # Saves the build a GetQueueUrl call (the deployment sets it too).
    "COMFYFLEET_SHARED_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/000000000000/shared.fifo",
}

_TIMED = """
import importlib.util, sys, time
started = time.perf_counter()
{body}
print(time.perf_counter() - started)
"""
_LOAD = """
spec = importlib.util.spec_from_file_location("app", {path!r})
module = importlib.util.module_from_spec(spec)
sys.modules["app"] = module
spec.loader.exec_module(module)
"""
# What the handler does on its first request: LazyHandler's build (with Tracer, in Lambda).
_BUILD = "module.{lazy}._build()\n"


def _script(body: str) -> str:
    return _TIMED.format(body=body)


# A naive stack, everything imported at start-up (2.8x when first measured): for scale.
_NAIVE = """
import boto3, pydantic
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler import APIGatewayRestResolver
Tracer(service="naive")
"""


def _scripts() -> dict[str, str]:
    scripts = {"boto3": _script("import boto3\n"), "naive": _script(_NAIVE)}
    for name, lazy in HANDLERS.items():
        load = _LOAD.format(path=str(FUNCTIONS / name / "app.py"))
        scripts[f"{name} import"] = _script(load)
        scripts[f"{name} import + build"] = _script(load + _BUILD.format(lazy=lazy))
    return scripts


def _environment(name: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMFYFLEET_", "AWS_"))}
    env.update(LAMBDA_ENV)
    # Where Lambda puts the function's code; it also turns Powertools' tracing on.
    handler = name.split()[0]
    env["LAMBDA_TASK_ROOT"] = str(FUNCTIONS / handler) if handler in HANDLERS else str(ROOT)
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # after the warm-up: every run sees the same caches
    return env


def _sample(script: str, env: dict[str, str]) -> float:
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"cold-start sample failed:\n{done.stderr[-2000:]}")
    return float(done.stdout.strip().splitlines()[-1])


def measure(runs: int) -> dict[str, Timing]:
    """Each kind ``runs`` times, in turn, after one warm-up run of each."""
    scripts = _scripts()
    envs = {name: _environment(name) for name in scripts}
    for name, script in scripts.items():
        warm = dict(envs[name])
        del warm["PYTHONDONTWRITEBYTECODE"]
        _sample(script, warm)
    samples: dict[str, list[float]] = {name: [] for name in scripts}
    for _ in range(runs):
        for name, script in scripts.items():
            samples[name].append(_sample(script, envs[name]))
    return {name: Timing.of(values) for name, values in samples.items()}


def run(quick: bool = False) -> list[Figure]:
    timings = measure(runs=10 if quick else 21)
    base, naive = timings["boto3"], timings["naive"]
    figures = [
        Figure(
            name="cold import: naive stack (for scale)",
            value=naive.median / base.median,
            unit="x boto3",
            goal="report",
            ok=True,
            baseline=f"boto3, pydantic, the resolver, Logger, Metrics, Tracer at start-up: "
            f"{naive.median * 1000:.0f} ms vs {base.median * 1000:.0f} ms",
            noise=f"spread {naive.noise:.0%}, n={naive.runs}",
        )
    ]
    for name in HANDLERS:
        for kind in ("import", "import + build"):
            timing = timings[f"{name} {kind}"]
            ratio = timing.median / base.median
            gated = kind == "import"
            figures.append(
                Figure(
                    name=f"cold {kind}: functions/{name}/app.py",
                    value=ratio,
                    unit="x boto3",
                    goal=f"<= {GOAL_RATIO}x" if gated else "report",
                    ok=ratio <= GOAL_RATIO if gated else True,
                    baseline=f"{timing.median * 1000:.0f} ms vs bare import boto3 "
                    f"{base.median * 1000:.0f} ms",
                    noise=f"spread {timing.noise:.0%} (boto3 {base.noise:.0%}), "
                    f"n={timing.runs} each",
                )
            )
    return figures
