"""Templates build graphs ComfyUI accepts, from validated parameters."""

from __future__ import annotations

from typing import Any

import pytest

from comfyfleet.catalogue import NodeCatalogue
from comfyfleet.settings import Settings
from comfyfleet.templates import (
    MAX_RANDOM_SEED,
    TEMPLATES,
    InvalidTemplateParams,
    UnknownTemplate,
    render_template,
)
from comfyfleet.workflow import validate_workflow

LORA = "https://civitai.com/api/download/models/42"


def nodes_of(graph: dict[str, Any], class_type: str) -> list[dict[str, Any]]:
    return [node for node in graph.values() if node["class_type"] == class_type]


@pytest.mark.parametrize("name", sorted(TEMPLATES))
@pytest.mark.parametrize(
    "params",
    [
        {"prompt": "a lighthouse at dusk"},
        {
            "prompt": "x",
            "width": 768,
            "height": 512,
            "steps": 3,
            "seed": 2**64 - 1,
            "batch_size": 2,
            "loras": [{"url": LORA, "strength": 0.6}, {"url": LORA + "1"}],
        },
    ],
)
def test_every_template_output_passes_catalogue_validation(
    name: str, params: dict[str, Any], settings: Settings, catalogue: NodeCatalogue
) -> None:
    rendered = render_template(name, params)

    result = validate_workflow(rendered.graph, settings=settings, catalogue=catalogue)

    assert result.ok, result.errors
    assert len(nodes_of(rendered.graph, "SaveImage")) == 1
    assert LORA in {m.url for m in result.models} or "loras" not in params


def test_the_seed_is_random_when_omitted_and_returned() -> None:
    seeds = {render_template("sd15", {"prompt": "x"}).seed for _ in range(5)}

    assert len(seeds) > 1
    assert all(0 <= seed < MAX_RANDOM_SEED for seed in seeds)


def test_a_given_seed_and_parameters_reach_the_sampler() -> None:
    rendered = render_template(
        "sdxl", {"prompt": "p", "negative_prompt": "n", "seed": 7, "cfg": 5.5, "steps": 12}
    )
    [sampler] = nodes_of(rendered.graph, "KSampler")

    assert rendered.seed == 7
    assert sampler["inputs"] | {"seed": 7, "cfg": 5.5, "steps": 12} == sampler["inputs"]
    assert sorted(n["inputs"]["text"] for n in nodes_of(rendered.graph, "CLIPTextEncode")) == [
        "n",
        "p",
    ]


def test_flux_uses_guidance_and_its_own_model_files() -> None:
    rendered = render_template("flux", {"prompt": "p", "guidance": 2.5, "seed": 3})
    graph = rendered.graph

    assert nodes_of(graph, "FluxGuidance")[0]["inputs"]["guidance"] == 2.5
    assert nodes_of(graph, "RandomNoise")[0]["inputs"]["noise_seed"] == 3
    assert nodes_of(graph, "DualCLIPLoader")[0]["inputs"]["type"] == "flux"
    assert not nodes_of(graph, "KSampler")


def test_an_optional_vae_replaces_the_checkpoints() -> None:
    vae = "https://huggingface.co/org/vae/resolve/main/vae.safetensors"
    graph = render_template("sd15", {"prompt": "p", "vae_url": vae, "seed": 1}).graph
    [loader] = nodes_of(graph, "VAELoader")
    [decode] = nodes_of(graph, "VAEDecode")

    assert loader["inputs"]["vae_name"] == vae
    assert graph[decode["inputs"]["vae"][0]] is loader


@pytest.mark.parametrize(
    ("name", "params", "field"),
    [
        ("sd15", {}, "prompt"),
        ("sd15", {"prompt": ""}, "prompt"),
        ("sd15", {"prompt": "x", "width": 513}, "width"),
        ("sd15", {"prompt": "x", "height": 4096}, "height"),
        ("sd15", {"prompt": "x", "sampler": "magic"}, "sampler"),
        ("sd15", {"prompt": "x", "seed": -1}, "seed"),
        ("sd15", {"prompt": "x", "guidance": 3}, "guidance"),
        ("flux", {"prompt": "x", "cfg": 3}, "cfg"),
        ("sdxl", {"prompt": "x", "loras": [{"strength": 1}]}, "loras.0.url"),
    ],
)
def test_bad_parameters_name_the_field(name: str, params: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidTemplateParams) as caught:
        render_template(name, params)

    assert field in {problem["field"] for problem in caught.value.errors}


def test_parameters_must_be_an_object() -> None:
    with pytest.raises(InvalidTemplateParams):
        render_template("sd15", ["prompt"])


def test_unknown_template() -> None:
    with pytest.raises(UnknownTemplate, match="sd15"):
        render_template("sd3", {"prompt": "x"})


def test_each_template_publishes_a_json_schema() -> None:
    for template in TEMPLATES.values():
        schema = template.schema()
        assert schema["type"] == "object"
        assert schema["required"] == ["prompt"]
        assert {"prompt", "width", "height", "seed", "loras"} <= set(schema["properties"])
