"""Node setup: make a ComfyUI folder match an environment, all of it or none of it.

Order: ComfyUI's own checkout, each custom node in file order, then the folders of nodes the
file no longer lists are moved aside, then the lock is written. Every change registers how
to undo it; when a step fails the changes are undone in reverse, so the checkouts are back
where they were and the previous lock still describes them. pip cannot be undone: packages a
failed run installed stay, which leaves the old checkouts working (they only add).

Idempotent: when the lock already records this environment and this interpreter, and every
checkout is at its recorded commit, nothing runs but one ``git rev-parse`` per checkout.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from functools import partial

from comfyfleet.environment import git
from comfyfleet.environment.comfyui import sync_comfyui
from comfyfleet.environment.lock import InvalidLock, Lock, LockedNode, read_lock, write_lock
from comfyfleet.environment.pip import PipFailed, pip_freeze_sha256
from comfyfleet.environment.spec import CustomNode, Environment
from comfyfleet.environment.steps import (
    STAGING_FOLDER,
    Progress,
    SetupFailed,
    SetupOptions,
    Undo,
    install_requirements,
    move_aside,
    short,
)


@dataclass(frozen=True, slots=True)
class SetupResult:
    """What node setup did: whether anything changed, and the lock that now holds."""

    changed: bool
    lock: Lock


def previous_lock(options: SetupOptions, progress: Progress) -> Lock | None:
    """The lock of the last run; a damaged one counts as none (everything is redone)."""
    try:
        return read_lock(options.comfy_root)
    except InvalidLock as exc:
        progress.done("lock", f"ignored ({exc}): every step runs")
        return None


def in_place(env: Environment, options: SetupOptions, lock: Lock | None) -> bool:
    """Whether the folder is as ``lock`` recorded it for this very environment."""
    if lock is None or lock.environment_id != env.environment_id:
        return False
    if lock.python != str(options.python) or git.head(options.comfy_root) != lock.comfyui_commit:
        return False
    return all(git.head(options.custom_nodes / node.name) == node.rev for node in env.custom_nodes)


def setup_environment(env: Environment, options: SetupOptions, progress: Progress) -> SetupResult:
    """Make ``options.comfy_root`` match ``env``; raise SetupFailed after undoing every change."""
    previous = previous_lock(options, progress)
    if not options.force and in_place(env, options, previous):
        assert previous is not None
        return SetupResult(changed=False, lock=previous)
    undo = Undo()
    try:
        commit = sync_comfyui(env.comfyui_version, options, undo, progress)
        nodes = tuple(
            sync_node(node, options, previous, undo, progress) for node in env.custom_nodes
        )
        retire_removed(env, options, previous, undo, progress)
        lock = Lock(
            environment_id=env.environment_id,
            comfyui_version=env.comfyui_version,
            comfyui_commit=commit,
            python=str(options.python),
            pip_freeze_sha256=_freeze(options),
            custom_nodes=nodes,
            models=tuple(model.to_dict() for model in env.models),
        )
        _write(options, lock)
    except BaseException as exc:  # Ctrl-C too: never leave half an environment behind
        not_restored = undo.roll_back()
        if isinstance(exc, SetupFailed):
            exc.not_restored = not_restored
        raise
    finally:
        shutil.rmtree(options.comfy_root / STAGING_FOLDER, ignore_errors=True)
    return SetupResult(changed=True, lock=lock)


def sync_node(
    node: CustomNode, options: SetupOptions, previous: Lock | None, undo: Undo, progress: Progress
) -> LockedNode:
    """Check ``node`` out at its rev (cloning it if needed) and install its requirements."""
    folder = options.custom_nodes / node.name
    current = git.head(folder)
    try:
        if current is None:
            outcome = _clone(node, options, undo, progress)
        elif current != node.rev:
            progress.working(node.name, f"fetching {short(node.rev)}")
            git.ensure_commit(folder, node.git, node.rev)
            git.checkout(folder, node.rev)
            undo.add(
                f"checking {node.name} out at {current}", partial(git.checkout, folder, current)
            )
            outcome = f"moved {short(current)} -> {short(node.rev)}"
        else:
            outcome = f"at {short(node.rev)}, unchanged"
        git.set_origin(folder, node.git)
    except (git.GitFailed, OSError) as exc:
        raise SetupFailed(node.name, str(exc)) from None
    if _needs_pip(node, current, options, previous):
        if install_requirements(options, node.name, folder, node.pip, progress):
            outcome += ", requirements installed"
    progress.done(node.name, outcome)
    return LockedNode(name=node.name, git=node.git, commit=node.rev, pip=node.pip)


def _needs_pip(
    node: CustomNode, current: str | None, options: SetupOptions, previous: Lock | None
) -> bool:
    """pip runs for a node whose code, pip list or interpreter changed since the last run."""
    locked = previous.node(node.name) if previous is not None else None
    return (
        options.force
        or current != node.rev
        or previous is None
        or locked is None
        or locked.commit != node.rev
        or locked.pip != node.pip
        or previous.python != str(options.python)
    )


def _clone(node: CustomNode, options: SetupOptions, undo: Undo, progress: Progress) -> str:
    """Clone into the staging folder, then swap in: custom_nodes/ never holds half a clone."""
    folder = options.custom_nodes / node.name
    staging = options.comfy_root / STAGING_FOLDER / node.name
    if staging.exists():  # left by an interrupted run; only node setup writes there
        shutil.rmtree(staging)
    progress.working(node.name, f"cloning {node.git}")
    git.init_clone(staging, node.git)
    git.ensure_commit(staging, node.git, node.rev)
    git.checkout(staging, node.rev)
    outcome = f"cloned at {short(node.rev)}"
    if folder.exists() or folder.is_symlink():  # not a checkout: make way, keep it
        aside = move_aside(options, folder, undo)
        outcome += f" (the folder there moved to {aside.relative_to(options.comfy_root)})"
    folder.parent.mkdir(exist_ok=True)
    staging.rename(folder)
    undo.add(f"removing the new clone {folder}", partial(shutil.rmtree, folder))
    return outcome


def retire_removed(
    env: Environment, options: SetupOptions, previous: Lock | None, undo: Undo, progress: Progress
) -> None:
    """Move aside the folders of nodes the last run installed that the file no longer lists."""
    if previous is None:
        return
    for locked in previous.custom_nodes:
        folder = options.custom_nodes / locked.name
        if env.node(locked.name) is not None:
            continue
        if not folder.exists():
            progress.done(locked.name, "no longer in the file; already gone")
            continue
        aside = move_aside(options, folder, undo)
        moved = aside.relative_to(options.comfy_root)
        progress.done(locked.name, f"no longer in the file: moved aside to {moved}")


def _freeze(options: SetupOptions) -> str:
    try:
        return pip_freeze_sha256(options.python)
    except PipFailed as exc:
        raise SetupFailed("pip", str(exc)) from None


def _write(options: SetupOptions, lock: Lock) -> None:
    try:
        write_lock(options.comfy_root, lock)
    except OSError as exc:
        raise SetupFailed("lock", f"cannot write the lock file: {exc}") from None
