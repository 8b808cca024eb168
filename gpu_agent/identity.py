"""Which node this is: the EC2 instance id through IMDSv2, else the host name; and which
environment it runs: the id in node setup's lock file in ComfyUI's folder."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import requests

from comfyfleet.domain import CORE_ENVIRONMENT
from comfyfleet.environment.lock import InvalidLock, read_lock

IMDS = "http://169.254.169.254"
_TIMEOUT = 0.5  # off EC2 the address does not answer: give up quickly
# An environment id names the S3 folder of its catalogue (comfyfleet.resources.catalogue_key).
_ENVIRONMENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def imds_get(path: str, *, session: requests.Session | None = None) -> str | None:
    """GET an instance metadata path with an IMDSv2 token; None off EC2 or when absent."""
    http = session or requests.Session()
    try:
        token = http.put(
            f"{IMDS}/latest/api/token",
            headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"},
            timeout=_TIMEOUT,
        )
        if token.status_code != 200:
            return None
        response = http.get(
            f"{IMDS}{path}", headers={"X-aws-ec2-metadata-token": token.text}, timeout=_TIMEOUT
        )
    except requests.RequestException:
        return None
    return response.text if response.status_code == 200 else None


def node_id(configured: str = "", gpu_index: int | None = None) -> str:
    """The configured id, else the instance id (off EC2 the host name), per GPU if indexed."""
    if configured:
        return configured
    return per_gpu(imds_get("/latest/meta-data/instance-id") or socket.gethostname(), gpu_index)


def per_gpu(base: str, gpu_index: int | None) -> str:
    """The node id of one GPU's agent on an instance with several: ``<base>-gpu<i>``."""
    return base if gpu_index is None else f"{base}-gpu{gpu_index}"


def environment_id(comfy_root: Path) -> str:
    """The environment node setup put in ``comfy_root``; CORE_ENVIRONMENT where it never ran
    (no lock file: ComfyUI's core nodes). InvalidLock for a lock that cannot be read or whose
    id could not name a catalogue: a damaged lock is never taken for an environment."""
    lock = read_lock(comfy_root)
    if lock is None:
        return CORE_ENVIRONMENT
    if not _ENVIRONMENT_ID.fullmatch(lock.environment_id):
        raise InvalidLock(f"environment id {lock.environment_id[:80]!r} is not a plain name")
    return lock.environment_id


def spot_interruption_notice() -> bool:
    """Whether EC2 has scheduled this spot instance's interruption (two minutes' notice)."""
    return imds_get("/latest/meta-data/spot/instance-action") is not None
