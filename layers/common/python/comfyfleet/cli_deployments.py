"""The deployment commands of ``comfyfleet``: ``deploy`` a workflow with named inputs, ``run``
one with ``--set`` values, and ``deployments ls|show|rm``; on comfyfleet.client.Client.

``--input width=5.inputs.width:integer`` declares input ``width`` as node 5's ``width``; the
type may be left out (read from the workflow's value there), and that value becomes the
input's default unless ``--required width`` says a run must give it.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any

from comfyfleet.cli_client import api_client, api_command, follow, out_dir, print_json
from comfyfleet.cli_common import EXIT_FAILED, EXIT_OK, CliError, read_json
from comfyfleet.workflow.refs import LOADER_INPUTS
from comfyfleet.workflow.urls import INPUT_FOLDER

_INPUT = re.compile(
    r"^(?P<name>[A-Za-z_]\w*)=(?P<node>[^.=]+)\.inputs\.(?P<input>[^:]+)(?::(?P<type>\w+))?$"
)
_TYPES = ("string", "integer", "number", "boolean", "image", "model")
_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}


def declare_input(spec: str, workflow: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """One ``--input`` as (name, declaration): the type and default read from the graph."""
    match = _INPUT.match(spec)
    if match is None:
        raise CliError(f"--input {spec!r}: write NAME=NODE.inputs.INPUT[:TYPE]")
    name, node_id, input_name = match["name"], match["node"], match["input"]
    node = workflow.get(node_id)
    if not isinstance(node, dict) or not isinstance(node.get("inputs"), dict):
        raise CliError(f"--input {spec!r}: the workflow has no node {node_id!r}")
    current = node["inputs"].get(input_name)
    kind = match["type"] or _type_of(node.get("class_type"), input_name, current)
    if kind not in _TYPES:
        raise CliError(f"--input {spec!r}: the type is one of {', '.join(_TYPES)}")
    declaration: dict[str, Any] = {"node": node_id, "input": input_name, "type": kind}
    if current is not None and not isinstance(current, list):
        declaration["default"] = current
    return name, declaration


def _type_of(class_type: Any, input_name: str, value: Any) -> str:
    folder = (
        LOADER_INPUTS.get(class_type, {}).get(input_name) if isinstance(class_type, str) else None
    )
    if folder is not None:
        return "image" if folder == INPUT_FOLDER else "model"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    raise CliError(f"cannot tell the type of input {input_name!r} (add :TYPE)")


def cmd_deploy(args: argparse.Namespace) -> int:
    document = read_json(args.file)
    body = (
        dict(document)
        if isinstance(document, dict) and "workflow" in document
        else {"workflow": document}
    )
    workflow = body.get("workflow")
    if not isinstance(workflow, dict):
        raise CliError(f"{args.file}: a workflow is a JSON object of nodes (API format)")
    inputs = dict(body.get("inputs") or {})
    for spec in args.input or []:
        name, declaration = declare_input(spec, workflow)
        inputs[name] = declaration
    for name in args.required or []:
        if name not in inputs:
            raise CliError(f"--required {name}: no --input declares it")
        inputs[name].pop("default", None)
    deployment_name = args.name or body.get("name")
    if not isinstance(deployment_name, str) or not deployment_name:
        raise CliError("name the deployment: --name NAME")
    description = args.description if args.description is not None else body.get("description")
    with api_client(args) as client:
        created = client.deploy(
            deployment_name, workflow, inputs, models=body.get("models"), description=description
        )
    created.pop("workflow", None)
    print_json(created)
    return EXIT_OK


def parse_values(pairs: list[str], schema: dict[str, Any]) -> dict[str, Any]:
    """``--set NAME=VALUE`` pairs as the JSON values the deployment's schema asks for."""
    properties = schema.get("properties") or {}
    values: dict[str, Any] = {}
    for pair in pairs:
        name, equals, text = pair.partition("=")
        if not equals or not name:
            raise CliError(f"--set {pair!r}: write NAME=VALUE")
        values[name] = _coerce(name, text, properties.get(name) or {})
    return values


