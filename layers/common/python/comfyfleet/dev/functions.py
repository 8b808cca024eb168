"""The Lambda functions of functions/<name>/app.py, run in-process as Lambda would run them.

* :class:`LocalFunction` loads a function's ``app.handler`` on first use (each function is its
  own deployable asset, not a package) and runs one invocation at a time, like a function with
  a reserved concurrency of one. A missing function is reported once and skipped, so the
  stack starts without it.
* :class:`SqsEventSource` is Lambda's SQS event source mapping with ``ReportBatchItemFailures``:
  receive up to 10 messages, invoke with the SQS event, delete the records not reported as
  failures, leave the failures (and the whole batch when the function raises) to come back
  after their visibility timeout.
* :class:`ScheduledInvoker` is an EventBridge schedule rule: the function is invoked with a
  ``Scheduled Event`` every ``interval`` seconds.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

from comfyfleet.api.local import LocalLambdaContext
from comfyfleet.errors import ComfyFleetError

# Not under "comfyfleet": the handlers hand that logger tree to Powertools when they start.
logger = logging.getLogger("devstack." + __name__.rsplit(".", 1)[-1])

ACCOUNT = "000000000000"
BATCH_SIZE = 10  # the event source mapping's default for a standard queue
_BACKOFF_CAP_SECONDS = 10.0


def functions_dir() -> Path:
    """The checkout's functions/ folder (beside layers/, where this package lives)."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent / "functions"
        if (candidate / "api" / "app.py").is_file():
            return candidate
    raise FileNotFoundError(
        "functions/ not found above " + str(here) + ": run the dev stack from a checkout"
    )


