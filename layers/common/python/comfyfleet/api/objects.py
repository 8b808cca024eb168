"""Objects the API reads from S3: the fleet's node catalogue and jobs' preview frames.

``ObjectStore`` is the port; ``S3Objects`` the adapter, ``MemoryObjects`` the fake.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from comfyfleet.catalogue import NodeCatalogue
from comfyfleet.clock import Clock
from comfyfleet.errors import StorageError
from comfyfleet.resources import CATALOGUE_KEY, preview_key

logger = logging.getLogger(__name__)

CATALOGUE_TTL_SECONDS = 60.0
PREVIEW_LINK_SECONDS = 60
PREVIEW_EXTENSIONS = ("png", "jpeg", "webp")


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    etag: str
    last_modified: float
    size: int


@dataclass(frozen=True, slots=True)
class ObjectRead:
    """An object's body, or ``body=None`` when it still has the ETag the caller gave."""

    etag: str
    body: bytes | None


class ObjectStore(Protocol):
    def head(self, bucket: str, key: str) -> ObjectInfo | None: ...

    def read(self, bucket: str, key: str, *, if_none_match: str | None = None) -> ObjectRead | None:
        """The object (None when missing); ``body`` is None if its ETag is unchanged."""
        ...

    def presign_get(self, bucket: str, key: str, *, seconds: int) -> str: ...


class S3Objects:
    def __init__(self, s3: Any) -> None:
        self.s3 = s3

    def head(self, bucket: str, key: str) -> ObjectInfo | None:
        try:
            response = self.s3.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if _status(exc) == 404:
                return None
            raise StorageError(f"head {key} failed: {_code(exc)}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"head {key} failed: {exc}") from exc
        return ObjectInfo(
            key=key,
            etag=response.get("ETag", ""),
            last_modified=response["LastModified"].timestamp(),
            size=int(response.get("ContentLength", 0)),
        )

    def read(self, bucket: str, key: str, *, if_none_match: str | None = None) -> ObjectRead | None:
        request: dict[str, Any] = {"Bucket": bucket, "Key": key}
        if if_none_match:
            request["IfNoneMatch"] = if_none_match
        try:
            response = self.s3.get_object(**request)
            return ObjectRead(etag=response.get("ETag", ""), body=response["Body"].read())
        except ClientError as exc:
            if _status(exc) == 304:
                return ObjectRead(etag=if_none_match or "", body=None)
            if _status(exc) == 404:
                return None
            raise StorageError(f"read {key} failed: {_code(exc)}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"read {key} failed: {exc}") from exc

    def presign_get(self, bucket: str, key: str, *, seconds: int) -> str:
        url: str = self.s3.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=seconds
        )
        return url


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class MemoryObjects:
    """Objects in a dict, for unit tests; ``reads`` counts full reads."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.objects: dict[tuple[str, str], tuple[bytes, float, str]] = {}
        self.reads = 0
        self._version = 0

    def put(self, bucket: str, key: str, body: bytes) -> None:
        self._version += 1
        self.objects[(bucket, key)] = (body, self.clock.now(), f'"{self._version}"')

    def head(self, bucket: str, key: str) -> ObjectInfo | None:
        found = self.objects.get((bucket, key))
        if found is None:
            return None
        body, modified, etag = found
        return ObjectInfo(key=key, etag=etag, last_modified=modified, size=len(body))

    def read(self, bucket: str, key: str, *, if_none_match: str | None = None) -> ObjectRead | None:
        found = self.objects.get((bucket, key))
        if found is None:
            return None
        body, _, etag = found
        if if_none_match == etag:
            return ObjectRead(etag=etag, body=None)
        self.reads += 1
        return ObjectRead(etag=etag, body=body)

    def presign_get(self, bucket: str, key: str, *, seconds: int) -> str:
        return f"https://{bucket}.s3.local/{key}?expires={int(self.clock.now()) + seconds}"


class CatalogueCache:
    """The fleet's node catalogue (published by the agents), re-read at most once a minute.

    Absent, the API validates workflows structurally only. When a read fails the last good
    catalogue stays in use: a storage hiccup must not turn deep validation off.
    """

    def __init__(
        self,
        objects: ObjectStore,
        bucket: str,
        clock: Clock,
        *,
        key: str = CATALOGUE_KEY,
        ttl: float = CATALOGUE_TTL_SECONDS,
    ) -> None:
        self.objects = objects
        self.bucket = bucket
        self.key = key
        self.clock = clock
        self.ttl = ttl
        self._lock = threading.Lock()
        self._checked_at: float | None = None
        self._etag: str | None = None
        self._catalogue: NodeCatalogue | None = None

    def get(self) -> NodeCatalogue | None:
        now = self.clock.now()
        with self._lock:
            if self._checked_at is not None and now - self._checked_at < self.ttl:
                return self._catalogue
            self._checked_at = now
            try:
                read = self.objects.read(self.bucket, self.key, if_none_match=self._etag)
            except StorageError:
                logger.warning("catalogue read failed; keeping the last one", exc_info=True)
                return self._catalogue
            if read is None:
                self._catalogue, self._etag = None, None
            elif read.body is not None:
                try:
                    self._catalogue = NodeCatalogue.from_json(read.body)
                    self._etag = read.etag
                except ValueError:
                    logger.warning("the published catalogue is not valid; keeping the last one")
            return self._catalogue


def latest_preview(objects: ObjectStore, bucket: str, job_id: str) -> ObjectInfo | None:
    """The newest preview frame of a job (the agent writes latest.<ext>), if any."""
    found = [
        info
        for extension in PREVIEW_EXTENSIONS
        if (info := objects.head(bucket, preview_key(job_id, extension))) is not None
    ]
    return max(found, key=lambda info: info.last_modified, default=None)
