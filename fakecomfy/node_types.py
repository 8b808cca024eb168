"""The node classes fakecomfy knows: an ``/object_info`` catalogue with live file lists.

The catalogue (the packaged ComfyUI 0.3.64 core one unless another is given) says what each
class takes and returns. Loader inputs and ``LoadImage.image`` are filled in from the files
actually present, as ComfyUI does every time it answers ``/object_info`` or validates a prompt.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

from fakecomfy.folders import ComfyFolders

# class → input → the model folder whose files are its choices.
FILE_INPUTS: dict[str, dict[str, str]] = {
    "CheckpointLoaderSimple": {"ckpt_name": "checkpoints"},
    "CheckpointLoader": {"ckpt_name": "checkpoints", "config_name": "configs"},
    "LoraLoader": {"lora_name": "loras"},
    "LoraLoaderModelOnly": {"lora_name": "loras"},
    "VAELoader": {"vae_name": "vae"},
    "UNETLoader": {"unet_name": "diffusion_models"},
    "CLIPLoader": {"clip_name": "text_encoders"},
    "DualCLIPLoader": {"clip_name1": "text_encoders", "clip_name2": "text_encoders"},
    "ControlNetLoader": {"control_net_name": "controlnet"},
    "UpscaleModelLoader": {"model_name": "upscale_models"},
    "CLIPVisionLoader": {"clip_name": "clip_vision"},
    "StyleModelLoader": {"style_model_name": "style_models"},
}
INPUT_IMAGES = "<input images>"  # the pseudo-folder of LoadImage's choices
FILE_INPUTS["LoadImage"] = {"image": INPUT_IMAGES}

# Input configs the packaged (trimmed) catalogue lacks but a real ComfyUI 0.3.64 reports, so
# validation errors carry the same ``input_config`` as recorded (missing_checkpoint).
KNOWN_CONFIGS: dict[tuple[str, str], dict[str, Any]] = {
    ("CheckpointLoaderSimple", "ckpt_name"): {
        "tooltip": "The name of the checkpoint (model) to load."
    },
    ("LoraLoader", "lora_name"): {"tooltip": "The name of the LoRA."},
}


@dataclass(frozen=True, slots=True)
class InputDef:
    """One declared input: its type (a type name, a list of choices or ``"COMBO"``)."""

    name: str
    category: str  # "required" or "optional"
    type: Any
    config: dict[str, Any]

    @property
    def options(self) -> list[Any] | None:
        """The allowed values of a choice input, None for other inputs."""
        if isinstance(self.type, list):
            return self.type
        if self.type == "COMBO":
            return list(self.config.get("options") or [])
        return None

    @property
    def input_config(self) -> list[Any]:
        """``[type, config]`` as ComfyUI puts it in a validation error's ``extra_info``."""
        return [self.type, self.config]


@dataclass(frozen=True, slots=True)
class NodeType:
    """What validation and execution need of one class."""

    name: str
    inputs: tuple[InputDef, ...]
    hidden: dict[str, str]  # input name → PROMPT, EXTRA_PNGINFO, UNIQUE_ID, …
    outputs: tuple[Any, ...]
    output_node: bool

    def input(self, name: str) -> InputDef | None:
        return next((spec for spec in self.inputs if spec.name == name), None)


def core_object_info() -> dict[str, Any]:
    """The packaged ``/object_info`` of ComfyUI 0.3.64's core classes (raw JSON)."""
    data = resources.files("comfyfleet.data").joinpath("object_info_core.json").read_bytes()
    parsed: dict[str, Any] = json.loads(data)
    return parsed


class NodeTypes:
    """The catalogue; ``live`` gives a view with the file lists of this moment."""

    def __init__(self, object_info: dict[str, Any]) -> None:
        self._raw = object_info

    def live(self, folders: ComfyFolders) -> LiveNodeTypes:
        return LiveNodeTypes(self._raw, folders)


class LiveNodeTypes:
    """One request's view of the catalogue: folders are listed once, on first use."""

    def __init__(self, raw: dict[str, Any], folders: ComfyFolders) -> None:
        self._raw = raw
        self._folders = folders
        self._listings: dict[str, list[str]] = {}
        self._parsed: dict[str, NodeType] = {}

    def __contains__(self, class_type: object) -> bool:
        return isinstance(class_type, str) and class_type in self._raw

    def get(self, class_type: str) -> NodeType | None:
        """The class, parsed with live choices; None when the catalogue does not have it."""
        parsed = self._parsed.get(class_type)
        if parsed is None and class_type in self._raw:
            parsed = _parse(class_type, self.class_info(class_type))
            self._parsed[class_type] = parsed
        return parsed

    def object_info(self) -> dict[str, Any]:
        """The whole ``/object_info`` document with live choices."""
        return {name: self.class_info(name) for name in self._raw}

    def class_info(self, class_type: str) -> dict[str, Any]:
        """One class's ``/object_info`` entry with live choices (KeyError if unknown)."""
        info: dict[str, Any] = self._raw[class_type]
        file_inputs = FILE_INPUTS.get(class_type)
        declared = info.get("input")
        if not file_inputs or not isinstance(declared, dict):
            return info
        filled = dict(declared)
        for category in ("required", "optional"):
            group = declared.get(category)
            if not isinstance(group, dict):
                continue
            changed = {
                name: self._fill(class_type, name, spec, file_inputs[name])
                for name, spec in group.items()
                if name in file_inputs
            }
            if changed:
                filled[category] = {**group, **changed}
        return {**info, "input": filled}

    def _choices(self, source: str) -> list[str]:
        if source not in self._listings:
            if source == INPUT_IMAGES:
                self._listings[source] = self._folders.list_input_images()
            else:
                self._listings[source] = self._folders.list_models(source)
        return self._listings[source]

    def _fill(self, class_type: str, name: str, spec: Any, source: str) -> Any:
        choices = list(self._choices(source))
        if class_type == "VAELoader":
            choices.append("pixel_space")  # ComfyUI always offers decoding to pixels
        if not isinstance(spec, list) or not spec:
            return spec
        config = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else None
        if config is None:
            config = KNOWN_CONFIGS.get((class_type, name))
        if spec[0] == "COMBO":
            return ["COMBO", {**(config or {}), "options": choices}]
        return [choices] if config is None else [choices, config]


def _parse(class_type: str, info: Any) -> NodeType:
    """Parse leniently: a malformed part declares nothing rather than failing."""
    if not isinstance(info, dict):
        return NodeType(class_type, (), {}, (), False)
    declared: dict[str, Any] = info["input"] if isinstance(info.get("input"), dict) else {}
    order: dict[str, Any] = info["input_order"] if isinstance(info.get("input_order"), dict) else {}
    inputs: list[InputDef] = []
    for category in ("required", "optional"):
        group = declared.get(category)
        if not isinstance(group, dict):
            continue
        names = [n for n in order.get(category, []) if n in group]
        names += [n for n in group if n not in names]
        for name in names:
            spec = group[name]
            if isinstance(spec, str):  # a bare type name, as some custom nodes declare
                spec = [spec]
            if not isinstance(spec, list) or not spec:
                continue
            config = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            inputs.append(InputDef(name, category, spec[0], config))
    hidden = declared.get("hidden")
    outputs = info.get("output")
    return NodeType(
        name=class_type,
        inputs=tuple(inputs),
        hidden={str(k): str(v) for k, v in hidden.items()} if isinstance(hidden, dict) else {},
        outputs=tuple(outputs) if isinstance(outputs, list) else (),
        output_node=info.get("output_node") is True,
    )
