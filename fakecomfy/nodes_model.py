"""Model nodes, simulated: loaders check the file, the rest pass deterministic placeholders.

A loader fails the way ComfyUI does when its file is missing, empty or unreadable; it never
reads the weights. Samplers take ``steps × step_seconds``, report every step (and a preview
when previews are on) and check for interruption between steps, as ComfyUI's do.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

from PIL import Image

from fakecomfy.node_api import NodeContext, NodeOutput, ReportedError
from fakecomfy.nodes_image import rescale
from fakecomfy.values import (
    Conditioning,
    ImageBatch,
    Latent,
    ModelHandle,
    SamplerParts,
    fingerprint,
    preview_picture,
    render_picture,
)

SAFETENSORS_ERROR = "safetensors._safetensors_rust.SafetensorError"
SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
MAX_SAFETENSORS_HEADER = 100_000_000  # the safetensors library's own limit


def _header_error(reason: str) -> ReportedError:
    return ReportedError(f"Error while deserializing header: {reason}", SAFETENSORS_ERROR)


def check_weights(path: Path) -> None:
    """Fail as loading the file would: an empty or truncated file, a broken header.

    Only the header is read; a ``.safetensors`` file needs a well-formed one (8-byte length,
    then a JSON object), any other weights file just needs to be non-empty.
    """
    with path.open("rb") as stream:
        head = stream.read(8)
        if not path.name.lower().endswith(SAFETENSORS_SUFFIXES):
            if not head:
                raise EOFError("Ran out of input")
            return
        if len(head) < 8:
            raise _header_error("header too small")
        length = int.from_bytes(head, "little")
        if length > MAX_SAFETENSORS_HEADER:
            raise _header_error("header too large")
        header = stream.read(length)
    if len(header) < length:
        raise _header_error("invalid header length")
    if not header.startswith(b"{"):
        raise _header_error("invalid header start")
    try:
        parsed = json.loads(header)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        raise _header_error("invalid header deserialization")


def placeholder_safetensors(metadata: dict[str, str] | None = None) -> bytes:
    """The smallest file a loader accepts: a safetensors header and no tensors."""
    header = json.dumps({"__metadata__": metadata or {"format": "pt"}}).encode("utf-8")
    return len(header).to_bytes(8, "little") + header


def _open_model(ctx: NodeContext, folder: str, name: str) -> str:
    path = ctx.folders.model_path(folder, name)
    if path is None:
        raise FileNotFoundError(f"Model in folder '{folder}' with filename '{name}' not found.")
    check_weights(path)
    return name


def checkpoint_loader_simple(ctx: NodeContext, ckpt_name: str) -> NodeOutput:
    name = _open_model(ctx, "checkpoints", ckpt_name)
    return NodeOutput(
        (ModelHandle("MODEL", name), ModelHandle("CLIP", name), ModelHandle("VAE", name))
    )


def lora_loader(
    ctx: NodeContext,
    model: ModelHandle,
    clip: ModelHandle,
    lora_name: str,
    strength_model: float,
    strength_clip: float,
) -> NodeOutput:
    if strength_model == 0 and strength_clip == 0:  # ComfyUI skips loading then
        return NodeOutput((model, clip))
    name = _open_model(ctx, "loras", lora_name)
    return NodeOutput(
        (
            model.patched(f"lora {name}@{strength_model}"),
            clip.patched(f"lora {name}@{strength_clip}"),
        )
    )


def lora_loader_model_only(
    ctx: NodeContext, model: ModelHandle, lora_name: str, strength_model: float
) -> NodeOutput:
    if strength_model == 0:
        return NodeOutput((model,))
    name = _open_model(ctx, "loras", lora_name)
    return NodeOutput((model.patched(f"lora {name}@{strength_model}"),))


def vae_loader(ctx: NodeContext, vae_name: str) -> NodeOutput:
    if vae_name == "pixel_space":
        return NodeOutput((ModelHandle("VAE", vae_name),))
    return NodeOutput((ModelHandle("VAE", _open_model(ctx, "vae", vae_name)),))


def unet_loader(ctx: NodeContext, unet_name: str, weight_dtype: str = "default") -> NodeOutput:
    name = _open_model(ctx, "diffusion_models", unet_name)
    return NodeOutput((ModelHandle("MODEL", name, (f"dtype {weight_dtype}",)),))


def clip_loader(
    ctx: NodeContext, clip_name: str, type: str = "stable_diffusion", device: str = "default"
) -> NodeOutput:
    name = _open_model(ctx, "text_encoders", clip_name)
    return NodeOutput((ModelHandle("CLIP", name, (f"type {type}",)),))


def dual_clip_loader(
    ctx: NodeContext, clip_name1: str, clip_name2: str, type: str, device: str = "default"
) -> NodeOutput:
    first = _open_model(ctx, "text_encoders", clip_name1)
    second = _open_model(ctx, "text_encoders", clip_name2)
    return NodeOutput((ModelHandle("CLIP", f"{first}+{second}", (f"type {type}",)),))


def control_net_loader(ctx: NodeContext, control_net_name: str) -> NodeOutput:
    return NodeOutput(
        (ModelHandle("CONTROL_NET", _open_model(ctx, "controlnet", control_net_name)),)
    )


def upscale_model_loader(ctx: NodeContext, model_name: str) -> NodeOutput:
    name = _open_model(ctx, "upscale_models", model_name)
    return NodeOutput((ModelHandle("UPSCALE_MODEL", name),))


def clip_vision_loader(ctx: NodeContext, clip_name: str) -> NodeOutput:
    return NodeOutput((ModelHandle("CLIP_VISION", _open_model(ctx, "clip_vision", clip_name)),))


def clip_text_encode(ctx: NodeContext, clip: ModelHandle, text: str) -> NodeOutput:
    return NodeOutput((Conditioning(text, str(clip)),))


def clip_set_last_layer(ctx: NodeContext, clip: ModelHandle, stop_at_clip_layer: int) -> NodeOutput:
    return NodeOutput((clip.patched(f"last layer {stop_at_clip_layer}"),))


def conditioning_zero_out(ctx: NodeContext, conditioning: Conditioning) -> NodeOutput:
    return NodeOutput((conditioning.with_extra("zeroed"),))


def flux_guidance(ctx: NodeContext, conditioning: Conditioning, guidance: float) -> NodeOutput:
    return NodeOutput((conditioning.with_extra(f"guidance {guidance}"),))


def control_net_apply_advanced(
    ctx: NodeContext,
    positive: Conditioning,
    negative: Conditioning,
    control_net: ModelHandle,
    image: ImageBatch,
    strength: float,
    start_percent: float,
    end_percent: float,
    vae: ModelHandle | None = None,
) -> NodeOutput:
    if strength == 0:
        return NodeOutput((positive, negative))
    extra = f"control {control_net.name}@{strength} {start_percent}-{end_percent}"
    return NodeOutput((positive.with_extra(extra), negative.with_extra(extra)))


def model_sampling_flux(
    ctx: NodeContext,
    model: ModelHandle,
    max_shift: float,
    base_shift: float,
    width: int,
    height: int,
) -> NodeOutput:
    return NodeOutput((model.patched(f"flux shift {max_shift}/{base_shift} {width}x{height}"),))


def empty_latent_image(
    ctx: NodeContext, width: int, height: int, batch_size: int = 1
) -> NodeOutput:
    return NodeOutput((Latent(width, height, batch_size, 4),))


def empty_sd3_latent_image(
    ctx: NodeContext, width: int, height: int, batch_size: int = 1
) -> NodeOutput:
    return NodeOutput((Latent(width, height, batch_size, 16),))


def _sample(ctx: NodeContext, latent: Latent, steps: int, *recipe: Any) -> Latent:
    """Spend ``steps`` steps turning ``latent`` into the one ``recipe`` determines."""
    target = fingerprint(latent.identity, *map(str, recipe))
    for step in range(1, steps + 1):
        time.sleep(ctx.step_seconds)
        preview = preview_picture(latent, target, step, steps) if ctx.previews else None
        ctx.report_step(step, steps, preview)
    return Latent(latent.width, latent.height, latent.batch, latent.channels, target)


def ksampler(
    ctx: NodeContext,
    model: ModelHandle,
    seed: int,
    steps: int,
    cfg: float,
    sampler_name: str,
    scheduler: str,
    positive: Conditioning,
    negative: Conditioning,
    latent_image: Latent,
    denoise: float = 1.0,
) -> NodeOutput:
    recipe = (model, seed, steps, cfg, sampler_name, scheduler, positive, negative, denoise)
    return NodeOutput((_sample(ctx, latent_image, steps, *recipe),))


def ksampler_advanced(
    ctx: NodeContext,
    model: ModelHandle,
    add_noise: str,
    noise_seed: int,
    steps: int,
    cfg: float,
    sampler_name: str,
    scheduler: str,
    positive: Conditioning,
    negative: Conditioning,
    latent_image: Latent,
    start_at_step: int,
    end_at_step: int,
    return_with_leftover_noise: str,
) -> NodeOutput:
    # ComfyUI slices the schedule: only the steps between start and end are run and counted.
    run = max(0, min(end_at_step, steps) - start_at_step)
    recipe: tuple[Any, ...] = (model, add_noise, noise_seed, steps, cfg, sampler_name, scheduler)
    recipe += (positive, negative, start_at_step, end_at_step, return_with_leftover_noise)
    return NodeOutput((_sample(ctx, latent_image, run, *recipe),))


def random_noise(ctx: NodeContext, noise_seed: int) -> NodeOutput:
    return NodeOutput((SamplerParts("NOISE", detail=(noise_seed,)),))


def ksampler_select(ctx: NodeContext, sampler_name: str) -> NodeOutput:
    return NodeOutput((SamplerParts("SAMPLER", detail=(sampler_name,)),))


def basic_scheduler(
    ctx: NodeContext, model: ModelHandle, scheduler: str, steps: int, denoise: float
) -> NodeOutput:
    run = steps if denoise > 0 else 0  # denoise 0 gives an empty schedule: nothing to run
    return NodeOutput((SamplerParts("SIGMAS", run, (str(model), scheduler, steps, denoise)),))


def basic_guider(ctx: NodeContext, model: ModelHandle, conditioning: Conditioning) -> NodeOutput:
    return NodeOutput((SamplerParts("GUIDER", detail=(str(model), str(conditioning))),))


def sampler_custom_advanced(
    ctx: NodeContext,
    noise: SamplerParts,
    guider: SamplerParts,
    sampler: SamplerParts,
    sigmas: SamplerParts,
    latent_image: Latent,
) -> NodeOutput:
    result = _sample(ctx, latent_image, sigmas.steps, noise, guider, sampler, sigmas)
    return NodeOutput((result, result))


def vae_decode(ctx: NodeContext, samples: Latent, vae: ModelHandle) -> NodeOutput:
    """A picture of the latent's size whose colours come from the latent's content."""
    frame = render_picture(samples.width, samples.height, samples.identity)
    return NodeOutput((ImageBatch((frame,) * samples.batch),))


def vae_encode(ctx: NodeContext, pixels: ImageBatch, vae: ModelHandle) -> NodeOutput:
    width, height = pixels.size
    thumbnails = [f.resize((8, 8), Image.Resampling.BOX).tobytes() for f in pixels.frames]
    identity = fingerprint("encoded", str(vae), *thumbnails)
    return NodeOutput((Latent(width, height, len(pixels.frames), 4, identity),))


def image_upscale_with_model(
    ctx: NodeContext, upscale_model: ModelHandle, image: ImageBatch
) -> NodeOutput:
    """Upscale by the factor the model's name announces (``4x_…``, ``RealESRGAN_x2``), else 4."""
    match = re.search(r"(\d)x|x(\d)", upscale_model.name, re.IGNORECASE)
    scale = max(1, int(match.group(1) or match.group(2))) if match else 4
    width, height = (side * scale for side in image.size)
    frames = tuple(rescale(f, width, height, "lanczos", "disabled") for f in image.frames)
    return NodeOutput((ImageBatch(frames),))