def _coerce(name: str, text: str, schema: dict[str, Any]) -> Any:
    kinds = {schema.get("type")} | {option.get("type") for option in schema.get("anyOf", [])}
    try:
        if "integer" in kinds:
            return int(text)
        if "number" in kinds:
            return float(text)
        if "array" in kinds or "object" in kinds:
            return json.loads(text)
    except ValueError:
        wanted = next(kind for kind in ("integer", "number", "array", "object") if kind in kinds)
        raise CliError(f"--set {name}: {text!r} is not {wanted} JSON") from None
    if "boolean" in kinds:
        if text.lower() in _TRUE | _FALSE:
            return text.lower() in _TRUE
        raise CliError(f"--set {name}: {text!r} is not true or false")
    return text


def cmd_run(args: argparse.Namespace) -> int:
    with api_client(args) as client:
        schema = client.deployment(args.name, version=args.version)["input_schema"]
        values = parse_values(args.set or [], schema)
        accepted = client.run(args.name, values, version=args.version, webhook_url=args.webhook)
        if not args.wait and args.out is None:
            print_json(accepted)
            return EXIT_OK
        print(accepted["job_id"], file=sys.stderr)
        (job,) = follow(client, [accepted["job_id"]], out=out_dir(args))
    return EXIT_OK if job.get("status") == "completed" else EXIT_FAILED


def cmd_deployments_ls(args: argparse.Namespace) -> int:
    with api_client(args) as client:
        listed = client.deployments()
    for entry in listed:
        owner = "built-in" if entry["builtin"] else f"v{entry['version']}"
        print(f"{entry['name']:<24}  {owner:<8}  {entry['description']}")
    return EXIT_OK


def cmd_deployments_show(args: argparse.Namespace) -> int:
    with api_client(args) as client:
        print_json(client.deployment(args.name, version=args.version))
    return EXIT_OK


def cmd_deployments_rm(args: argparse.Namespace) -> int:
    with api_client(args) as client:
        print_json(client.delete_deployment(args.name))
    return EXIT_OK


def add_deployment_commands(commands: Any) -> None:
    """Register deploy, run and deployments on the ``comfyfleet`` parser's subcommands."""
    deploy = api_command(commands, "deploy", "save a workflow as a deployment", cmd_deploy)
    deploy.add_argument("file", metavar="FILE", help="workflow (API format) or a deployment body")
    deploy.add_argument("--name", help="[a-z0-9-]{1,64}")
    deploy.add_argument(
        "--input",
        action="append",
        metavar="NAME=NODE.inputs.INPUT[:TYPE]",
        help="an input (repeat); TYPE: " + ", ".join(_TYPES),
    )
    deploy.add_argument(
        "--required", action="append", metavar="NAME", help="no default: a run must set it"
    )
    deploy.add_argument("--description")

    run = api_command(commands, "run", "run a deployment", cmd_run)
    run.add_argument("name", metavar="NAME")
    run.add_argument("--set", action="append", metavar="NAME=VALUE", help="an input's value")
    run.add_argument("--version", type=int, help="a version (default: the newest)")
    run.add_argument("--webhook", metavar="URL", help="notify this URL when the job ends")
    run.add_argument("--wait", action="store_true", help="follow the job to its end")
    run.add_argument("--out", metavar="DIR", help="download the outputs here (implies --wait)")

    group = commands.add_parser("deployments", help="your deployments and the built-ins")
    sub = group.add_subparsers(dest="deployments_command", metavar="COMMAND", required=True)
    api_command(sub, "ls", "list them", cmd_deployments_ls)
    show = api_command(sub, "show", "one, with its input schema", cmd_deployments_show)
    show.add_argument("name", metavar="NAME")
    show.add_argument("--version", type=int)
    rm = api_command(sub, "rm", "delete one (every version)", cmd_deployments_rm)
    rm.add_argument("name", metavar="NAME")
