"""ComfyUI's own checkout: moved to ``[comfyui] version`` when the folder is a git checkout.

A folder that is not a git checkout (a copied release) cannot be moved; it is accepted only
when its ``comfyui_version.py`` says the tag the file names (``v0.3.64`` or ``0.3.64``), and
its commit is recorded as unknown. With no version (no ``[comfyui]`` and no default),
ComfyUI is left where it is and its commit recorded.
"""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path

from comfyfleet.environment import git
from comfyfleet.environment.spec import COMMIT
from comfyfleet.environment.steps import (
    Progress,
    SetupFailed,
    SetupOptions,
    Undo,
    install_requirements,
    short,
)

PART = "comfyui"
_RELEASE = re.compile(r"""^__version__\s*=\s*["']([^"']+)["']""", re.MULTILINE)


def release_of(root: Path) -> str | None:
    """The version a ComfyUI folder's comfyui_version.py declares, if it has one."""
    try:
        found = _RELEASE.search((root / "comfyui_version.py").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return None
    return found.group(1) if found else None


def check_comfyui(version: str | None, root: Path) -> None:
    """Refuse, before anything changes, a folder that can be neither moved nor trusted."""
    if version is None or git.is_checkout(root):
        return
    release = release_of(root)
    if release is not None and release.removeprefix("v") == version.removeprefix("v"):
        return
    found = (
        f"its comfyui_version.py says {release!r}" if release else "it has no comfyui_version.py"
    )
    raise SetupFailed(
        PART,
        f"{root} is not a git checkout, so it cannot be moved to {version}, and {found}: "
        "clone ComfyUI with git, or leave [comfyui] out of the file",
    )


def sync_comfyui(
    version: str | None, options: SetupOptions, undo: Undo, progress: Progress
) -> str | None:
    """Check out ``version`` in the ComfyUI folder; its commit (None: not a git checkout)."""
    root = options.comfy_root
    check_comfyui(version, root)
    if not git.is_checkout(root):
        matches = f"release {release_of(root)}, as the file says" if version else "left as it is"
        progress.done(PART, f"not a git checkout: {matches}")
        return None
    current = git.head(root)
    if version is None:
        progress.done(PART, f"left at {short(current)} (the file names no version)")
        return current
    try:
        progress.working(PART, f"looking up {version}")
        if COMMIT.match(version):
            git.ensure_commit(root, "origin", version)
            target = version
        else:
            target = git.ensure_tag(root, version)
        if target == current:
            progress.done(PART, f"{version} ({short(target)}), unchanged")
            return target
        git.checkout(root, target)
    except git.GitFailed as exc:
        raise SetupFailed(PART, str(exc)) from None
    if current is not None:
        undo.add(f"checking ComfyUI out at {current}", partial(git.checkout, root, current))
    # A new ComfyUI pins new packages (its frontend, among others).
    installed = install_requirements(options, PART, root, (), progress)
    after = ", requirements installed" if installed else ""
    progress.done(PART, f"moved {short(current)} -> {version} ({short(target)}){after}")
    return target
