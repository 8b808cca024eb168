"""The GPU node's bootstrap script (userdata/node.sh) with a deployment's values filled in.

The script installs ComfyUI and the agent, runs ``comfyfleet node setup`` on the environment
file shipped in the agent's source asset, and starts one ComfyUI and one agent per GPU as
systemd template units (``comfyui@<i>``, ``comfyfleet-agent@<i>``).
"""

from __future__ import annotations

from pathlib import Path

from comfyfleet_cdk.config import DeploymentConfig
from comfyfleet_cdk.node_environment import ENVIRONMENT_FILE
from gpu_agent.settings import COMFY_PORT

USER_DATA = Path(__file__).parent / "userdata" / "node.sh"
UV_VERSION = "0.9.5"
TORCH_INDEX = "https://download.pytorch.org/whl/cu124"
# Of the cache disk's free space at boot, the share the model cache may fill.
CACHE_SHARE_PERCENT = 85
# systemd's stop timeout beyond the agent's drain grace: the job's outputs still upload.
STOP_MARGIN_SECONDS = 30
# EC2 refuses a launch template whose user data is larger (before base64).
USER_DATA_LIMIT = 16 * 1024


def systemd_value(value: str) -> str:
    """A value as a systemd EnvironmentFile reads it back unchanged."""
    if value and all(c.isalnum() or c in "-_.,:/@+=" for c in value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def render_user_data(
    config: DeploymentConfig,
    environment: dict[str, str],
    *,
    source_bucket: str,
    source_key: str,
    region: str,
) -> str:
    """The node's bootstrap script with this deployment's values filled in."""
    agent = config.agent
    node_environment = config.node_environment.environment
    values = {
        "CACHE_DIR": str(agent.cache_dir),
        "COMFY_ROOT": str(agent.comfy_root),
        # GPU i's ComfyUI listens on this port + i.
        "COMFY_PORT": agent.comfy_url.rsplit(":", 1)[-1].strip("/") or str(COMFY_PORT),
        # The clone starts at the version node setup will check, so it moves nothing.
        "COMFYUI_VERSION": node_environment.comfyui_version or config.comfyui_version,
        "COMFYUI_DEFAULT_VERSION": config.comfyui_version,
        "ENVIRONMENT_FILE": ENVIRONMENT_FILE,
        # In the user data as well as the asset: a changed environment is a new launch
        # template version, and the bootstrap checks the lock against it.
        "ENVIRONMENT_ID": config.node_environment.environment_id,
        "UV_VERSION": UV_VERSION,
        "TORCH_INDEX": TORCH_INDEX,
        "REGION": region,
        "SOURCE_BUCKET": source_bucket,
        "SOURCE_KEY": source_key,
        "CACHE_SHARE_PERCENT": str(CACHE_SHARE_PERCENT),
        "STOP_TIMEOUT": str(agent.drain_grace_seconds + STOP_MARGIN_SECONDS),
        "AGENT_ENVIRONMENT": "\n".join(
            f"{name}={systemd_value(value)}" for name, value in sorted(environment.items())
        ),
    }
    script = USER_DATA.read_text()
    for name, value in values.items():
        script = script.replace(f"@@{name}@@", value)
    return script
