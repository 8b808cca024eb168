"""The api function under SnapStart: what init costs, and what the first request after a
restore costs against a warm one (goal: at most 1.5x). Beside bench_import (which measures
the lazy path): the same handler, with ``AWS_LAMBDA_INITIALIZATION_TYPE=snap-start``.

Each sample is a fresh interpreter, as a restored execution environment is:

- *init with build and priming*: loading functions/api/app.py, which under SnapStart builds
  the application and primes it (offline: no AWS call leaves the process), against a bare
  ``import boto3`` in the same run; beside it the lazy build alone, without priming;
- *first request after restore*: init as above, then the before-snapshot hooks, the
  after-restore hooks (timed apart: they read the registry snapshot and the catalogue again)
  and one ``POST /v1/jobs`` to moto's server on loopback; then 20 more requests, whose median
  is the warm figure. The same with SnapStart off for the baseline: the first request builds.

moto runs in this process as a server (the dev stack's), warmed by a throw-away child first,
so its own first-use work is not counted against the function.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

from bench.bench_import import LAMBDA_ENV, ROOT
from bench.common import Figure, Timing, use_dummy_aws_credentials

GOAL_RATIO = 1.5
WARM_REQUESTS = 20
APP = ROOT / "functions" / "api" / "app.py"

# Lambda's runtime hooks library, as the managed runtime provides it: the hooks are kept so
# the child can run them where Lambda would.
_HOOKS = """
import json, sys, time, types
hooks = {"before": [], "after": []}
sys.modules["snapshot_restore_py"] = types.SimpleNamespace(
    register_before_snapshot=lambda f, *a, **k: hooks["before"].append(f),
    register_after_restore=lambda f, *a, **k: hooks["after"].append(f),
)
"""
_LOAD = """
import importlib.util
started = time.perf_counter()
spec = importlib.util.spec_from_file_location("app", {path!r})
module = importlib.util.module_from_spec(spec)
sys.modules["app"] = module
spec.loader.exec_module(module)
init = time.perf_counter() - started
"""
_BUILD = """
started = time.perf_counter()
module._app._ensure_built()
build = time.perf_counter() - started
"""
_REQUESTS = """
import io, json, contextlib
from bench.bench_api_submit import LIMITS, submit_event
from comfyfleet.api.context import Caller
from comfyfleet.domain import Scope
caller = Caller(
    account_id={account_id!r}, tier="pro", scopes=frozenset({{Scope.JOBS}}),
    key_id="sk_live_bench000", limits=LIMITS,
)
body = json.dumps({{"prompt": {workflow!r}}})

class Context:
    function_name = "comfyfleet-bench"
    memory_limit_in_mb = 1024
    invoked_function_arn = "arn:aws:lambda:us-east-1:000000000000:function:comfyfleet-bench"
    aws_request_id = "bench"

def submit():
    event = submit_event(caller, body)
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # the metrics' EMF lines
        response = module.handler(event, Context())
    took = time.perf_counter() - started
    assert response["statusCode"] == 202, response["body"][:300]
    return took

started = time.perf_counter()
for hook in reversed(hooks["before"]):
    hook()
for hook in hooks["after"]:
    hook()
