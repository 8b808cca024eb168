"""Where a workflow names model files and input images, and how those names are rewritten.

A *reference site* is a URL-valued input of a loader node (the table below), or any
URL-valued input naming a file the request's ``models`` manifest lists (for custom nodes).
Validation finds the sites and turns them into :class:`ModelRef`; the agent downloads each
ref once and :func:`rewrite_workflow` replaces each site's URL with the local file name.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from comfyfleet.workflow.errors import ErrorCode, WorkflowError
from comfyfleet.workflow.urls import (
    INPUT_FOLDER,
    MODEL_EXTENSIONS,
    UrlNotAllowed,
    UrlPolicy,
    derive_filename,
    is_url,
    model_key,
    unsafe_name_reason,
)

# Which input of which loader names a file in which ComfyUI folder.
LOADER_INPUTS: dict[str, dict[str, str]] = {
    "CheckpointLoaderSimple": {"ckpt_name": "checkpoints"},
    "CheckpointLoader": {"ckpt_name": "checkpoints"},
    "ImageOnlyCheckpointLoader": {"ckpt_name": "checkpoints"},
    "unCLIPCheckpointLoader": {"ckpt_name": "checkpoints"},
    "LoraLoader": {"lora_name": "loras"},
    "LoraLoaderModelOnly": {"lora_name": "loras"},
    "VAELoader": {"vae_name": "vae"},
    "UNETLoader": {"unet_name": "diffusion_models"},
    "CLIPLoader": {"clip_name": "text_encoders"},
    "DualCLIPLoader": {"clip_name1": "text_encoders", "clip_name2": "text_encoders"},
    "TripleCLIPLoader": {f"clip_name{i}": "text_encoders" for i in (1, 2, 3)},
    "QuadrupleCLIPLoader": {f"clip_name{i}": "text_encoders" for i in (1, 2, 3, 4)},
    "ControlNetLoader": {"control_net_name": "controlnet"},
    "DiffControlNetLoader": {"control_net_name": "controlnet"},
    "UpscaleModelLoader": {"model_name": "upscale_models"},
    "CLIPVisionLoader": {"clip_name": "clip_vision"},
    "StyleModelLoader": {"style_model_name": "style_models"},
    "GLIGENLoader": {"gligen_name": "gligen"},
    "HypernetworkLoader": {"hypernetwork_name": "hypernetworks"},
    "LoadImage": {"image": INPUT_FOLDER},
    "LoadImageMask": {"image": INPUT_FOLDER},
}

# ComfyUI's model folders (folder_paths.py), and the input folder for images.
FOLDERS = frozenset(
    {
        "checkpoints",
        "loras",
        "vae",
        "text_encoders",
        "diffusion_models",
        "clip_vision",
        "controlnet",
        "upscale_models",
        "embeddings",
        "style_models",
        "hypernetworks",
        "gligen",
        "photomaker",
        "model_patches",
        "audio_encoders",
        "vae_approx",
        INPUT_FOLDER,
    }
)
FOLDER_ALIASES = {"clip": "text_encoders", "unet": "diffusion_models", "t2i_adapter": "controlnet"}

MAX_MANIFEST_ENTRIES = 100
_MANIFEST_FIELDS = frozenset({"url", "folder", "filename", "sha256", "size"})
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
# LoadImage reads "name [output]" from the output folder: another job's images on that node.
_OTHER_FOLDER_ANNOTATION = re.compile(r"\s\[(output|temp)\]$")


@dataclass(frozen=True, slots=True)
class ModelRef:
    """One file a job needs on its node before ComfyUI runs it."""

    url: str
    key: str
    folder: str
    filename: str
    sha256: str | None = None
    size: int | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "url": self.url,
            "key": self.key,
            "folder": self.folder,
            "filename": self.filename,
        }
        if self.sha256 is not None:
            data["sha256"] = self.sha256
        if self.size is not None:
            data["size"] = self.size
        return data


def ref_for_url(url: str, folder: str) -> ModelRef:
    """The reference a loader input naming ``url`` makes."""
    key = model_key(url)
    return ModelRef(url=url, key=key, folder=folder, filename=derive_filename(url, folder, key))


def canonical_folder(folder: str) -> str:
    return FOLDER_ALIASES.get(folder, folder)


def parse_manifest(manifest: Any, policy: UrlPolicy) -> tuple[list[ModelRef], list[WorkflowError]]:
    """Read a request's ``models`` list: refs for the good entries, errors for the rest."""
    if manifest is None:
        return [], []
    if not isinstance(manifest, list):
        return [], [_manifest_error("models must be a list of {url, folder, ...}", "models")]
    if len(manifest) > MAX_MANIFEST_ENTRIES:
        message = f"models lists {len(manifest)} files; at most {MAX_MANIFEST_ENTRIES} allowed"
        return [], [_manifest_error(message, "models")]
    refs: list[ModelRef] = []
    errors: list[WorkflowError] = []
    for index, entry in enumerate(manifest):
        ref, entry_errors = _parse_entry(entry, f"models[{index}]", policy)
        errors.extend(entry_errors)
        if ref is not None:
            refs.append(ref)
    return refs, errors


