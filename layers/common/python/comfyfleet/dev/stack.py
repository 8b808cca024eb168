"""``comfyfleet dev``: the whole system on one machine (DESIGN §11).

In this process: moto's server (the AWS endpoint, every resource provisioned), the HTTP
front playing API Gateway before the real api and authorizer functions, the webhooks
function fed from its SQS queue and the reaper on a timer. As child processes: one agent per
ComfyUI, each with its own cache (or all on one, ``--shared-cache``, as the agents of a
multi-GPU instance are), and a fakecomfy per agent unless real ComfyUI servers are given.
The handlers and the agents find AWS through boto3's ``AWS_ENDPOINT_URL`` and read their
settings from ``COMFYFLEET_*`` variables, as they do in a deployment.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from comfyfleet import aws_faults
from comfyfleet.api.auth import AUTHORIZER_CACHE_SECONDS
from comfyfleet.api.local import LocalGateway
from comfyfleet.dev.agents import AgentLayout, AgentProcess, Supervisor, start_agents
from comfyfleet.dev.front import HttpFront
from comfyfleet.dev.functions import LocalFunction, ScheduledInvoker, SqsEventSource
from comfyfleet.dev.local_aws import LocalAws
from comfyfleet.dev.processes import stop_all
from comfyfleet.domain import Scope
from comfyfleet.errors import NodeNotFound

# Not under "comfyfleet": the handlers hand that logger tree to Powertools when they start.
logger = logging.getLogger("devstack." + __name__.rsplit(".", 1)[-1])

REGION = "us-east-1"
STATE_FILE = "dev.json"
DEFAULT_STATE_DIR = ".comfyfleet"
ADMIN_TIER = "enterprise"
AUTHORIZER_TTL_SECONDS = float(AUTHORIZER_CACHE_SECONDS)  # as deployed: revocation's delay
# Agent defaults that suit one machine; a COMFYFLEET_* variable already set wins.
AGENT_DEFAULTS = {
    "COMFYFLEET_RECEIVE_WAIT_SECONDS": "2",  # short long polls: a quick Ctrl-C
    "COMFYFLEET_DRAIN_GRACE_SECONDS": "5",
    "COMFYFLEET_CACHE_BUDGET_BYTES": str(20 * 1024**3),
    "COMFYFLEET_HEARTBEAT_SECONDS": "2",
}


class StackError(RuntimeError):
    """The stack could not start; the message says which part and why."""


@dataclass(frozen=True)
class ComfyTarget:
    """A real ComfyUI the agent drives, and its folder (for the model symlinks)."""

    url: str
    root: Path

    @classmethod
    def parse(cls, text: str) -> ComfyTarget:
        url, sep, root = text.strip().rpartition("@")
        if not sep or not url.startswith(("http://", "https://")) or not root:
            raise ValueError(
                f"{text!r} is not URL@COMFY_ROOT (e.g. http://127.0.0.1:8188@/ComfyUI)"
            )
        return cls(url.rstrip("/"), Path(root).expanduser())


@dataclass
class DevOptions:
    port: int = 8080
    agents: int = 1
    comfy: list[ComfyTarget] | None = None  # None: a fakecomfy per agent
    state_dir: Path = Path(".comfyfleet")
    shared_cache: bool = False  # every agent on one cache dir (and so one budget)
    allow_local_urls: bool = False
    reaper_seconds: float = 10.0
    step_seconds: float = 0.05  # fakecomfy's time per sampler step
    verbose: bool = False
    agent_start_timeout: float = 120.0


@dataclass
class DevStack:
    options: DevOptions
    aws: LocalAws | None = None
    front: HttpFront | None = None
    loops: list[SqsEventSource | ScheduledInvoker] = field(default_factory=list)
    agents: list[AgentProcess] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    supervisor: Supervisor | None = None

    @property
    def state_dir(self) -> Path:
        return self.options.state_dir.resolve()

    @property
    def state_file(self) -> Path:
        return self.state_dir / STATE_FILE

    @property
    def logs(self) -> Path:
        return self.state_dir / "logs"

    # -- start ----------------------------------------------------------------------------------

    def start(self) -> dict[str, Any]:
        """Start every part, write dev.json and return its content."""
        self.logs.mkdir(parents=True, exist_ok=True)
        self.state_file.unlink(missing_ok=True)
        faults = _faults_aside()
        self.aws = LocalAws().start()
        _configure_environment(self.aws.url, self.options)
        from comfyfleet.aws import reset_clients
        from comfyfleet.resources import SHARED_QUEUE, WEBHOOKS_QUEUE, provision
        from comfyfleet.settings import get_settings, load_settings

        reset_clients()
        get_settings.cache_clear()
        settings = load_settings()
        provisioned = provision(settings, endpoint_url=self.aws.url, region=REGION)
        os.environ["COMFYFLEET_SHARED_QUEUE_URL"] = provisioned.queue_urls[SHARED_QUEUE.logical]

        api, authorizer = LocalFunction("api"), LocalFunction("authorizer")
        gateway = LocalGateway(api, authorizer, authorizer_ttl=AUTHORIZER_TTL_SECONDS)
        self.front = HttpFront(gateway, port=self.options.port)
        os.environ["COMFYFLEET_PUBLIC_BASE_URL"] = self.front.url
        get_settings.cache_clear()
        self.front.start()

        self._start_loops(settings, provisioned.queue_urls[WEBHOOKS_QUEUE.logical])
        keys = self._bootstrap_accounts(settings)
        self._start_agents(faults)
        self._wait_for_agents(settings)
        self.info = {
            "api_url": self.front.url,
            **keys,
            "moto_url": self.aws.url,
            "shared_queue_url": provisioned.queue_urls[SHARED_QUEUE.logical],
            "topic_arn": provisioned.topic_arn,
            "state_dir": str(self.state_dir),
            "pid": os.getpid(),
            "absent_functions": [
                loop.function.name for loop in self.loops if not loop.function.available()
            ],
            "agents": [agent.describe() for agent in self.agents],
            "faults": faults,
        }
        if faults:
            os.environ[aws_faults.FAULTS_ENV] = faults  # the functions' calls, from now on
        self._write_state()
        return self.info

    def _start_loops(self, settings: Any, webhooks_url: str) -> None:
        """The webhooks function on its queue, the reaper on its schedule."""
        from comfyfleet.aws import client

        assert self.aws is not None
        # Lambda's event source mapping, played here: not one of the functions' calls.
        sqs = client("sqs", endpoint_url=self.aws.url, region=REGION, faults=False)
        webhooks_arn = sqs.get_queue_attributes(QueueUrl=webhooks_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        self.loops = [
            SqsEventSource(LocalFunction("webhooks"), sqs, webhooks_url, webhooks_arn),
            ScheduledInvoker(
                LocalFunction("reaper"), self.options.reaper_seconds, f"{settings.prefix}-reaper"
            ),
        ]
        for loop in self.loops:
            loop.start()

    def _bootstrap_accounts(self, settings: Any) -> dict[str, str]:
        """An operator account with an admin key, and one user account with a jobs key."""
        from comfyfleet.store.dynamo import dynamo_stores

        assert self.aws is not None
        stores = dynamo_stores(settings, endpoint_url=self.aws.url, region=REGION)
        now = time.time()
        operator = stores.accounts.create(tier=ADMIN_TIER, name="operator", now=now)
        _, admin_key = stores.keys.create(
            operator.account_id, {Scope.ADMIN, Scope.JOBS}, name="dev admin", now=now
        )
        user = stores.accounts.create(tier=settings.default_tier, name="dev user", now=now)
        _, user_key = stores.keys.create(user.account_id, {Scope.JOBS}, name="dev user", now=now)
        return {
            "admin_key": admin_key,
            "user_key": user_key,
            "account_id": user.account_id,
            "webhook_secret": user.webhook_secret,
            "admin_account_id": operator.account_id,
        }

    def _targets(self) -> list[ComfyTarget | None]:
        if self.options.comfy:
            return list(self.options.comfy)
        return [None] * self.options.agents

    def _start_agents(self, faults: str) -> None:
        env = {**AGENT_DEFAULTS, **os.environ, "PYTHONUNBUFFERED": "1"}
        if faults:
            env[aws_faults.FAULTS_ENV] = faults
        layout = AgentLayout(
            self.state_dir, self.logs, env, self.options.shared_cache, self.options.step_seconds
        )
        self.agents = start_agents(self._targets(), layout)
        self.supervisor = Supervisor(self.agents)

    def _wait_for_agents(self, settings: Any) -> None:
        """Until every agent has registered its node (or one has died: its log says why)."""
        from comfyfleet.store.dynamo import dynamo_stores

        assert self.aws is not None
        nodes = dynamo_stores(settings, endpoint_url=self.aws.url, region=REGION).nodes
        waiting = {agent.node_id: agent for agent in self.agents}
        deadline = time.monotonic() + self.options.agent_start_timeout
        while waiting:
            for node_id, agent in list(waiting.items()):
                for child in (agent.process, agent.comfy):
                    if child is not None and not child.alive():
                        raise StackError(
                            f"{child.name} exited with code {child.popen.returncode}; "
                            f"its log ({child.log_path}) ends:\n{child.log_tail()}"
                        )
                try:
                    nodes.get(node_id)
                    del waiting[node_id]
                except NodeNotFound:
                    pass
            if waiting and time.monotonic() > deadline:
                raise StackError(f"agents did not register in time: {', '.join(waiting)}")
            time.sleep(0.1)

    # -- while running ---------------------------------------------------------------------------

    def check_children(self) -> list[str]:
        """Start again the children that died (with backoff); the names started again.
        dev.json then names their new pids."""
        restarted = self.supervisor.check() if self.supervisor else []
        if restarted:
            self.info["agents"] = [agent.describe() for agent in self.agents]
            self._write_state()
        return restarted

    def _write_state(self) -> None:
        temporary = self.state_file.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.info, indent=2) + "\n")
        temporary.replace(self.state_file)  # whole or absent: launchers poll for it

    # -- stop -----------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop everything started, children first; safe to call more than once."""
        started = time.monotonic()
        stop_all([agent.process for agent in self.agents])
        logger.info("agents stopped after %.1f s", time.monotonic() - started)
        stop_all([agent.comfy for agent in self.agents if agent.comfy is not None], grace=5)
        logger.info("ComfyUI servers stopped after %.1f s", time.monotonic() - started)
        self.agents = []
        for loop in self.loops:
            loop.stop()
        self.loops = []
        if self.front is not None:
            self.front.stop()
            self.front = None
        if self.aws is not None:
            self.aws.stop()
            self.aws = None
        self.state_file.unlink(missing_ok=True)
        logger.info("the dev stack stopped after %.1f s", time.monotonic() - started)