restore = time.perf_counter() - started
first = submit()
warm = sorted(submit() for _ in range({warm}))[{warm} // 2]
# A warm request of an account this container has not counted within the last second: its
# counters are read from DynamoDB, as the first request after a restore must read them.
counters = module._app.built.handler.__self__.jobs.dispatcher.counters
unseen = []
for _ in range(7):
    counters.clear()
    unseen.append(submit())
unseen = sorted(unseen)[3]
print(json.dumps({{
    "init": init, "restore": restore, "first": first, "warm": warm, "unseen": unseen,
}}))
"""


def _environment(moto_url: str | None, snapstart: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMFYFLEET_", "AWS_"))}
    env.update(LAMBDA_ENV)
    env["LAMBDA_TASK_ROOT"] = str(APP.parent)
    env["PYTHONPATH"] = str(ROOT)
    if moto_url:
        env["AWS_ENDPOINT_URL"] = moto_url
        env.pop("COMFYFLEET_SHARED_QUEUE_URL", None)
        env["POWERTOOLS_TRACE_DISABLED"] = "true"  # no X-Ray daemon to send to here
    if snapstart:
        env["AWS_LAMBDA_INITIALIZATION_TYPE"] = "snap-start"
    return env


def _child(script: str, env: dict[str, str]) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"snapstart sample failed:\n{done.stderr[-2000:]}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _init_samples(runs: int) -> dict[str, list[float]]:
    """Init under SnapStart (build and priming) vs the lazy build alone vs import boto3."""
    load = _LOAD.format(path=str(APP))
    scripts = {
        "boto3": "import json, time\nstarted = time.perf_counter()\nimport boto3\n"
        "print(json.dumps({'init': time.perf_counter() - started}))\n",
        "primed": _HOOKS + load + "print(json.dumps({'init': init}))\n",
        "lazy": _HOOKS + load + _BUILD + "print(json.dumps({'init': init + build}))\n",
    }
    envs = {
        "boto3": _environment(None, False),
        "primed": _environment(None, True),
        "lazy": _environment(None, False),
    }
    samples: dict[str, list[float]] = {name: [] for name in scripts}
    for _ in range(runs):
        for name, script in scripts.items():
            samples[name].append(_child(script, envs[name])["init"])
    return samples


def _request_samples(runs: int) -> dict[str, list[dict[str, float]]]:
    """First and warm requests against moto's server, with SnapStart and without."""
    from comfyfleet.aws import reset_clients
    from comfyfleet.dev.local_aws import LocalAws
    from comfyfleet.resources import provision
    from comfyfleet.settings import Settings
    from comfyfleet.store.dynamo import dynamo_stores
    from comfyfleet.templates import render_template

    use_dummy_aws_credentials()
    workflow = render_template("sdxl", {"prompt": "a lighthouse", "seed": 1}).graph
    results: dict[str, list[dict[str, float]]] = {"snapstart": [], "lazy": []}
    with LocalAws() as aws:
        settings = Settings()
        reset_clients()
        provision(settings, endpoint_url=aws.url, region="us-east-1")
        stores = dynamo_stores(settings, endpoint_url=aws.url, region="us-east-1")
        account = stores.accounts.create(tier="pro", name="bench", now=time.time())
        script = (
            _HOOKS
            + _LOAD.format(path=str(APP))
            + _REQUESTS.format(account_id=account.account_id, workflow=workflow, warm=WARM_REQUESTS)
        )
        _child(script, _environment(aws.url, True))  # moto's own first use
        for _ in range(runs):
            for kind in results:
                env = _environment(aws.url, kind == "snapstart")
                results[kind].append(_child(script, env))
        reset_clients()
    return results


def _medians(samples: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(sample[key] for sample in samples) for key in samples[0]}


def run(quick: bool = False) -> list[Figure]:
    runs = 5 if quick else 11
    inits = _init_samples(runs)
    base, primed, lazy = (Timing.of(inits[k]) for k in ("boto3", "primed", "lazy"))
    requests = _request_samples(3 if quick else 7)
    snap, cold = (_medians(requests[kind]) for kind in ("snapstart", "lazy"))
    first_ratio = snap["first"] / snap["warm"]
    with_restore = (snap["restore"] + snap["first"]) / snap["warm"]
    return [
        Figure(
            name="SnapStart init: api build and priming",
            value=primed.median / base.median,
            unit="x boto3",
            goal="report (paid once per version)",
            ok=True,
            baseline=f"{primed.median * 1000:.0f} ms; lazy build without priming "
            f"{lazy.median * 1000:.0f} ms; import boto3 {base.median * 1000:.0f} ms",
            noise=f"spread {primed.noise:.0%}, n={primed.runs}",
        ),
        Figure(
            name="SnapStart first request after restore / warm p50 (api, moto server)",
            value=first_ratio,
            unit="x warm",
            goal=f"<= {GOAL_RATIO}x",
            ok=first_ratio <= GOAL_RATIO,
            baseline=f"first {snap['first'] * 1000:.1f} ms, warm {snap['warm'] * 1000:.1f} ms; "
            f"SnapStart off: first {cold['first'] * 1000:.0f} ms "
            f"({cold['first'] / cold['warm']:.1f}x its warm {cold['warm'] * 1000:.1f} ms)",
            noise=f"medians of {len(requests['snapstart'])} fresh interpreters",
        ),
        Figure(
            name="SnapStart first request after restore / warm, account not cached",
            value=snap["first"] / snap["unseen"],
            unit="x warm",
            goal="report",
            ok=True,
            baseline=f"warm request of an account not counted in the last second "
            f"{snap['unseen'] * 1000:.1f} ms (its counters read, as after a restore)",
            noise=f"medians of {len(requests['snapstart'])} fresh interpreters",
        ),
        Figure(
            name="SnapStart after-restore hooks + first request / warm p50",
            value=with_restore,
            unit="x warm",
            goal="report",
            ok=True,
            baseline=f"hooks {snap['restore'] * 1000:.1f} ms (registry and catalogue read "
            "again), on the restore's side of the cold start",
            noise=f"medians of {len(requests['snapstart'])} fresh interpreters",
        ),
    ]
