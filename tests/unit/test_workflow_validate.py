"""One test per error code of the workflow validator, and the cases that must pass."""

from __future__ import annotations

import json
from typing import Any

import pytest

from comfyfleet.catalogue import NodeCatalogue
from comfyfleet.settings import Settings
from comfyfleet.workflow import ErrorCode, ValidationResult, validate_workflow
from comfyfleet.workflow.validate import MAX_REPORTED_ERRORS
from tests.support import basic_graph, checkpoint_graph

HF_CKPT = "https://huggingface.co/org/repo/resolve/main/model.safetensors"


def found(result: ValidationResult) -> set[tuple[str, str | None, str | None]]:
    return {(e.code.value, e.node_id, e.input) for e in result.errors}


# -- passing ---------------------------------------------------------------------------------


def test_the_recorded_basic_graph_is_valid_with_and_without_the_catalogue(
    settings: Settings, catalogue: NodeCatalogue
) -> None:
    assert validate_workflow(basic_graph(), settings=settings).ok
    assert validate_workflow(basic_graph(), settings=settings, catalogue=catalogue).ok


def test_a_loader_url_passes_the_catalogue_and_becomes_a_model(
    settings: Settings, catalogue: NodeCatalogue
) -> None:
    result = validate_workflow(checkpoint_graph(HF_CKPT), settings=settings, catalogue=catalogue)

    assert result.ok, result.errors
    [model] = result.models
    assert (model.url, model.folder) == (HF_CKPT, "checkpoints")
    assert model.filename.endswith(".safetensors") and "/" not in model.filename


def test_values_are_converted_as_comfyui_converts_them(
    settings: Settings, catalogue: NodeCatalogue
) -> None:
    graph = basic_graph()
    graph["1"]["inputs"].update(width="64", height=64.0)  # int("64"), int(64.0) both work

    assert validate_workflow(graph, settings=settings, catalogue=catalogue).ok


def test_a_broken_node_no_output_uses_is_ignored_as_comfyui_ignores_it(
    settings: Settings, catalogue: NodeCatalogue
) -> None:
    graph = basic_graph()
    graph["9"] = {"class_type": "EmptyImage", "inputs": {"width": -5}}

    assert validate_workflow(graph, settings=settings, catalogue=catalogue).ok


def test_an_image_upload_input_accepts_any_safe_file_name(
    settings: Settings, catalogue: NodeCatalogue
) -> None:
    graph = basic_graph()
    graph["1"] = {"class_type": "LoadImage", "inputs": {"image": "uploads/cat.png"}}

    assert validate_workflow(graph, settings=settings, catalogue=catalogue).ok


def test_a_manifest_file_name_satisfies_a_loader_enum(
    settings: Settings, catalogue: NodeCatalogue
) -> None:
    manifest = [{"url": HF_CKPT, "folder": "checkpoints", "filename": "mine.safetensors"}]
    result = validate_workflow(
        checkpoint_graph("mine.safetensors"),
        settings=settings,
        catalogue=catalogue,
        manifest=manifest,
    )

    assert result.ok, result.errors
    assert [m.filename for m in result.models] == ["mine.safetensors"]


def test_a_graph_at_the_node_limit_is_accepted(settings: Settings) -> None:
    graph = basic_graph()
    for i in range(settings.max_workflow_nodes - len(graph)):
        graph[f"x{i}"] = {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}}

    assert validate_workflow(graph, settings=settings).ok


# -- one test per error code -------------------------------------------------------------


@pytest.mark.parametrize("document", [[], "text", 3, None, [{"class_type": "SaveImage"}]])
def test_not_an_object(settings: Settings, document: Any) -> None:
    assert found(validate_workflow(document, settings=settings)) == {("not_an_object", None, None)}


def test_not_an_object_for_a_node_or_its_inputs(settings: Settings) -> None:
    graph = basic_graph()
    graph["2"] = "ImageInvert"
    graph["3"]["inputs"] = [["2", 0]]

    assert {("not_an_object", "2", None), ("not_an_object", "3", None)} <= found(
        validate_workflow(graph, settings=settings)
    )


def test_ui_format_not_supported_with_a_hint_to_export(settings: Settings) -> None:
    ui = {"last_node_id": 3, "nodes": [{"id": 1, "type": "EmptyImage"}], "links": []}

    [error] = validate_workflow(ui, settings=settings).errors

    assert error.code == ErrorCode.UI_FORMAT_NOT_SUPPORTED
    assert "Export (API)" in error.message


