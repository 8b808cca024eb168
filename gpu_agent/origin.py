"""Downloading a model from its origin URL: streamed, resumable, capped and hashed.

A dropped connection is resumed with ``Range: bytes=<on disk>-`` (and ``If-Range``, so a
file that changed meanwhile is fetched whole instead of spliced); a server that ignores
Range answers 200 and the download restarts from zero on that same response. Bytes are
hashed as they are written, so the SHA-256 costs no second pass over the file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import requests
import urllib3

from comfyfleet.netguard import FetchRefused, OutboundClient, redact_url
from comfyfleet.workflow.refs import ModelRef
from gpu_agent.source_protocol import (
    DEFAULT_MAX_BYTES,
    DownloadRefused,
    Fetched,
    IntegrityMismatch,
    ModelTooLarge,
    OriginRejected,
    OriginUnavailable,
    Source,
    check_integrity,
)

logger = logging.getLogger(__name__)

MiB = 1024 * 1024
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
_RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
# Network failures worth resuming from; anything else (disk full, a bug) is not retried.
_NETWORK_ERRORS = (requests.RequestException, urllib3.exceptions.HTTPError)


class _Interrupted(Exception):
    """The transfer stopped early for a reason a later attempt may not meet."""


@dataclass
class _Partial:
    """The bytes of one download so far: the open file, their count and their hash."""

    file: IO[bytes]
    written: int = 0
    digest: Any = field(default_factory=hashlib.sha256)
    validator: str | None = None  # ETag or Last-Modified of the copy being written
    resumable: bool = True

    def restart(self) -> None:
        self.file.seek(0)
        self.file.truncate()
        self.written = 0
        self.digest = hashlib.sha256()
        self.validator = None

    def write(self, chunk: bytes) -> None:
        self.file.write(chunk)
        self.digest.update(chunk)
        self.written += len(chunk)


class OriginDownloader:
    """Fetches model files from their URLs through the SSRF-guarded client."""

    def __init__(
        self,
        client: OutboundClient,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        chunk_bytes: int = 1 * MiB,
        max_attempts: int = 6,
        backoff_seconds: float = 0.5,
        max_backoff_seconds: float = 15.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client
        self.max_bytes = max_bytes
        self.chunk_bytes = chunk_bytes
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.sleep = sleep

    def download(self, ref: ModelRef, dest: Path) -> Fetched:
        """Stream ``ref.url`` into ``dest``, resuming after drops; verify size and hash.

        Raises DownloadRefused (SSRF guard), OriginRejected (4xx), OriginUnavailable
        (network or 5xx after ``max_attempts``), ModelTooLarge or IntegrityMismatch; on any
        failure ``dest`` is removed.
        """
        started = time.monotonic()
        try:
            with dest.open("wb") as file:
                partial = _Partial(file)
                self._transfer(ref, partial)
                file.flush()
                os.fsync(file.fileno())
            sha256 = partial.digest.hexdigest()
            check_integrity(ref, partial.written, sha256)
        except BaseException:
            dest.unlink(missing_ok=True)
            raise
        return Fetched(partial.written, sha256, Source.ORIGIN, time.monotonic() - started)

    def _transfer(self, ref: ModelRef, partial: _Partial) -> None:
        attempt = 1
        while True:
            before = partial.written
            try:
                self._attempt(ref, partial)
                return
            except _Interrupted as exc:
                if partial.written - before >= self.chunk_bytes:
                    attempt = 1  # it was moving: a long download may drop now and then
                if attempt >= self.max_attempts:
                    raise OriginUnavailable(
                        f"origin {redact_url(ref.url)} failed {attempt} times; last: {exc}"
                    ) from None
                delay = min(self.max_backoff_seconds, self.backoff_seconds * 2 ** (attempt - 1))
                logger.warning(
                    "origin download interrupted, resuming",
                    extra={
                        "model_key": ref.key,
                        "url": redact_url(ref.url),
                        "bytes_on_disk": partial.written,
                        "attempt": attempt,
                        "reason": str(exc),
                        "retry_in": delay,
                    },
                )
                self.sleep(delay)
                attempt += 1

    def _attempt(self, ref: ModelRef, partial: _Partial) -> None:
        """One request: from the bytes on disk to the end, or as far as it gets."""
        headers = {"Accept-Encoding": "identity"}
        if partial.written and partial.resumable:
            headers["Range"] = f"bytes={partial.written}-"
            if partial.validator:
                headers["If-Range"] = partial.validator
        elif partial.written:
            partial.restart()
        try:
            response = self.client.get(ref.url, headers=headers, stream=True)
        except FetchRefused as exc:
            raise DownloadRefused(str(exc)) from None
        except _NETWORK_ERRORS as exc:
            # requests' messages quote the URL with its query string: keep only the type.
            raise _Interrupted(type(exc).__name__) from None
        with response:
            total = self._start(ref, partial, response)
            try:
                for chunk in response.iter_content(self.chunk_bytes):
                    partial.write(chunk)
                    self._check_running_size(ref, partial)
            except _NETWORK_ERRORS as exc:
                raise _Interrupted(f"{type(exc).__name__} after {partial.written} bytes") from None
        if total is not None and partial.written != total:
            raise _Interrupted(f"body ended at {partial.written} of {total} bytes")

    def _start(self, ref: ModelRef, partial: _Partial, response: requests.Response) -> int | None:
        """Check a response's status and headers; return the file's total size if known."""
        status = response.status_code
        if status in _RETRYABLE_STATUSES:
            raise _Interrupted(f"HTTP {status}")
        content_range = response.headers.get("Content-Range", "")
        if status == 206 and partial.written:
            match = _CONTENT_RANGE.match(content_range)
            if match is None or int(match.group(1)) != partial.written:
                # Not the bytes we asked for: start over with a plain request.
                partial.restart()
                partial.resumable = False
                raise _Interrupted(f"unexpected Content-Range {content_range!r}")
            total = None if match.group(3) == "*" else int(match.group(3))
        elif status == 200:
            if partial.written:
                logger.info(
                    "origin ignored Range or the file changed; restarting",
                    extra={"model_key": ref.key, "url": redact_url(ref.url)},
                )
                partial.restart()
            total = _int_header(response, "Content-Length")
            partial.validator = _validator(response)
        elif status == 416 and partial.written:
            partial.restart()
            raise _Interrupted("HTTP 416 on resume")
        else:
            raise OriginRejected(
                f"origin {redact_url(ref.url)} answered HTTP {status}", status=status
            )
        if response.headers.get("Content-Encoding", "identity").lower() != "identity":
            # Ranges count encoded bytes; we count decoded ones. Never splice those.
            partial.resumable = False
            total = None
        if total is not None:
            if total > self.max_bytes:
                raise ModelTooLarge(
                    f"origin {redact_url(ref.url)} offers {total} bytes; cap {self.max_bytes}"
                )
            if ref.size is not None and total != ref.size:
                raise IntegrityMismatch(
                    f"origin {redact_url(ref.url)} offers {total} bytes, expected {ref.size}"
                )
        return total

    def _check_running_size(self, ref: ModelRef, partial: _Partial) -> None:
        if partial.written > self.max_bytes:
            raise ModelTooLarge(
                f"origin {redact_url(ref.url)} sent more than the cap of {self.max_bytes} bytes"
            )
        if ref.size is not None and partial.written > ref.size:
            raise IntegrityMismatch(
                f"origin {redact_url(ref.url)} sent more than the expected {ref.size} bytes"
            )


def _int_header(response: requests.Response, name: str) -> int | None:
    value = response.headers.get(name)
    return int(value) if value is not None and value.isdigit() else None


def _validator(response: requests.Response) -> str | None:
    """What If-Range may carry: a strong ETag, else Last-Modified (RFC 9110 §13.1.5)."""
    etag = response.headers.get("ETag")
    if etag and not etag.startswith("W/"):
        return etag
    return response.headers.get("Last-Modified")
