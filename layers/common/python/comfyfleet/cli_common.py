"""What the ``comfyfleet`` subcommands share: exit codes, the usage error, JSON arguments.

The subcommands (cli, cli_client, dev.command, sim.cli) raise ``CliError`` and ``cli.main``
turns it into a message and an exit code, so these names live below all of them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

# 1 means the command ran and its subject is not good: a workflow is invalid, a job failed.
EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2
EXIT_FAILED = EXIT_INVALID


class CliError(Exception):
    """Ends the command with a message on stderr and exit code 2."""


def read_json(path: str) -> Any:
    """A JSON document from a file, or from stdin for ``-``."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read {path}: {exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"{path} is not JSON: {exc}") from None
