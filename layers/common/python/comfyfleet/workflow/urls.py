"""Model and image URLs: which are allowed, their cache identity, and safe local file names.

Identity: two spellings of one file must share a cache entry, so a URL is normalised
(scheme and host case, default port, Hugging Face ``/blob/`` → ``/resolve/``, no fragment,
no query parameters that do not select content) and its key is the SHA-256 of that form.
The original URL is what gets fetched.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from comfyfleet.settings import Settings

MAX_URL_LENGTH = 2048
MAX_FILENAME_LENGTH = 200

# ComfyUI lists a model folder's files by these extensions only (folder_paths.py).
MODEL_EXTENSIONS = frozenset(
    {".safetensors", ".ckpt", ".pt", ".pt2", ".bin", ".pth", ".pkl", ".sft"}
)
INPUT_EXTENSIONS = frozenset(
    {
        ".png",
        ".jpg",
        ".jpeg",
        ".webp",
        ".gif",
        ".bmp",
        ".tif",
        ".tiff",
        ".mp4",
        ".webm",
        ".mov",
        ".wav",
        ".mp3",
        ".flac",
        ".ogg",
        ".txt",
        ".json",
    }
)
INPUT_FOLDER = "input"

_DEFAULT_PORTS = {"https": 443, "http": 80}
_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
# Query parameters that never change which bytes a URL names: Hugging Face's download
# flag, trackers, and credentials (a civitai token must not split the cache, nor be stored).
_IDENTITY_FREE_PARAMS = frozenset({"download", "token", "access_token", "api_key"})
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_HF_BLOB = re.compile(r"^(/(?:datasets/|spaces/)?[^/]+/[^/]+)/blob/")
_PERCENT = re.compile(r"%[0-9a-fA-F]{2}")
_HOST = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$")
_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_SPACE_OR_CONTROL = re.compile(r"[\x00-\x1f\x7f\s]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class UrlNotAllowed(ValueError):
    """A URL breaks the deployment's rules; the message says which."""


def is_url(value: str) -> bool:
    """Whether an input value is a URL rather than a file name."""
    return bool(_SCHEME.match(value))