def test_too_large(settings: Settings) -> None:
    small = settings.model_copy(update={"max_workflow_bytes": 2048})
    graph = basic_graph()
    graph["1"]["inputs"]["padding"] = "x" * 4096

    assert found(validate_workflow(graph, settings=small)) == {("too_large", None, None)}
    assert found(validate_workflow(basic_graph(), settings=small, size_bytes=5000)) == {
        ("too_large", None, None)
    }


def test_too_many_nodes(settings: Settings) -> None:
    graph = basic_graph()
    for i in range(settings.max_workflow_nodes):
        graph[f"x{i}"] = {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}}

    assert found(validate_workflow(graph, settings=settings)) == {("too_many_nodes", None, None)}


@pytest.mark.parametrize(
    "node", [{"inputs": {}}, {"class_type": "", "inputs": {}}, {"class_type": 7, "inputs": {}}]
)
def test_missing_class_type(settings: Settings, node: dict[str, Any]) -> None:
    graph = basic_graph()
    graph["9"] = node

    assert ("missing_class_type", "9", None) in found(validate_workflow(graph, settings=settings))


@pytest.mark.parametrize(
    "link", [["1"], ["1", 0, 1], [1, 0], ["1", -1], ["1", "0"], ["1", True], ["1", 0.5]]
)
def test_bad_link(settings: Settings, link: list[Any]) -> None:
    graph = basic_graph()
    graph["2"]["inputs"]["image"] = link

    assert ("bad_link", "2", "image") in found(validate_workflow(graph, settings=settings))


def test_link_to_missing_node(settings: Settings) -> None:
    graph = basic_graph()
    graph["2"]["inputs"]["image"] = ["42", 0]

    assert ("link_to_missing_node", "2", "image") in found(
        validate_workflow(graph, settings=settings)
    )


def test_cycle(settings: Settings) -> None:
    graph = basic_graph()
    graph["1"] = {"class_type": "ImageInvert", "inputs": {"image": ["2", 0]}}

    errors = validate_workflow(graph, settings=settings).errors

    assert [e.code for e in errors] == [ErrorCode.CYCLE]
    assert "1" in errors[0].message and "2" in errors[0].message


def test_a_node_linked_to_itself_is_a_cycle(settings: Settings) -> None:
    graph = basic_graph()
    graph["2"]["inputs"]["image"] = ["2", 0]

    assert "cycle" in {e.code.value for e in validate_workflow(graph, settings=settings).errors}


def test_no_output_node(settings: Settings, catalogue: NodeCatalogue) -> None:
    graph = basic_graph()
    del graph["3"]

    assert found(validate_workflow(graph, settings=settings)) == {("no_output_node", None, None)}
    assert found(validate_workflow(graph, settings=settings, catalogue=catalogue)) == {
        ("no_output_node", None, None)
    }
    assert found(validate_workflow({}, settings=settings)) == {("no_output_node", None, None)}


def test_no_output_node_is_not_claimed_for_an_unknown_class_without_a_catalogue(
    settings: Settings,
) -> None:
    graph = basic_graph()
    graph["3"]["class_type"] = "SomeCustomSaver"

    assert validate_workflow(graph, settings=settings).ok


def test_denied_class_type(settings: Settings) -> None:
    graph = basic_graph()
    graph["9"] = {"class_type": "CheckpointSave", "inputs": {}}
    strict = settings.model_copy(update={"denied_class_types": ["ImageInvert"]})

    assert ("denied_class_type", "9", None) in found(validate_workflow(graph, settings=settings))
    assert ("denied_class_type", "2", None) in found(
        validate_workflow(basic_graph(), settings=strict)
    )


@pytest.mark.parametrize(
    "url",
    [
        "http://huggingface.co/a/b/resolve/main/m.safetensors",
        "https://evil.example.com/m.safetensors",
        "https://huggingface.co.evil.com/m.safetensors",
        "https://user:pw@huggingface.co/a/b/resolve/main/m.safetensors",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/m.safetensors",
        "https://2130706433/m.safetensors",
        "https://huggingface.co:8443/a/b/resolve/main/m.safetensors",
        "file:///etc/passwd",
        "s3://someone-elses-bucket/m.safetensors",
        "https://huggingface.co/a b.safetensors",
    ],
)
def test_url_not_allowed(settings: Settings, url: str) -> None:
    result = validate_workflow(checkpoint_graph(url), settings=settings)

    assert ("url_not_allowed", "4", "ckpt_name") in found(result)
    assert result.models == []


