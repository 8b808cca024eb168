"""The deployment's options, read once from CDK context (cdk.json, ``-c key=value``).

Every option has a default, so ``cdk synth`` works with no argument. The comfyfleet
``Settings`` of the deployment are built here too (and validated: a bad value fails the
synth, naming the context key), then handed to the functions and the agents as their
``COMFYFLEET_*`` environment.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError

from comfyfleet.autoscaling import DEFAULT_IDLE_MINUTES, DEFAULT_JOBS_PER_NODE, ScalingRules
from comfyfleet.environment import EnvironmentProblems
from comfyfleet.settings import ENV_PREFIX, Settings
from comfyfleet_cdk.node_environment import NodeEnvironment, core_environment, file_environment
from gpu_agent.settings import AgentSettings

ROOT = Path(__file__).resolve().parents[2]

# Offline synth targets this placeholder account unless told otherwise: cdk.context.json
# holds its availability zones, so nothing asks AWS (see README, "Deploying").
PLACEHOLDER_ACCOUNT = "123456789012"
DEFAULT_REGION = "us-east-1"
# AWS's public parameter of the Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04):
# NVIDIA driver and CUDA in place; resolved by CloudFormation at deploy, not at synth.
DEFAULT_AMI_PARAMETER = (
    "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id"
)
DEFAULT_COMFYUI_VERSION = "v0.3.64"


# Every context key read_config understands (README, "Deploying").
CONTEXT_KEYS = (
    "stage",
    "account",
    "region",
    "prefix",
    "instance_type",
    "spot_instance_types",
    "ami_parameter",
    "ami_id",
    "min_nodes",
    "max_nodes",
    "desired_nodes",
    "spot",
    "jobs_per_node",
    "scale_in_idle_minutes",
    "warm_pool",
    "bake",
    "volume_gb",
    "cloudfront",
    "alarm_email",
    "model_hosts",
    "api_rate_limit",
    "api_burst_limit",
    "log_retention_days",
    "comfyui_version",
    "environment",
    "settings",
    "agent",
)


# Keys of earlier releases, refused with what replaced them (a silently ignored key would
# deploy something else than the operator wrote).
RETIRED_KEYS = {
    "backlog_per_node": "scaling now tracks jobs waiting or running per node taking jobs: "
    "jobs_per_node (default 0.8; see README, Deploying)",
}


class ConfigError(ValueError):
    """A context option has a bad value; the message names the option."""


@dataclass(frozen=True)
class DeploymentConfig:
    """What one ``cdk deploy`` builds; see README "Deploying" for each option."""

    stage: str = "dev"
    account: str = PLACEHOLDER_ACCOUNT
    region: str = DEFAULT_REGION
    instance_type: str = "g5.xlarge"
    # Other types the spot mix may use when the main type has no spot capacity.
    spot_instance_types: tuple[str, ...] = ("g6.xlarge", "g5.2xlarge")
    ami_parameter: str = DEFAULT_AMI_PARAMETER
    ami_id: str = ""
    min_nodes: int = 1
    max_nodes: int = 4
    desired_nodes: int | None = None
    spot: bool = False
    # Target tracking's target: jobs waiting or running per node taking jobs.
    jobs_per_node: float = DEFAULT_JOBS_PER_NODE
    # min_nodes=0: minutes without a visible message or a busy node before the last goes.
    scale_in_idle_minutes: int = DEFAULT_IDLE_MINUTES
    # Instances kept stopped with their setup done, started on scale-out (0: none).
    warm_pool: int = 0
    # An EC2 Image Builder pipeline bakes the node setup into the image (NodeImage).
    bake: bool = False
    volume_gb: int = 200
    cloudfront: bool = True
    alarm_email: str = ""
    api_rate_limit: int = 50
    api_burst_limit: int = 100
    log_retention_days: int = 30
    comfyui_version: str = DEFAULT_COMFYUI_VERSION
    settings: Settings = field(default_factory=Settings)
    agent: AgentSettings = field(default_factory=AgentSettings)
    # What the nodes run (context ``environment``, a TOML file); None: ComfyUI's core nodes
    # at comfyui_version (see node_environment).
    environment: NodeEnvironment | None = None

    @property
    def node_environment(self) -> NodeEnvironment:
        """The environment the nodes get: the file's, or the generated core one."""
        return self.environment or core_environment(self.comfyui_version, self.settings)

    @property
    def scaling(self) -> ScalingRules:
        """The scaling rules the fleet's policies implement (comfyfleet.autoscaling)."""
        return ScalingRules(
            self.min_nodes, self.max_nodes, self.jobs_per_node, self.scale_in_idle_minutes
        )

    @property
    def stack_name(self) -> str:
        return f"ComfyFleet-{self.stage}"


