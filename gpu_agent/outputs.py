"""A job's results: the files in ComfyUI's history uploaded to S3, and throttled previews."""

from __future__ import annotations

import logging
import mimetypes
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from comfyfleet.resources import output_key, preview_key
from gpu_agent.comfy import ComfyClient, Preview

logger = logging.getLogger(__name__)

_UPLOAD_THREADS = 8


@dataclass(frozen=True, slots=True)
class OutputFile:
    node_id: str
    filename: str
    subfolder: str
    kind: str  # "output" or "temp"


def output_files(outputs: dict[str, Any], *, include_temp: bool) -> list[OutputFile]:
    """Every file a history entry's outputs name: images, and gifs/video/audio entries of
    other nodes alike (any list of {filename, subfolder, type})."""
    files: list[OutputFile] = []
    for node_id, produced in outputs.items():
        if not isinstance(produced, dict):
            continue
        for entries in produced.values():
            if not isinstance(entries, list):
                continue
            for entry in entries:
                if not isinstance(entry, dict) or not isinstance(entry.get("filename"), str):
                    continue
                kind = str(entry.get("type", "output"))
                if kind == "temp" and not include_temp:
                    continue
                if kind not in ("output", "temp"):
                    continue
                files.append(
                    OutputFile(
                        str(node_id), entry["filename"], str(entry.get("subfolder", "")), kind
                    )
                )
    return files


def content_type(filename: str) -> str:
    return mimetypes.guess_type(filename)[0] or "application/octet-stream"


class OutputPublisher:
    """Uploads a job's files (concurrently) and makes their links."""

    def __init__(
        self,
        s3: Any,
        bucket: str,
        comfy: ComfyClient,
        *,
        cdn_domain: str = "",
        link_seconds: int = 7 * 86400,
    ) -> None:
        self.s3 = s3
        self.bucket = bucket
        self.comfy = comfy
        self.cdn_domain = cdn_domain.strip().rstrip("/")
        self.link_seconds = link_seconds

    def link(self, key: str) -> str:
        if self.cdn_domain:
            host = self.cdn_domain.removeprefix("https://")
            return f"https://{host}/{key}"
        url: str = self.s3.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.bucket, "Key": key},
            ExpiresIn=self.link_seconds,
        )
        return url

    def publish(self, account_id: str, job_id: str, files: list[OutputFile]) -> dict[str, Any]:
        """Upload every file; the job's outputs: {images: [url…], files: [{url, …}]}.

        Raises on any failed upload: a job is only completed with all its outputs.
        """
        names = _unique_names(files)
        with ThreadPoolExecutor(max_workers=_UPLOAD_THREADS) as pool:
            uploaded = list(
                pool.map(
                    lambda pair: self._upload(account_id, job_id, *pair),
                    zip(files, names, strict=True),
                )
            )
        return {
            "images": [f["url"] for f in uploaded if f["content_type"].startswith("image/")],
            "files": uploaded,
        }

    def _upload(self, account_id: str, job_id: str, file: OutputFile, name: str) -> dict[str, Any]:
        data = self.comfy.view(file.filename, file.subfolder, file.kind)
        key = output_key(account_id, job_id, name)
        kind = content_type(name)
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=kind)
        return {
            "url": self.link(key),
            "filename": name,
            "content_type": kind,
            "size": len(data),
            "node_id": file.node_id,
        }


def _unique_names(files: list[OutputFile]) -> list[str]:
    """Each file's name in the job's folder; two nodes writing one name get their node id."""
    seen: dict[str, int] = {}
    for file in files:
        seen[file.filename] = seen.get(file.filename, 0) + 1
    return [
        f"{file.node_id}-{file.filename}" if seen[file.filename] > 1 else file.filename
        for file in files
    ]


class PreviewPublisher:
    """The latest preview frame of a running job, at most one S3 put per interval."""

    def __init__(
        self,
        s3: Any,
        bucket: str,
        job_id: str,
        *,
        interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.s3, self.bucket, self.job_id = s3, bucket, job_id
        self.interval = interval
        self.clock = clock
        self._last = float("-inf")
        self.published = 0

    def offer(self, preview: Preview) -> None:
        now = self.clock()
        if now - self._last < self.interval:
            return
        self._last = now
        extension = "png" if preview.extension == "png" else "jpeg"
        try:
            self.s3.put_object(
                Bucket=self.bucket,
                Key=preview_key(self.job_id, extension),
                Body=preview.image,
                ContentType=f"image/{extension}",
            )
            self.published += 1
        except Exception:  # a lost preview frame must never fail the job
            logger.warning("preview upload failed", exc_info=True, extra={"job_id": self.job_id})
