"""What a model source is: the protocol, its errors, what it returns, and integrity checks.

The domain the model cache, the mirror, the origin downloader and the source chain
(:mod:`gpu_agent.sources`) share. Every failure to fetch a model is a :class:`SourceError`;
``permanent`` says whether trying again (later, or on another node) can help.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import ClassVar, Protocol

from comfyfleet.workflow.refs import ModelRef

MiB = 1024 * 1024
GiB = 1024 * MiB
DEFAULT_MAX_BYTES = 64 * GiB  # larger than any public checkpoint; a bound on disk, not a quota
_HASH_BLOCK = 4 * MiB


class SourceError(Exception):
    """A model file could not be fetched; the message is safe to log and to show."""

    permanent: ClassVar[bool] = False  # True when retrying, here or elsewhere, cannot help


class MirrorUnavailable(SourceError):
    """The S3 mirror failed (network, throttling, permissions); the origin may still work."""


class OriginUnavailable(SourceError):
    """The origin could not be reached, or kept failing, within the retry budget."""


class OriginRejected(SourceError):
    """The origin answered with an error status that retrying will not change."""

    permanent = True

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class DownloadRefused(SourceError):
    """The URL (or a redirect) names something outbound fetches must not reach."""

    permanent = True


class ModelTooLarge(SourceError):
    """The file is larger than the agent's size cap."""

    permanent = True


class IntegrityMismatch(SourceError):
    """The bytes fetched do not match the size or SHA-256 the reference declares."""

    permanent = True


class Source(StrEnum):
    MIRROR = "mirror"
    ORIGIN = "origin"


@dataclass(frozen=True, slots=True)
class Fetched:
    """A file a source wrote to the caller's path.

    ``sha256`` is the hash of the bytes written when the source computed it: always for an
    origin download (hashed while streaming), for a mirror copy only when the reference
    declares a hash to check (hashing gigabytes after a fast S3 copy is not free).
    """

    size: int
    sha256: str | None
    source: Source
    seconds: float


class ModelSource(Protocol):
    """What the model cache needs: put the file ``ref`` names at ``dest``."""

    def fetch(self, ref: ModelRef, dest: Path) -> Fetched: ...


# Called after each fetch (e.g. to record the model in the catalogue table); never fatal.
FetchedHook = Callable[[ModelRef, int, str | None, Source], None]


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, read in large blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while block := file.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def check_integrity(ref: ModelRef, size: int, sha256: str | None) -> None:
    """Raise IntegrityMismatch unless ``size``/``sha256`` agree with what ``ref`` declares."""
    if ref.size is not None and size != ref.size:
        raise IntegrityMismatch(f"model {ref.key[:12]}: {size} bytes, expected {ref.size}")
    if ref.sha256 is not None and sha256 is not None and sha256 != ref.sha256.lower():
        raise IntegrityMismatch(
            f"model {ref.key[:12]}: SHA-256 {sha256[:16]}…, expected {ref.sha256[:16]}…"
        )
