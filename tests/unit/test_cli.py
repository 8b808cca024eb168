"""The `comfyfleet validate` and `comfyfleet template` commands: output and exit codes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from comfyfleet.cli import main
from tests.support import COMFYUI_FIXTURES, basic_graph

EXAMPLES = Path(__file__).parents[2] / "examples"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def write(tmp_path: Path, document: Any, name: str = "wf.json") -> str:
    path = tmp_path / name
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    return str(path)


def test_validate_a_valid_workflow_exits_0_and_lists_models(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    graph = basic_graph()
    graph["9"] = {
        "class_type": "LoraLoaderModelOnly",
        "inputs": {"lora_name": "https://huggingface.co/a/b/resolve/main/l.safetensors"},
    }

    code, out, _ = run(capsys, "validate", write(tmp_path, graph))

    report = json.loads(out)
    assert code == 0
    assert report["ok"] is True and report["errors"] == []
    [model] = report["models"]
    assert set(model) == {"url", "key", "folder", "filename"}
    assert model["folder"] == "loras"


def test_validate_an_invalid_workflow_exits_1_with_errors(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    graph = basic_graph()
    graph["1"]["inputs"]["width"] = 0

    code, out, _ = run(
        capsys,
        "validate",
        write(tmp_path, graph),
        "--catalogue",
        str(COMFYUI_FIXTURES / "object_info_core.json"),
    )

    assert code == 1
    assert json.loads(out)["errors"][0]["code"] == "value_out_of_range"


def test_validate_reads_a_request_body_with_its_manifest(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    body = {"prompt": basic_graph(), "models": [{"url": "http://x/y", "folder": "loras"}]}

    code, out, _ = run(capsys, "validate", write(tmp_path, body))

    assert code == 1
    assert json.loads(out)["errors"][0]["input"] == "models[0].url"


@pytest.mark.parametrize("content", ["{not json", None])
def test_validate_exits_2_when_the_file_cannot_be_read_or_parsed(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: str | None
) -> None:
    path = write(tmp_path, content) if content else str(tmp_path / "missing.json")

    code, out, err = run(capsys, "validate", path)

    assert code == 2 and out == ""
    assert "comfyfleet:" in err


def test_validate_exits_2_on_an_unreadable_catalogue(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run(
        capsys,
        "validate",
        write(tmp_path, basic_graph()),
        "--catalogue",
        write(tmp_path, "[1, 2]", "cat.json"),
    )

    assert code == 2 and "catalogue" in err


def test_validate_exits_2_on_bad_settings(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COMFYFLEET_MAX_WORKFLOW_NODES", "many")

    code, _, err = run(capsys, "validate", write(tmp_path, basic_graph()))

    assert code == 2 and "COMFYFLEET_MAX_WORKFLOW_NODES" in err


def test_the_examples_validate_against_the_core_catalogue(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for example in sorted(EXAMPLES.glob("*.json")):
        code, out, _ = run(capsys, "validate", str(example), "--catalogue", "core")
        assert code == 0, (example.name, out)


def test_template_prints_a_graph_from_flags(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys,
        "template",
        "sd15",
        "--prompt",
        "a cat",
        "--width",
        "640",
        "--seed",
        "9",
        "--lora",
        "https://civitai.com/api/download/models/1@0.5",
    )

    graph = json.loads(out)
    assert code == 0
    [sampler] = [n for n in graph.values() if n["class_type"] == "KSampler"]
    [latent] = [n for n in graph.values() if n["class_type"] == "EmptyLatentImage"]
    [lora] = [n for n in graph.values() if n["class_type"] == "LoraLoader"]
    assert sampler["inputs"]["seed"] == 9 and latent["inputs"]["width"] == 640
    assert lora["inputs"]["strength_model"] == 0.5


def test_template_takes_json_params(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "template", "flux", "--params", '{"prompt": "p", "guidance": 2}')

    assert code == 0
    assert any(n["inputs"].get("guidance") == 2 for n in json.loads(out).values())


@pytest.mark.parametrize(
    "argv",
    [
        ("template", "sd15", "--width", "640"),
        ("template", "sd15", "--prompt", "x", "--width", "641"),
        ("template", "sd3", "--prompt", "x"),
        ("template", "sd15", "--params", "[1"),
        ("template",),
    ],
)
def test_template_exits_2_on_bad_parameters(
    capsys: pytest.CaptureFixture[str], argv: tuple[str, ...]
) -> None:
    code, out, err = run(capsys, *argv)

    assert code == 2 and out == "" and err


def test_template_list(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "template", "--list")

    assert code == 0
    assert [line.split()[0] for line in out.splitlines()] == ["sd15", "sdxl", "flux"]


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys)

    assert code == 2 and "validate" in err
