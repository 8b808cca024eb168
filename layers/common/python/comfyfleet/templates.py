"""Ready-made workflows: a prompt and a few parameters in, an API-format graph out.

Each template has a pydantic parameter model (its JSON Schema is what ``GET /v1/workflows``
lists) and a builder. Models are named by URL, so a template job goes through the same
model sync as any other; every URL can be overridden with one of the operator's mirror.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

# ComfyUI 0.3.64's KSampler options (comfy/samplers.py).
Sampler = Literal[
    "euler",
    "euler_cfg_pp",
    "euler_ancestral",
    "euler_ancestral_cfg_pp",
    "heun",
    "heunpp2",
    "dpm_2",
    "dpm_2_ancestral",
    "lms",
    "dpm_fast",
    "dpm_adaptive",
    "dpmpp_2s_ancestral",
    "dpmpp_2s_ancestral_cfg_pp",
    "dpmpp_sde",
    "dpmpp_sde_gpu",
    "dpmpp_2m",
    "dpmpp_2m_cfg_pp",
    "dpmpp_2m_sde",
    "dpmpp_2m_sde_gpu",
    "dpmpp_2m_sde_heun",
    "dpmpp_2m_sde_heun_gpu",
    "dpmpp_3m_sde",
    "dpmpp_3m_sde_gpu",
    "ddpm",
    "lcm",
    "ipndm",
    "ipndm_v",
    "deis",
    "res_multistep",
    "res_multistep_cfg_pp",
    "res_multistep_ancestral",
    "res_multistep_ancestral_cfg_pp",
    "gradient_estimation",
    "gradient_estimation_cfg_pp",
    "er_sde",
    "seeds_2",
    "seeds_3",
    "sa_solver",
    "sa_solver_pece",
    "ddim",
    "uni_pc",
    "uni_pc_bh2",
]
Scheduler = Literal[
    "simple",
    "sgm_uniform",
    "karras",
    "exponential",
    "ddim_uniform",
    "beta",
    "normal",
    "linear_quadratic",
    "kl_optimal",
]

# A random seed stays below 2**53 so JavaScript clients read it back exactly.
MAX_RANDOM_SEED = 2**53
MAX_SEED = 2**64 - 1
OUTPUT_PREFIX = "comfyfleet"

Dimension = Annotated[int, Field(ge=64, le=2048, multiple_of=8)]
Url = Annotated[str, Field(min_length=8, max_length=2048)]

SD15_CHECKPOINT = (
    "https://huggingface.co/Comfy-Org/stable-diffusion-v1-5-archive/resolve/main/"
    "v1-5-pruned-emaonly-fp16.safetensors"
)
SDXL_CHECKPOINT = (
    "https://huggingface.co/stabilityai/stable-diffusion-xl-base-1.0/resolve/main/"
    "sd_xl_base_1.0.safetensors"
)
FLUX_UNET = (
    "https://huggingface.co/black-forest-labs/FLUX.1-schnell/resolve/main/flux1-schnell.safetensors"
)
FLUX_VAE = "https://huggingface.co/black-forest-labs/FLUX.1-schnell/resolve/main/ae.safetensors"
FLUX_CLIP_L = (
    "https://huggingface.co/comfyanonymous/flux_text_encoders/resolve/main/clip_l.safetensors"
)
FLUX_T5 = (
    "https://huggingface.co/comfyanonymous/flux_text_encoders/resolve/main/"
    "t5xxl_fp8_e4m3fn.safetensors"
)


class UnknownTemplate(LookupError):
    """No template has this name."""


class InvalidTemplateParams(ValueError):
    """The parameters do not fit the template; ``errors`` lists each problem."""

    def __init__(self, template: str, errors: list[dict[str, Any]]) -> None:
        super().__init__(f"invalid parameters for template {template!r}")
        self.errors = errors


class Lora(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: Url = Field(description="URL of the LoRA file.")
    strength: float = Field(1.0, ge=-10, le=10, description="Weight of the LoRA.")


class TemplateParams(BaseModel):
    """Parameters every template takes."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=10_000, description="What to draw.")
    width: Dimension = Field(1024, description="Image width in pixels (a multiple of 8).")
    height: Dimension = Field(1024, description="Image height in pixels (a multiple of 8).")
    steps: int = Field(25, ge=1, le=150, description="Sampling steps.")
    seed: int | None = Field(
        None, ge=0, le=MAX_SEED, description="Noise seed; random (and returned) when omitted."
    )
    batch_size: int = Field(1, ge=1, le=8, description="Images per job.")
    loras: list[Lora] = Field(default_factory=list, max_length=8, description="LoRAs to apply.")


