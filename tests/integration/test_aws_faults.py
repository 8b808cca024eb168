"""The dev stack's fault injection (comfyfleet.aws_faults) against moto: each service's
throttling and 5xx answers are parsed by botocore into the real error codes and retried by
its standard mode, and the variable is refused outside the dev stack."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from comfyfleet import aws_faults
from comfyfleet.aws import CLIENT_CONFIG, client, reset_clients
from comfyfleet.resources import Provisioned
from comfyfleet.settings import Settings
from tests.integration.conftest import REGION


@pytest.fixture
def dev_mark(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """This process as one the dev stack started, with the faults asked for."""
    monkeypatch.setenv(aws_faults.STACK_ENV, "1")
    reset_clients()

    def ask(spec: str) -> None:
        monkeypatch.setenv(aws_faults.FAULTS_ENV, spec)

    yield ask
    reset_clients()


def calls(aws: Provisioned, settings: Settings) -> dict[str, Callable[[Any], Any]]:
    return {
        "dynamodb": lambda c: c.list_tables(),
        "sqs": lambda c: c.get_queue_attributes(
            QueueUrl=next(iter(aws.queue_urls.values())), AttributeNames=["All"]
        ),
        "s3": lambda c: c.list_objects_v2(Bucket=settings.output_bucket_name),
        "sns": lambda c: c.publish(TopicArn=aws.topic_arn, Message="{}"),
    }


@pytest.mark.parametrize(
    ("service", "codes"),
    [
        ("dynamodb", {"ThrottlingException", "InternalServerError"}),
        ("sqs", {"ThrottlingException", "InternalError"}),
        ("s3", {"SlowDown", "InternalError"}),
        ("sns", {"Throttling", "InternalError"}),
    ],
)
def test_every_call_failing_raises_the_services_own_code_after_botocores_retries(
    aws: Provisioned,
    settings: Settings,
    dev_mark: Callable[[str], None],
    service: str,
    codes: set[str],
) -> None:
    call = calls(aws, settings)[service]
    made = client(service, region=REGION)
    call(made)  # no faults asked for: a plain call
    dev_mark(f"{service}=1")

    with pytest.raises(ClientError) as raised:
        call(made)

    error = raised.value.response
    assert error["Error"]["Code"] in codes
    # Every try failed: the first and each of standard mode's retries.
    tries = made.meta.config.retries["total_max_attempts"]
    assert error["ResponseMetadata"]["RetryAttempts"] == tries - 1
    assert error["ResponseMetadata"]["HTTPStatusCode"] in (400, 500, 503)


def test_a_share_of_faults_is_absorbed_by_retries(
    aws: Provisioned, settings: Settings, dev_mark: Callable[[str], None]
) -> None:
    # A client of its own, with the project's retry configuration and one seeded injector.
    made = boto3.session.Session().client("sqs", region_name=REGION, config=CLIENT_CONFIG)
    injector = aws_faults.FaultInjector(made, random.Random(7))
    made.meta.events.register_first("before-send", injector.before_send)
    dev_mark("sqs=0.2,dynamodb=0")
    url = next(iter(aws.queue_urls.values()))

    for _ in range(40):
        made.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])

    assert injector.injected > 0  # faults happened, and every call still succeeded


def test_faults_are_refused_in_a_process_the_dev_stack_did_not_start(
    monkeypatch: pytest.MonkeyPatch, aws: Provisioned
) -> None:
    reset_clients()
    monkeypatch.setenv(aws_faults.FAULTS_ENV, "sqs=0.05")
    with pytest.raises(aws_faults.FaultsRefused, match="comfyfleet dev"):
        client("sqs", region=REGION)
    monkeypatch.setenv(aws_faults.STACK_ENV, "1")
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "comfyfleet-api")
    with pytest.raises(aws_faults.FaultsRefused):
        client("sqs", region=REGION)
    reset_clients()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("ec2=0.1", "not service=share"),
        ("sqs", "not service=share"),
        ("sqs=lots", "not a number"),
        ("sqs=1.5", "between 0 and 1"),
    ],
)
def test_a_bad_fault_spec_names_its_mistake(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        aws_faults.parse_faults(spec)
    assert aws_faults.parse_faults("dynamodb=0.05, sqs=0.05,s3=0,sns=1") == {
        "dynamodb": 0.05,
        "sqs": 0.05,
        "s3": 0.0,
        "sns": 1.0,
    }
