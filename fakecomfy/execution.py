"""Running one prompt: the messages, the cache, the interrupt and the history it leaves.

The sequence a client sees is ComfyUI 0.3.64's: ``execution_start``, ``execution_cached``
(every node whose output is cached), then per node ``progress_state`` (running),
``executing``, [``progress`` per sampler step], [``executed`` for a node with UI output],
``progress_state`` (finished); at the end ``execution_success``, or ``execution_error`` /
``execution_interrupted`` at the failing node. The worker writes the history after that and
only then sends ``executing`` with ``node: null``.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from fakecomfy.folders import ComfyFolders
from fakecomfy.graph import (
    CacheEntry,
    DependencyCycle,
    ExecutionList,
    OutputCache,
    cache_keys,
    is_link,
)
from fakecomfy.node_api import InterruptProcessing, NodeContext
from fakecomfy.node_types import LiveNodeTypes, NodeType
from fakecomfy.nodes import implementation
from fakecomfy.progress import Messenger, ProgressRegistry, StepReporter
from fakecomfy.prompt_queue import QueueItem
from fakecomfy.validation import full_type_name

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ExecutionReport:
    """What the history keeps of a run."""

    outputs: dict[str, Any]
    meta: dict[str, Any]
    status: dict[str, Any]


@dataclass(slots=True)
class _Failure:
    node_id: str
    interrupted: bool
    error: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class _Run:
    item: QueueItem
    types: LiveNodeTypes
    keys: dict[str, str]
    progress: ProgressRegistry
    steps: StepReporter
    executed: list[str] = field(default_factory=list)
    results: dict[str, list[list[Any]]] = field(default_factory=dict)
    messages: list[list[Any]] = field(default_factory=list)

    @property
    def prompt(self) -> dict[str, Any]:
        return self.item.prompt

    @property
    def client_id(self) -> str | None:
        return self.item.client_id


def format_value(value: Any) -> Any:
    """How ``execution_error.current_inputs`` shows a value."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


