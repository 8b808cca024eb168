"""Which node this is: the EC2 instance id through IMDSv2, else the host name."""

from __future__ import annotations

import socket

import requests

IMDS = "http://169.254.169.254"
_TIMEOUT = 0.5  # off EC2 the address does not answer: give up quickly


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


def node_id(configured: str = "") -> str:
    return configured or imds_get("/latest/meta-data/instance-id") or socket.gethostname()


def spot_interruption_notice() -> bool:
    """Whether EC2 has scheduled this spot instance's interruption (two minutes' notice)."""
    return imds_get("/latest/meta-data/spot/instance-action") is not None
