"""``python -m fakecomfy --port PORT --root DIR``: serve a stand-in ComfyUI until Ctrl-C.

The same flags as ``comfyfleet fakecomfy``, which the dev stack runs.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from fakecomfy.runner import serve


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fakecomfy",
        description="Serve a stand-in ComfyUI 0.3.64 (its protocol, no GPU) until Ctrl-C.",
    )
    parser.add_argument("--port", type=int, required=True, metavar="PORT")
    parser.add_argument(
        "--root", required=True, metavar="DIR", help="holds models/, input/, output/, temp/"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument(
        "--step-seconds", type=float, default=0.05, metavar="S", help="time per sampler step"
    )
    parser.add_argument(
        "--previews", action="store_true", help="send preview frames (--preview-method)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    serve(
        args.host,
        args.port,
        Path(args.root),
        step_seconds=args.step_seconds,
        previews=args.previews,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