class SD15Params(TemplateParams):
    negative_prompt: str = Field("", max_length=10_000, description="What to avoid.")
    width: Dimension = Field(512, description="Image width in pixels (a multiple of 8).")
    height: Dimension = Field(512, description="Image height in pixels (a multiple of 8).")
    steps: int = Field(20, ge=1, le=150, description="Sampling steps.")
    cfg: float = Field(7.0, ge=0, le=30, description="Classifier-free guidance scale.")
    sampler: Sampler = Field("euler", description="KSampler sampler.")
    scheduler: Scheduler = Field("normal", description="KSampler scheduler.")
    checkpoint_url: Url = Field(SD15_CHECKPOINT, description="Checkpoint to load.")
    vae_url: Url | None = Field(None, description="A VAE to use instead of the checkpoint's.")


class SDXLParams(SD15Params):
    width: Dimension = Field(1024, description="Image width in pixels (a multiple of 8).")
    height: Dimension = Field(1024, description="Image height in pixels (a multiple of 8).")
    steps: int = Field(25, ge=1, le=150, description="Sampling steps.")
    sampler: Sampler = Field("dpmpp_2m", description="KSampler sampler.")
    scheduler: Scheduler = Field("karras", description="KSampler scheduler.")
    checkpoint_url: Url = Field(SDXL_CHECKPOINT, description="Checkpoint to load.")


class FluxParams(TemplateParams):
    steps: int = Field(4, ge=1, le=150, description="Sampling steps (4 suit FLUX.1 schnell).")
    guidance: float = Field(3.5, ge=0, le=100, description="Flux guidance (used by FLUX.1 dev).")
    sampler: Sampler = Field("euler", description="Sampler.")
    scheduler: Scheduler = Field("simple", description="Scheduler.")
    unet_url: Url = Field(FLUX_UNET, description="Diffusion model (FLUX.1 schnell or dev).")
    clip_l_url: Url = Field(FLUX_CLIP_L, description="CLIP-L text encoder.")
    t5_url: Url = Field(FLUX_T5, description="T5-XXL text encoder.")
    vae_url: Url = Field(FLUX_VAE, description="Flux autoencoder.")


class _Graph:
    """Builds an API-format graph with sequential node ids."""

    def __init__(self) -> None:
        self.nodes: dict[str, dict[str, Any]] = {}

    def add(self, class_type: str, **inputs: Any) -> str:
        node_id = str(len(self.nodes) + 1)
        self.nodes[node_id] = {"class_type": class_type, "inputs": inputs}
        return node_id


def _out(node_id: str, index: int = 0) -> list[Any]:
    return [node_id, index]


def _build_checkpoint_graph(params: SD15Params, seed: int) -> dict[str, Any]:
    """Checkpoint → LoRAs → text encoders → KSampler → VAE decode → save (SD1.5 and SDXL)."""
    g = _Graph()
    checkpoint = g.add("CheckpointLoaderSimple", ckpt_name=params.checkpoint_url)
    model, clip = _out(checkpoint, 0), _out(checkpoint, 1)
    for lora in params.loras:
        node = g.add(
            "LoraLoader",
            model=model,
            clip=clip,
            lora_name=lora.url,
            strength_model=lora.strength,
            strength_clip=lora.strength,
        )
        model, clip = _out(node, 0), _out(node, 1)
    vae = _out(checkpoint, 2)
    if params.vae_url is not None:
        vae = _out(g.add("VAELoader", vae_name=params.vae_url))
    positive = g.add("CLIPTextEncode", text=params.prompt, clip=clip)
    negative = g.add("CLIPTextEncode", text=params.negative_prompt, clip=clip)
    latent = g.add(
        "EmptyLatentImage", width=params.width, height=params.height, batch_size=params.batch_size
    )
    samples = g.add(
        "KSampler",
        model=model,
        seed=seed,
        steps=params.steps,
        cfg=params.cfg,
        sampler_name=params.sampler,
        scheduler=params.scheduler,
        positive=_out(positive),
        negative=_out(negative),
        latent_image=_out(latent),
        denoise=1.0,
    )
    image = g.add("VAEDecode", samples=_out(samples), vae=vae)
    g.add("SaveImage", images=_out(image), filename_prefix=OUTPUT_PREFIX)
    return g.nodes


