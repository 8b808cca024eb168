"""ComfyUI's folders under one root: model folders, input, output and temp.

Listings behave like ComfyUI's ``folder_paths``: they follow symlinks (to files and to
directories), keep only model extensions, name files in subfolders ``sub/name.ext`` and are
sorted. They are read fresh on every call, which is what ComfyUI's mtime-checked cache amounts
to: a file linked in just now is valid on the next ``/prompt``.
"""

from __future__ import annotations

import mimetypes
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

MODEL_EXTENSIONS = frozenset(
    {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}
)


@dataclass(frozen=True, slots=True)
class ModelFolder:
    """Where one kind of model lives (paths relative to the root) and which files count."""

    paths: tuple[str, ...]
    extensions: frozenset[str] | None  # None: every file


def _models(*names: str, extensions: frozenset[str] | None = MODEL_EXTENSIONS) -> ModelFolder:
    return ModelFolder(tuple(f"models/{name}" for name in names), extensions)


# In ComfyUI 0.3.64's order: ``GET /models`` answers with these keys as they stand.
MODEL_FOLDERS: dict[str, ModelFolder] = {
    "checkpoints": _models("checkpoints"),
    "configs": _models("configs", extensions=frozenset({".yaml"})),
    "loras": _models("loras"),
    "vae": _models("vae"),
    "text_encoders": _models("text_encoders", "clip"),
    "diffusion_models": _models("unet", "diffusion_models"),
    "clip_vision": _models("clip_vision"),
    "style_models": _models("style_models"),
    "embeddings": _models("embeddings"),
    "diffusers": _models("diffusers", extensions=frozenset({"folder"})),
    "vae_approx": _models("vae_approx"),
    "controlnet": _models("controlnet", "t2i_adapter"),
    "gligen": _models("gligen"),
    "upscale_models": _models("upscale_models"),
    "custom_nodes": ModelFolder(("custom_nodes",), None),
    "hypernetworks": _models("hypernetworks"),
    "photomaker": _models("photomaker"),
    "classifiers": _models("classifiers", extensions=frozenset({""})),
    "model_patches": _models("model_patches"),
    "audio_encoders": _models("audio_encoders"),
}

DIRECTORY_TYPES = ("output", "input", "temp")


class UnsafeSavePath(Exception):
    """A filename prefix that would save outside the output folder."""


@dataclass(frozen=True, slots=True)
class SaveTarget:
    """Where a save node writes its next files, as ComfyUI's ``get_save_image_path`` finds it."""

    folder: Path
    filename: str
    counter: int
    subfolder: str


