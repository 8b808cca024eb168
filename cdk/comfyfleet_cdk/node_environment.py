"""The nodes' environment (context ``environment``): the TOML file every GPU node runs
``comfyfleet node setup`` on, validated at synth.

It travels in the agent's source asset as :data:`ENVIRONMENT_FILE` rather than in the user
data: user data is capped at 16 KB and the bootstrap already fills a good part of it, while
a file of many pinned custom nodes is only bounded by the operator. In the asset it also
changes with the code it was validated against, and the instance role already reads that
one object. Without the context key the nodes get a generated file naming only
``[comfyui] version`` (the ``comfyui_version`` context): one bootstrap for both cases, and
every node has a lock file and an environment id.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from comfyfleet.environment import Environment, load_environment, parse_environment
from comfyfleet.settings import Settings

# Where the file lies at the top of the agent's source asset (unpacked: /opt/comfyfleet/source).
ENVIRONMENT_FILE = "comfyfleet-environment.toml"
# The instances' tag with the environment id (node images will be baked per environment).
ENVIRONMENT_TAG = "comfyfleet:environment"


@dataclass(frozen=True)
class NodeEnvironment:
    """What the nodes run: the file's text, as shipped, and what it validated to."""

    text: str
    environment: Environment
    source: Path | None = None  # None: generated from comfyui_version

    @property
    def environment_id(self) -> str:
        return self.environment.environment_id


def core_environment(comfyui_version: str, settings: Settings) -> NodeEnvironment:
    """ComfyUI's core nodes at ``comfyui_version``, as a file; EnvironmentProblems for a bad
    version (the same check a file's ``[comfyui] version`` gets)."""
    environment = parse_environment({"comfyui": {"version": comfyui_version}}, settings=settings)
    # The version passed the tag-or-commit check, so a JSON string is a valid TOML one.
    text = f"[comfyui]\nversion = {json.dumps(environment.comfyui_version)}\n"
    return NodeEnvironment(text, environment)


def file_environment(path: str, comfyui_version: str, settings: Settings) -> NodeEnvironment:
    """The file at ``path`` (relative to the working folder, as ``cdk`` is run from the
    project), validated against the deployment's URL rules. ``comfyui_version`` stands in for
    a missing ``[comfyui]``, as the node's ``--comfyui-version`` does, so both compute the
    same id. EnvironmentProblems lists every problem, as ``comfyfleet node setup`` would."""
    where = Path(os.path.abspath(os.path.expanduser(path)))
    environment = load_environment(
        where, settings=settings, default_comfyui_version=comfyui_version
    )
    return NodeEnvironment(where.read_text(encoding="utf-8"), environment, where)
