"""The deployment's S3 model mirror: ``s3://<bucket>/models/<model_key>``.

Downloads go through boto3's transfer manager (what ``download_file`` uses) with parallel
ranged GETs, after one HEAD that checks existence, size and the written-through hash. Its defaults
(8 MiB parts, 10 threads, 256 KiB writes) were chosen for general use; a model is one large
object on an instance with a fat pipe, so :func:`transfer_config_for` sizes parts per object:

* **16 threads.** One S3 connection carries roughly 80–100 MB/s; GPU instances have
  10–100 Gbit/s, so concurrency is what buys throughput. 16 keeps a g5/g6 (up to 25 Gbit/s)
  busy without starving ComfyUI of CPU, and the client's connection pool is sized to match
  (:func:`mirror_client`; botocore's pool of 10 would otherwise serialise 6 of them).
* **Parts of 8–64 MiB, about two per thread.** Each part pays one request's first-byte
  latency (tens of ms), so parts should be large; but the last wave of parts finishes
  unevenly, so there should be several per thread. ``size / (2 × threads)`` clamped to
  8–64 MiB does both: a 1 GiB checkpoint is 32 parts of 32 MiB, a 6 GiB one 96 of 64 MiB,
  a 150 MiB LoRA 19 of 8 MiB. Fewer, larger parts also mean fewer requests billed.
* **1 MiB write chunks and a 128-chunk write queue.** The transfer manager's single writer
  thread handles each chunk separately; 4× fewer, larger chunks cut its per-chunk overhead,
  and the queue bounds buffered memory at 128 MiB.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import boto3
from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig, create_transfer_manager
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from s3transfer.exceptions import RetriesExceededError, S3DownloadFailedError
from s3transfer.subscribers import BaseSubscriber

from comfyfleet import aws_faults
from comfyfleet.aws_calls import count_calls
from comfyfleet.workflow.refs import ModelRef
from comfyfleet.workflow.urls import normalise_url
from gpu_agent.source_protocol import (
    DEFAULT_MAX_BYTES,
    Fetched,
    IntegrityMismatch,
    MirrorUnavailable,
    ModelTooLarge,
    Source,
    check_integrity,
    file_sha256,
)

logger = logging.getLogger(__name__)

MiB = 1024 * 1024
MODEL_PREFIX = "models/"
DOWNLOAD_THREADS = 16
UPLOAD_THREADS = 4  # write-through runs beside jobs' downloads; it must not starve them
MIN_PART = 8 * MiB
MAX_PART = 64 * MiB
_MAX_METADATA_URL = 1024  # S3 user metadata is limited to 2 KiB in all
_NOT_FOUND = frozenset({"404", "NoSuchKey", "NotFound"})


def transfer_config_for(size: int, threads: int = DOWNLOAD_THREADS) -> TransferConfig:
    """The download configuration for an object of ``size`` bytes (module doc: why)."""
    part = math.ceil(size / (2 * threads) / MiB) * MiB
    part = min(MAX_PART, max(MIN_PART, part))
    return TransferConfig(
        multipart_threshold=part,
        multipart_chunksize=part,
        max_concurrency=threads,
        io_chunksize=1 * MiB,
        max_io_queue=128,
        num_download_attempts=5,
        preferred_transfer_client="classic",
    )


def upload_config(threads: int = UPLOAD_THREADS) -> TransferConfig:
    """Write-through uploads: large parts, few threads (they run beside job downloads)."""
    return TransferConfig(
        multipart_threshold=64 * MiB,
        multipart_chunksize=64 * MiB,
        max_concurrency=threads,
        preferred_transfer_client="classic",
    )


def mirror_client(
    *,
    session: boto3.session.Session | None = None,
    endpoint_url: str | None = None,
    region_name: str | None = None,
) -> Any:
    """An S3 client with a connection pool wide enough for the mirror's parallel ranges."""
    config = Config(
        max_pool_connections=DOWNLOAD_THREADS + UPLOAD_THREADS,
        retries={"mode": "standard", "max_attempts": 5},
        connect_timeout=10,
        read_timeout=60,
        tcp_keepalive=True,
    )
    made = (session or boto3.session.Session()).client(
        "s3", endpoint_url=endpoint_url, region_name=region_name, config=config
    )
    count_calls(made)  # the dev stack's request counting; off elsewhere
    aws_faults.install(made)  # the dev stack's fault injection; refused elsewhere
    return made


class _KnownObject(BaseSubscriber):
    """Hands the transfer manager the size and ETag our HEAD already fetched."""

    def __init__(self, size: int, etag: str | None) -> None:
        self.size = size
        self.etag = etag

    def on_queued(self, future: Any, **kwargs: Any) -> None:
        future.meta.provide_transfer_size(self.size)
        if self.etag:
            future.meta.provide_object_etag(self.etag)


