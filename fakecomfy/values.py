"""The values that flow along links: Pillow images for pixels, placeholders for models.

ComfyUI passes torch tensors; fakecomfy passes frozen dataclasses with the same meaning so
nodes are deterministic and cheap. Their ``str`` is what an ``execution_error`` shows in
``current_inputs``, shaped like ComfyUI's (a tensor shape, a handle).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Any

from PIL import Image, ImageOps

# ComfyUI's latent previews are scaled to fit this square (``MAX_PREVIEW_RESOLUTION``).
MAX_PREVIEW_RESOLUTION = 512


def fingerprint(*parts: Any) -> str:
    """A short stable digest of ``parts`` (their reprs), used as a value's identity."""
    digest = hashlib.sha256(repr(parts).encode("utf-8"))
    return digest.hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class ImageBatch:
    """IMAGE: a batch of RGB frames of one size."""

    frames: tuple[Image.Image, ...]

    @property
    def size(self) -> tuple[int, int]:
        return self.frames[0].size if self.frames else (0, 0)

    def __str__(self) -> str:
        width, height = self.size
        return f"tensor of shape [{len(self.frames)}, {height}, {width}, 3]"


@dataclass(frozen=True, slots=True)
class MaskBatch:
    """MASK: a batch of single-channel ("L") frames, 255 = fully masked."""

    frames: tuple[Image.Image, ...]

    def __str__(self) -> str:
        width, height = self.frames[0].size if self.frames else (0, 0)
        return f"tensor of shape [{len(self.frames)}, {height}, {width}]"


@dataclass(frozen=True, slots=True)
class Latent:
    """LATENT: the size of the picture it decodes to and what determines its content."""

    width: int
    height: int
    batch: int
    channels: int = 4
    identity: str = "0" * 16  # hex: it picks the decoded picture's colours

    def __str__(self) -> str:
        shape = [self.batch, self.channels, self.height // 8, self.width // 8]
        return f"{{'samples': tensor of shape {shape}}}"


@dataclass(frozen=True, slots=True)
class ModelHandle:
    """MODEL, CLIP, VAE, CONTROL_NET, UPSCALE_MODEL, CLIP_VISION: a loaded file, patched."""

    kind: str
    name: str
    patches: tuple[str, ...] = ()

    def patched(self, patch: str) -> ModelHandle:
        return replace(self, patches=(*self.patches, patch))

    def __str__(self) -> str:
        return f"<{self.kind} {self.name}{''.join(' +' + p for p in self.patches)}>"


@dataclass(frozen=True, slots=True)
class Conditioning:
    """CONDITIONING: the encoded text and what was applied on top of it."""

    text: str
    clip: str
    extras: tuple[str, ...] = ()

    def with_extra(self, extra: str) -> Conditioning:
        return replace(self, extras=(*self.extras, extra))

    def __str__(self) -> str:
        return f"[[tensor of shape [1, 77, 768], {{'text': {self.text!r}}}]]"


@dataclass(frozen=True, slots=True)
class SamplerParts:
    """NOISE, SAMPLER, SIGMAS, GUIDER of the custom-sampling nodes."""

    kind: str
    steps: int = 0
    detail: tuple[Any, ...] = field(default=())

    def __str__(self) -> str:
        return f"<{self.kind} {self.detail}>"


def _colour(identity: str, offset: int) -> tuple[int, int, int]:
    raw = bytes.fromhex(identity[offset : offset + 6].ljust(6, "0"))
    return raw[0], raw[1], raw[2]


def render_picture(width: int, height: int, identity: str) -> Image.Image:
    """A deterministic picture for a latent: two colours from ``identity``, radially blended."""
    inner, outer = _colour(identity, 0), _colour(identity, 6)
    gradient = Image.radial_gradient("L").resize((max(width, 1), max(height, 1)))
    return Image.composite(
        Image.new("RGB", gradient.size, outer), Image.new("RGB", gradient.size, inner), gradient
    )


def preview_picture(latent: Latent, target: str, step: int, steps: int) -> Image.Image:
    """What a latent preview shows after ``step`` of ``steps``: a grey ramp turning into the
    final picture, at latent resolution and scaled to fit 512×512 as ComfyUI sends it."""
    size = (max(latent.width // 8, 1), max(latent.height // 8, 1))
    final = render_picture(size[0], size[1], target)
    start = Image.linear_gradient("L").resize(size).convert("RGB")
    blended = Image.blend(start, final, step / max(steps, 1))
    return ImageOps.contain(
        blended, (MAX_PREVIEW_RESOLUTION, MAX_PREVIEW_RESOLUTION), Image.Resampling.BILINEAR
    )