class PromptExecutor:
    """Executes prompts one at a time (from the worker thread), keeping outputs cached."""

    def __init__(
        self,
        messenger: Messenger,
        folders: ComfyFolders,
        interrupt: threading.Event,
        *,
        step_seconds: float,
        previews: bool,
    ) -> None:
        self._messenger = messenger
        self._folders = folders
        self._interrupt = interrupt
        self._step_seconds = step_seconds
        self._previews = previews
        self._cache = OutputCache()
        # Read by the WebSocket handler: a client reconnecting mid-run is told the node.
        self.client_id: str | None = None
        self.last_node_id: str | None = None

    def check_interrupt(self) -> None:
        if self._interrupt.is_set():
            raise InterruptProcessing()

    def execute(self, item: QueueItem, types: LiveNodeTypes) -> ExecutionReport:
        """Run ``item``; never raises for a node's failure (that is reported instead)."""
        self._interrupt.clear()  # an interrupt sent while nothing ran does not carry over
        self.client_id = item.client_id
        progress = ProgressRegistry(item.prompt_id, self._messenger)
        run = _Run(
            item=item,
            types=types,
            keys=cache_keys(item.prompt, types, self._folders),
            progress=progress,
            steps=StepReporter(self._messenger, progress, item.client_id, self.check_interrupt),
        )
        self._add_message(run, "execution_start", {"prompt_id": item.prompt_id})
        self._cache.retain(set(run.keys.values()))
        cached = [node for node in item.prompt if self._cache.get(run.keys[node]) is not None]
        self._add_message(run, "execution_cached", {"nodes": cached, "prompt_id": item.prompt_id})

        failure = self._run_graph(run)
        if failure is None:
            self._add_message(run, "execution_success", {"prompt_id": item.prompt_id})
        else:
            self._report_failure(run, failure)
        self.last_node_id = None

        outputs: dict[str, Any] = {}
        meta: dict[str, Any] = {}
        for node_id in item.prompt:
            entry = self._cache.get(run.keys[node_id])
            if entry is not None and entry.ui is not None:
                outputs[node_id] = entry.ui["output"]
                meta[node_id] = entry.ui["meta"]
        status = {
            "status_str": "success" if failure is None else "error",
            "completed": failure is None,
            "messages": run.messages,
        }
        return ExecutionReport(outputs, meta, status)

    def _run_graph(self, run: _Run) -> _Failure | None:
        def is_output(node_id: str) -> bool:
            node_type = run.types.get(run.prompt[node_id]["class_type"])
            return node_type is not None and node_type.output_node

        def is_cached(node_id: str) -> bool:
            return self._cache.get(run.keys.get(node_id, "")) is not None

        pending = ExecutionList(run.prompt, is_output, is_cached)
        for output in run.item.outputs:
            pending.add_node(output)
        while not pending.is_empty():
            try:
                node_id = pending.stage()
            except DependencyCycle as cycle:
                error = {
                    "exception_message": "Dependency cycle detected",
                    "exception_type": "graph.DependencyCycleError",
                    "traceback": [],
                    "current_inputs": [],
                }
                return _Failure(cycle.node_id, False, error)
            failure = self._execute_node(run, node_id)
            if failure is not None:
                return failure
            pending.complete(node_id)
        return None

    def _execute_node(self, run: _Run, node_id: str) -> _Failure | None:
        class_type = run.prompt[node_id]["class_type"]
        node_type = run.types.get(class_type)
        assert node_type is not None  # validation checked every class
        key = run.keys[node_id]
        cached = self._cache.get(key)
        if cached is not None:
            if run.client_id is not None:
                output = cached.ui["output"] if cached.ui is not None else None
                self._send_executed(run, node_id, output)
            run.progress.finish(node_id)
            run.results[node_id] = cached.outputs
            return None

        run.progress.start(node_id)
        inputs: dict[str, list[Any]] | None = None
        try:
            inputs = self._input_data(run, node_id, node_type)
            if run.client_id is not None:
                self.last_node_id = node_id
                executing = {
                    "node": node_id,
                    "display_node": node_id,
                    "prompt_id": run.item.prompt_id,
                }
                self._messenger.send("executing", executing, run.client_id)
            outputs, ui = self._call(run, node_id, class_type, inputs)
        except InterruptProcessing:
            logger.info("processing interrupted", extra={"prompt_id": run.item.prompt_id})
            return _Failure(node_id, True)
        except Exception as exc:
            logger.warning(
                "node failed",
                extra={"prompt_id": run.item.prompt_id, "node_id": node_id, "error": str(exc)},
            )
            return _Failure(node_id, False, _error_details(exc, inputs))

        ui_entry = None
        if ui:
            meta = {
                "node_id": node_id,
                "display_node": node_id,
                "parent_node": None,
                "real_node_id": node_id,
            }
            ui_entry = {"meta": meta, "output": ui}
            if run.client_id is not None:
                self._send_executed(run, node_id, ui)
        self._cache.put(key, CacheEntry(outputs, ui_entry))
        run.results[node_id] = outputs
        run.progress.finish(node_id)
        run.executed.append(node_id)
        return None

    def _send_executed(self, run: _Run, node_id: str, output: Any) -> None:
        message = {
            "node": node_id,
            "display_node": node_id,
            "output": output,
            "prompt_id": run.item.prompt_id,
        }
        self._messenger.send("executed", message, run.client_id)

    def _input_data(self, run: _Run, node_id: str, node_type: NodeType) -> dict[str, list[Any]]:
        """Each input as a list of values (ComfyUI's list semantics), hidden inputs last."""
        data: dict[str, list[Any]] = {}
        for name, value in run.prompt[node_id]["inputs"].items():
            if is_link(value):
                produced = run.results.get(value[0])
                if produced is None:  # cached and never staged: read the cache
                    entry = self._cache.get(run.keys.get(value[0], ""))
                    produced = entry.outputs if entry is not None else None
                if produced is None or value[1] >= len(produced):
                    data[name] = [None]
                else:
                    data[name] = produced[value[1]]
            elif node_type.input(name) is not None:
                data[name] = [value]
        for name, kind in node_type.hidden.items():
            if kind == "PROMPT":
                data[name] = [run.prompt]
            elif kind == "EXTRA_PNGINFO":
                data[name] = [run.item.extra_data.get("extra_pnginfo")]
            elif kind == "UNIQUE_ID":
                data[name] = [node_id]
        return data

    def _call(
        self, run: _Run, node_id: str, class_type: str, inputs: dict[str, list[Any]]
    ) -> tuple[list[list[Any]], dict[str, list[Any]]]:
        """Call the node once per list index (the last value repeats), then merge results."""
        function = implementation(class_type)
        context = NodeContext(
            prompt_id=run.item.prompt_id,
            node_id=node_id,
            folders=self._folders,
            step_seconds=self._step_seconds,
            previews=self._previews,
            report_step=partial(run.steps.report, node_id),
        )
        calls = max((len(values) for values in inputs.values()), default=1)
        results = []
        for index in range(calls):
            self.check_interrupt()  # ComfyUI checks before running a node
            arguments = {
                name: values[min(index, len(values) - 1)] for name, values in inputs.items()
            }
            results.append(function(context, **arguments))
        outputs: list[list[Any]] = []
        if results:
            outputs = [[r.result[i] for r in results] for i in range(len(results[0].result))]
        uis = [r.ui for r in results if r.ui]
        merged = {key: [v for ui in uis for v in ui.get(key, [])] for key in uis[0]} if uis else {}
        return outputs, merged

    def _add_message(
        self, run: _Run, event: str, data: dict[str, Any], *, broadcast: bool = False
    ) -> None:
        """Record a status message for the history and send it (to everyone if no client)."""
        stamped = {**data, "timestamp": int(time.time() * 1000)}
        run.messages.append([event, stamped])
        if run.client_id is not None or broadcast:
            self._messenger.send(event, stamped, run.client_id)

    def _report_failure(self, run: _Run, failure: _Failure) -> None:
        message = {
            "prompt_id": run.item.prompt_id,
            "node_id": failure.node_id,
            "node_type": run.prompt[failure.node_id]["class_type"],
            # ComfyUI sends a set here, so its order is arbitrary; latest first matches the
            # recorded interrupt (["3", "2", "1"]).
            "executed": list(reversed(run.executed)),
        }
        if failure.interrupted:
            self._add_message(run, "execution_interrupted", message, broadcast=True)
            return
        message.update(failure.error)
        message["current_outputs"] = list(run.prompt)
        self._add_message(run, "execution_error", message)


def _error_details(exc: Exception, inputs: dict[str, list[Any]] | None) -> dict[str, Any]:
    reported = getattr(exc, "reported_type", None)
    return {
        # ComfyUI appends tips after a newline (none apply here), hence the trailing "\n".
        "exception_message": f"{exc}\n",
        "exception_type": reported or full_type_name(type(exc)),
        "traceback": traceback.format_tb(exc.__traceback__),
        "current_inputs": {
            name: [format_value(v) for v in values] for name, values in (inputs or {}).items()
        },
    }
