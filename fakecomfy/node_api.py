"""What a node implementation receives and returns, and the errors it may raise."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PIL import Image

from fakecomfy.folders import ComfyFolders


class InterruptProcessing(Exception):
    """The running prompt was interrupted (ComfyUI's ``InterruptProcessingException``)."""


class ReportedError(Exception):
    """A failure reported under the exception type a real ComfyUI shows for it, e.g.
    ``safetensors._safetensors_rust.SafetensorError`` for an empty checkpoint."""

    def __init__(self, message: str, reported_type: str) -> None:
        super().__init__(message)
        self.reported_type = reported_type


# (value, total, preview or None): a sampler finished step ``value`` of ``total``.
StepHook = Callable[[int, int, Image.Image | None], None]


@dataclass(frozen=True, slots=True)
class NodeContext:
    """The run a node executes in."""

    prompt_id: str
    node_id: str
    folders: ComfyFolders
    step_seconds: float
    previews: bool
    report_step: StepHook


@dataclass(frozen=True, slots=True)
class NodeOutput:
    """A node's outputs (one per declared output) and what it shows in the UI / history."""

    result: tuple[Any, ...] = ()
    ui: dict[str, list[Any]] | None = None


# Called as ``function(context, **inputs)``; inputs are named as the catalogue declares them.
NodeFunction = Callable[..., NodeOutput]
