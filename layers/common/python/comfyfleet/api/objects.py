"""Objects the API reads from S3: the node catalogues and jobs' preview frames.

``ObjectStore`` is the port; ``S3Objects`` the adapter, ``MemoryObjects`` the fake.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from comfyfleet.catalogue import NodeCatalogue
from comfyfleet.catalogues import FleetCatalogue
from comfyfleet.clock import Clock
from comfyfleet.errors import StorageError
from comfyfleet.resources import CATALOGUE_KEY, catalogue_key, preview_key

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


@dataclass
class _Known:
    """One catalogue object as last read: when it was checked, its ETag, its catalogue."""

    checked_at: float
    etag: str | None = None
    catalogue: NodeCatalogue | None = None


class CatalogueCache:
    """The node catalogues the agents publish, each re-read at most once a minute (a
    conditional GET: S3 sends a body only when the object changed).

    ``get()`` is the fleet-wide one; ``fleet(environments)`` the catalogues of those
    environments and their union. Absent, the API validates workflows structurally only. When
    a read fails the last good catalogue stays in use: a storage hiccup must not turn deep
    validation off.
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
        self._known: dict[str, _Known] = {}
        self._fleet: tuple[tuple[tuple[str, int], ...], FleetCatalogue] | None = None

    def clear(self) -> None:
        """Forget every catalogue read: the next use reads them again."""
        with self._lock:
            self._known.clear()
            self._fleet = None

    def get(self) -> NodeCatalogue | None:
        """The fleet-wide catalogue (the node that started last published it)."""
        with self._lock:
            return self._read(self.key)

    def fleet(self, environments: Sequence[str]) -> FleetCatalogue | None:
        """The catalogues of ``environments`` (in precedence order) and their union; with
        none in service, the fleet-wide catalogue alone. An environment whose catalogue is
        not published (or was never read) is left out; None when none is known."""
        with self._lock:
            keys = {environment: catalogue_key(environment) for environment in environments}
            found = {env: self._read(key) for env, key in (keys or {"": self.key}).items()}
            known = {env: catalogue for env, catalogue in found.items() if catalogue is not None}
            if not known:
                return None
            identity = tuple((env, id(catalogue)) for env, catalogue in known.items())
            if self._fleet is None or self._fleet[0] != identity:
                self._fleet = (identity, FleetCatalogue(known))
            return self._fleet[1]

    def _read(self, key: str) -> NodeCatalogue | None:
        """The catalogue at ``key``, read again once its time to live has passed."""
        now = self.clock.now()
        known = self._known.get(key)
        if known is not None and now - known.checked_at < self.ttl:
            return known.catalogue
        if known is None:
            known = self._known[key] = _Known(now)
        known.checked_at = now
        try:
            read = self.objects.read(self.bucket, key, if_none_match=known.etag)
        except StorageError:
            logger.warning("catalogue read failed; keeping the last one", exc_info=True)
            return known.catalogue
        if read is None:
            if key != self.key:  # an environment in service without its catalogue
                logger.warning("no node catalogue at %s", key)
            known.catalogue, known.etag = None, None
        elif read.body is not None:
            try:
                known.catalogue = NodeCatalogue.from_json(read.body)
                known.etag = read.etag
            except ValueError:
                logger.warning("the catalogue at %s is not valid; keeping the last one", key)
        return known.catalogue


def latest_preview(objects: ObjectStore, bucket: str, job_id: str) -> ObjectInfo | None:
    """The newest preview frame of a job (the agent writes latest.<ext>), if any."""
    found = [
        info
        for extension in PREVIEW_EXTENSIONS
        if (info := objects.head(bucket, preview_key(job_id, extension))) is not None
    ]
    return max(found, key=lambda info: info.last_modified, default=None)