def _bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise ConfigError(f"context {key}={value!r}: expected true or false")


def _int(key: str, value: Any, *, low: int = 0) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"context {key}={value!r}: expected an integer") from None
    if number < low:
        raise ConfigError(f"context {key}={value!r}: must be at least {low}")
    return number


def _float(key: str, value: Any, *, high: float = 100.0) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"context {key}={value!r}: expected a number") from None
    if not 0 < number <= high:
        raise ConfigError(f"context {key}={value!r}: must be above 0 and at most {high:g}")
    return number


def _list(value: Any) -> list[str]:
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            parsed = json.loads(text)
            return [str(item) for item in parsed]
        return [part.strip() for part in text.split(",") if part.strip()]
    return [str(item) for item in value]


def _object(key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"context {key}: not valid JSON ({exc.msg})") from None
    if not isinstance(value, dict):
        raise ConfigError(f"context {key}: expected a JSON object")
    return dict(value)


def read_config(context: Mapping[str, Any]) -> DeploymentConfig:
    """The deployment's options from CDK context values (strings from ``-c`` included)."""
    get = context.get
    defaults = DeploymentConfig.__dataclass_fields__
    stage = str(get("stage", "dev"))
    values: dict[str, Any] = {
        "stage": stage,
        "account": str(
            get("account") or os.environ.get("CDK_DEFAULT_ACCOUNT") or PLACEHOLDER_ACCOUNT
        ),
        "region": str(get("region") or os.environ.get("CDK_DEFAULT_REGION") or DEFAULT_REGION),
        "instance_type": str(get("instance_type", "g5.xlarge")),
        "ami_parameter": str(get("ami_parameter", DEFAULT_AMI_PARAMETER)),
        "ami_id": str(get("ami_id", "")),
        "spot": _bool("spot", get("spot", False)),
        "bake": _bool("bake", get("bake", False)),
        "cloudfront": _bool("cloudfront", get("cloudfront", True)),
        "alarm_email": str(get("alarm_email", "")),
        "comfyui_version": str(get("comfyui_version", DEFAULT_COMFYUI_VERSION)),
    }
    if "spot_instance_types" in context:
        values["spot_instance_types"] = tuple(_list(context["spot_instance_types"]))
    for key, low in (
        ("min_nodes", 0),
        ("max_nodes", 1),
        ("scale_in_idle_minutes", 1),
        ("warm_pool", 0),
        ("volume_gb", 50),
        ("api_rate_limit", 1),
        ("api_burst_limit", 1),
        ("log_retention_days", 1),
    ):
        values[key] = _int(key, get(key, defaults[key].default), low=low)
    for key, instead in RETIRED_KEYS.items():
        if key in context:
            raise ConfigError(f"context {key} is gone: {instead}")
    values["jobs_per_node"] = _float("jobs_per_node", get("jobs_per_node", DEFAULT_JOBS_PER_NODE))
    if get("desired_nodes") not in (None, ""):
        values["desired_nodes"] = _int("desired_nodes", get("desired_nodes"))
    settings = _settings(context, stage)
    values["environment"] = _environment(context, values["comfyui_version"], settings)
    config = DeploymentConfig(**values, settings=settings, agent=_agent(context, settings))
    _check(config)
    return config


def _environment(
    context: Mapping[str, Any], comfyui_version: str, settings: Settings
) -> NodeEnvironment:
    """The nodes' environment file, validated as ``comfyfleet node setup`` would (every
    problem in the message); without the key, the core environment at comfyui_version."""
    path = str(context.get("environment") or "").strip()
    try:
        if not path:
            return core_environment(comfyui_version, settings)
        return file_environment(path, comfyui_version, settings)
    except EnvironmentProblems as exc:
        key = f"environment={path}" if path else f"comfyui_version={comfyui_version!r}"
        count = f"{len(exc.problems)} problem{'s' if len(exc.problems) != 1 else ''}"
        listed = "".join(f"\n  {problem}" for problem in exc.problems)
        raise ConfigError(f"context {key}: not a valid environment ({count}):{listed}") from None


