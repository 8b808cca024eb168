"""Which class runs which implementation; a catalogue class without one fails when run."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from fakecomfy import nodes_image as image
from fakecomfy import nodes_model as model
from fakecomfy.folders import ComfyFolders
from fakecomfy.node_api import NodeFunction

IMPLEMENTATIONS: dict[str, NodeFunction] = {
    "EmptyImage": image.empty_image,
    "ImageInvert": image.image_invert,
    "ImageScale": image.image_scale,
    "ImageScaleBy": image.image_scale_by,
    "ImageBlur": image.image_blur,
    "ImageBatch": image.image_batch,
    "SolidMask": image.solid_mask,
    "MaskToImage": image.mask_to_image,
    "LoadImage": image.load_image,
    "SaveImage": image.save_image,
    "PreviewImage": image.preview_image,
    "SaveAnimatedWEBP": image.save_animated_webp,
    "CheckpointLoaderSimple": model.checkpoint_loader_simple,
    "LoraLoader": model.lora_loader,
    "LoraLoaderModelOnly": model.lora_loader_model_only,
    "VAELoader": model.vae_loader,
    "UNETLoader": model.unet_loader,
    "CLIPLoader": model.clip_loader,
    "DualCLIPLoader": model.dual_clip_loader,
    "ControlNetLoader": model.control_net_loader,
    "UpscaleModelLoader": model.upscale_model_loader,
    "CLIPVisionLoader": model.clip_vision_loader,
    "CLIPTextEncode": model.clip_text_encode,
    "CLIPSetLastLayer": model.clip_set_last_layer,
    "ConditioningZeroOut": model.conditioning_zero_out,
    "FluxGuidance": model.flux_guidance,
    "ControlNetApplyAdvanced": model.control_net_apply_advanced,
    "ModelSamplingFlux": model.model_sampling_flux,
    "EmptyLatentImage": model.empty_latent_image,
    "EmptySD3LatentImage": model.empty_sd3_latent_image,
    "KSampler": model.ksampler,
    "KSamplerAdvanced": model.ksampler_advanced,
    "SamplerCustomAdvanced": model.sampler_custom_advanced,
    "BasicGuider": model.basic_guider,
    "BasicScheduler": model.basic_scheduler,
    "KSamplerSelect": model.ksampler_select,
    "RandomNoise": model.random_noise,
    "VAEDecode": model.vae_decode,
    "VAEEncode": model.vae_encode,
    "ImageUpscaleWithModel": model.image_upscale_with_model,
}

# ComfyUI's ``IS_CHANGED``: part of a node's cache key besides its inputs.
FINGERPRINTS: dict[str, Callable[..., Any]] = {
    "LoadImage": image.load_image_fingerprint,
}


def implementation(class_type: str) -> NodeFunction:
    """The function running ``class_type``; one that raises NotImplementedError if none."""
    function = IMPLEMENTATIONS.get(class_type)
    if function is not None:
        return function

    def not_implemented(*_: Any, **__: Any) -> Any:
        raise NotImplementedError(f"fakecomfy does not implement node class {class_type}")

    return not_implemented


def changed_fingerprint(class_type: str, folders: ComfyFolders, inputs: dict[str, Any]) -> Any:
    """The ``IS_CHANGED`` value of a node from its constant inputs; None for most classes.

    When it cannot be computed (the file is gone) a value that never repeats is returned,
    as ComfyUI's NaN does, so the node runs and reports the real error.
    """
    function = FINGERPRINTS.get(class_type)
    if function is None:
        return None
    try:
        return function(folders, **inputs)
    except Exception:  # any failure means "cannot tell": run the node again
        return f"unknown {uuid.uuid4().hex}"


def custom_validation(class_type: str, folders: ComfyFolders) -> dict[str, Callable[[Any], Any]]:
    """``VALIDATE_INPUTS`` of a class: input name → check returning True or a reason.

    An input with a check skips the generic list/min/max checks, as in ComfyUI.
    """
    if class_type == "LoadImage":

        def image_exists(value: Any) -> Any:
            if isinstance(value, str) and folders.input_file(value).exists():
                return True
            return f"Invalid image file: {value}"

        return {"image": image_exists}
    return {}