def _build_flux(params: FluxParams, seed: int) -> dict[str, Any]:
    """Diffusion model + two text encoders + VAE, sampled with the custom sampler nodes."""
    g = _Graph()
    model = _out(g.add("UNETLoader", unet_name=params.unet_url, weight_dtype="default"))
    for lora in params.loras:
        model = _out(
            g.add(
                "LoraLoaderModelOnly", model=model, lora_name=lora.url, strength_model=lora.strength
            )
        )
    clip = g.add(
        "DualCLIPLoader", clip_name1=params.t5_url, clip_name2=params.clip_l_url, type="flux"
    )
    vae = g.add("VAELoader", vae_name=params.vae_url)
    text = g.add("CLIPTextEncode", text=params.prompt, clip=_out(clip))
    conditioning = g.add("FluxGuidance", conditioning=_out(text), guidance=params.guidance)
    guider = g.add("BasicGuider", model=model, conditioning=_out(conditioning))
    noise = g.add("RandomNoise", noise_seed=seed)
    sampler = g.add("KSamplerSelect", sampler_name=params.sampler)
    sigmas = g.add(
        "BasicScheduler", model=model, scheduler=params.scheduler, steps=params.steps, denoise=1.0
    )
    latent = g.add(
        "EmptySD3LatentImage",
        width=params.width,
        height=params.height,
        batch_size=params.batch_size,
    )
    samples = g.add(
        "SamplerCustomAdvanced",
        noise=_out(noise),
        guider=_out(guider),
        sampler=_out(sampler),
        sigmas=_out(sigmas),
        latent_image=_out(latent),
    )
    image = g.add("VAEDecode", samples=_out(samples), vae=_out(vae))
    g.add("SaveImage", images=_out(image), filename_prefix=OUTPUT_PREFIX)
    return g.nodes


@dataclass(frozen=True)
class Template:
    name: str
    description: str
    params: type[TemplateParams]
    build: Callable[[Any, int], dict[str, Any]]

    def schema(self) -> dict[str, Any]:
        """JSON Schema of the parameters."""
        return self.params.model_json_schema()


@dataclass(frozen=True)
class RenderedTemplate:
    graph: dict[str, Any]
    seed: int


TEMPLATES: dict[str, Template] = {
    t.name: t
    for t in (
        Template(
            "sd15", "Stable Diffusion 1.5 text to image.", SD15Params, _build_checkpoint_graph
        ),
        Template(
            "sdxl", "Stable Diffusion XL base text to image.", SDXLParams, _build_checkpoint_graph
        ),
        Template("flux", "FLUX.1 (schnell by default) text to image.", FluxParams, _build_flux),
    )
}


def render_template(name: str, params: Mapping[str, Any] | Any) -> RenderedTemplate:
    """Build the named template's graph; a seed is drawn when the parameters give none."""
    template = TEMPLATES.get(name)
    if template is None:
        raise UnknownTemplate(f"no template {name!r}; templates: {', '.join(TEMPLATES)}")
    try:
        parsed = template.params.model_validate(
            dict(params) if isinstance(params, Mapping) else params
        )
    except ValidationError as exc:
        problems = [
            {"field": ".".join(str(part) for part in error["loc"]), "message": error["msg"]}
            for error in exc.errors()
        ]
        raise InvalidTemplateParams(name, problems) from None
    seed = parsed.seed if parsed.seed is not None else secrets.randbelow(MAX_RANDOM_SEED)
    return RenderedTemplate(graph=template.build(parsed, seed), seed=seed)