def _parse_entry(
    entry: Any, where: str, policy: UrlPolicy
) -> tuple[ModelRef | None, list[WorkflowError]]:
    if not isinstance(entry, dict):
        return None, [_manifest_error("each models entry must be an object", where)]
    errors = [
        _manifest_error(f"unknown field {name!r}", f"{where}.{name}")
        for name in entry
        if name not in _MANIFEST_FIELDS
    ]
    url, folder = entry.get("url"), entry.get("folder")
    if not isinstance(url, str) or not url:
        errors.append(_manifest_error("url must be a non-empty string", f"{where}.url"))
    else:
        try:
            policy.check(url)
        except UrlNotAllowed as exc:
            errors.append(WorkflowError(ErrorCode.URL_NOT_ALLOWED, str(exc), None, f"{where}.url"))
    if not isinstance(folder, str) or canonical_folder(folder) not in FOLDERS:
        message = f"folder must be one of: {', '.join(sorted(FOLDERS))}"
        errors.append(_manifest_error(message, f"{where}.folder"))
    filename = entry.get("filename")
    if filename is not None:
        errors.extend(_filename_errors(filename, folder, f"{where}.filename"))
    sha256 = entry.get("sha256")
    if sha256 is not None and not (isinstance(sha256, str) and _SHA256.match(sha256)):
        errors.append(_manifest_error("sha256 must be 64 hex digits", f"{where}.sha256"))
    size = entry.get("size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size <= 0):
        errors.append(_manifest_error("size must be a positive integer (bytes)", f"{where}.size"))
    if errors:
        return None, errors
    assert isinstance(url, str) and isinstance(folder, str)
    ref = ref_for_url(url, canonical_folder(folder))
    return (
        ModelRef(
            url=url,
            key=ref.key,
            folder=ref.folder,
            filename=filename if isinstance(filename, str) else ref.filename,
            sha256=sha256.lower() if isinstance(sha256, str) else None,
            size=size,
        ),
        [],
    )


def _filename_errors(filename: Any, folder: Any, where: str) -> list[WorkflowError]:
    if not isinstance(filename, str) or not filename:
        return [_manifest_error("filename must be a non-empty string", where)]
    reason = unsafe_name_reason(filename, allow_subfolders=False)
    if reason is not None:
        return [WorkflowError(ErrorCode.UNSAFE_FILENAME, reason, None, where)]
    is_model = isinstance(folder, str) and canonical_folder(folder) != INPUT_FOLDER
    if is_model and not filename.lower().endswith(tuple(MODEL_EXTENSIONS)):
        message = "ComfyUI lists model files with these extensions only: " + ", ".join(
            sorted(MODEL_EXTENSIONS)
        )
        return [_manifest_error(message, where)]
    return []


def _manifest_error(message: str, where: str) -> WorkflowError:
    return WorkflowError(ErrorCode.INVALID_MANIFEST, message, None, where)


def file_name_problem(class_type: str, input_name: str, value: str) -> str | None:
    """Why a file name a node reads or writes could reach outside its folder, or None."""
    reason = unsafe_name_reason(value)
    if reason is None and INPUT_FOLDER == LOADER_INPUTS.get(class_type, {}).get(input_name):
        if _OTHER_FOLDER_ANNOTATION.search(value):
            reason = "input images must come from the input folder"
    return reason


def url_inputs(graph: Mapping[Any, Any]) -> Iterator[tuple[Any, str, str, str | None]]:
    """Each URL-valued string input: (node id, input name, URL, loader folder or None)."""
    for node_id, node in graph.items():
        if not isinstance(node, dict):
            continue
        inputs = node.get("inputs")
        if not isinstance(inputs, dict):
            continue
        class_type = node.get("class_type")
        loader = LOADER_INPUTS.get(class_type, {}) if isinstance(class_type, str) else {}
        for name, value in inputs.items():
            if isinstance(value, str) and is_url(value):
                yield node_id, str(name), value, loader.get(name)


def rewrite_workflow(
    graph: Mapping[str, Any], local_names: Mapping[str, str], *, manifest: Any = None
) -> dict[str, Any]:
    """A copy of ``graph`` in which every reference site names its local file instead.

    ``local_names`` maps a URL (any spelling with the same cache key) to the file name the
    agent placed in the node's folder. Sites without a local name, and every other input,
    are left exactly as they were; ``graph`` itself is not modified.
    """
    by_key = {model_key(url): name for url, name in local_names.items()}
    manifest_keys = _manifest_keys(manifest)
    rewritten = dict(graph)
    for node_id, name, url, folder in url_inputs(graph):
        key = model_key(url)
        if folder is None and key not in manifest_keys:
            continue
        local = by_key.get(key)
        if local is None:
            continue
        node = rewritten[node_id]
        if node is graph[node_id]:  # copy a node only when one of its inputs changes
            node = rewritten[node_id] = {**node, "inputs": dict(node["inputs"])}
        node["inputs"][name] = local
    return rewritten


def _manifest_keys(manifest: Any) -> frozenset[str]:
    if not isinstance(manifest, list):
        return frozenset()
    return frozenset(
        model_key(entry["url"])
        for entry in manifest
        if isinstance(entry, dict) and isinstance(entry.get("url"), str)
    )
