"""Installing into ComfyUI's interpreter with ``PY -m pip``, and fingerprinting what it holds."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

_QUIET = {"PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}


class PipFailed(Exception):
    """A pip command failed; the message is its last lines of output."""


def _run(python: Path, args: Sequence[str], cwd: Path | None = None) -> str:
    try:
        done = subprocess.run(
            [str(python), "-m", "pip", *args],
            capture_output=True,
            text=True,
            env={**os.environ, **_QUIET},
            cwd=cwd,
            check=False,
        )
    except OSError as exc:
        raise PipFailed(f"cannot run {python}: {exc}") from None
    if done.returncode != 0:
        lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
        detail = " / ".join(lines[-3:]) or f"exit code {done.returncode}"
        raise PipFailed(f"pip {args[0]} failed: {detail}")
    return done.stdout


def pip_install(
    python: Path,
    *,
    requirements: Path | None,
    packages: Sequence[str],
    extra_args: Sequence[str] = (),
    cwd: Path,
) -> bool:
    """Install a requirements file and packages in one resolution; False if there was none.

    Run in ``cwd`` (the node's folder), where a requirements file's relative paths point.
    """
    files = ["-r", str(requirements)] if requirements is not None else []
    if not files and not packages:
        return False
    _run(python, ["install", *extra_args, *files, *packages], cwd=cwd)
    return True


def pip_freeze_sha256(python: Path) -> str:
    """SHA-256 of ``pip freeze``: changes whenever an installed distribution does."""
    return hashlib.sha256(_run(python, ["freeze"]).encode()).hexdigest()
