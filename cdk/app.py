"""The CDK app: ``cdk synth`` / ``cdk deploy`` (cdk.json runs ``python3 cdk/app.py``).

Also runs as ``.venv/bin/python cdk/app.py`` (``make synth``), without the ``cdk`` command:
then it reads cdk.json's and cdk.context.json's context itself and writes ``cdk.out``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"

try:
    import aws_cdk  # noqa: F401
except ImportError:
    # `python3` on PATH is not the project's venv: run again with the venv's interpreter.
    if VENV_PYTHON.exists() and Path(sys.executable).resolve() != VENV_PYTHON.resolve():
        os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), *sys.argv])
    raise

sys.path.insert(0, str(Path(__file__).resolve().parent))

from comfyfleet_cdk.config import ConfigError, load_context  # noqa: E402
from comfyfleet_cdk.stack import build_app  # noqa: E402

# A context value the deployment cannot use (the message names it): nothing is synthesised.
EXIT_BAD_CONTEXT = 2


def main() -> int:
    try:
        if os.environ.get("CDK_CONTEXT_JSON") or os.environ.get("CDK_OUTDIR"):
            app = build_app()  # the cdk command passes context and the output folder
        else:
            app = build_app(load_context(ROOT), outdir=str(ROOT / "cdk.out"))
    except ConfigError as exc:
        print(f"comfyfleet: {exc}", file=sys.stderr)
        return EXIT_BAD_CONTEXT
    app.synth()
    return 0


if __name__ == "__main__":
    sys.exit(main())
