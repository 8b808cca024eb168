"""The ``comfyfleet dev`` subcommand: start the stack, print the banner, stop on Ctrl-C/SIGTERM."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from comfyfleet.cli_common import CliError


def add_dev_command(commands: Any) -> None:
    dev = commands.add_parser(
        "dev", help="run the whole system on this machine (moto, API, agents) until Ctrl-C"
    )
    dev.add_argument("--port", type=int, default=8080, help="API port (0: any free port)")
    dev.add_argument("--agents", type=int, default=None, metavar="N", help="agents (default 1)")
    dev.add_argument(
        "--comfy",
        default="fake",
        metavar="fake|URL@COMFY_ROOT[,...]",
        help="'fake' (a fakecomfy per agent) or real ComfyUI servers and their folders",
    )
    dev.add_argument(
        "--state-dir", default=".comfyfleet", metavar="DIR", help="dev.json, logs, caches"
    )
    dev.add_argument(
        "--environment",
        metavar="FILE",
        help="run `comfyfleet node setup` with this file on each --comfy folder first",
    )
    dev.add_argument(
        "--shared-cache",
        action="store_true",
        help="one model cache for all the agents, as on a multi-GPU instance",
    )
    dev.add_argument(
        "--allow-local-urls",
        action="store_true",
        help="let model, image and webhook URLs name loopback http servers (dev only)",
    )
    dev.add_argument(
        "--reaper-seconds", type=float, default=10.0, metavar="S", help="reaper period"
    )
    dev.add_argument(
        "--step-seconds", type=float, default=0.05, metavar="S", help="fakecomfy's sampler step"
    )
    dev.add_argument("--verbose", action="store_true", help="log the handlers' INFO lines")
    dev.set_defaults(handler=cmd_dev)


def _options(args: argparse.Namespace) -> Any:
    from comfyfleet.dev.stack import ComfyTarget, DevOptions

    targets = None
    if args.comfy != "fake":
        try:
            targets = [ComfyTarget.parse(part) for part in args.comfy.split(",") if part.strip()]
        except ValueError as exc:
            raise CliError(f"--comfy: {exc}") from None
        if args.agents is not None and args.agents != len(targets):
            raise CliError("--agents must match the number of --comfy servers (or be left out)")
    agents = len(targets) if targets else (args.agents if args.agents is not None else 1)
    if agents < 1:
        raise CliError("--agents must be at least 1")
    if not 0 <= args.port <= 65535:
        raise CliError("--port must be 0..65535")
    if args.environment and not targets:
        raise CliError(
            "--environment needs --comfy URL@COMFY_ROOT: fakecomfy loads no custom nodes"
        )
    return DevOptions(
        port=args.port,
        agents=agents,
        comfy=targets,
        state_dir=Path(args.state_dir),
        shared_cache=args.shared_cache,
        allow_local_urls=args.allow_local_urls,
        reaper_seconds=args.reaper_seconds,
        step_seconds=args.step_seconds,
        verbose=args.verbose,
        agent_start_timeout=900.0 if targets else 120.0,
    )


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def cmd_dev(args: argparse.Namespace) -> int:
    from comfyfleet.dev.stack import DevStack, StackError, banner

    options = _options(args)
    if args.environment:
        from comfyfleet.dev.environment import prepare_comfy_roots

        code = prepare_comfy_roots(
            args.environment, options.comfy, allow_local_urls=args.allow_local_urls
        )
        if code != 0:
            return int(code)
    logs = options.state_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    _configure_logging(logs / "stack.log", options.verbose)
    stack = DevStack(options)
    # Both stop the stack, even where SIGINT came in ignored (a background job of a shell).
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    terminal = sys.stdout
    if not options.verbose:
        # The functions print their JSON logs and metrics to stdout, as Lambda wants; here
        # they go to a file, and the terminal keeps the banner and the warnings.
        sys.stdout = (logs / "functions.log").open("a", buffering=1)
    try:
        try:
            info = stack.start()
        except (StackError, OSError) as exc:
            raise CliError(f"the dev stack did not start: {exc}") from None
        print(banner(info), file=terminal, flush=True)
        while True:
            time.sleep(1)
            stack.check_children()
    except KeyboardInterrupt:
        print("\nstopping the dev stack…", file=sys.stderr, flush=True)
    finally:
        # A second Ctrl-C must not cut the clean-up short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.stop()
    # Everything started is stopped; tearing down the interpreter (moto's state) would take
    # seconds more for nothing.
    logging.shutdown()
    sys.stdout.flush()
    terminal.flush()
    sys.stderr.flush()
    os._exit(0)


def _configure_logging(path: Path, verbose: bool) -> None:
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    to_file = logging.FileHandler(path)
    to_file.setFormatter(fmt)
    to_stderr = logging.StreamHandler(sys.stderr)
    to_stderr.setFormatter(fmt)
    to_stderr.setLevel(logging.INFO if verbose else logging.WARNING)
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    root.addHandler(to_file)
    root.addHandler(to_stderr)
    for noisy in ("werkzeug", "botocore", "urllib3", "boto3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
