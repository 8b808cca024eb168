"""Deployments over HTTP against the dev stack, as a user would: the CLI saves the example
workflow with two inputs and runs it with --set values into a downloaded image; the SDK
deploys a loader with a model input and runs it; a built-in runs through the same route."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from comfyfleet.cli import main
from comfyfleet.client import Client, InvalidRequest
from comfyfleet.dev.launch import RunningStack
from tests.e2e.support import fetch_png, loader_graph

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).parents[2] / "examples"


def test_the_cli_deploys_a_workflow_and_runs_it_with_typed_values(
    stack: RunningStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = ["--state-dir", str(stack.state_dir)]
    deploy = ["deploy", str(EXAMPLES / "hello.json"), "--name", "hello", *state]
    deploy += [
        "--input",
        "width=1.inputs.width:integer",
        "--input",
        "prefix=4.inputs.filename_prefix",
    ]

    assert main([*deploy, "--required", "prefix"]) == 0
    created = json.loads(capsys.readouterr().out)
    assert created["version"] == 1 and created["input_schema"]["required"] == ["prefix"]
    assert created["input_schema"]["properties"]["width"] == {"type": "integer", "default": 512}

    out = tmp_path / "out"
    run = ["run", "hello", "--set", "width=96", "--set", "prefix=cli", "--out", str(out)]
    assert main([*run, *state]) == 0
    (image,) = out.glob("*_cli_00001_.png")
    assert Image.open(image).size == (96, 512)

    assert main(["run", "hello", "--set", "width=wide", *state]) == 2
    assert "width" in capsys.readouterr().err
    assert main(["run", "hello", "--set", "width=4096000", "--set", "prefix=x", *state]) == 1
    assert "body.inputs.width" in capsys.readouterr().err
    assert main(["deployments", "ls", *state]) == 0
    listed = capsys.readouterr().out.split("\n")
    assert [line.split()[0] for line in listed if line][:4] == ["sd15", "sdxl", "flux", "hello"]
    assert main(["deployments", "rm", "hello", *state]) == 0
    assert json.loads(capsys.readouterr().out)["versions"] == 1


def test_the_sdk_deploys_a_model_input_and_runs_it(user: Client, checkpoint_url: str) -> None:
    graph = loader_graph(checkpoint_url)
    inputs = {"checkpoint": {"node": "4", "input": "ckpt_name", "type": "model"}}

    created = user.deploy("with-model", graph, inputs, description="a loader")
    accepted = user.run("with-model", {"checkpoint": checkpoint_url}, metadata={"n": 1})
    job = user.wait(accepted["job_id"], timeout=60)

    assert created["version"] == 1 and user.deployment("with-model")["description"] == "a loader"
    assert job["status"] == "completed", job
    assert job["deployment"] == {"name": "with-model", "version": 1}
    (url,) = job["outputs"]["images"]
    assert fetch_png(url).size == (64, 64)
    with pytest.raises(InvalidRequest) as refused:
        user.run("with-model", {"checkpoint": "not a url"})
    assert refused.value.details[0]["field"] == "body.inputs.checkpoint"
    assert [d["name"] for d in user.deployments() if not d["builtin"]] == ["with-model"]
    user.delete_deployment("with-model")


def test_a_built_in_runs_through_the_deployments_route(user: Client, checkpoint_url: str) -> None:
    params = {"prompt": "a lighthouse", "checkpoint_url": checkpoint_url, "steps": 2}
    params |= {"width": 64, "height": 64, "seed": 7}

    job = user.wait(user.run("sd15", params)["job_id"], timeout=60)

    assert job["status"] == "completed", job
    assert job["deployment"] == {"name": "sd15", "version": 1}
    assert fetch_png(job["outputs"]["images"][0]).size == (64, 64)
