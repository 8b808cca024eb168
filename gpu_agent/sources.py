"""Where the agent gets a model file: the S3 model mirror first, then its origin URL.

:class:`ModelSources` is the chain the model cache asks (DESIGN §7): the mirror object
``models/<key>`` when it exists, else the origin (streamed and resumable, behind the SSRF
guard), written through to the mirror in the background so the next node gets it from S3.
Every failure leaves this module as a :class:`SourceError`; ``permanent`` says whether
trying again (later, or on another node) can help.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from urllib.parse import urlsplit

from comfyfleet.netguard import redact_url
from comfyfleet.workflow.refs import ModelRef
from gpu_agent.mirror import ModelMirror
from gpu_agent.origin import OriginDownloader
from gpu_agent.source_protocol import (
    DEFAULT_MAX_BYTES,
    DownloadRefused,
    Fetched,
    FetchedHook,
    GiB,
    IntegrityMismatch,
    MiB,
    MirrorUnavailable,
    ModelSource,
    ModelTooLarge,
    OriginRejected,
    OriginUnavailable,
    Source,
    SourceError,
    check_integrity,
    file_sha256,
)

# The protocol, errors and data types live in gpu_agent.source_protocol (the domain that
# mirror and origin share); they are re-exported here, where callers have always found them.
__all__ = [
    "DEFAULT_MAX_BYTES",
    "GiB",
    "MiB",
    "DownloadRefused",
    "Fetched",
    "FetchedHook",
    "IntegrityMismatch",
    "MirrorUnavailable",
    "ModelSource",
    "ModelSources",
    "ModelTooLarge",
    "OriginRejected",
    "OriginUnavailable",
    "Source",
    "SourceError",
    "check_integrity",
    "file_sha256",
]

logger = logging.getLogger(__name__)


class ModelSources:
    """The mirror, then the origin with write-through: a :class:`ModelSource`.

    Write-through uploads run on a small background pool from a hard link to the fetched
    file, so the job is not delayed and the cache may rename (or even evict) the file
    meanwhile. Upload failures are logged, never raised. Call :meth:`close` at shutdown.
    """

    def __init__(
        self,
        origin: OriginDownloader,
        mirror: ModelMirror | None = None,
        *,
        write_through: bool = True,
        on_fetched: FetchedHook | None = None,
        upload_workers: int = 1,
    ) -> None:
        self.origin = origin
        self.mirror = mirror
        self.write_through = write_through and mirror is not None
        self.on_fetched = on_fetched
        self._uploads = ThreadPoolExecutor(upload_workers, thread_name_prefix="mirror-upload")
        self._pending: set[Future[None]] = set()
        self._lock = threading.Lock()

    def fetch(self, ref: ModelRef, dest: Path) -> Fetched:
        """Put the file ``ref`` names at ``dest``; raise SourceError (dest removed) if not."""
        try:
            fetched = self._from_mirror(ref, dest)
            if fetched is None:
                fetched = self._from_origin(ref, dest)
        except BaseException:
            dest.unlink(missing_ok=True)
            raise
        logger.info(
            "model fetched",
            extra={
                "model_key": ref.key,
                "source": str(fetched.source),
                "bytes": fetched.size,
                "seconds": round(fetched.seconds, 3),
            },
        )
        self._notify(ref, fetched)
        return fetched

    def _from_mirror(self, ref: ModelRef, dest: Path) -> Fetched | None:
        if self.mirror is None:
            return None
        try:
            return self.mirror.download(ref, dest)
        except (MirrorUnavailable, IntegrityMismatch) as exc:
            # A broken or stale mirror copy must not fail the job while the origin works.
            logger.warning(
                "mirror copy unusable, trying the origin",
                extra={"model_key": ref.key, "error": type(exc).__name__, "reason": str(exc)},
            )
            dest.unlink(missing_ok=True)
            return None

    def _from_origin(self, ref: ModelRef, dest: Path) -> Fetched:
        parts = urlsplit(ref.url)
        if parts.scheme.lower() == "s3":
            return self._from_s3_url(ref, parts.netloc, parts.path.lstrip("/"), dest)
        fetched = self.origin.download(ref, dest)
        if self.write_through:
            self._write_through(ref, dest, fetched)
        return fetched

    def _from_s3_url(self, ref: ModelRef, bucket: str, key: str, dest: Path) -> Fetched:
        # Workflow validation admits s3:// URLs in the deployment's own bucket only.
        if self.mirror is None or bucket != self.mirror.bucket:
            raise DownloadRefused(f"s3://{bucket}/ is not the model bucket")
        fetched = self.mirror.download(ref, dest, object_key=key)
        if fetched is None:
            raise OriginRejected(f"s3://{bucket}/{key} does not exist", status=404)
        return Fetched(fetched.size, fetched.sha256, Source.ORIGIN, fetched.seconds)

    def _write_through(self, ref: ModelRef, dest: Path, fetched: Fetched) -> None:
        assert self.mirror is not None
        mirror = self.mirror
        link = dest.with_name(f"{dest.name}.upload-{uuid.uuid4().hex[:8]}")
        try:
            os.link(dest, link)
        except OSError as exc:
            logger.warning(
                "write-through skipped", extra={"model_key": ref.key, "error": repr(exc)}
            )
            return

        def upload() -> None:
            try:
                mirror.upload(ref, link, size=fetched.size, sha256=fetched.sha256)
            except SourceError as exc:
                logger.warning(
                    "write-through to the mirror failed",
                    extra={"model_key": ref.key, "error": type(exc).__name__, "reason": str(exc)},
                )
            finally:
                link.unlink(missing_ok=True)

        with self._lock:
            future = self._uploads.submit(upload)
            self._pending.add(future)
        future.add_done_callback(self._forget)

    def _forget(self, future: Future[None]) -> None:
        with self._lock:
            self._pending.discard(future)

    def _notify(self, ref: ModelRef, fetched: Fetched) -> None:
        if self.on_fetched is None:
            return
        try:
            self.on_fetched(ref, fetched.size, fetched.sha256, fetched.source)
        except Exception as exc:  # a catalogue hiccup must not fail the job
            logger.warning(
                "on_fetched hook failed",
                extra={"model_key": ref.key, "url": redact_url(ref.url), "error": repr(exc)},
            )

    def wait_for_uploads(self, timeout: float | None = None) -> bool:
        """Wait for write-through uploads started so far; True if all finished."""
        with self._lock:
            pending = set(self._pending)
        _, not_done = wait(pending, timeout=timeout)
        return not not_done

    def close(self, *, wait_for_uploads: bool = True) -> None:
        """Stop the upload pool (finishing queued uploads unless told otherwise)."""
        self._uploads.shutdown(wait=wait_for_uploads, cancel_futures=not wait_for_uploads)
