"""The ``comfyfleet`` command.

Exit codes: 0 success, 1 the input was read but is not valid, 2 usage or read errors.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from comfyfleet import __version__
from comfyfleet.cli_client import add_client_commands
from comfyfleet.cli_common import EXIT_INVALID, EXIT_OK, EXIT_USAGE, CliError, read_json
from comfyfleet.cli_deployments import add_deployment_commands
from comfyfleet.dev.command import add_dev_command
from comfyfleet.environment.command import add_node_command
from comfyfleet.sim.cli import add_parser as add_sim_command

__all__ = ["CliError", "build_parser", "main"]


def _load_catalogue(spec: str | None) -> Any:
    from comfyfleet.catalogue import NodeCatalogue, core_catalogue

    if spec is None:
        return None
    if spec == "core":
        return core_catalogue()
    try:
        return NodeCatalogue.from_file(spec)
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot read catalogue {spec}: {exc}") from None


def _is_request_body(document: Any) -> bool:
    """A ``POST /v1/jobs`` body ({prompt, models?, …}) rather than a bare graph."""
    return (
        isinstance(document, dict)
        and isinstance(document.get("prompt"), dict)
        and "class_type" not in document["prompt"]
    )


def cmd_validate(args: argparse.Namespace) -> int:
    from comfyfleet.settings import get_settings
    from comfyfleet.workflow import validate_workflow

    document = read_json(args.file)
    catalogue = _load_catalogue(args.catalogue)
    graph, manifest = document, None
    if _is_request_body(document):
        graph, manifest = document["prompt"], document.get("models")
    result = validate_workflow(
        graph, settings=get_settings(), catalogue=catalogue, manifest=manifest
    )
    print(json.dumps(result.to_dict(), indent=2))
    return EXIT_OK if result.ok else EXIT_INVALID


def _template_flags() -> dict[str, str]:
    """Every scalar parameter of any template → its help text."""
    from comfyfleet.templates import TEMPLATES

    flags: dict[str, str] = {}
    for template in TEMPLATES.values():
        for name, info in template.params.model_fields.items():
            if name != "loras":
                flags.setdefault(name, info.description or "")
    return flags


def _parse_lora(text: str) -> dict[str, Any]:
    url, sep, strength = text.rpartition("@")
    if sep:
        try:
            return {"url": url, "strength": float(strength)}
        except ValueError:
            pass
    return {"url": text}


def cmd_template(args: argparse.Namespace) -> int:
    from comfyfleet.templates import (
        TEMPLATES,
        InvalidTemplateParams,
        UnknownTemplate,
        render_template,
    )

    if args.list:
        for template in TEMPLATES.values():
            print(f"{template.name:<6} {template.description}")
        return EXIT_OK
    if args.name is None:
        raise CliError("name a template (see --list)")
    params: dict[str, Any] = {}
    if args.params:
        try:
            params.update(json.loads(args.params))
        except (json.JSONDecodeError, TypeError, ValueError) as exc:
            raise CliError(f"--params is not a JSON object: {exc}") from None
    for name in _template_flags():
        value = getattr(args, name)
        if value is not None:
            params[name] = value
    if args.lora:
        params["loras"] = [_parse_lora(text) for text in args.lora]
    try:
        rendered = render_template(args.name, params)
    except InvalidTemplateParams as exc:
        problems = "; ".join(f"{p['field']}: {p['message']}" for p in exc.errors)
        raise CliError(f"{exc}: {problems}") from None
    except UnknownTemplate as exc:
        raise CliError(str(exc)) from None
    print(json.dumps(rendered.graph, indent=2))
    return EXIT_OK


def cmd_fakecomfy(args: argparse.Namespace) -> int:
    import logging

    try:
        from fakecomfy import serve  # a development tool: not installed on GPU nodes
    except ImportError as exc:
        raise CliError(f"fakecomfy is not installed ({exc}): pip install -e ./fakecomfy") from None

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    serve(
        args.host,
        args.port,
        Path(args.root),
        step_seconds=args.step_seconds,
        previews=args.previews,
    )
    return EXIT_OK


def cmd_agent(args: argparse.Namespace) -> int:
    from gpu_agent.main import main as run_agent

    return run_agent()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="comfyfleet", description="Run ComfyUI workflows on a fleet of GPU machines."
    )
    parser.add_argument("--version", action="version", version=f"comfyfleet {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_validate(commands)
    _add_template(commands)
    _add_fakecomfy(commands)
    _add_agent(commands)
    add_dev_command(commands)
    add_client_commands(commands)
    add_deployment_commands(commands)
    add_sim_command(commands)
    add_node_command(commands)
    return parser


def _add_validate(commands: Any) -> None:
    validate = commands.add_parser(
        "validate",
        help="check an API-format workflow (or a POST /v1/jobs body) and list its models",
    )
    validate.add_argument("file", metavar="FILE", help="workflow JSON file, or - for stdin")
    validate.add_argument(
        "--catalogue",
        metavar="OBJECT_INFO.json",
        help="ComfyUI /object_info to check classes and inputs against ('core': ComfyUI's "
        "core nodes as recorded)",
    )
    validate.set_defaults(handler=cmd_validate)


def _add_template(commands: Any) -> None:
    template = commands.add_parser("template", help="print the workflow a template builds")
    template.add_argument("name", metavar="NAME", nargs="?", help="sd15, sdxl or flux")
    template.add_argument("--list", action="store_true", help="list the templates")
    template.add_argument("--params", metavar="JSON", help="parameters as a JSON object")
    template.add_argument(
        "--lora", action="append", metavar="URL[@STRENGTH]", help="apply a LoRA (repeatable)"
    )
    for name, help_text in _template_flags().items():
        template.add_argument(f"--{name.replace('_', '-')}", dest=name, help=help_text)
    template.set_defaults(handler=cmd_template)


def _add_fakecomfy(commands: Any) -> None:
    # The same flags as `python -m fakecomfy` (a test holds the two parsers together); they
    # are declared here too so that this parser builds on a node, where fakecomfy is absent.
    fakecomfy = commands.add_parser(
        "fakecomfy", help="serve a stand-in ComfyUI (its protocol, no GPU) until Ctrl-C"
    )
    fakecomfy.add_argument("--port", type=int, required=True, metavar="PORT")
    fakecomfy.add_argument(
        "--root", required=True, metavar="DIR", help="holds models/, input/, output/, temp/"
    )
    fakecomfy.add_argument("--host", default="127.0.0.1", help="address to listen on")
    fakecomfy.add_argument(
        "--step-seconds", type=float, default=0.05, metavar="S", help="time per sampler step"
    )
    fakecomfy.add_argument(
        "--previews", action="store_true", help="send preview frames (--preview-method)"
    )
    fakecomfy.set_defaults(handler=cmd_fakecomfy)


def _add_agent(commands: Any) -> None:
    agent = commands.add_parser(
        "agent",
        help="run the GPU agent beside ComfyUI (configured by COMFYFLEET_ variables)",
        description="Run the GPU agent beside ComfyUI until SIGTERM (once: drain; twice: "
        "interrupt and release), as python -m gpu_agent does. Configured by COMFYFLEET_ "
        "environment variables: see docs/settings.md.",
    )
    agent.set_defaults(handler=cmd_agent)


def main(argv: Sequence[str] | None = None) -> int:
    from comfyfleet.settings import SettingsError

    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        code: int = args.handler(args)
        return code
    except (CliError, SettingsError) as exc:
        print(f"comfyfleet: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
