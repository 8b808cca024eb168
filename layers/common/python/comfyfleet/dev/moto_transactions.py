"""TransactWriteItems in moto at the cost of the items it touches, not of the whole tables.

moto backs up every table a transaction names with ``copy.deepcopy`` before applying it, so
each admission (a transaction on the jobs and limits tables) costs time in proportion to all
the jobs ever submitted: measured through the dev stack, a third of a submit's time after a
few hundred jobs, and growing. DynamoDB's cost does not depend on table size, and the dev
stack should not slow down the longer it runs. :func:`item_level_rollback` makes moto's table
copies no-ops during a transaction and backs up the touched items instead, restoring them if
the transaction is cancelled. It relies on requests being applied one at a time (LocalAws
serialises DynamoDB requests).
"""

from __future__ import annotations

import copy
import threading
from types import SimpleNamespace
from typing import Any

_active = threading.local()
_patched = False
_patch_lock = threading.Lock()


def item_level_rollback() -> None:
    """Patch moto's DynamoDB backend (once per process)."""
    global _patched
    with _patch_lock:
        if _patched:
            return
        from moto.dynamodb import models
        from moto.dynamodb.models.table import Table

        real_deepcopy = copy.deepcopy

        def deepcopy(value: Any, memo: Any = None) -> Any:
            if isinstance(value, Table) and getattr(_active, "on", False):
                return value  # the touched items are backed up instead
            return real_deepcopy(value, memo)

        # Only this module's view of ``copy`` changes; everyone else's deepcopy is untouched.
        models.copy = SimpleNamespace(deepcopy=deepcopy)  # type: ignore[assignment]
        original = models.DynamoDBBackend.transact_write_items

        def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
            backups = _back_up(self, transact_items)
            _active.on = True
            try:
                original(self, transact_items)
            except Exception:
                _restore(self, backups)
                raise
            finally:
                _active.on = False

        models.DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]
        _patched = True


def _key_of(backend: Any, op: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    name = op.get("TableName")
    if not name or name not in backend.tables:
        return None
    if "Key" in op:
        return name, op["Key"]
    table = backend.tables[name]
    attributes = op.get("Item") or {}
    names = [table.hash_key_attr] + ([table.range_key_attr] if table.range_key_attr else [])
    if not all(attribute in attributes for attribute in names):
        return None  # moto will refuse it before writing anything
    return name, {attribute: attributes[attribute] for attribute in names}


def _back_up(backend: Any, transact_items: list[dict[str, Any]]) -> list[tuple[str, Any, Any]]:
    backups = []
    for entry in transact_items:
        found = _key_of(backend, next(iter(entry.values()), {}))
        if found is None:
            continue
        name, key = found
        try:
            current = backend.get_item(name, key)
        except Exception:
            continue  # a malformed key: moto refuses the transaction before writing
        backups.append((name, key, None if current is None else current.to_json()["Attributes"]))
    return backups


def _restore(backend: Any, backups: list[tuple[str, Any, Any]]) -> None:
    for name, key, attributes in backups:
        if attributes is None:
            if backend.get_item(name, key) is not None:
                backend.delete_item(name, key)
        else:
            backend.put_item(name, copy.deepcopy(attributes))
