"""``comfyfleet node setup``: make a ComfyUI folder match an environment file.

Exit codes: 0 the folder matches (whether or not anything had to change); 1 a step failed
(clone, checkout, pip) and its changes were undone, or a ComfyUI folder that is not a git
checkout is not the version asked for; 2 the file, a flag, the interpreter or git is not
usable, and nothing was touched. See docs/environments.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from comfyfleet.cli_common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, CliError
from comfyfleet.environment.parse import load_environment
from comfyfleet.environment.progress import terminal_progress
from comfyfleet.environment.spec import Environment, EnvironmentProblems
from comfyfleet.environment.steps import SetupFailed, SetupOptions
from comfyfleet.environment.sync import setup_environment


def add_node_command(commands: Any) -> None:
    node = commands.add_parser("node", help="prepare this machine's ComfyUI as a fleet node")
    node.set_defaults(handler=lambda args: _usage(node))
    node_commands = node.add_subparsers(dest="node_command", metavar="COMMAND")
    setup = node_commands.add_parser(
        "setup",
        help="make a ComfyUI folder match an environment file (custom nodes pinned)",
        description="Check out ComfyUI and every custom node the environment file names at "
        "its pinned commit, install their requirements into ComfyUI's interpreter and write "
        "DIR/comfyfleet-environment.lock.json. Idempotent; a failure undoes every change. "
        "See docs/environments.md.",
    )
    setup.add_argument("--environment", required=True, metavar="FILE", help="environment TOML")
    setup.add_argument("--comfy-root", required=True, metavar="DIR", help="the ComfyUI folder")
    setup.add_argument(
        "--python", metavar="PY", help="ComfyUI's interpreter (default DIR/.venv/bin/python)"
    )
    setup.add_argument(
        "--allow-local-urls",
        action="store_true",
        help="accept file:// git URLs and loopback model URLs (tests and development only)",
    )
    setup.add_argument(
        "--comfyui-version",
        metavar="VERSION",
        help="the ComfyUI tag or commit to use when the file has no [comfyui] table",
    )
    setup.add_argument(
        "--pip-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="an extra `pip install` argument, repeatable; write --pip-arg=--no-index",
    )
    setup.add_argument(
        "--force", action="store_true", help="run pip for every node even if nothing changed"
    )
    setup.set_defaults(handler=cmd_node_setup)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return EXIT_USAGE


def setup_options(
    comfy_root: str | Path,
    python: str | Path | None = None,
    *,
    pip_args: tuple[str, ...] = (),
    force: bool = False,
) -> SetupOptions:
    """Options for one ComfyUI folder, after checking it, its interpreter and git exist
    (CliError naming the missing one)."""
    root = Path(os.path.abspath(comfy_root))
    if not root.is_dir():
        raise CliError(f"--comfy-root {comfy_root} is not a folder")
    interpreter = Path(os.path.abspath(python or root / ".venv" / "bin" / "python"))
    if not interpreter.is_file() or not os.access(interpreter, os.X_OK):
        hint = "" if python else " (pass --python: ComfyUI's interpreter)"
        raise CliError(f"no Python interpreter at {interpreter}{hint}")
    if shutil.which("git") is None:
        raise CliError("git is not installed: node setup checks custom nodes out with git")
    return SetupOptions(comfy_root=root, python=interpreter, pip_args=pip_args, force=force)


def read_environment(
    path: str, *, allow_local_urls: bool, default_comfyui_version: str | None = None
) -> Environment | None:
    """The file, validated; None after printing every problem to stderr."""
    try:
        return load_environment(
            path, allow_local_urls=allow_local_urls, default_comfyui_version=default_comfyui_version
        )
    except EnvironmentProblems as exc:
        _print_problems(path, exc.problems)
        return None


def apply_environment(env: Environment, options: SetupOptions) -> int:
    """Node setup with progress on stdout, its outcome printed; an exit code."""
    progress = terminal_progress(sys.stdout)
    try:
        result = setup_environment(env, options, progress)
    except SetupFailed as exc:
        progress.close()
        _print_failure(exc)
        return EXIT_FAILED
    finally:
        progress.close()
    where = options.comfy_root
    if result.changed:
        print(f"environment {env.environment_id} set up in {where}; lock written")
    else:
        print(f"environment {env.environment_id} already in place in {where}: nothing changed")
    return EXIT_OK


def cmd_node_setup(args: argparse.Namespace) -> int:
    env = read_environment(
        args.environment,
        allow_local_urls=args.allow_local_urls,
        default_comfyui_version=args.comfyui_version,
    )
    if env is None:
        return EXIT_USAGE
    options = setup_options(
        args.comfy_root, args.python, pip_args=tuple(args.pip_arg), force=args.force
    )
    return apply_environment(env, options)


def _print_problems(path: str, problems: list[str]) -> None:
    count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
    print(
        f"comfyfleet: {path} is not a valid environment ({count}); nothing was changed:",
        file=sys.stderr,
    )
    for problem in problems:
        print(f"  {problem}", file=sys.stderr)


def _print_failure(exc: SetupFailed) -> None:
    print(f"comfyfleet: node setup failed at {exc.part}: {exc.reason}", file=sys.stderr)
    for problem in exc.not_restored:
        print(f"comfyfleet: could not undo {problem}", file=sys.stderr)
    if not exc.not_restored:
        print(
            "comfyfleet: the checkouts are back where they were; the lock is as it was",
            file=sys.stderr,
        )