class LocalFunction:
    """One Lambda function, imported lazily from ``<root>/<name>/app.py``."""

    def __init__(self, name: str, root: Path | None = None, region: str = "us-east-1") -> None:
        self.name = name
        self.root = root or functions_dir()
        self.region = region
        self._module: ModuleType | None = None
        self._missing = False
        self._lock = threading.Lock()  # one invocation at a time per function
        self.invocations = 0
        self.errors = 0

    @property
    def path(self) -> Path:
        return self.root / self.name / "app.py"

    def available(self) -> bool:
        """Whether the function exists (logged once when it does not)."""
        if self._module is not None:
            return True
        if self._missing:
            return False
        if not self.path.is_file():
            self._missing = True
            logger.warning("function %s is absent (%s): not run", self.name, self.path)
            return False
        return True

    def _handler(self) -> Any:
        if self._module is None:
            module_name = f"comfyfleet_function_{self.name}"
            spec = importlib.util.spec_from_file_location(module_name, self.path)
            if spec is None or spec.loader is None:
                raise ImportError(f"cannot load {self.path}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module
            spec.loader.exec_module(module)
            self._module = module
        return self._module.handler

    def context(self) -> LocalLambdaContext:
        return LocalLambdaContext(
            function_name=f"comfyfleet-{self.name}",
            invoked_function_arn=(
                f"arn:aws:lambda:{self.region}:{ACCOUNT}:function:comfyfleet-{self.name}"
            ),
            log_group_name=f"/aws/lambda/comfyfleet-{self.name}",
        )

    def __call__(self, event: Any, context: Any = None) -> Any:
        """Invoke the function; its exceptions propagate, as a failed invocation."""
        with self._lock:
            self.invocations += 1
            try:
                return self._handler()(event, context or self.context())
            except Exception:
                self.errors += 1
                raise


class _Loop:
    """A daemon thread running ``step`` until stopped, backing off after errors."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def step(self) -> float:
        """One round; returns how long to wait before the next."""
        raise NotImplementedError

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def _run(self) -> None:
        backoff = 1.0
        while not self._stop.is_set():
            try:
                pause = self.step()
                backoff = 1.0
            except Exception:
                logger.exception("%s failed; again in %.0f s", self.name, backoff)
                pause, backoff = backoff, min(backoff * 2, _BACKOFF_CAP_SECONDS)
            if pause > 0:
                self._stop.wait(pause)


class SqsEventSource(_Loop):
    """Feeds ``function`` from an SQS queue as Lambda's event source mapping does."""

    def __init__(
        self,
        function: LocalFunction,
        sqs: Any,
        queue_url: str,
        queue_arn: str,
        *,
        wait_seconds: int = 1,
        batch_size: int = BATCH_SIZE,
    ) -> None:
        super().__init__(f"sqs-{function.name}")
        self.function = function
        self.sqs = sqs
        self.queue_url = queue_url
        self.queue_arn = queue_arn
        self.wait_seconds = wait_seconds
        self.batch_size = batch_size

    def step(self) -> float:
        if not self.function.available():
            return 3600.0
        messages = self.sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=self.batch_size,
            WaitTimeSeconds=self.wait_seconds,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if messages:
            self.deliver(messages)
        return 0.0

    def deliver(self, messages: list[dict[str, Any]]) -> None:
        """Invoke once with these messages; delete those that did not fail."""
        event = {"Records": [self.record(message) for message in messages]}
        try:
            result = self.function(event)
        except Exception:
            logger.exception("function %s failed: the batch comes back", self.function.name)
            return
        failed = _failed_ids(result, {m["MessageId"] for m in messages})
        done = [m for m in messages if m["MessageId"] not in failed]
        if done:
            answer = self.sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)
                ],
            )
            for failure in answer.get("Failed", []):
                logger.warning("could not delete a message: %s", failure.get("Message"))

    def record(self, message: dict[str, Any]) -> dict[str, Any]:
        """One message as a record of Lambda's SQS event."""
        return {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message.get("Body", ""),
            "attributes": dict(message.get("Attributes") or {}),
            "messageAttributes": {
                name: {
                    "stringValue": value.get("StringValue"),
                    "binaryValue": value.get("BinaryValue"),
                    "stringListValues": [],
                    "binaryListValues": [],
                    "dataType": value.get("DataType", "String"),
                }
                for name, value in (message.get("MessageAttributes") or {}).items()
            },
            "md5OfBody": message.get("MD5OfBody", ""),
            "eventSource": "aws:sqs",
            "eventSourceARN": self.queue_arn,
            "awsRegion": self.function.region,
        }


def _failed_ids(result: Any, batch: set[str]) -> set[str]:
    """The records a ``batchItemFailures`` answer reports as failed.

    As Lambda reads it: a missing or empty list is success; an identifier that is empty or
    not in the batch fails the whole batch.
    """
    if not isinstance(result, dict):
        return set()
    failures = result.get("batchItemFailures") or []
    failed: set[str] = set()
    for failure in failures:
        identifier = failure.get("itemIdentifier") if isinstance(failure, dict) else None
        if not identifier or identifier not in batch:
            return set(batch)
        failed.add(identifier)
    return failed


class ScheduledInvoker(_Loop):
    """Invokes ``function`` with EventBridge's scheduled event every ``interval`` seconds."""

    def __init__(self, function: LocalFunction, interval: float, rule: str) -> None:
        super().__init__(f"schedule-{function.name}")
        self.function = function
        self.interval = interval
        self.rule = rule

    def step(self) -> float:
        if not self.function.available():
            return 3600.0
        started = time.monotonic()
        try:
            self.function(self.event())
        except ComfyFleetError:
            logger.warning("scheduled %s failed", self.function.name, exc_info=True)
        return max(0.0, self.interval - (time.monotonic() - started))

    def event(self) -> dict[str, Any]:
        region = self.function.region
        return {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "Scheduled Event",
            "source": "aws.events",
            "account": ACCOUNT,
            "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "region": region,
            "resources": [f"arn:aws:events:{region}:{ACCOUNT}:rule/{self.rule}"],
            "detail": {},
        }