class ComfyFolders:
    """The folders of one fake ComfyUI installation, all under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.input_dir = self.root / "input"
        self.output_dir = self.root / "output"
        self.temp_dir = self.root / "temp"

    def ensure(self) -> None:
        """Create the input, output, temp and model folders that are missing."""
        for directory in (self.input_dir, self.output_dir, self.temp_dir):
            directory.mkdir(parents=True, exist_ok=True)
        for folder in MODEL_FOLDERS.values():
            if folder.paths[0].startswith("models/"):
                (self.root / folder.paths[0]).mkdir(parents=True, exist_ok=True)

    # -- models -----------------------------------------------------------------------------

    def list_models(self, folder: str) -> list[str]:
        """The files ComfyUI would offer for ``folder``; KeyError for an unknown folder."""
        spec = MODEL_FOLDERS[folder]
        names: set[str] = set()
        for relative in spec.paths:
            names.update(_walk_files(self.root / relative, spec.extensions))
        return sorted(names)

    def model_path(self, folder: str, name: str) -> Path | None:
        """The file ``name`` in ``folder`` (through symlinks), or None if it is not a file."""
        spec = MODEL_FOLDERS.get(folder)
        if spec is None:
            return None
        # As ComfyUI does: anchor the name at "/" so ".." cannot climb out of the folder.
        relative = os.path.relpath(os.path.join("/", name), "/")
        for base in spec.paths:
            candidate = self.root / base / relative
            if candidate.is_file():
                return candidate
        return None

    # -- input, output, temp ----------------------------------------------------------------

    def directory_by_type(self, kind: str) -> Path | None:
        return {"output": self.output_dir, "input": self.input_dir, "temp": self.temp_dir}.get(kind)

    def annotated(self, name: str) -> tuple[str, Path | None]:
        """Split ``"x.png [output]"`` into the name and the folder its annotation names."""
        for kind in DIRECTORY_TYPES:
            suffix = f" [{kind}]"
            if name.endswith(suffix):
                return name[: -len(suffix)], self.directory_by_type(kind)
        return name, None

    def input_file(self, name: str) -> Path:
        """The path ``LoadImage`` reads for ``name`` (input folder unless annotated)."""
        name, base = self.annotated(name)
        return Path(os.path.abspath(os.path.join(base or self.input_dir, name)))

    def list_input_images(self) -> list[str]:
        """``LoadImage``'s choices: image files directly in the input folder, sorted."""
        if not self.input_dir.is_dir():
            return []
        names = [entry.name for entry in self.input_dir.iterdir() if entry.is_file()]
        return sorted(name for name in names if _is_image_name(name))

    def save_target(self, prefix: str, base: Path, width: int = 0, height: int = 0) -> SaveTarget:
        """The folder, base name and next free counter for a save node's ``filename_prefix``.

        The counter continues after the highest ``<name>_<digits>_…`` file already there, so
        files from earlier runs (or another server) are never overwritten.
        """
        if "%" in prefix:
            prefix = _expand_prefix(prefix, width, height)
        normalized = os.path.normpath(prefix)
        subfolder, filename = os.path.dirname(normalized), os.path.basename(normalized)
        folder = Path(os.path.abspath(os.path.join(base, subfolder)))
        if os.path.commonpath((str(base), str(folder))) != str(base):
            raise UnsafeSavePath(
                "**** ERROR: Saving image outside the output folder is not allowed."
                f"\n full_output_folder: {folder}\n         output_dir: {base}"
            )
        folder.mkdir(parents=True, exist_ok=True)
        return SaveTarget(folder, filename, _next_counter(folder, filename), subfolder)


def _next_counter(folder: Path, filename: str) -> int:
    """One more than the highest counter of ``<filename>_<digits>…`` files in ``folder``."""
    counters = []
    for existing in os.listdir(folder):
        number, stem = _split_counter(existing, filename)
        if os.path.normcase(stem[:-1]) == os.path.normcase(filename) and stem[-1:] == "_":
            counters.append(number)
    return max(counters, default=0) + 1


def _walk_files(base: Path, extensions: frozenset[str] | None) -> Iterator[str]:
    if not base.is_dir():
        return
    visited: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(base, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in visited:  # a symlink loop: ComfyUI would recurse forever, we stop
            dirnames[:] = []
            continue
        visited.add(real)
        dirnames[:] = [name for name in dirnames if name != ".git"]
        for filename in filenames:
            full = os.path.join(dirpath, filename)
            if not os.path.exists(full):  # a dangling symlink
                continue
            relative = os.path.relpath(full, base).replace(os.sep, "/")
            if extensions is None or os.path.splitext(relative)[1].lower() in extensions:
                yield relative


def _split_counter(existing: str, filename: str) -> tuple[int, str]:
    """``probe_00007_.png`` with filename ``probe`` → (7, ``probe_``)."""
    stem = existing[: len(filename) + 1]
    try:
        digits = int(existing[len(filename) + 1 :].split(".")[0].split("_")[0])
    except ValueError:
        digits = 0
    return digits, stem


def _expand_prefix(prefix: str, width: int, height: int) -> str:
    now = time.localtime()
    values = {
        "width": str(width),
        "height": str(height),
        "year": str(now.tm_year),
        "month": f"{now.tm_mon:02}",
        "day": f"{now.tm_mday:02}",
        "hour": f"{now.tm_hour:02}",
        "minute": f"{now.tm_min:02}",
        "second": f"{now.tm_sec:02}",
    }
    for key, value in values.items():
        prefix = prefix.replace(f"%{key}%", value)
    return prefix


def _is_image_name(name: str) -> bool:
    kind, _ = mimetypes.guess_type(name, strict=False)
    return kind is not None and kind.split("/")[0] == "image"