def test_url_not_allowed_in_any_input_a_node_could_fetch(settings: Settings) -> None:
    graph = basic_graph()
    graph["9"] = {"class_type": "LoadImageFromUrl", "inputs": {"url": "http://10.0.0.8/x.png"}}

    assert ("url_not_allowed", "9", "url") in found(validate_workflow(graph, settings=settings))


def test_urls_of_allowed_hosts_subdomains_and_the_model_bucket_pass(settings: Settings) -> None:
    for url in [
        HF_CKPT,
        "https://cdn.civitai.com/files/m.safetensors",
        "https://civitai.com/api/download/models/1?type=Model&format=SafeTensor",
        f"s3://{settings.model_bucket_name}/mirror/m.safetensors",
        f"https://{settings.model_bucket_name}.s3.us-east-1.amazonaws.com/m.safetensors",
    ]:
        assert validate_workflow(checkpoint_graph(url), settings=settings).ok, url


@pytest.mark.parametrize(
    ("class_type", "name", "value"),
    [
        ("CheckpointLoaderSimple", "ckpt_name", "../../etc/passwd"),
        ("CheckpointLoaderSimple", "ckpt_name", "/abs/model.safetensors"),
        ("LoraLoader", "lora_name", "a\\..\\b.safetensors"),
        ("LoadImage", "image", "sub/../../secret.png"),
        ("LoadImage", "image", "ComfyUI_00001_.png [output]"),
        ("SaveImage", "filename_prefix", "../outside"),
        ("VAELoader", "vae_name", "vae\x00.pt"),
    ],
)
def test_unsafe_filename(settings: Settings, class_type: str, name: str, value: str) -> None:
    graph = basic_graph()
    graph["9"] = {"class_type": class_type, "inputs": {name: value}}

    assert ("unsafe_filename", "9", name) in found(validate_workflow(graph, settings=settings))


def test_a_plain_model_name_with_a_subfolder_is_safe(settings: Settings) -> None:
    assert validate_workflow(checkpoint_graph("sd15/model.safetensors"), settings=settings).ok


@pytest.mark.parametrize(
    ("manifest", "where"),
    [
        ({"url": HF_CKPT}, "models"),
        (["not an object"], "models[0]"),
        ([{"url": HF_CKPT, "folder": "nowhere"}], "models[0].folder"),
        ([{"folder": "loras"}], "models[0].url"),
        ([{"url": HF_CKPT, "folder": "loras", "sha256": "abc"}], "models[0].sha256"),
        ([{"url": HF_CKPT, "folder": "loras", "size": -1}], "models[0].size"),
        ([{"url": HF_CKPT, "folder": "loras", "filename": "noext"}], "models[0].filename"),
        ([{"url": HF_CKPT, "folder": "loras", "colour": "red"}], "models[0].colour"),
    ],
)
def test_invalid_manifest(settings: Settings, manifest: Any, where: str) -> None:
    result = validate_workflow(basic_graph(), settings=settings, manifest=manifest)

    assert ("invalid_manifest", None, where) in found(result)


def test_manifest_urls_and_file_names_follow_the_same_rules(settings: Settings) -> None:
    manifest = [
        {"url": "http://127.0.0.1/x.safetensors", "folder": "loras"},
        {"url": HF_CKPT, "folder": "loras", "filename": "../x.safetensors"},
    ]

    assert found(validate_workflow(basic_graph(), settings=settings, manifest=manifest)) == {
        ("url_not_allowed", None, "models[0].url"),
        ("unsafe_filename", None, "models[1].filename"),
    }


# -- against the node catalogue ----------------------------------------------------------


def test_unknown_class_type(settings: Settings, catalogue: NodeCatalogue) -> None:
    graph = basic_graph()
    graph["2"]["class_type"] = "NoSuchNode"

    assert found(validate_workflow(graph, settings=settings, catalogue=catalogue)) == {
        ("unknown_class_type", "2", None)
    }


def test_required_input_missing(settings: Settings, catalogue: NodeCatalogue) -> None:
    graph = basic_graph()
    del graph["1"]["inputs"]["height"]

    assert found(validate_workflow(graph, settings=settings, catalogue=catalogue)) == {
        ("required_input_missing", "1", "height")
    }


@pytest.mark.parametrize(
    ("name", "value"),
    [("width", "abc"), ("width", {"a": 1}), ("width", 1e400), ("color", None)],
)
def test_invalid_input_type(
    settings: Settings, catalogue: NodeCatalogue, name: str, value: Any
) -> None:
    graph = basic_graph()
    graph["1"]["inputs"][name] = value

    assert found(validate_workflow(graph, settings=settings, catalogue=catalogue)) == {
        ("invalid_input_type", "1", name)
    }


