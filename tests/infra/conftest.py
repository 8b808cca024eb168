"""One synthesised stack for the whole infra tier: synth is slow (≈ 10-30 s, ~1 GB), so it
runs once per test session, without Docker, network or AWS credentials.

Bundling is skipped with CDK's own ``aws:cdk:bundling-stacks`` context (an empty list): the
dependencies layer is then staged from its requirements file instead of pip installing
Lambda wheels, so no test touches the network.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT / "cdk") not in sys.path:
    sys.path.insert(0, str(ROOT / "cdk"))

SKIP_BUNDLING = {"aws:cdk:bundling-stacks": []}


@dataclass
class Synthesised:
    stack: Any  # comfyfleet_cdk.stack.ComfyFleetStack
    template: Any  # aws_cdk.assertions.Template
    body: dict[str, Any]  # the template as JSON
    outdir: Path
    seconds: float

    def resources(self, kind: str) -> dict[str, dict[str, Any]]:
        return {
            name: resource
            for name, resource in self.body["Resources"].items()
            if resource["Type"] == kind
        }


def synthesise(outdir: Path, **context: Any) -> Synthesised:
    from aws_cdk.assertions import Template

    from comfyfleet_cdk.config import DEFAULT_REGION, PLACEHOLDER_ACCOUNT, load_context
    from comfyfleet_cdk.stack import build_app

    # The account and region cdk.context.json holds zones for, whatever CDK_DEFAULT_* say.
    pinned = {"account": PLACEHOLDER_ACCOUNT, "region": DEFAULT_REGION}
    started = time.perf_counter()
    app = build_app(
        {**load_context(ROOT), **SKIP_BUNDLING, **pinned, **context}, outdir=str(outdir)
    )
    assembly = app.synth()  # cdk-nag runs here: a violation raises
    stack = next(child for child in app.node.children if hasattr(child, "fleet"))
    body = json.loads((Path(assembly.directory) / stack.template_file).read_text())
    template = Template.from_json(body)
    return Synthesised(stack, template, body, outdir, time.perf_counter() - started)


@pytest.fixture(scope="session")
def synthesised(tmp_path_factory: pytest.TempPathFactory) -> Synthesised:
    return synthesise(
        tmp_path_factory.mktemp("cdk.out"),
        spot=True,
        alarm_email="ops@example.com",
    )


def flatten(value: Any) -> str:
    """A template value as text: joins concatenated, references as <Ref X> / <X.Attr>."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(flatten(item) for item in value)
    if isinstance(value, dict):
        if "Fn::Join" in value:
            separator, parts = value["Fn::Join"]
            return str(separator).join(flatten(part) for part in parts)
        if "Fn::Base64" in value:
            return flatten(value["Fn::Base64"])
        if "Ref" in value:
            return f"<Ref {value['Ref']}>"
        if "Fn::GetAtt" in value:
            return f"<{'.'.join(value['Fn::GetAtt'])}>"
        if "Fn::Select" in value:
            return f"<Select {json.dumps(value['Fn::Select'])}>"
    return json.dumps(value)


def logical_id(synthesised: Synthesised, construct: Any) -> str:
    """The template's logical id of a construct (its default child)."""
    element = construct.node.default_child if construct.node.default_child else construct
    return str(synthesised.stack.resolve(synthesised.stack.get_logical_id(element)))
