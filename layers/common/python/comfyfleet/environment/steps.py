"""What the steps of node setup share: its options, its failure, the undo log, pip, moving aside."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Protocol

from comfyfleet.environment.pip import PipFailed, pip_install

# Beside custom_nodes/, not in it: ComfyUI imports every folder under custom_nodes/, so a
# half-made clone or a retired node must never sit there.
STAGING_FOLDER = "custom_nodes.staging"
DISABLED_FOLDER = "custom_nodes.disabled"


class SetupFailed(Exception):
    """A step failed; ``part`` is the custom node's name, or comfyui, pip or lock."""

    def __init__(self, part: str, reason: str) -> None:
        super().__init__(f"{part}: {reason}")
        self.part = part
        self.reason = reason
        self.not_restored: list[str] = []  # undo steps that failed in their turn


@dataclass(frozen=True, slots=True)
class SetupOptions:
    """Where to set up and with what: the ComfyUI folder and its interpreter."""

    comfy_root: Path
    python: Path  # absolute, not resolved: a venv's python is a symlink that must stay one
    pip_args: tuple[str, ...] = ()  # extra `pip install` arguments (tests: --no-index)
    force: bool = False  # run pip for every node even if nothing changed

    @property
    def custom_nodes(self) -> Path:
        return self.comfy_root / "custom_nodes"


class Progress(Protocol):
    """Where node setup reports: a line per part (ComfyUI, each node) as it finishes."""

    def working(self, part: str, doing: str) -> None: ...

    def done(self, part: str, outcome: str) -> None: ...


@dataclass
class Undo:
    """The changes made so far, each with the action that reverses it."""

    _actions: list[tuple[str, Callable[[], object]]] = field(default_factory=list)

    def add(self, what: str, action: Callable[[], object]) -> None:
        self._actions.append((what, action))

    def roll_back(self) -> list[str]:
        """Undo every change, newest first; what could not be undone, in words."""
        failed = []
        for what, action in reversed(self._actions):
            try:
                action()
            except Exception as exc:  # keep undoing the others
                failed.append(f"{what}: {exc}")
        self._actions.clear()
        return failed


def short(commit: str | None) -> str:
    return commit[:12] if commit else "nothing"


def install_requirements(
    options: SetupOptions, part: str, folder: Path, packages: tuple[str, ...], progress: Progress
) -> bool:
    """pip install ``folder``'s requirements.txt and ``packages``; False if there were none."""
    requirements = folder / "requirements.txt"
    progress.working(part, "installing requirements")
    try:
        return pip_install(
            options.python,
            requirements=requirements if requirements.is_file() else None,
            packages=packages,
            extra_args=options.pip_args,
            cwd=folder,
        )
    except PipFailed as exc:
        raise SetupFailed(part, str(exc)) from None


def move_aside(options: SetupOptions, folder: Path, undo: Undo) -> Path:
    """Move ``folder`` into custom_nodes.disabled/NAME-<UTC time>; never delete it."""
    aside_root = options.comfy_root / DISABLED_FOLDER
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    target = aside_root / f"{folder.name}-{stamp}"
    count = 1
    while target.exists():
        count += 1
        target = aside_root / f"{folder.name}-{stamp}-{count}"
    try:
        aside_root.mkdir(exist_ok=True)
        folder.rename(target)
    except OSError as exc:
        raise SetupFailed(folder.name, f"cannot move {folder} aside: {exc}") from None
    undo.add(f"moving {target} back", partial(target.rename, folder))
    return target
