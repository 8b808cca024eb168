"""A job's results: the files in ComfyUI's history uploaded to S3, and throttled previews."""

from __future__ import annotations

import logging
import mimetypes
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import quote

import boto3
from botocore.config import Config

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


# What ComfyUI's save nodes write (SaveImage, SaveAnimatedWEBP/PNG, SaveVideo, SaveAudio,
# VHS_VideoCombine's gifs entries, SaveGLB), fixed here: mimetypes reads /etc/mime.types,
# which differs between images (a minimal AMI has none, and .flac or .webp go unknown).
_MEDIA_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".gif": "image/gif",
    ".mp4": "video/mp4",
    ".webm": "video/webm",
    ".mov": "video/quicktime",
    ".mkv": "video/x-matroska",
    ".flac": "audio/flac",
    ".wav": "audio/wav",
    ".mp3": "audio/mpeg",
    ".opus": "audio/opus",
    ".ogg": "audio/ogg",
    ".glb": "model/gltf-binary",
}


def content_type(filename: str) -> str:
    suffix = PurePosixPath(filename).suffix.lower()
    return (
        _MEDIA_TYPES.get(suffix) or mimetypes.guess_type(filename)[0] or "application/octet-stream"
    )


def link_signer(region: str | None = None) -> Any:
    """An S3 client that presigns with SigV4: boto3 presigns S3 URLs with SigV2 by default,
    which AWS has deprecated and newer regions refuse. (The endpoint follows boto3's own
    ``AWS_ENDPOINT_URL``, as every other client here does.)

    A presigned link lives at most as long as the credentials that signed it: with an
    instance role's, a few hours, whatever ``output_link_seconds`` says. Deployments that
    need longer-lived links set the CloudFront domain.
    """
    config = Config(signature_version="s3v4")
    return boto3.session.Session().client("s3", region_name=region, config=config)


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
        signer: Any = None,
    ) -> None:
        self.s3 = s3
        self.signer = signer or s3  # presigns the links: see link_signer
        self.bucket = bucket
        self.comfy = comfy
        self.cdn_domain = cdn_domain.strip().rstrip("/")
        self.link_seconds = link_seconds

    def link(self, key: str) -> str:
        if self.cdn_domain:
            host = self.cdn_domain.removeprefix("https://")
            # File names come from the workflow's prefixes: spaces, '#', '?' must be escaped.
            return f"https://{host}/{quote(key, safe='/')}"
        url: str = self.signer.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.bucket, "Key": key},
            ExpiresIn=self.link_seconds,
        )
        return url

    def publish(self, account_id: str, job_id: str, files: list[OutputFile]) -> dict[str, Any]:
        """Upload every file; the job's outputs: {images: [url…], files: [{url, …}]}.

        Raises on any failed upload: a job is only completed with all its outputs.
        """
        pairs = list(zip(files, _unique_names(files), strict=True))
        if len(pairs) <= 1:  # the common case: no threads to start (milliseconds on a busy host)
            uploaded = [self._upload(account_id, job_id, *pair) for pair in pairs]
        else:
            with ThreadPoolExecutor(max_workers=min(_UPLOAD_THREADS, len(pairs))) as pool:
                uploaded = list(
                    pool.map(lambda pair: self._upload(account_id, job_id, *pair), pairs)
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
