"""Calling the Lambda functions as API Gateway does, for the integration tests: the
authorizer function answers a REQUEST-authorizer event, and its context goes into the REST
proxy event (v1) given to the api function."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from comfyfleet.resources import Provisioned
from comfyfleet.store import Stores
from tests.api_support import (
    Account,
    LambdaContext,
    authorizer_event,
    load_function,
    new_account,
    rest_event,
)
from tests.support import basic_graph


@dataclass
class Reply:
    """A proxy response, read as a client would."""

    status: int
    headers: dict[str, str]
    body: Any

    @property
    def code(self) -> str:
        code: str = self.body["error"]["code"]
        return code


@dataclass
class Functions:
    """The two functions, loaded as their own modules, and the stores behind them."""

    api: ModuleType
    authorizer: ModuleType
    stores: Stores
    provisioned: Provisioned
    requests: int = 0

    @classmethod
    def load(cls, provisioned: Provisioned, stores: Stores) -> Functions:
        """Fresh modules: each builds its application on its first request."""
        return cls(load_function("api"), load_function("authorizer"), stores, provisioned)

    def authorize(self, key: str | None, method: str = "GET", path: str = "/v1/jobs") -> Any:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return self.authorizer.handler(
            authorizer_event(headers, method=method, path=path), LambdaContext()
        )

    def call(
        self,
        method: str,
        path: str,
        key: str,
        *,
        body: Any = None,
        headers: dict[str, str] | None = None,
        query: dict[str, str] | None = None,
    ) -> Reply:
        """Through the authorizer, then the api function, as API Gateway would."""
        answer = self.authorize(key, method, path)
        self.requests += 1
        event = rest_event(
            method,
            path,
            body=body,
            headers=headers,
            query=query,
            request_id=f"req-{self.requests:04d}",
        )
        event["requestContext"]["authorizer"] = {
            **answer["context"],
            "principalId": answer["principalId"],
            "integrationLatency": 9,
        }
        response = self.api.handler(event, LambdaContext(aws_request_id=f"lambda-{self.requests}"))
        headers_out = dict(response.get("headers") or {})
        for name, values in (response.get("multiValueHeaders") or {}).items():
            headers_out[name] = values[-1]
        text = response.get("body") or "null"
        return Reply(response["statusCode"], headers_out, json.loads(text))

    def submit(self, account: Account, **fields: Any) -> Reply:
        return self.call("POST", "/v1/jobs", account.key, body={"prompt": basic_graph(), **fields})

    def account(self, tier: str = "free", **overrides: Any) -> Account:
        return new_account(self.stores, time.time(), tier, **overrides)


def emitted_metrics(output: str) -> list[dict[str, Any]]:
    """The CloudWatch embedded-metric blobs Powertools printed."""
    blobs = []
    for line in output.splitlines():
        if line.startswith("{") and '"_aws"' in line:
            blobs.append(json.loads(line))
    return blobs
