"""The in-memory deployment store."""

from __future__ import annotations

import dataclasses

from comfyfleet.deployments.spec import Deployment, DeploymentSummary
from comfyfleet.errors import DeploymentNotFound
from comfyfleet.store.memory.state import DeploymentHead, MemoryState
from comfyfleet.store.ports import DeploymentPage, decode_name_cursor, encode_name_cursor


class MemoryDeploymentStore:
    def __init__(self, memory: MemoryState) -> None:
        self.m = memory

    def create(self, draft: Deployment) -> Deployment:
        key = (draft.account_id, draft.name)
        with self.m.lock:
            head = self.m.deployment_heads.get(key)
            if head is None:
                head = DeploymentHead(latest=0, first=1, created_at=draft.created_at)
            elif head.deleted:
                head = DeploymentHead(head.latest, head.latest + 1, draft.created_at)
            version = dataclasses.replace(draft, version=head.latest + 1)
            head.latest = version.version
            self.m.deployment_heads[key] = head
            self.m.deployments[(*key, version.version)] = version
            return version

    def get(self, account_id: str, name: str, version: int | None = None) -> Deployment:
        with self.m.lock:
            head = self.m.deployment_heads.get((account_id, name))
            if head is None or head.deleted:
                raise DeploymentNotFound(name)
            wanted = head.latest if version is None else version
            if not head.first <= wanted <= head.latest:
                raise DeploymentNotFound(name, version)
            return self.m.deployments[(account_id, name, wanted)]

    def list_for_account(
        self, account_id: str, *, limit: int, cursor: str | None
    ) -> DeploymentPage:
        after = decode_name_cursor(cursor) if cursor is not None else ""
        with self.m.lock:
            names = sorted(
                name
                for (owner, name), head in self.m.deployment_heads.items()
                if owner == account_id and not head.deleted and name > after
            )
            page = [self._summary(account_id, name) for name in names[:limit]]
        more = len(names) > limit
        return DeploymentPage(page, encode_name_cursor(page[-1].name) if more else None)

    def _summary(self, account_id: str, name: str) -> DeploymentSummary:
        head = self.m.deployment_heads[(account_id, name)]
        newest = self.m.deployments[(account_id, name, head.latest)]
        return DeploymentSummary(
            name=name,
            version=head.latest,
            created_at=head.created_at,
            updated_at=newest.created_at,
            description=newest.description,
        )

    def delete(self, account_id: str, name: str) -> int:
        with self.m.lock:
            head = self.m.deployment_heads.get((account_id, name))
            if head is None or head.deleted:
                raise DeploymentNotFound(name)
            head.deleted = True
            for version in range(head.first, head.latest + 1):
                self.m.deployments.pop((account_id, name, version), None)
            return head.latest - head.first + 1
