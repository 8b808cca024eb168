"""Building the reaper and the termination drain on AWS (their functions, the dev stack,
integration tests against moto)."""

from __future__ import annotations

import time
from collections.abc import Callable

from comfyfleet.clock import Clock, SystemClock
from comfyfleet.lifecycle import AutoScalingLifecycleActions, SqsNodeQueues, TerminationDrain
from comfyfleet.reaper import Reaper
from comfyfleet.scheduling import Dispatcher
from comfyfleet.settings import Settings


def aws_dispatcher(
    settings: Settings,
    *,
    endpoint_url: str | None = None,
    region: str | None = None,
    clock: Clock | None = None,
) -> Dispatcher:
    """A Dispatcher on DynamoDB, SQS and the job-events topic."""
    from comfyfleet.aws import client
    from comfyfleet.events import SnsJobEvents
    from comfyfleet.queues import SqsJobQueues
    from comfyfleet.resources import SHARED_QUEUE
    from comfyfleet.store.dynamo import dynamo_stores

    queues = SqsJobQueues(client("sqs", endpoint_url=endpoint_url, region=region))
    shared_url = settings.shared_queue_url or queues.queue_url(SHARED_QUEUE.name(settings))
    return Dispatcher(
        dynamo_stores(settings, endpoint_url=endpoint_url, region=region),
        queues,
        settings,
        clock or SystemClock(),
        shared_url=shared_url,
        events=SnsJobEvents(client("sns", endpoint_url=endpoint_url, region=region), settings),
    )


def aws_reaper(
    settings: Settings,
    *,
    endpoint_url: str | None = None,
    region: str | None = None,
    clock: Clock | None = None,
) -> Reaper:
    """The reaper, reading the job DLQ (node queues dead-letter there too)."""
    from comfyfleet.aws import client
    from comfyfleet.queues import SqsJobQueues
    from comfyfleet.resources import SHARED_DLQ

    dispatcher = aws_dispatcher(settings, endpoint_url=endpoint_url, region=region, clock=clock)
    sqs = SqsJobQueues(client("sqs", endpoint_url=endpoint_url, region=region))
    return Reaper(dispatcher, dead_letter_urls=[sqs.queue_url(SHARED_DLQ.name(settings))])


def aws_termination_drain(
    settings: Settings,
    *,
    endpoint_url: str | None = None,
    region: str | None = None,
    clock: Clock | None = None,
    autoscaling: object | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> TerminationDrain:
    """The termination drain; ``autoscaling`` replaces the Auto Scaling client (tests)."""
    from comfyfleet.aws import client

    dispatcher = aws_dispatcher(settings, endpoint_url=endpoint_url, region=region, clock=clock)
    return TerminationDrain(
        dispatcher,
        SqsNodeQueues(client("sqs", endpoint_url=endpoint_url, region=region), settings),
        AutoScalingLifecycleActions(
            autoscaling or client("autoscaling", endpoint_url=endpoint_url, region=region)
        ),
        sleep=sleep,
    )
