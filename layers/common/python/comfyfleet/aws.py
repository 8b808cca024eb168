"""boto3 clients, made once per process with one configuration.

The endpoint comes from boto3's own ``AWS_ENDPOINT_URL`` (the dev stack points it at moto's
server) unless a caller passes one. Clients are thread-safe and reused: creating one costs
milliseconds, which matters on a Lambda's request path.
"""

from __future__ import annotations

import threading
from typing import Any

import boto3
from botocore.config import Config

from comfyfleet import aws_faults
from comfyfleet.aws_calls import count_calls

# What every client gets: standard retries (throttling and 5xx), short connects.
CLIENT_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 4},
    connect_timeout=3,
    read_timeout=25,
    max_pool_connections=50,
)
_clients: dict[tuple[str, str | None, str | None, bool], Any] = {}
# One session for all clients: a session caches botocore's endpoint and model data, which a
# fresh session parses again (≈ 120 ms of JSON per client, measured by bench/bench_import.py).
# Sessions are not thread-safe, so clients are made under the lock.
_session: boto3.session.Session | None = None
_lock = threading.Lock()


def client(
    service: str,
    *,
    endpoint_url: str | None = None,
    region: str | None = None,
    faults: bool = True,
) -> Any:
    """The process's client for ``service`` (and endpoint, region). ``faults=False``: never
    one of the dev stack's injected faults (its own plumbing, playing AWS's pollers)."""
    global _session
    key = (service, endpoint_url, region, faults)
    found = _clients.get(key)
    if found is None:
        with _lock:
            found = _clients.get(key)
            if found is None:
                if _session is None:
                    _session = boto3.session.Session()
                made = _session.client(
                    service, endpoint_url=endpoint_url, region_name=region, config=CLIENT_CONFIG
                )
                count_calls(made)  # the dev stack's request counting; off elsewhere
                if faults:
                    aws_faults.install(made)  # the dev stack's fault injection; refused elsewhere
                found = _clients[key] = made
    return found


def reset_clients() -> None:
    """Forget every client and the session (tests that switch endpoints or credentials)."""
    global _session
    with _lock:
        _clients.clear()
        _session = None


def clients() -> list[Any]:
    """Every client this process has made (SnapStart's hooks act on all of them)."""
    with _lock:
        return list(_clients.values())


def close_connections() -> int:
    """Close every client's pooled connections (a snapshot must not carry sockets: each
    restored copy would share them); the next call opens new ones. Returns the clients."""
    found = clients()
    for made in found:
        made._endpoint.http_session.close()
    return len(found)
