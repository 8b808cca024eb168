"""Pixel nodes, run for real with Pillow: create, transform, load and save images."""

from __future__ import annotations

import hashlib
import json
import random
from typing import Any

from PIL import Image, ImageFilter, ImageOps, ImageSequence
from PIL.PngImagePlugin import PngInfo

from fakecomfy.folders import ComfyFolders, UnsafeSavePath
from fakecomfy.node_api import NodeContext, NodeOutput, ReportedError
from fakecomfy.values import ImageBatch, MaskBatch

RESAMPLING = {
    "nearest-exact": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "area": Image.Resampling.BOX,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}
WEBP_METHODS = {"default": 4, "fastest": 0, "slowest": 6}
# ComfyUI's alphabet for PreviewImage's random infix, typo included.
TEMP_ALPHABET = "abcdefghijklmnopqrstupvxyz"


def rescale(frame: Image.Image, width: int, height: int, method: str, crop: str) -> Image.Image:
    """ComfyUI's ``common_upscale``: optionally crop to the new aspect ratio, then resize."""
    if crop == "center":
        old_width, old_height = frame.size
        old_aspect, new_aspect = old_width / old_height, width / height
        x = y = 0
        if old_aspect > new_aspect:
            x = round((old_width - old_width * (new_aspect / old_aspect)) / 2)
        elif old_aspect < new_aspect:
            y = round((old_height - old_height * (old_aspect / new_aspect)) / 2)
        frame = frame.crop((x, y, old_width - x, old_height - y))
    return frame.resize((width, height), RESAMPLING.get(method, Image.Resampling.BILINEAR))


def empty_image(
    ctx: NodeContext, width: int, height: int, batch_size: int = 1, color: int = 0
) -> NodeOutput:
    rgb = ((color >> 16) & 0xFF, (color >> 8) & 0xFF, color & 0xFF)
    frame = Image.new("RGB", (width, height), rgb)
    return NodeOutput((ImageBatch((frame,) * batch_size),))


def image_invert(ctx: NodeContext, image: ImageBatch) -> NodeOutput:
    return NodeOutput((ImageBatch(tuple(ImageOps.invert(f) for f in image.frames)),))


def image_scale(
    ctx: NodeContext, image: ImageBatch, upscale_method: str, width: int, height: int, crop: str
) -> NodeOutput:
    if width == 0 and height == 0:
        return NodeOutput((image,))
    old_width, old_height = image.size
    if width == 0:
        width = max(1, round(old_width * height / old_height))
    elif height == 0:
        height = max(1, round(old_height * width / old_width))
    frames = tuple(rescale(f, width, height, upscale_method, crop) for f in image.frames)
    return NodeOutput((ImageBatch(frames),))


def image_scale_by(
    ctx: NodeContext, image: ImageBatch, upscale_method: str, scale_by: float
) -> NodeOutput:
    width, height = (round(side * scale_by) for side in image.size)
    frames = tuple(rescale(f, width, height, upscale_method, "disabled") for f in image.frames)
    return NodeOutput((ImageBatch(frames),))


def image_blur(ctx: NodeContext, image: ImageBatch, blur_radius: int, sigma: float) -> NodeOutput:
    if blur_radius == 0:
        return NodeOutput((image,))
    # ComfyUI convolves with a (2r+1)-tap Gaussian of ``sigma``: the kernel bounds the spread.
    blur = ImageFilter.GaussianBlur(min(sigma, float(blur_radius)))
    return NodeOutput((ImageBatch(tuple(f.filter(blur) for f in image.frames)),))


def image_batch(ctx: NodeContext, image1: ImageBatch, image2: ImageBatch) -> NodeOutput:
    second = image2.frames
    if image2.size != image1.size:
        width, height = image1.size
        second = tuple(rescale(f, width, height, "bilinear", "center") for f in second)
    return NodeOutput((ImageBatch(image1.frames + second),))


def solid_mask(ctx: NodeContext, value: float, width: int, height: int) -> NodeOutput:
    level = max(0, min(255, round(value * 255)))
    return NodeOutput((MaskBatch((Image.new("L", (width, height), level),)),))


def mask_to_image(ctx: NodeContext, mask: MaskBatch) -> NodeOutput:
    return NodeOutput((ImageBatch(tuple(f.convert("RGB") for f in mask.frames)),))