def test_invalid_input_type_for_float_and_boolean(
    settings: Settings, catalogue: NodeCatalogue
) -> None:
    graph = basic_graph()
    graph["9"] = {
        "class_type": "SaveAnimatedWEBP",
        "inputs": {
            "images": ["2", 0],
            "filename_prefix": "a",
            "fps": "fast",
            "lossless": "false",
            "quality": 80,
            "method": "default",
        },
    }

    assert found(validate_workflow(graph, settings=settings, catalogue=catalogue)) == {
        ("invalid_input_type", "9", "fps"),
        ("invalid_input_type", "9", "lossless"),
    }


@pytest.mark.parametrize(("name", "value"), [("width", 0), ("width", 16385), ("color", -1)])
def test_value_out_of_range(
    settings: Settings, catalogue: NodeCatalogue, name: str, value: int
) -> None:
    graph = basic_graph()
    graph["1"]["inputs"][name] = value

    assert found(validate_workflow(graph, settings=settings, catalogue=catalogue)) == {
        ("value_out_of_range", "1", name)
    }


def test_value_not_in_list(settings: Settings, catalogue: NodeCatalogue) -> None:
    result = validate_workflow(
        checkpoint_graph("does_not_exist.safetensors"), settings=settings, catalogue=catalogue
    )

    assert found(result) == {("value_not_in_list", "4", "ckpt_name")}


def test_value_not_in_list_for_a_plain_enum(settings: Settings, catalogue: NodeCatalogue) -> None:
    graph = basic_graph()
    graph["9"] = {
        "class_type": "ImageScale",
        "inputs": {
            "image": ["1", 0],
            "upscale_method": "magic",
            "width": 8,
            "height": 8,
            "crop": "disabled",
        },
    }
    graph["3"]["inputs"]["images"] = ["9", 0]

    assert found(validate_workflow(graph, settings=settings, catalogue=catalogue)) == {
        ("value_not_in_list", "9", "upscale_method")
    }


def test_link_type_mismatch(settings: Settings, catalogue: NodeCatalogue) -> None:
    graph = checkpoint_graph(HF_CKPT)
    graph["7"]["inputs"]["images"] = ["4", 0]  # MODEL into IMAGE

    assert found(validate_workflow(graph, settings=settings, catalogue=catalogue)) == {
        ("link_type_mismatch", "7", "images")
    }


def test_bad_output_index(settings: Settings, catalogue: NodeCatalogue) -> None:
    graph = basic_graph()
    graph["2"]["inputs"]["image"] = ["1", 3]  # EmptyImage has one output

    assert found(validate_workflow(graph, settings=settings, catalogue=catalogue)) == {
        ("bad_output_index", "2", "image")
    }


def test_type_unions_and_wildcards_link_as_in_comfyui(settings: Settings) -> None:
    catalogue = NodeCatalogue(
        {
            "Source": {"input": {}, "output": ["IMAGE,MASK", "*"], "output_node": False},
            "Sink": {
                "input": {"required": {"a": ["MASK"], "b": ["LATENT"]}},
                "output": [],
                "output_node": True,
            },
        }
    )
    graph = {
        "1": {"class_type": "Source", "inputs": {}},
        "2": {"class_type": "Sink", "inputs": {"a": ["1", 0], "b": ["1", 1]}},
    }

    assert validate_workflow(graph, settings=settings, catalogue=catalogue).ok


def test_too_many_errors_are_capped(settings: Settings) -> None:
    graph = {str(i): {"class_type": "ImageInvert", "inputs": {"image": [i]}} for i in range(300)}

    errors = validate_workflow(graph, settings=settings).errors

    assert len(errors) == MAX_REPORTED_ERRORS + 1
    assert errors[-1].code == ErrorCode.TOO_MANY_ERRORS


def test_errors_serialise_as_the_documented_shape(settings: Settings) -> None:
    graph = basic_graph()
    graph["2"]["inputs"]["image"] = ["42", 0]

    data = validate_workflow(graph, settings=settings).to_dict()

    assert data["ok"] is False
    assert data["errors"] == [
        {
            "code": "link_to_missing_node",
            "node_id": "2",
            "input": "image",
            "message": "links to node '42', which does not exist",
        }
    ]
    json.dumps(data)
