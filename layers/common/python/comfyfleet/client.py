"""The Python client of comfyfleet's HTTP API.

    client = Client("http://127.0.0.1:8080", "sk_live_…")
    job = client.submit(workflow)                       # a ComfyUI API-format graph
    done = client.wait(job["job_id"], on_progress=print)
    for url in done["outputs"]["images"]: ...

Responses are the API's JSON objects, as documented at ``/doc``. Every 4xx becomes an
:class:`ApiError` subclass chosen by the error's stable ``code`` (then by status), so callers
catch ``QueueFull`` or ``InvalidWorkflow`` rather than parse messages. A 429 is retried after
its ``Retry-After`` (``max_retries`` times), as is a 503 of a read; then it is raised.
"""

from __future__ import annotations

import builtins
import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests

from comfyfleet.client_errors import (
    ApiError,
    BadRequest,
    Conflict,
    ConnectionFailed,
    Forbidden,
    IdempotencyConflict,
    InvalidCursor,
    InvalidRequest,
    InvalidWorkflow,
    JobStateConflict,
    JobTimeout,
    MalformedJson,
    NotCancellable,
    NotFound,
    PayloadTooLarge,
    QueueFull,
    RateLimited,
    RateLimitExceeded,
    ServerError,
    StorageUnavailable,
    Unauthorized,
    error_for,
    retry_after_seconds,
)

# The error types live in comfyfleet.client_errors; this module stays the one public import.
__all__ = [
    "DEFAULT_TIMEOUT",
    "JSON",
    "MAX_RETRY_AFTER",
    "TERMINAL",
    "ApiError",
    "BadRequest",
    "Client",
    "Conflict",
    "ConnectionFailed",
    "Forbidden",
    "IdempotencyConflict",
    "InvalidCursor",
    "InvalidRequest",
    "InvalidWorkflow",
    "JobStateConflict",
    "JobTimeout",
    "MalformedJson",
    "NotCancellable",
    "NotFound",
    "PayloadTooLarge",
    "QueueFull",
    "RateLimitExceeded",
    "RateLimited",
    "ServerError",
    "StorageUnavailable",
    "Unauthorized",
    "error_for",
    "is_request_body",
]

JSON = dict[str, Any]
TERMINAL = frozenset({"completed", "failed", "cancelled"})
DEFAULT_TIMEOUT = 30.0
MAX_RETRY_AFTER = 60.0  # never sleep longer than this on one Retry-After


def is_request_body(document: Any) -> bool:
    """A ``POST /v1/jobs`` body ({prompt, …}) rather than a bare graph."""
    return (
        isinstance(document, dict)
        and isinstance(document.get("prompt"), dict)
        and "class_type" not in document["prompt"]
    )


