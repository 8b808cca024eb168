"""Simulated model pipelines: progress, preview frames and pictures, against the sd15 recording."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image

from fakecomfy import RunningFakeComfy, placeholder_safetensors, start_fakecomfy
from tests.fakecomfy_support import (
    Message,
    Run,
    run_prompt,
    sd15_graph,
    sd15_recording,
    summarize,
    with_sorted_cached_nodes,
)


def place_model(comfy: RunningFakeComfy, folder: str, name: str) -> None:
    path = comfy.root / "models" / folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(placeholder_safetensors())


@pytest.fixture
def comfy(tmp_path: Path) -> Iterator[RunningFakeComfy]:
    with start_fakecomfy(tmp_path / "comfy", step_seconds=0.005, previews=True) as running:
        place_model(running, "checkpoints", "sd15.safetensors")
        yield running


def saved_image(comfy: RunningFakeComfy, run: Run, node: str) -> Image.Image:
    [image] = run.history[run.prompt_id]["outputs"][node]["images"]
    response = requests.get(f"{comfy.url}/view", params=image, timeout=10)
    return Image.open(io.BytesIO(response.content))


def previews(messages: list[Message]) -> list[Message]:
    return [m for m in messages if m["type"] == "binary"]


def test_an_sd15_graph_runs_with_the_recorded_progress_and_preview_frames(
    comfy: RunningFakeComfy,
) -> None:
    # given: the two recorded runs (the second with the handshake and the model cached)
    recorded = sd15_recording()

    # when: the same graph runs twice, like the recording
    plain = run_prompt(comfy, sd15_graph("sd15.safetensors", 1, "probe_sd15_seed1"))
    flagged = run_prompt(
        comfy, sd15_graph("sd15.safetensors", 2, "probe_sd15_seed2"), handshake=True
    )

    # then: the message sequences, progress, frames and outputs match the recording
    for run, expected in zip((plain, flagged), recorded, strict=True):
        sequence = [with_sorted_cached_nodes(label) for label in expected["summary"]["sequence"]]
        assert summarize(run.messages) == sequence
        progress = [
            (m["data"]["value"], m["data"]["max"], m["data"]["node"])
            for m in run.messages
            if m["type"] == "progress"
        ]
        assert progress == [tuple(p[:3]) for p in expected["summary"]["progress"]]
        assert run.history[run.prompt_id]["outputs"] == expected["history_outputs"]
        assert run.history[run.prompt_id]["status"]["status_str"] == "success"
        for frame, recorded_frame in zip(
            previews(run.messages), expected["summary"]["previews"], strict=True
        ):
            picture = Image.open(io.BytesIO(frame["image"]))
            assert frame["event"] == recorded_frame["event"]
            assert (picture.format, list(picture.size)) == ("JPEG", recorded_frame["size"])
            if recorded_frame["metadata"] is not None:
                metadata = {**recorded_frame["metadata"], "prompt_id": run.prompt_id}
                assert frame["metadata"] == metadata
            else:
                assert frame["format"] == 1  # JPEG


def test_no_preview_frames_are_sent_unless_previews_are_on(tmp_path: Path) -> None:
    # given: a server started without previews (ComfyUI without --preview-method)
    with start_fakecomfy(tmp_path / "quiet", step_seconds=0.001) as comfy:
        place_model(comfy, "checkpoints", "sd15.safetensors")

        # when
        run = run_prompt(comfy, sd15_graph("sd15.safetensors", 1, "quiet"), handshake=True)

    # then
    assert previews(run.messages) == []
    assert [m["data"]["value"] for m in run.messages if m["type"] == "progress"] == [1, 2, 3]


def test_the_decoded_picture_has_the_latent_size_and_depends_on_seed_and_text(
    comfy: RunningFakeComfy,
) -> None:
    # given
    def graph(seed: int, text: str) -> dict[str, Any]:
        built = sd15_graph("sd15.safetensors", seed, f"s{seed}", steps=1)
        built["5"]["inputs"].update(width=96, height=64)
        built["6"]["inputs"]["text"] = text
        return built

    # when
    first = saved_image(comfy, run_prompt(comfy, graph(1, "a cat")), "9")
    again = saved_image(comfy, run_prompt(comfy, graph(1, "a cat")), "9")
    other_seed = saved_image(comfy, run_prompt(comfy, graph(2, "a cat")), "9")
    other_text = saved_image(comfy, run_prompt(comfy, graph(1, "a dog")), "9")

    # then
    assert first.size == (96, 64)
    assert first.tobytes() == again.tobytes()
    assert first.tobytes() != other_seed.tobytes()
    assert first.tobytes() != other_text.tobytes()


def test_a_flux_style_custom_sampling_graph_runs(comfy: RunningFakeComfy) -> None:
    # given: split model files, as a Flux workflow loads them
    place_model(comfy, "diffusion_models", "flux1-dev.safetensors")
    place_model(comfy, "clip", "clip_l.safetensors")  # the legacy folder still counts
    place_model(comfy, "text_encoders", "t5xxl.safetensors")
    place_model(comfy, "vae", "ae.safetensors")
    graph = {
        "1": {
            "class_type": "UNETLoader",
            "inputs": {"unet_name": "flux1-dev.safetensors", "weight_dtype": "default"},
        },
        "2": {
            "class_type": "DualCLIPLoader",
            "inputs": {
                "clip_name1": "clip_l.safetensors",
                "clip_name2": "t5xxl.safetensors",
                "type": "flux",
            },
        },
        "3": {"class_type": "VAELoader", "inputs": {"vae_name": "ae.safetensors"}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["2", 0], "text": "a fox"}},
        "5": {"class_type": "FluxGuidance", "inputs": {"conditioning": ["4", 0], "guidance": 3.5}},
        "6": {
            "class_type": "ModelSamplingFlux",
            "inputs": {
                "model": ["1", 0],
                "max_shift": 1.15,
                "base_shift": 0.5,
                "width": 128,
                "height": 64,
            },
        },
        "7": {"class_type": "BasicGuider", "inputs": {"model": ["6", 0], "conditioning": ["5", 0]}},
        "8": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
        "9": {
            "class_type": "BasicScheduler",
            "inputs": {"model": ["6", 0], "scheduler": "simple", "steps": 4, "denoise": 1.0},
        },
        "10": {"class_type": "RandomNoise", "inputs": {"noise_seed": 7}},
        "11": {
            "class_type": "EmptySD3LatentImage",
            "inputs": {"width": 128, "height": 64, "batch_size": 1},
        },
        "12": {
            "class_type": "SamplerCustomAdvanced",
            "inputs": {
                "noise": ["10", 0],
                "guider": ["7", 0],
                "sampler": ["8", 0],
                "sigmas": ["9", 0],
                "latent_image": ["11", 0],
            },
        },
        "13": {"class_type": "VAEDecode", "inputs": {"samples": ["12", 0], "vae": ["3", 0]}},
        "14": {"class_type": "SaveImage", "inputs": {"images": ["13", 0], "filename_prefix": "f"}},
    }

    # when
    run = run_prompt(comfy, graph)

    # then
    assert run.history[run.prompt_id]["status"]["status_str"] == "success"
    progress = [m["data"] for m in run.messages if m["type"] == "progress"]
    assert [(p["value"], p["max"], p["node"]) for p in progress] == [
        (n, 4, "12") for n in (1, 2, 3, 4)
    ]
    assert saved_image(comfy, run, "14").size == (128, 64)


def test_a_lora_and_an_upscale_model_are_applied(comfy: RunningFakeComfy) -> None:
    # given
    place_model(comfy, "loras", "style/detail.safetensors")
    place_model(comfy, "upscale_models", "RealESRGAN_x2.safetensors")
    graph = sd15_graph("sd15.safetensors", 1, "up", steps=1)
    graph["10"] = {
        "class_type": "LoraLoader",
        "inputs": {
            "model": ["4", 0],
            "clip": ["4", 1],
            "lora_name": "style/detail.safetensors",
            "strength_model": 0.8,
            "strength_clip": 0.8,
        },
    }
    graph["3"]["inputs"]["model"] = ["10", 0]
    graph["11"] = {
        "class_type": "UpscaleModelLoader",
        "inputs": {"model_name": "RealESRGAN_x2.safetensors"},
    }
    graph["12"] = {
        "class_type": "ImageUpscaleWithModel",
        "inputs": {"upscale_model": ["11", 0], "image": ["8", 0]},
    }
    graph["9"]["inputs"]["images"] = ["12", 0]

    # when
    run = run_prompt(comfy, graph)

    # then
    assert saved_image(comfy, run, "9").size == (256, 256)
