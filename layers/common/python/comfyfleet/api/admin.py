"""What the admin routes do: accounts, keys, nodes and queues (admin scope only)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from comfyfleet.api.errors import InvalidRequest
from comfyfleet.api.inputs import is_account_id, is_job_id, is_key_id, is_node_id
from comfyfleet.api.models import (
    AccountCreate,
    AccountCreated,
    JobList,
    JobView,
    KeyCreate,
    KeyCreated,
    KeyList,
    KeyView,
    NodeDrained,
    NodeList,
    NodeRemoved,
    QueueList,
    QueueView,
    WebhookSecretRotated,
    iso,
)
from comfyfleet.api.queue_stats import QueueInspector, QueueRef
from comfyfleet.api.views import job_view, key_view, node_view
from comfyfleet.clock import Clock
from comfyfleet.domain import JobState, NodeInfo, NodeStatus
from comfyfleet.errors import AccountNotFound, JobNotFound, KeyNotFound, NodeNotFound
from comfyfleet.scheduling import Dispatcher
from comfyfleet.settings import Settings
from comfyfleet.store import Stores
from comfyfleet.webhooks import rotated


class AdminService:
    def __init__(
        self,
        *,
        settings: Settings,
        stores: Stores,
        dispatcher: Dispatcher,
        queue_stats: QueueInspector,
        fixed_queues: Callable[[], Sequence[QueueRef]],
        clock: Clock,
    ) -> None:
        self.settings = settings
        self.stores = stores
        self.dispatcher = dispatcher
        self.queue_stats = queue_stats
        self.fixed_queues = fixed_queues
        self.clock = clock

    # -- accounts and keys ----------------------------------------------------------------------

    def create_account(self, request: AccountCreate) -> AccountCreated:
        tier = request.tier.strip().lower()
        if tier not in self.settings.tiers:
            raise InvalidRequest(
                f"no tier {request.tier!r}",
                [{"field": "body.tier", "message": "one of " + ", ".join(self.settings.tiers)}],
            )
        account = self.stores.accounts.create(tier=tier, name=request.name, now=self.clock.now())
        return AccountCreated(
            account_id=account.account_id,
            tier=account.tier,
            name=account.name,
            webhook_secret=account.webhook_secret,
            created_at=iso(account.created_at) or "",
        )

    def _account_id(self, account_id: str) -> str:
        if not is_account_id(account_id):
            raise AccountNotFound(account_id[:64])
        return self.stores.accounts.get(account_id).account_id

    def rotate_webhook_secret(self, account_id: str) -> WebhookSecretRotated:
        """A new signing secret; the old one signs beside it for the configured grace."""
        account = self.stores.accounts.get(self._account_id(account_id))
        account = rotated(
            account,
            now=self.clock.now(),
            grace_seconds=self.settings.webhook_secret_grace_seconds,
        )
        self.stores.accounts.update(account)
        return WebhookSecretRotated(
            account_id=account.account_id,
            webhook_secret=account.webhook_secret,
            previous_secret_expires_at=iso(account.previous_secret_expires_at),
        )

    def create_key(self, request: KeyCreate) -> KeyCreated:
        """A new key for an account; its plaintext is in this response only."""
        account_id = self._account_id(request.account_id)
        key, plaintext = self.stores.keys.create(
            account_id, set(request.scopes), name=request.name, now=self.clock.now()
        )
        return KeyCreated(**key_view(key).model_dump(), api_key=plaintext)

    def keys(self, account_id: str) -> KeyList:
        account_id = self._account_id(account_id)
        return KeyList(
            keys=[key_view(key) for key in self.stores.keys.list_for_account(account_id)]
        )

    def revoke_key(self, key_id: str) -> KeyView:
        if not is_key_id(key_id):
            raise KeyNotFound(key_id[:64])
        return key_view(self.stores.keys.revoke(key_id, now=self.clock.now()))

    # -- jobs ----------------------------------------------------------------------------------

    def jobs(
        self,
        *,
        state: JobState | None,
        account_id: str | None,
        limit: int,
        cursor: str | None,
        base_url: str,
    ) -> JobList:
        """Every account's jobs newest first, or one account's."""
        if account_id is not None:
            page = self.stores.jobs.list_for_account(
                self._account_id(account_id), state=state, limit=limit, cursor=cursor
            )
        else:
            page = self.stores.jobs.list_all(
                state=state, limit=limit, cursor=cursor, now=self.clock.now()
            )
        return JobList(jobs=[job_view(job, base_url) for job in page.jobs], next_cursor=page.cursor)

    def job(self, job_id: str, *, base_url: str) -> JobView:
        """Any account's job."""
        if not is_job_id(job_id):
            raise JobNotFound(job_id[:64])
        return job_view(self.stores.jobs.get(job_id), base_url)

    # -- nodes ---------------------------------------------------------------------------------

    def nodes(self) -> NodeList:
        nodes, _ = self.stores.nodes.snapshot()
        return NodeList(nodes=[node_view(node) for node in sorted(nodes, key=_node_order)])

    def _node(self, node_id: str) -> NodeInfo:
        if not is_node_id(node_id):
            raise NodeNotFound(node_id[:64])
        return self.stores.nodes.get(node_id)

    def drain(self, node_id: str) -> NodeDrained:
        """Stop routing to the node and move its waiting jobs to the shared queue; its
        running job finishes there. The agent sees ``draining`` and takes no more work."""
        node = self._node(node_id)
        self.stores.nodes.set_status(node.node_id, NodeStatus.DRAINING)
        return NodeDrained(
            node_id=node.node_id, status=NodeStatus.DRAINING, moved_jobs=self._move_waiting(node)
        )

    def remove(self, node_id: str) -> NodeRemoved:
        """Forget the node (a dead instance); its waiting jobs go to the shared queue first."""
        node = self._node(node_id)
        moved = self._move_waiting(node)
        self.stores.nodes.remove(node.node_id)
        return NodeRemoved(node_id=node.node_id, moved_jobs=moved)

    def _move_waiting(self, node: NodeInfo) -> int:
        if not node.queue_url:
            return 0
        return self.dispatcher.drain_node_queue(node.node_id, node.queue_url)

    # -- queues ----------------------------------------------------------------------------------

    def queues(self) -> QueueList:
        refs = list(self.fixed_queues())
        nodes, _ = self.stores.nodes.snapshot()
        refs.extend(
            QueueRef(name=_queue_name(node.queue_url), kind="node", url=node.queue_url)
            for node in sorted(nodes, key=_node_order)
            if node.queue_url
        )
        return QueueList(
            queues=[
                QueueView(
                    name=stats.ref.name,
                    kind=stats.ref.kind,
                    visible=stats.visible,
                    in_flight=stats.in_flight,
                    delayed=stats.delayed,
                    oldest_age_seconds=stats.oldest_age_seconds,
                )
                for stats in self.queue_stats.stats(refs)
            ]
        )


def _node_order(node: NodeInfo) -> str:
    return node.node_id


def _queue_name(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]
