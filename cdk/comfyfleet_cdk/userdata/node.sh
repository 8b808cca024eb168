#!/bin/bash
# comfyfleet GPU node bootstrap: ComfyUI and the comfyfleet agent as systemd services.
# Rendered by cdk/comfyfleet_cdk/fleet.py, which fills in the double-at-sign placeholders.
set -euxo pipefail
exec > >(tee -a /var/log/comfyfleet-bootstrap.log) 2>&1
export DEBIAN_FRONTEND=noninteractive

apt-get update -y
apt-get install -y --no-install-recommends git curl ca-certificates unzip

CACHE_DIR=@@CACHE_DIR@@
COMFY_ROOT=@@COMFY_ROOT@@
HOME_DIR=/opt/comfyfleet
mkdir -p "$CACHE_DIR" "$HOME_DIR" /etc/comfyfleet

# The model cache lives on the instance store when the type has one (fast, and free).
STORE=$(lsblk -dpno NAME,MODEL | awk '/Instance Storage/ {print $1; exit}')
if [ -n "$STORE" ] && ! mountpoint -q "$CACHE_DIR"; then
  mkfs.ext4 -F -q "$STORE"
  mount -o noatime "$STORE" "$CACHE_DIR"
fi

id comfyfleet >/dev/null 2>&1 || useradd --system --home-dir "$HOME_DIR" --shell /usr/sbin/nologin comfyfleet

# uv brings Python 3.12 whatever the image ships.
curl -LsSf https://astral.sh/uv/@@UV_VERSION@@/install.sh | env UV_INSTALL_DIR=/usr/local/bin UV_NO_MODIFY_PATH=1 sh
export UV_PYTHON_INSTALL_DIR=/opt/uv-python

# ComfyUI, pinned, with CUDA wheels of PyTorch.
if [ ! -d "$COMFY_ROOT/.git" ]; then
  git clone --depth 1 --branch @@COMFYUI_VERSION@@ https://github.com/comfyanonymous/ComfyUI "$COMFY_ROOT"
fi
uv venv --python 3.12 "$COMFY_ROOT/.venv"
uv pip install --python "$COMFY_ROOT/.venv/bin/python" torch torchvision torchaudio \
  --index-url @@TORCH_INDEX@@
uv pip install --python "$COMFY_ROOT/.venv/bin/python" -r "$COMFY_ROOT/requirements.txt"

# The agent: this deployment's comfyfleet source, from the stack's asset.
uv venv --python 3.12 "$HOME_DIR/venv"
uv pip install --python "$HOME_DIR/venv/bin/python" boto3
"$HOME_DIR/venv/bin/python" - <<'PY'
import boto3
boto3.client("s3", region_name="@@REGION@@").download_file(
    "@@SOURCE_BUCKET@@", "@@SOURCE_KEY@@", "/opt/comfyfleet/source.zip"
)
PY
rm -rf "$HOME_DIR/source" && mkdir -p "$HOME_DIR/source"
unzip -q "$HOME_DIR/source.zip" -d "$HOME_DIR/source"
uv pip install --python "$HOME_DIR/venv/bin/python" "$HOME_DIR/source[agent]"

# Settings: the cache budget follows the disk it is on, unless the stack set one (later
# lines of an EnvironmentFile win).
AVAILABLE=$(df --output=avail -B1 "$CACHE_DIR" | tail -1)
echo "COMFYFLEET_CACHE_BUDGET_BYTES=$((AVAILABLE * @@CACHE_SHARE_PERCENT@@ / 100))" > /etc/comfyfleet/agent.env
cat >> /etc/comfyfleet/agent.env <<'ENV'
@@AGENT_ENVIRONMENT@@
ENV
chmod 0640 /etc/comfyfleet/agent.env
chown -R comfyfleet:comfyfleet "$CACHE_DIR" "$COMFY_ROOT" "$HOME_DIR"
chgrp comfyfleet /etc/comfyfleet/agent.env

cat > /etc/systemd/system/comfyui.service <<UNIT
[Unit]
Description=ComfyUI
After=network-online.target
Wants=network-online.target

[Service]
User=comfyfleet
WorkingDirectory=$COMFY_ROOT
ExecStart=$COMFY_ROOT/.venv/bin/python main.py --listen 127.0.0.1 --port @@COMFY_PORT@@
Restart=always
RestartSec=5

[Install]
WantedBy=multi-user.target
UNIT

cat > /etc/systemd/system/comfyfleet-agent.service <<UNIT
[Unit]
Description=comfyfleet GPU agent
After=comfyui.service network-online.target
Wants=comfyui.service

[Service]
User=comfyfleet
EnvironmentFile=/etc/comfyfleet/agent.env
ExecStart=$HOME_DIR/venv/bin/comfyfleet agent
# The first SIGTERM drains: the running job gets the grace period to finish.
KillSignal=SIGTERM
TimeoutStopSec=@@STOP_TIMEOUT@@
Restart=always
RestartSec=5

[Install]
WantedBy=multi-user.target
UNIT

systemctl daemon-reload
systemctl enable --now comfyui.service comfyfleet-agent.service