def _settings(context: Mapping[str, Any], stage: str) -> Settings:
    """The comfyfleet Settings of the deployment: ``settings`` (an object of Settings fields),
    with ``prefix`` and ``model_hosts`` as their own context keys."""
    values = _object("settings", context.get("settings", {}))
    values.setdefault("prefix", str(context.get("prefix") or f"comfyfleet-{stage}"))
    if "model_hosts" in context:
        values["model_hosts"] = _list(context["model_hosts"])
    return _validated(Settings, values, "settings")


SettingsModel = TypeVar("SettingsModel", bound=Settings)


def _validated(model: type[SettingsModel], values: dict[str, Any], key: str) -> SettingsModel:
    try:
        return _from_values_only(model)(**values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or key}: {error['msg']}"
            for error in exc.errors()
        )
        raise ConfigError(f"context {key}: {problems}") from None


@cache
def _from_values_only(model: type[SettingsModel]) -> type[SettingsModel]:
    """``model`` reading only the values given: the synth's own COMFYFLEET_* environment
    (or a .env file) must not leak into the deployment."""

    class FromValues(model):  # type: ignore[valid-type,misc]
        @classmethod
        def settings_customise_sources(
            cls, settings_cls: Any, init_settings: Any, **sources: Any
        ) -> tuple[Any, ...]:
            return (init_settings,)

    FromValues.__name__ = FromValues.__qualname__ = model.__name__
    return FromValues


def _agent(context: Mapping[str, Any], settings: Settings) -> AgentSettings:
    """The agents' settings: the deployment's, plus ``agent`` (an object of the fields only
    AgentSettings has: cache budget, ComfyUI's URL, ...)."""
    own = _object("agent", context.get("agent", {}))
    for name in own:
        if name in Settings.model_fields:
            # The functions read it too (the lifecycle function waits out drain_grace_seconds).
            raise ConfigError(f"context agent: {name} is a shared setting; give it in settings")
    values = {name: getattr(settings, name) for name in settings.model_fields_set}
    values.update(own)
    return _validated(AgentSettings, values, "agent")


def _check(config: DeploymentConfig) -> None:
    if config.max_nodes < config.min_nodes:
        raise ConfigError(
            f"context max_nodes={config.max_nodes} is below min_nodes={config.min_nodes}"
        )
    desired = config.desired_nodes
    if desired is not None and not config.min_nodes <= desired <= config.max_nodes:
        raise ConfigError(f"context desired_nodes={desired} is outside min_nodes..max_nodes")
    if config.warm_pool > config.max_nodes:
        raise ConfigError(
            f"context warm_pool={config.warm_pool} is above max_nodes={config.max_nodes}"
        )
    if config.warm_pool and config.spot:
        # EC2 Auto Scaling refuses a warm pool on a group with a spot mix.
        raise ConfigError("context warm_pool needs on-demand nodes: it cannot go with spot=true")
    if config.alarm_email and "@" not in config.alarm_email:
        raise ConfigError(f"context alarm_email={config.alarm_email!r} is not an e-mail address")


def settings_environment(
    settings: Settings, resolved: Mapping[str, Any], model: type[Settings] = Settings
) -> dict[str, str]:
    """``COMFYFLEET_*`` variables of the settings given explicitly, plus ``resolved`` values
    (known only at deploy: queue URLs, the CDN domain) of the fields ``model`` has, so a
    value is set only where the process reading it defines it."""
    dumped = settings.model_dump(mode="json")
    values: dict[str, Any] = {name: dumped[name] for name in sorted(settings.model_fields_set)}
    values["model_bucket"] = settings.model_bucket_name
    values["output_bucket"] = settings.output_bucket_name
    values.update({name: value for name, value in resolved.items() if name in model.model_fields})
    return {ENV_PREFIX + name.upper(): _env_value(value) for name, value in values.items()}


def _env_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def load_context(root: Path = ROOT) -> dict[str, Any]:
    """cdk.json's context merged with cdk.context.json: what the ``cdk`` command would pass,
    for ``python cdk/app.py`` and the tests, which run without it."""
    context: dict[str, Any] = {}
    cdk_json = root / "cdk.json"
    if cdk_json.exists():
        context.update(json.loads(cdk_json.read_text()).get("context", {}))
    cached = root / "cdk.context.json"
    if cached.exists():
        context.update(json.loads(cached.read_text()))
    return context
