"""A running job's lease, renewed from a thread of its own for the whole run.

The lease is what lets another node take a job over when its agent dies, so it is short
(``lease_seconds``, 30 s by default) and renewed every ``lease_renewal_seconds`` (a third of
it): one DynamoDB write and one ChangeMessageVisibility per renewal, whatever the run does.
A thread, not the run's own loop, renews it: a model download happens before ComfyUI's
socket ticks, and may take longer than the lease.

Each renewal writes the lease first and the message's visibility second, so the message of
a dead agent's job comes back only once its lease has run out: the node receiving it then
takes the job over at once, instead of finding it still leased and looking again later.
"""

from __future__ import annotations

import logging
import threading
from types import TracebackType

from comfyfleet.clock import Clock
from comfyfleet.errors import ComfyFleetError, JobStateConflict, NotFound
from comfyfleet.queues import JobQueues, Received
from comfyfleet.store.ports import JobStore

logger = logging.getLogger(__name__)

RETRIES_PER_INTERVAL = 4  # after a failed renewal, the next try comes this much sooner


class LeaseKeeper:
    """Renews a job's lease and its message's visibility until the block ends."""

    def __init__(
        self,
        jobs: JobStore,
        queues: JobQueues,
        clock: Clock,
        *,
        job_id: str,
        node_id: str,
        received: Received,
        lease_seconds: int,
        every: float,
    ) -> None:
        self.jobs = jobs
        self.queues = queues
        self.clock = clock
        self.job_id = job_id
        self.node_id = node_id
        self.received = received
        self.lease_seconds = lease_seconds
        self.every = every
        self.renewals = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> LeaseKeeper:
        self._thread = threading.Thread(target=self._keep, name=f"lease-{self.job_id}", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            # A renewal in flight ends within boto's own timeouts; the run's end waits for
            # it, so no late visibility change lands after the message is deleted.
            self._thread.join(timeout=max(10.0, self.every))
            self._thread = None

    def _keep(self) -> None:
        wait = self.every
        while not self._stop.wait(wait):
            renewed = self.renew()
            if renewed is None:
                return
            # A failed renewal is tried again soon: the lease has two intervals left at best.
            wait = self.every if renewed else self.every / RETRIES_PER_INTERVAL

    def renew(self) -> bool | None:
        """One renewal: True if renewed, False if it failed (try again), None once the lease
        is no longer this node's (stop renewing)."""
        try:
            self.jobs.extend_lease(
                self.job_id, self.node_id, until=self.clock.now() + self.lease_seconds
            )
        except (JobStateConflict, NotFound):
            # Ended meanwhile, or taken over after a lapse: the other node's result wins.
            logger.warning("the lease is not ours any more", extra={"job_id": self.job_id})
            return None
        except ComfyFleetError:
            logger.warning("lease renewal failed", exc_info=True, extra={"job_id": self.job_id})
            return False
        self.renewals += 1
        try:
            self.queues.change_visibility(self.received, self.lease_seconds)
        except ComfyFleetError:
            logger.warning(
                "message visibility not renewed", exc_info=True, extra={"job_id": self.job_id}
            )
        return True
