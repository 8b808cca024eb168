"""Symlinks that show cached models to ComfyUI, in its model folders and input folder.

ComfyUI lists a folder by following symlinks and skipping dangling ones, and drops its
listing cache when the folder's mtime changes (COMFYUI.md), so a link made before
``POST /prompt`` is visible to that prompt without a restart. Links are created under a
temporary name and renamed into place, so ComfyUI never lists a half-made entry.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

from comfyfleet.workflow.refs import FOLDERS
from comfyfleet.workflow.urls import INPUT_FOLDER


class ComfyFolders:
    """Where ComfyUI reads each folder: ``<root>/models/<folder>`` and its input folder."""

    def __init__(self, comfy_root: Path, *, input_dir: Path | None = None) -> None:
        self.root = comfy_root
        self.input_dir = input_dir or comfy_root / INPUT_FOLDER

    def path(self, folder: str) -> Path:
        """The directory ComfyUI lists for ``folder`` (a canonical folder name)."""
        if folder == INPUT_FOLDER:
            return self.input_dir
        if folder not in FOLDERS:
            raise ValueError(f"{folder!r} is not a ComfyUI folder")
        return self.root / "models" / folder

    def all(self) -> list[Path]:
        """Every folder the cache may link into."""
        return [self.path(folder) for folder in sorted(FOLDERS)]

    def links_into(self, objects_dir: Path) -> Iterator[tuple[Path, str]]:
        """Each symlink in the folders whose target lies in ``objects_dir``, with that name.

        Links pointing anywhere else are an operator's own and are not ours to judge.
        """
        for folder in self.all():
            try:
                entries = list(os.scandir(folder))
            except FileNotFoundError:
                continue
            for entry in entries:
                if not entry.is_symlink():
                    continue
                target = link_target(Path(entry.path))
                if target is not None and target.parent == objects_dir:
                    yield Path(entry.path), target.name


def link_target(link: Path) -> Path | None:
    """Where ``link`` points, as a normalised absolute path (None if it is no link)."""
    try:
        target = os.readlink(link)
    except OSError:
        return None
    return Path(os.path.normpath(os.path.join(link.parent, target)))


def place_link(link: Path, target: Path) -> None:
    """Make ``link`` a symlink to ``target``, replacing any link there, atomically."""
    link.parent.mkdir(parents=True, exist_ok=True)
    staging = link.with_name(f".{link.name}.{uuid.uuid4().hex[:8]}.link")
    os.symlink(target, staging)
    try:
        os.replace(staging, link)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise


def remove_link(link: Path, target: Path) -> None:
    """Remove ``link`` if it still points at ``target`` (another may have replaced it)."""
    if link_target(link) == target:
        link.unlink(missing_ok=True)
