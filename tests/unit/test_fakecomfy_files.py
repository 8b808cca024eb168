"""Files: saving and viewing images, model and input listings through symlinks, uploads."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image, PngImagePlugin

from fakecomfy import RunningFakeComfy, start_fakecomfy
from tests.fakecomfy_support import recording, run_prompt
from tests.support import basic_graph


@pytest.fixture
def comfy(tmp_path: Path) -> Iterator[RunningFakeComfy]:
    with start_fakecomfy(tmp_path / "comfy", step_seconds=0.01) as running:
        yield running


def view(comfy: RunningFakeComfy, **params: str) -> requests.Response:
    return requests.get(f"{comfy.url}/view", params=params, timeout=10)


def checkpoint_choices(comfy: RunningFakeComfy) -> Any:
    info = requests.get(f"{comfy.url}/object_info/CheckpointLoaderSimple", timeout=10).json()
    return info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"]


def listed(comfy: RunningFakeComfy, folder: str) -> Any:
    return requests.get(f"{comfy.url}/models/{folder}", timeout=10).json()


def test_a_saved_image_is_a_real_png_viewable_as_recorded(comfy: RunningFakeComfy) -> None:
    # given
    recorded = recording("view")
    run = run_prompt(comfy, basic_graph())
    [image] = run.history[run.prompt_id]["outputs"]["3"]["images"]

    # when
    response = view(comfy, **image)

    # then: a 64×64 white (inverted black) PNG carrying the prompt, as ComfyUI saves it
    picture = Image.open(io.BytesIO(response.content))
    assert isinstance(picture, PngImagePlugin.PngImageFile)
    assert response.status_code == recorded["status"]
    assert response.headers["Content-Type"] == recorded["content_type"]
    assert [picture.format, list(picture.size), picture.mode] == [
        "PNG",
        recorded["size"],
        recorded["mode"],
    ]
    assert picture.getpixel((0, 0)) == tuple(recorded["pixel00"])
    assert sorted(picture.text) == recorded["png_text_keys"]
    assert (comfy.root / "output" / image["filename"]).is_file()


def test_a_prefix_with_folders_saves_into_a_subfolder(comfy: RunningFakeComfy) -> None:
    # given
    graph = basic_graph()
    graph["3"]["inputs"]["filename_prefix"] = "jobs/j-1/out"

    # when
    run = run_prompt(comfy, graph)

    # then
    [image] = run.history[run.prompt_id]["outputs"]["3"]["images"]
    assert image == {"filename": "out_00001_.png", "subfolder": "jobs/j-1", "type": "output"}
    assert view(comfy, **image).status_code == 200


def test_a_prefix_escaping_the_output_folder_fails_at_run_time(comfy: RunningFakeComfy) -> None:
    # given
    graph = basic_graph()
    graph["3"]["inputs"]["filename_prefix"] = "../../escaped"

    # when
    run = run_prompt(comfy, graph)

    # then
    [error] = [m["data"] for m in run.messages if m["type"] == "execution_error"]
    assert (error["node_type"], error["exception_type"]) == ("SaveImage", "Exception")
    assert "outside the output folder" in error["exception_message"]


def test_a_preview_image_goes_to_temp_with_a_random_infix(comfy: RunningFakeComfy) -> None:
    # given
    graph = basic_graph()
    graph["3"] = {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}}

    # when
    run = run_prompt(comfy, graph)

    # then
    [image] = run.history[run.prompt_id]["outputs"]["3"]["images"]
    name = image["filename"]
    assert (image["type"], image["subfolder"]) == ("temp", "")
    assert name.startswith("ComfyUI_temp_") and name.endswith("_00001_.png") and len(name) == 29
    assert view(comfy, filename=name, type="temp").status_code == 200


def test_view_refuses_bad_names_escaping_subfolders_and_missing_files(
    comfy: RunningFakeComfy,
) -> None:
    # given
    (comfy.root / "output" / "there.png").write_bytes(b"png")

    # when / then
    assert view(comfy, filename="there.png").status_code == 200
    assert view(comfy, filename="../secret.png").status_code == 400
    assert view(comfy, filename="/etc/passwd").status_code == 400
    assert view(comfy, filename="there.png", type="elsewhere").status_code == 400
    assert view(comfy, filename="there.png", subfolder="../..").status_code == 403
    assert view(comfy, filename="missing.png").status_code == 404
    assert view(comfy).status_code == 404


def test_a_symlinked_model_is_listed_without_restart_as_recorded(
    comfy: RunningFakeComfy, tmp_path: Path
) -> None:
    # given: models kept outside the ComfyUI folder, linked in by the agent
    recorded = recording("symlink")
    store = tmp_path / "store"
    (store / "linked").mkdir(parents=True)
    (store / "probe_empty.safetensors").write_bytes(b"")
    checkpoints = comfy.root / "models" / "checkpoints"
    before = (checkpoint_choices(comfy), listed(comfy, "checkpoints"))

    # when: a file link, then a directory link, a file inside it, then both removed
    (checkpoints / "probe_empty.safetensors").symlink_to(store / "probe_empty.safetensors")
    after_link = (checkpoint_choices(comfy), listed(comfy, "checkpoints"))
    (checkpoints / "linked_dir").symlink_to(store / "linked", target_is_directory=True)
    after_dir = listed(comfy, "checkpoints")
    (store / "linked" / "inner.ckpt").write_bytes(b"x")
    after_inner = listed(comfy, "checkpoints")
    (checkpoints / "probe_empty.safetensors").unlink()
    (checkpoints / "linked_dir").unlink()
    after_removal = listed(comfy, "checkpoints")

    # then
    assert before == (
        recorded["before_object_info_ckpt_names"],
        recorded["before_models_checkpoints"],
    )
    assert after_link == (
        recorded["after_object_info_ckpt_names"],
        recorded["after_models_checkpoints"],
    )
    assert after_dir == recorded["after_dir_symlink_empty"]
    assert after_inner == recorded["after_file_added_inside_linked_dir"]
    assert after_removal == recorded["after_removal"]


def test_listings_skip_dangling_links_and_other_extensions_and_merge_legacy_folders(
    comfy: RunningFakeComfy, tmp_path: Path
) -> None:
    # given
    models = comfy.root / "models"
    (models / "checkpoints" / "gone.safetensors").symlink_to(tmp_path / "nowhere.safetensors")
    (models / "checkpoints" / "notes.txt").write_text("not a model")
    (models / "checkpoints" / "UPPER.SAFETENSORS").write_bytes(b"x")
    (models / "clip").mkdir()
    (models / "clip" / "clip_l.safetensors").write_bytes(b"x")
    (models / "text_encoders" / "t5.sft").write_bytes(b"x")

    # when
    checkpoints = listed(comfy, "checkpoints")
    text_encoders = listed(comfy, "text_encoders")

    # then
    assert checkpoints == ["UPPER.SAFETENSORS"]
    assert text_encoders == ["clip_l.safetensors", "t5.sft"]


def test_loadimage_offers_and_loads_the_images_of_the_input_folder(
    comfy: RunningFakeComfy, tmp_path: Path
) -> None:
    # given: images in input (one through a symlink), a non-image, a subfolder, a dangling link
    inputs = comfy.root / "input"
    Image.new("RGBA", (40, 30), (255, 0, 0, 0)).save(tmp_path / "outside.png")
    (inputs / "linked.png").symlink_to(tmp_path / "outside.png")
    Image.new("RGB", (8, 8)).save(inputs / "b.jpg")
    (inputs / "notes.txt").write_text("x")
    (inputs / "sub").mkdir()
    Image.new("RGB", (8, 8)).save(inputs / "sub" / "c.png")
    (inputs / "dangling.png").symlink_to(tmp_path / "missing.png")
    graph = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "linked.png"}},
        "2": {"class_type": "MaskToImage", "inputs": {"mask": ["1", 1]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "img"}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "mask"}},
    }

    # when
    info = requests.get(f"{comfy.url}/object_info/LoadImage", timeout=10).json()
    run = run_prompt(comfy, graph)

    # then: top-level images only, sorted; the picture and its mask (1 − alpha) come through
    assert info["LoadImage"]["input"]["required"]["image"] == [
        ["b.jpg", "linked.png"],
        {"image_upload": True},
    ]
    outputs = run.history[run.prompt_id]["outputs"]
    picture = Image.open(comfy.root / "output" / outputs["3"]["images"][0]["filename"])
    mask = Image.open(comfy.root / "output" / outputs["4"]["images"][0]["filename"])
    assert picture.size == mask.size == (40, 30)
    assert mask.getpixel((0, 0)) == (255, 255, 255)


def test_an_uploaded_image_lands_in_input_and_a_clash_gets_a_new_name(
    comfy: RunningFakeComfy,
) -> None:
    # given
    def upload(content: bytes) -> Any:
        files = {"image": ("up.png", content, "image/png")}
        return requests.post(f"{comfy.url}/upload/image", files=files, timeout=10).json()

    # when
    first = upload(b"one")
    same = upload(b"one")
    different = upload(b"two")

    # then
    assert first == same == {"name": "up.png", "subfolder": "", "type": "input"}
    assert different["name"] == "up (1).png"
    assert (comfy.root / "input" / "up (1).png").read_bytes() == b"two"


def test_an_animated_webp_holds_every_frame_of_the_batch(comfy: RunningFakeComfy) -> None:
    # given: three different frames (the encoder merges identical consecutive ones)
    graph = basic_graph()
    graph["4"] = {
        "class_type": "EmptyImage",
        "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0xFF0000},
    }
    graph["5"] = {"class_type": "ImageBatch", "inputs": {"image1": ["1", 0], "image2": ["4", 0]}}
    graph["6"] = {"class_type": "ImageBatch", "inputs": {"image1": ["5", 0], "image2": ["2", 0]}}
    graph["3"] = {
        "class_type": "SaveAnimatedWEBP",
        "inputs": {
            "images": ["6", 0],
            "filename_prefix": "anim",
            "fps": 6.0,
            "lossless": False,
            "quality": 80,
            "method": "default",
        },
    }

    # when
    run = run_prompt(comfy, graph)

    # then
    output = run.history[run.prompt_id]["outputs"]["3"]
    assert output["animated"] == [True]
    [image] = output["images"]
    with Image.open(comfy.root / "output" / image["filename"]) as animation:
        assert (animation.format, getattr(animation, "n_frames", 1)) == ("WEBP", 3)
