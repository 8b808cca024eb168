"""Finding model references (loaders and the manifest) and rewriting them to local files."""

from __future__ import annotations

import copy

from comfyfleet.settings import Settings
from comfyfleet.templates import render_template
from comfyfleet.workflow import model_key, rewrite_workflow, validate_workflow
from comfyfleet.workflow.refs import LOADER_INPUTS
from tests.support import basic_graph, checkpoint_graph

HF = "https://huggingface.co/org/repo/resolve/main/"


def test_each_loader_in_the_table_yields_its_folder(settings: Settings) -> None:
    for class_type, inputs in LOADER_INPUTS.items():
        graph = basic_graph()
        for i, (name, _folder) in enumerate(inputs.items()):
            graph[f"L{i}"] = {"class_type": class_type, "inputs": {name: f"{HF}{class_type}{i}.pt"}}

        result = validate_workflow(graph, settings=settings)

        assert result.ok, result.errors
        assert sorted(m.folder for m in result.models) == sorted(inputs.values()), class_type


def test_one_url_used_twice_is_one_download_but_two_folders_are_two_links(
    settings: Settings,
) -> None:
    graph = checkpoint_graph(HF + "m.safetensors")
    graph["9"] = {
        "class_type": "CheckpointLoaderSimple",
        "inputs": {"ckpt_name": HF.replace("resolve", "blob") + "m.safetensors"},
    }
    graph["10"] = {"class_type": "UNETLoader", "inputs": {"unet_name": HF + "m.safetensors"}}

    models = validate_workflow(graph, settings=settings).models

    assert sorted(m.folder for m in models) == ["checkpoints", "diffusion_models"]
    assert len({m.key for m in models}) == 1


def test_the_manifest_names_files_for_custom_nodes(settings: Settings) -> None:
    manifest = [
        {
            "url": HF + "ip.bin",
            "folder": "clip",
            "filename": "ip.bin",
            "size": 10,
            "sha256": "A" * 64,
        },
        {"url": HF + "pose.png", "folder": "input"},
    ]

    models = validate_workflow(basic_graph(), settings=settings, manifest=manifest).models

    first, second = models
    assert (first.folder, first.filename, first.size, first.sha256) == (
        "text_encoders",
        "ip.bin",
        10,
        "a" * 64,
    )
    assert second.folder == "input" and second.filename.endswith(".png")
    assert first.to_dict()["sha256"] == "a" * 64 and "size" not in second.to_dict()


def test_rewrite_names_local_files_and_leaves_the_rest_untouched(settings: Settings) -> None:
    graph = render_template(
        "sd15", {"prompt": "a cat", "seed": 1, "loras": [{"url": HF + "l.safetensors"}]}
    ).graph
    original = copy.deepcopy(graph)
    models = validate_workflow(graph, settings=settings).models
    local = {m.url: m.filename for m in models}

    rewritten = rewrite_workflow(graph, local)

    assert graph == original
    assert rewritten["1"]["inputs"]["ckpt_name"] == models[0].filename
    assert rewritten["2"]["inputs"]["lora_name"] == models[1].filename
    assert rewritten["3"] == graph["3"] and rewritten["3"] is graph["3"]


def test_rewrite_matches_any_spelling_of_the_url(settings: Settings) -> None:
    graph = checkpoint_graph(HF.replace("resolve", "blob") + "m.safetensors")

    rewritten = rewrite_workflow(graph, {HF + "m.safetensors?download=true": "m.safetensors"})

    assert rewritten["4"]["inputs"]["ckpt_name"] == "m.safetensors"


def test_rewrite_replaces_manifest_urls_in_custom_nodes_only_when_listed() -> None:
    url = HF + "ip.bin"
    graph = basic_graph()
    graph["9"] = {"class_type": "IPAdapterModelLoader", "inputs": {"ipadapter_file": url}}

    assert rewrite_workflow(graph, {url: "ip.bin"})["9"]["inputs"]["ipadapter_file"] == url
    listed = rewrite_workflow(graph, {url: "ip.bin"}, manifest=[{"url": url, "folder": "loras"}])
    assert listed["9"]["inputs"]["ipadapter_file"] == "ip.bin"


def test_rewrite_leaves_sites_without_a_local_name() -> None:
    graph = checkpoint_graph(HF + "m.safetensors")

    assert rewrite_workflow(graph, {HF + "other.safetensors": "x"}) == graph
    assert model_key(HF + "m.safetensors") != model_key(HF + "other.safetensors")