def load_image(ctx: NodeContext, image: str) -> NodeOutput:
    """Frames of the input file (all of one size) and masks from their alpha (1 − alpha)."""
    frames: list[Image.Image] = []
    masks: list[Image.Image] = []
    with Image.open(ctx.folders.input_file(image)) as source:
        for raw in ImageSequence.Iterator(source):
            frame = ImageOps.exif_transpose(raw)
            rgb = frame.convert("RGB")
            if frames and rgb.size != frames[0].size:
                continue
            if "A" in frame.getbands():
                mask = ImageOps.invert(frame.getchannel("A"))
            elif frame.mode == "P" and "transparency" in frame.info:
                mask = ImageOps.invert(frame.convert("RGBA").getchannel("A"))
            else:
                mask = Image.new("L", (64, 64), 0)  # ComfyUI's stand-in for "no mask"
            frames.append(rgb)
            masks.append(mask)
            if source.format == "MPO":  # only the first picture of a multi-picture JPEG
                break
    return NodeOutput((ImageBatch(tuple(frames)), MaskBatch(tuple(masks))))


def load_image_fingerprint(folders: ComfyFolders, image: str) -> str:
    """``LoadImage.IS_CHANGED``: the file's SHA-256, so an edited file is loaded again."""
    return hashlib.sha256(folders.input_file(image).read_bytes()).hexdigest()


def _png_metadata(prompt: Any, extra_pnginfo: Any) -> PngInfo:
    info = PngInfo()
    if prompt is not None:
        info.add_text("prompt", json.dumps(prompt))
    if isinstance(extra_pnginfo, dict):
        for key, value in extra_pnginfo.items():
            info.add_text(key, json.dumps(value))
    return info


def _save_pngs(
    ctx: NodeContext,
    images: ImageBatch,
    prefix: str,
    kind: str,
    compress_level: int,
    prompt: Any,
    extra_pnginfo: Any,
) -> NodeOutput:
    base = ctx.folders.output_dir if kind == "output" else ctx.folders.temp_dir
    width, height = images.size
    try:
        target = ctx.folders.save_target(prefix, base, width, height)
    except UnsafeSavePath as exc:
        raise ReportedError(str(exc), "Exception") from None
    metadata = _png_metadata(prompt, extra_pnginfo)
    results = []
    for number, frame in enumerate(images.frames):
        name = target.filename.replace("%batch_num%", str(number))
        filename = f"{name}_{target.counter + number:05}_.png"
        frame.save(target.folder / filename, pnginfo=metadata, compress_level=compress_level)
        results.append({"filename": filename, "subfolder": target.subfolder, "type": kind})
    return NodeOutput(ui={"images": results})


def save_image(
    ctx: NodeContext,
    images: ImageBatch,
    filename_prefix: str = "ComfyUI",
    prompt: Any = None,
    extra_pnginfo: Any = None,
) -> NodeOutput:
    return _save_pngs(ctx, images, filename_prefix, "output", 4, prompt, extra_pnginfo)


def preview_image(
    ctx: NodeContext, images: ImageBatch, prompt: Any = None, extra_pnginfo: Any = None
) -> NodeOutput:
    infix = "".join(random.choice(TEMP_ALPHABET) for _ in range(5))
    return _save_pngs(ctx, images, f"ComfyUI_temp_{infix}", "temp", 1, prompt, extra_pnginfo)


def save_animated_webp(
    ctx: NodeContext,
    images: ImageBatch,
    filename_prefix: str = "ComfyUI",
    fps: float = 6.0,
    lossless: bool = True,
    quality: int = 80,
    method: str = "default",
    prompt: Any = None,
    extra_pnginfo: Any = None,
) -> NodeOutput:
    """All frames in one animated WebP, with the prompt in its EXIF as ComfyUI writes it."""
    width, height = images.size
    try:
        target = ctx.folders.save_target(filename_prefix, ctx.folders.output_dir, width, height)
    except UnsafeSavePath as exc:
        raise ReportedError(str(exc), "Exception") from None
    exif = Image.Exif()
    if prompt is not None:
        exif[0x0110] = f"prompt:{json.dumps(prompt)}"
    if isinstance(extra_pnginfo, dict):
        for offset, (key, value) in enumerate(extra_pnginfo.items()):
            exif[0x010F - offset] = f"{key}:{json.dumps(value)}"
    filename = f"{target.filename}_{target.counter:05}_.webp"
    first, *rest = images.frames
    first.save(
        target.folder / filename,
        save_all=True,
        append_images=rest,
        duration=int(1000.0 / fps),
        exif=exif,
        lossless=lossless,
        quality=quality,
        method=WEBP_METHODS.get(method, 4),
    )
    result = {"filename": filename, "subfolder": target.subfolder, "type": "output"}
    return NodeOutput(ui={"images": [result], "animated": [True]})
