"""The in-memory limit, account and key stores."""

from __future__ import annotations

import copy
from collections.abc import Iterable

from comfyfleet.apikeys import hash_key, new_api_key, new_webhook_secret
from comfyfleet.domain import Account, ApiKey, Counters, Scope, rate_window
from comfyfleet.errors import AccountNotFound, KeyNotFound
from comfyfleet.ids import new_account_id
from comfyfleet.store.memory.state import Counts, MemoryState


class MemoryLimitStore:
    def __init__(self, memory: MemoryState) -> None:
        self.m = memory

    def counters(self, account_id: str, *, now: float) -> Counters:
        with self.m.lock:
            start, end = rate_window(now)
            counts = self.m.counts.get(account_id) or Counts()
            return Counters(
                self.m.windows.get((account_id, start), 0),
                float(end),
                counts.waiting,
                counts.ring,
                counts.running,
            )

    def backlogged(self, *, now: float) -> dict[str, Counters]:
        with self.m.lock:
            return {
                account_id: self.counters(account_id, now=now)
                for account_id, counts in self.m.counts.items()
                if counts.backlog > 0
            }


class MemoryAccountStore:
    def __init__(self, memory: MemoryState) -> None:
        self.m = memory

    def create(
        self, *, tier: str, name: str, now: float, webhook_url: str | None = None
    ) -> Account:
        account = Account(
            account_id=new_account_id(now),
            tier=tier,
            created_at=now,
            name=name,
            webhook_url=webhook_url,
            webhook_secret=new_webhook_secret(),
        )
        with self.m.lock:
            self.m.accounts[account.account_id] = account
            self.m.counts[account.account_id] = Counts()
        return copy.deepcopy(account)

    def get(self, account_id: str) -> Account:
        with self.m.lock:
            account = self.m.accounts.get(account_id)
            if account is None:
                raise AccountNotFound(account_id)
            return copy.deepcopy(account)

    def update(self, account: Account) -> None:
        with self.m.lock:
            if account.account_id not in self.m.accounts:
                raise AccountNotFound(account.account_id)
            self.m.accounts[account.account_id] = copy.deepcopy(account)


class MemoryKeyStore:
    def __init__(self, memory: MemoryState) -> None:
        self.m = memory

    def create(
        self, account_id: str, scopes: Iterable[Scope], *, name: str, now: float
    ) -> tuple[ApiKey, str]:
        plaintext, key_id, key_hash = new_api_key()
        key = ApiKey(key_id, key_hash, account_id, frozenset(scopes), now, name)
        with self.m.lock:
            self.m.keys[key_hash] = key
        return copy.deepcopy(key), plaintext

    def find(self, plaintext: str) -> ApiKey | None:
        with self.m.lock:
            key = self.m.keys.get(hash_key(plaintext))
            return copy.deepcopy(key) if key else None

    def get(self, key_id: str) -> ApiKey:
        with self.m.lock:
            for key in self.m.keys.values():
                if key.key_id == key_id:
                    return copy.deepcopy(key)
        raise KeyNotFound(key_id)

    def revoke(self, key_id: str, *, now: float) -> ApiKey:
        with self.m.lock:
            key = self.m.keys[self.get(key_id).key_hash]
            if key.revoked_at is None:
                key.revoked_at = now
            return copy.deepcopy(key)

    def list_for_account(self, account_id: str) -> list[ApiKey]:
        with self.m.lock:
            return sorted(
                (copy.deepcopy(k) for k in self.m.keys.values() if k.account_id == account_id),
                key=lambda k: k.created_at,
            )
