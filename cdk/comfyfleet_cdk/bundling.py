"""The functions' dependencies layer, built without Docker: ``pip install`` of Linux wheels.

pip fetches wheels for the Lambda platform (``--platform manylinux2014_aarch64
--implementation cp --python-version 3.12 --only-binary=:all:``) whatever the machine, so no
container is needed. The result is kept in a cache keyed by the requirements and the
platform: later synths copy it and need no network. The tests skip bundling altogether with
CDK's own ``aws:cdk:bundling-stacks`` context (an empty list).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import jsii
from aws_cdk import BundlingOptions, DockerImage, ILocalBundling
from aws_cdk import aws_lambda as lambda_

from comfyfleet_cdk.config import ROOT

LAMBDA_PYTHON = "3.12"
PLATFORM = "manylinux2014_aarch64"
# Lambda's Python runtime ships these (botocore is aws-xray-sdk's dependency): leaving them
# out keeps the layer tens of megabytes smaller.
RUNTIME_PROVIDED = ("boto3", "botocore", "s3transfer", "jmespath")
# Powertools' Tracer imports the X-Ray SDK even with tracing off.
EXTRA_REQUIREMENTS = ("aws-xray-sdk>=2.12",)


def layer_requirements(pyproject: Path = ROOT / "pyproject.toml") -> list[str]:
    """The runtime dependencies of comfyfleet (pyproject's, defined once) that the layer holds."""
    declared: list[str] = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    kept = [req for req in declared if _distribution(req) not in RUNTIME_PROVIDED]
    return sorted({*kept, *EXTRA_REQUIREMENTS})


def _distribution(requirement: str) -> str:
    name = requirement
    for mark in "<>=!~[; ":
        name = name.split(mark, 1)[0]
    return name.strip().lower().replace("_", "-")


def pip_command(requirements: Path, target: Path) -> list[str]:
    """The pip invocation that installs Lambda-platform wheels into ``target``."""
    return [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--target",
        str(target),
        "--platform",
        PLATFORM,
        "--implementation",
        "cp",
        "--python-version",
        LAMBDA_PYTHON,
        "--only-binary=:all:",
        "--no-compile",
        "--requirement",
        str(requirements),
    ]


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "comfyfleet" / "layers"


@jsii.implements(ILocalBundling)
class PipLayerBundling:
    """Local bundling of a layer: copy the cached install, or pip install and cache it."""

    def __init__(self, requirements: Path, cache_dir: Path) -> None:
        self.requirements = requirements
        self.cache_dir = cache_dir

    def try_bundle(self, output_dir: str, *options: Any, **named: Any) -> bool:
        """Bundle into ``output_dir``; the bundling options (Docker's) do not apply."""
        done = self.cache_dir / "python"
        if not done.is_dir():
            partial = self.cache_dir / "partial"
            shutil.rmtree(partial, ignore_errors=True)
            subprocess.run(pip_command(self.requirements, partial), check=True)
            for name in os.listdir(partial):
                distribution = name.split("-", 1)[0].lower() if ".dist-info" in name else name
                if distribution in RUNTIME_PROVIDED:
                    shutil.rmtree(partial / name, ignore_errors=True)
            partial.rename(done)  # atomic: a half-done install is never reused
        shutil.copytree(done, Path(output_dir) / "python", dirs_exist_ok=True)
        return True


def dependencies_layer_code(requirements: list[str] | None = None) -> lambda_.Code:
    """The dependencies layer's code asset: bundled locally, never in Docker."""
    lines = "\n".join(requirements if requirements is not None else layer_requirements()) + "\n"
    digest = hashlib.sha256(f"{PLATFORM} cp{LAMBDA_PYTHON}\n{lines}".encode()).hexdigest()[:16]
    cache_dir = _cache_root() / digest
    source = cache_dir / "source"
    source.mkdir(parents=True, exist_ok=True)
    requirements_file = source / "requirements.txt"
    if not requirements_file.exists() or requirements_file.read_text() != lines:
        requirements_file.write_text(lines)
    return lambda_.Code.from_asset(
        str(source),
        bundling=BundlingOptions(
            # Required by the API; never pulled, because local bundling always succeeds.
            image=DockerImage.from_registry("public.ecr.aws/sam/build-python3.12"),
            local=PipLayerBundling(requirements_file, cache_dir),
        ),
    )