def _faults_aside() -> str:
    """The faults asked for (checked), held back until the stack is up: its own set-up is
    not what they test. Marks this process and its children as the dev stack's."""
    faults = os.environ.pop(aws_faults.FAULTS_ENV, "")
    try:
        aws_faults.parse_faults(faults)
    except ValueError as exc:
        raise StackError(str(exc)) from None
    os.environ[aws_faults.STACK_ENV] = str(os.getpid())
    return faults


def _configure_environment(moto_url: str, options: DevOptions) -> None:
    """Point boto3 (ours, the handlers', the agents') at moto, never at a real account."""
    os.environ.update(
        {
            "AWS_ENDPOINT_URL": moto_url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "POWERTOOLS_TRACE_DISABLED": "true",
            "POWERTOOLS_METRICS_DISABLED": "true",
        }
    )
    for name in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        os.environ.pop(name, None)
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "INFO" if options.verbose else "WARNING")
    if options.allow_local_urls:
        os.environ["COMFYFLEET_ALLOW_LOCAL_URLS"] = "true"


def banner(info: dict[str, Any]) -> str:
    """What `comfyfleet dev` prints once it is up: where things are, commands to paste."""
    api, key = info["api_url"], info["user_key"]
    lines = [
        "comfyfleet dev stack is up",
        f"  API         {api}   (Swagger UI: {api}/doc)",
        f"  console     {api}/console   (log in with a key below: user or admin)",
        f"  AWS (moto)  {info['moto_url']}",
    ]
    for agent in info["agents"]:
        node, pid, comfy = agent["node_id"], agent["pid"], agent["comfy_url"]
        lines.append(f"  agent       {node} (pid {pid}) -> {comfy}")
    caches = {agent.get("cache_dir") for agent in info["agents"]}
    if len(info["agents"]) > 1 and len(caches) == 1:
        lines.append(f"  cache       {caches.pop()} (one for all the agents)")
    lines.append(
        "  restarts    a dead agent or fakecomfy starts again (Restart=always, with backoff)"
    )
    if info.get("faults"):
        lines.append(f"  faults      {info['faults']} of AWS calls fail (COMFYFLEET_DEV_FAULTS)")
    for name in info.get("absent_functions") or []:
        lines.append(f"  absent      functions/{name}/app.py: not run")
    cli = _cli_command()
    state = Path(info["state_dir"])
    where = "" if state == Path(DEFAULT_STATE_DIR).resolve() else f" --state-dir {state}"
    lines += [
        f"  keys        user {key}"
        + (f"   admin {info['admin_key']}" if "admin_key" in info else ""),
        f"  state       {state}/{STATE_FILE} (keys), logs in {state}/logs",
        "",
        "Try:",
        f"  {cli} submit examples/hello.json --wait --out out/{where}",
        f"  {cli} ls{where}",
        f"  curl -s -H 'Authorization: Bearer {key}' {api}/v1/usage",
        f"  curl -s -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' \\",
        f'       -d "{{\\"prompt\\": $(cat examples/hello.json)}}" {api}/v1/jobs',
        "",
        "Ctrl-C stops everything.",
    ]
    return "\n".join(lines)


def _cli_command() -> str:
    """How to call this installation's `comfyfleet` from a shell."""
    beside = Path(sys.executable).parent / "comfyfleet"
    on_path = shutil.which("comfyfleet")
    if on_path and (not beside.exists() or Path(on_path).resolve() == beside.resolve()):
        return "comfyfleet"
    return str(beside) if beside.exists() else f"{sys.executable} -m comfyfleet.cli"