class Client:
    """One API key against one deployment (or the dev stack)."""

    def __init__(
        self,
        api_url: str,
        api_key: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int = 3,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self.max_retries = max_retries
        self.session = session or requests.Session()
        self.sleep = sleep

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport --------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> JSON:
        """One API call; the decoded JSON answer, or a typed ApiError."""
        sent = {"Accept": "application/json", **(headers or {})}
        if self.api_key:
            sent["Authorization"] = f"Bearer {self.api_key}"
        data = None
        if body is not None:
            data = json.dumps(body, separators=(",", ":")).encode()
            sent["Content-Type"] = "application/json"
        query = {k: v for k, v in (params or {}).items() if v is not None}
        attempt = 0
        while True:
            try:
                response = self.session.request(
                    method,
                    self.api_url + path,
                    data=data,
                    params=query,
                    headers=sent,
                    timeout=self.timeout,
                    allow_redirects=False,
                )
            except requests.RequestException as exc:
                raise ConnectionFailed(f"{method} {self.api_url}{path}: {exc}") from None
            if response.status_code < 400:
                return response.json() if response.content else {}
            error = error_for(response)
            wait = retry_after_seconds(response.headers)
            retryable = response.status_code == 429 or (
                response.status_code == 503 and method == "GET"
            )
            if not retryable or wait is None or attempt >= self.max_retries:
                raise error
            attempt += 1
            self.sleep(min(wait, MAX_RETRY_AFTER))

    # -- jobs -------------------------------------------------------------------------------

    def submit(
        self,
        workflow: Mapping[str, Any],
        *,
        webhook_url: str | None = None,
        models: list[Mapping[str, Any]] | None = None,
        metadata: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> JSON:
        """Submit a ComfyUI API-format graph (or a whole ``POST /v1/jobs`` body)."""
        body: dict[str, Any] = (
            dict(workflow) if is_request_body(workflow) else {"prompt": dict(workflow)}
        )
        for name, value in (("webhook_url", webhook_url), ("models", models)):
            if value is not None:
                body[name] = value
        if metadata is not None:
            body["metadata"] = dict(metadata)
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return self.request("POST", "/v1/jobs", body=body, headers=headers)

    def submit_template(
        self, name: str, *, idempotency_key: str | None = None, **params: Any
    ) -> JSON:
        """Submit a job built by a server-side template (sd15, sdxl, flux)."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return self.request("POST", f"/v1/workflows/{name}", body=params, headers=headers)

    def get(self, job_id: str) -> JSON:
        return self.request("GET", f"/v1/jobs/{job_id}")

    def wait(
        self,
        job_id: str,
        *,
        timeout: float | None = None,
        on_progress: Callable[[JSON], None] | None = None,
        initial_interval: float = 0.2,
        max_interval: float = 2.0,
    ) -> JSON:
        """Poll until the job ends; the final job. Polls back off from ``initial_interval``
        to ``max_interval``, and start over whenever the job changes. ``on_progress`` gets
        every state polled. Raises JobTimeout after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        interval = initial_interval
        last: Any = None
        while True:
            job = self.get(job_id)
            if on_progress is not None:
                on_progress(job)
            if job.get("status") in TERMINAL:
                return job
            seen = (job.get("status"), job.get("progress"), job.get("queue_position"))
            interval = initial_interval if seen != last else min(max_interval, interval * 1.5)
            last = seen
            if deadline is not None and time.monotonic() + interval > deadline:
                raise JobTimeout(job)
            self.sleep(interval)

    def cancel(self, job_id: str) -> JSON:
        return self.request("POST", f"/v1/jobs/{job_id}/cancel")

    def list(
        self, *, status: str | None = None, limit: int = 20, cursor: str | None = None
    ) -> JSON:
        """One page of your jobs, newest first: {jobs, next_cursor}."""
        return self.request(
            "GET", "/v1/jobs", params={"status": status, "limit": limit, "cursor": cursor}
        )

    def iter_jobs(self, *, status: str | None = None, page_size: int = 50) -> Iterator[JSON]:
        """Every job of yours, following the cursor."""
        cursor = None
        while True:
            page = self.list(status=status, limit=page_size, cursor=cursor)
            yield from page.get("jobs", [])
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def usage(self) -> JSON:
        return self.request("GET", "/v1/usage")

    def health(self) -> JSON:
        return self.request("GET", "/v1/health")

    def object_info(self, class_type: str | None = None) -> JSON:
        """The fleet's node classes in ComfyUI's ``/object_info`` shape (one class: a dict
        of that class alone; NotFound if no node in service has it)."""
        if class_type is None:
            return self.request("GET", "/v1/object_info")
        return self.request("GET", f"/v1/object_info/{quote(class_type, safe='')}")

    def download(self, url: str, path: Path) -> Path:
        """Fetch an output link (presigned or CDN: no API key is sent) to ``path``."""
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with requests.get(url, stream=True, timeout=self.timeout) as response:
                response.raise_for_status()
                with path.open("wb") as out:
                    for chunk in response.iter_content(1 << 16):
                        out.write(chunk)
        except requests.RequestException as exc:
            raise ConnectionFailed(f"GET {url.split('?')[0]}: {exc}") from None
        return path

    # -- deployments ----------------------------------------------------------------------------

    def deploy(
        self,
        name: str,
        workflow: Mapping[str, Any],
        inputs: Mapping[str, Mapping[str, Any]] | None = None,
        *,
        models: Sequence[Mapping[str, Any]] | None = None,
        description: str | None = None,
    ) -> JSON:
        """Save ``workflow`` as the next version of deployment ``name``; ``inputs`` declares
        each input as {node, input, type, default?, minimum?, maximum?, enum?, description?}."""
        body: dict[str, Any] = {"name": name, "workflow": dict(workflow)}
        body["inputs"] = {key: dict(spec) for key, spec in (inputs or {}).items()}
        if models is not None:
            body["models"] = [dict(entry) for entry in models]
        if description is not None:
            body["description"] = description
        return self.request("POST", "/v1/deployments", body=body)

    def run(
        self,
        name: str,
        inputs: Mapping[str, Any] | None = None,
        *,
        version: int | None = None,
        webhook_url: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> JSON:
        """Run a deployment (yours or a built-in: sd15, sdxl, flux) with values by input name."""
        body: dict[str, Any] = {"inputs": dict(inputs or {})}
        for key, value in (("version", version), ("webhook_url", webhook_url)):
            if value is not None:
                body[key] = value
        if metadata is not None:
            body["metadata"] = dict(metadata)
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        path = f"/v1/deployments/{quote(name, safe='')}/jobs"
        return self.request("POST", path, body=body, headers=headers)

    def deployment(self, name: str, *, version: int | None = None) -> JSON:
        """A deployment with its ``input_schema`` (the newest version, or ``version``)."""
        path = f"/v1/deployments/{quote(name, safe='')}"
        return self.request("GET", path, params={"version": version})

    def deployments(self) -> builtins.list[JSON]:
        """Every deployment you may run: the built-ins, then yours by name (all pages)."""
        listed: builtins.list[JSON] = []
        cursor: str | None = None
        while True:
            page = self.request("GET", "/v1/deployments", params={"limit": 100, "cursor": cursor})
            listed.extend(page.get("deployments", []))
            cursor = page.get("next_cursor")
            if not cursor:
                return listed

    def delete_deployment(self, name: str) -> JSON:
        return self.request("DELETE", f"/v1/deployments/{quote(name, safe='')}")

    # -- admin (a key with the admin scope) ---------------------------------------------------

    def create_account(self, *, tier: str = "free", name: str = "") -> JSON:
        """A new account: {account_id, tier, name, webhook_secret, created_at}."""
        return self.request("POST", "/v1/admin/accounts", body={"tier": tier, "name": name})

    def create_key(
        self, account_id: str, *, scopes: tuple[str, ...] = ("jobs",), name: str = ""
    ) -> JSON:
        """A new key; its ``api_key`` is in this answer only."""
        body = {"account_id": account_id, "scopes": list(scopes), "name": name}
        return self.request("POST", "/v1/admin/keys", body=body)

    def list_keys(self, account_id: str) -> JSON:
        return self.request("GET", "/v1/admin/keys", params={"account_id": account_id})

    def revoke_key(self, key_id: str) -> JSON:
        return self.request("DELETE", f"/v1/admin/keys/{key_id}")

    def nodes(self) -> JSON:
        return self.request("GET", "/v1/admin/nodes")

    def drain_node(self, node_id: str) -> JSON:
        return self.request("POST", f"/v1/admin/nodes/{node_id}/drain")

    def queues(self) -> JSON:
        return self.request("GET", "/v1/admin/queues")