def normalise_url(url: str) -> str:
    """The canonical spelling of ``url`` for cache identity (the URL itself if unparsable)."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return url
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").rstrip(".")
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = host if port is None or port == _DEFAULT_PORTS.get(scheme) else f"{host}:{port}"
    path = _PERCENT.sub(lambda m: m.group(0).upper(), parts.path) or "/"
    if host == "huggingface.co":
        path = _HF_BLOB.sub(r"\1/resolve/", path, count=1)
    query = sorted(
        (name, value)
        for name, value in parse_qsl(parts.query, keep_blank_values=True)
        if name.lower() not in _IDENTITY_FREE_PARAMS and not name.lower().startswith("utm_")
    )
    return urlunsplit((scheme, netloc, path, urlencode(query, quote_via=quote), ""))


def model_key(url: str) -> str:
    """The cache key of the file ``url`` names: SHA-256 of its normalised form."""
    return hashlib.sha256(normalise_url(url).encode()).hexdigest()


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    # 2130706433, 0x7f.1, 127.1: forms resolvers read as addresses, never real DNS names.
    return bool(_NUMERIC_LABEL.match(host.rsplit(".", 1)[-1]))


@dataclass(frozen=True, slots=True)
class UrlPolicy:
    """Which URLs a workflow may name (DESIGN §10); built from settings."""

    hosts: frozenset[str]
    model_bucket: str
    allow_local: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> UrlPolicy:
        return cls(
            hosts=frozenset(settings.model_hosts),
            model_bucket=settings.model_bucket_name,
            allow_local=settings.allow_local_urls,
        )

    def check(self, url: str) -> None:
        """Raise UrlNotAllowed unless ``url`` may be fetched for a workflow."""
        if len(url) > MAX_URL_LENGTH:
            raise UrlNotAllowed(f"URL longer than {MAX_URL_LENGTH} characters")
        if _SPACE_OR_CONTROL.search(url):
            raise UrlNotAllowed("URL contains whitespace or control characters")
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise UrlNotAllowed(f"URL cannot be parsed: {exc}") from None
        if "@" in parts.netloc:
            raise UrlNotAllowed("URL must not carry a user name or password")
        scheme = parts.scheme.lower()
        host = (parts.hostname or "").rstrip(".")
        if scheme == "s3":
            self._check_s3(host, parts.path, port)
            return
        if self.allow_local and host in _LOOPBACK_HOSTS and scheme in ("http", "https"):
            return
        if scheme != "https":
            raise UrlNotAllowed(f"scheme {scheme or '(none)'!r} is not allowed; use https")
        if not host:
            raise UrlNotAllowed("URL has no host")
        if _is_ip_literal(host):
            raise UrlNotAllowed("URL must name a host, not an IP address")
        if not _HOST.match(host):
            raise UrlNotAllowed(f"host {host!r} is not a valid DNS name")
        if port is not None and port != _DEFAULT_PORTS["https"]:
            raise UrlNotAllowed(f"port {port} is not allowed; use the default https port")
        if not self._host_allowed(host):
            allowed = ", ".join(sorted(self.hosts)) or "none"
            raise UrlNotAllowed(f"host {host!r} is not on the model host allowlist ({allowed})")

    def _host_allowed(self, host: str) -> bool:
        if host in self.hosts or any(host.endswith("." + allowed) for allowed in self.hosts):
            return True
        # The model mirror by its virtual-hosted S3 names.
        bucket = self.model_bucket
        return host.startswith(bucket + ".s3.") and host.endswith(".amazonaws.com")

    def _check_s3(self, bucket: str, path: str, port: int | None) -> None:
        if bucket != self.model_bucket:
            raise UrlNotAllowed(
                f"s3:// URLs must name the model bucket {self.model_bucket!r}, not {bucket!r}"
            )
        if port is not None or not path.strip("/"):
            raise UrlNotAllowed("s3:// URL must be s3://<bucket>/<key>")


def unsafe_name_reason(name: str, *, allow_subfolders: bool = True) -> str | None:
    """Why a file name given in a workflow could escape its folder, or None if it is safe.

    ComfyUI lists models in subfolders as ``sub/name.safetensors``, so plain relative
    subfolders are allowed where a node reads a file; names the platform creates are not.
    """
    if len(name) > MAX_FILENAME_LENGTH:
        return f"file name longer than {MAX_FILENAME_LENGTH} characters"
    if _CONTROL.search(name):
        return "file name contains control characters"
    if "\\" in name:
        return "file name contains a backslash"
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return "file name is an absolute path"
    parts = name.split("/")
    if not allow_subfolders and len(parts) > 1:
        return "file name contains a path separator"
    if any(part in ("", ".", "..") for part in parts):
        return "file name contains an empty, '.' or '..' path segment"
    return None


def derive_filename(url: str, folder: str, key: str) -> str:
    """A local file name for the file at ``url``: readable, unique per key, never a path.

    ComfyUI only lists model files with a known extension, so one is kept or added.
    """
    path = urlsplit(url).path
    last = unquote(path.rsplit("/", 1)[-1])
    stem, dot, ext = last.rpartition(".")
    if not dot:
        stem, ext = last, ""
    ext = "." + ext.lower() if ext else ""
    known = INPUT_EXTENSIONS if folder == INPUT_FOLDER else MODEL_EXTENSIONS
    if ext not in known:
        stem = last
        ext = ".png" if folder == INPUT_FOLDER else ".safetensors"
    stem = _UNSAFE_CHARS.sub("_", stem).strip("._-")[:64] or "file"
    return f"{stem}-{key[:12]}{ext}"
