"""A node never fails a job for a class it lacks: it hands the job back (DESIGN §13).

Messages in the shared queue reach any node, and during a rollout nodes of two environments
are in service, so an agent checks a claimed job's classes against its own catalogue before
running it. When one is missing:

- the claim is undone as though it never happened (the attempt is given back: nothing
  failed) and the node's environment joins the job's ``handed_back_by``;
- the job's next queue is chosen by the router among the nodes of the environments that may
  still run it (the job's ``environments``, or every environment in service, less those that
  handed it back): the queue of the one that would start it first. Its message moves there,
  and a node takes its own queue first, so the detour costs the job no place;
- with none of those live, it waits in the shared queue for one to come: a message already
  there keeps its place (SQS FIFO serves the oldest first) but is hidden from everyone for
  HAND_BACK_DELAY_SECONDS, so the node that handed it back takes other work meanwhile;
- a job handed back MAX_HAND_BACKS times, or one that no environment in service may still
  run, fails ``node_class_unavailable``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from comfyfleet.catalogues import environments_in_service
from comfyfleet.domain import SHARED_ROUTE, Job, JobState, NodeInfo
from comfyfleet.queues import Received
from comfyfleet.router import ModelNeed, route_job
from comfyfleet.scheduling import Dispatcher

logger = logging.getLogger(__name__)

NODE_CLASS_UNAVAILABLE = "node_class_unavailable"
MAX_HAND_BACKS = 3  # hand-backs a job may have; the next node that lacks a class fails it
HAND_BACK_DELAY_SECONDS = 10


def node_class_unavailable(missing: Mapping[str, list[str]], declined: list[str]) -> dict[str, Any]:
    """The error of a job that no node in service could run for lack of a class."""
    names = sorted(missing)
    first = names[0]
    return {
        "code": NODE_CLASS_UNAVAILABLE,
        "message": f"no node in service has node class {', '.join(names)} "
        f"(lacking in environment {', '.join(dict.fromkeys(declined))})",
        "node_id": missing[first][0],
        "node_type": first,
        "details": {"class_types": names, "environments": declined},
    }


def runnable_by(job: Job, nodes: list[NodeInfo], now: float, stale_after: float) -> set[str]:
    """The environments that may still run ``job``: its own or those in service, less the
    ones whose nodes handed it back."""
    if job.environments is not None:
        allowed = set(job.environments)
    else:
        allowed = set(environments_in_service(nodes, now, stale_after))
    return allowed - set(job.handed_back_by)


def hand_back(
    dispatcher: Dispatcher,
    received: Received,
    job: Job,
    *,
    node_id: str,
    environment_id: str,
    missing: Mapping[str, list[str]],
) -> Job:
    """Give the claimed ``job`` (its message ``received``) back for a node that has the
    classes ``missing`` here (class → node ids); the job as it is now: queued, or failed."""
    declined = [*job.handed_back_by, environment_id]
    nodes, shared_queued = dispatcher.snapshot.get()
    now = dispatcher.clock.now()
    stale = dispatcher.settings.node_stale_seconds
    candidates = runnable_by(replace(job, handed_back_by=declined), nodes, now, stale)
    message = received.message
    if not candidates or len(declined) > MAX_HAND_BACKS:
        error = node_class_unavailable(missing, declined)
        done = dispatcher.finish(job, node_id, JobState.FAILED, message.share, error=error)
        dispatcher.queues.delete(received)
        return done
    route = route_job(
        [ModelNeed.from_ref(ref) for ref in job.models],
        nodes,
        shared_queued,
        shared_url=dispatcher.shared_url,
        settings=dispatcher.settings,
        now=now,
        environments=candidates,
    )
    handed = dispatcher.stores.jobs.hand_back(
        job.job_id, node_id, now=now, route=route.target, environment_id=environment_id
    )
    if route.target == SHARED_ROUTE and message.route == SHARED_ROUTE:
        dispatcher.queues.change_visibility(received, HAND_BACK_DELAY_SECONDS)
    else:
        dispatcher.queues.send(route.queue_url, replace(message, route=route.target))
        dispatcher.queues.delete(received)
    logger.info(
        "handed the job back: this node lacks %s",
        ", ".join(sorted(missing)),
        extra={"job_id": job.job_id, "route": route.target},
    )
    return handed