def _is_not_found(exc: ClientError) -> bool:
    error = exc.response.get("Error", {})
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return str(error.get("Code")) in _NOT_FOUND or status == 404


class ModelMirror:
    """Models by key in the deployment's S3 bucket (and its ``s3://`` model URLs)."""

    def __init__(
        self,
        client: Any,
        bucket: str,
        *,
        prefix: str = MODEL_PREFIX,
        threads: int = DOWNLOAD_THREADS,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix
        self.threads = threads
        self.max_bytes = max_bytes

    def object_key(self, model_key: str) -> str:
        """The S3 key of a model's mirror copy: ``models/<model_key>``."""
        return f"{self.prefix}{model_key}"

    def download(
        self, ref: ModelRef, dest: Path, *, object_key: str | None = None
    ) -> Fetched | None:
        """Copy the mirror's object for ``ref`` to ``dest``; None when there is none.

        The size is checked against the object's and the ref's before and after the copy;
        the SHA-256 only when the ref declares one. Raises MirrorUnavailable,
        ModelTooLarge or IntegrityMismatch (``dest`` removed).
        """
        key = object_key or self.object_key(ref.key)
        started = time.monotonic()
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _is_not_found(exc):
                return None
            raise MirrorUnavailable(f"mirror HEAD {key}: {_describe(exc)}") from exc
        except BotoCoreError as exc:
            raise MirrorUnavailable(f"mirror HEAD {key}: {_describe(exc)}") from exc
        size = int(head["ContentLength"])
        if size > self.max_bytes:
            raise ModelTooLarge(f"mirror object {key} is {size} bytes; cap {self.max_bytes}")
        # A copy the ref disagrees with (by size, or by the hash written through) is skipped.
        check_integrity(ref, size, head.get("Metadata", {}).get("sha256"))
        # The transfer manager under download_file, told what our HEAD learnt: it skips a
        # second HEAD, and IfMatch pins every range to the object version checked above.
        known = _KnownObject(size, head.get("ETag"))
        try:
            with create_transfer_manager(
                self.client, transfer_config_for(size, self.threads)
            ) as manager:
                manager.download(self.bucket, key, str(dest), subscribers=[known]).result()
        except ClientError as exc:
            dest.unlink(missing_ok=True)
            if _is_not_found(exc):  # deleted between HEAD and GET
                return None
            raise MirrorUnavailable(f"mirror GET {key}: {_describe(exc)}") from exc
        except (BotoCoreError, Boto3Error, RetriesExceededError, S3DownloadFailedError) as exc:
            dest.unlink(missing_ok=True)
            raise MirrorUnavailable(f"mirror GET {key}: {_describe(exc)}") from exc
        try:
            written = dest.stat().st_size
            if written != size:
                raise IntegrityMismatch(f"mirror copy of {key}: {written} of {size} bytes")
            sha256 = file_sha256(dest) if ref.sha256 is not None else None
            check_integrity(ref, written, sha256)
        except BaseException:
            dest.unlink(missing_ok=True)
            raise
        return Fetched(size, sha256, Source.MIRROR, time.monotonic() - started)

    def upload(self, ref: ModelRef, path: Path, *, size: int, sha256: str | None) -> None:
        """Store ``path`` as the mirror object for ``ref``, with url/sha256/size metadata.

        The URL is stored in its normalised form, which drops credentials such as civitai's
        ``token=`` query parameter.
        """
        metadata = {"size": str(size)}
        if sha256 is not None:
            metadata["sha256"] = sha256
        url = normalise_url(ref.url)
        if len(url) <= _MAX_METADATA_URL and url.isascii():
            metadata["url"] = url
        key = self.object_key(ref.key)
        started = time.monotonic()
        try:
            self.client.upload_file(
                str(path),
                self.bucket,
                key,
                ExtraArgs={"Metadata": metadata, "ContentType": "application/octet-stream"},
                Config=upload_config(),
            )
        except (ClientError, BotoCoreError, Boto3Error) as exc:
            raise MirrorUnavailable(f"mirror PUT {key}: {_describe(exc)}") from exc
        logger.info(
            "model written through to the mirror",
            extra={"model_key": ref.key, "bytes": size, "seconds": time.monotonic() - started},
        )


def _describe(exc: Exception) -> str:
    """An AWS error in a few words: its code, or its class (messages can be long)."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', 'error')}: {error.get('Message', '')}".strip(": ")
    return type(exc).__name__
