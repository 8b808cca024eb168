#!/bin/bash
# comfyfleet GPU node bootstrap: ComfyUI and the comfyfleet agent as systemd services, one of
# each per GPU. Rendered by cdk/comfyfleet_cdk/bootstrap.py, which fills in the double-at-sign
# placeholders. One script for every path (docs/upkeep.md, "Node images"):
#   node.sh        the user data: install unless the image already holds this install, start
#   node.sh bake   EC2 Image Builder (context bake=true): install only, into the image
#   node.sh boot   every later boot (comfyfleet-boot.service): a warm-pool instance waking up
set -euxo pipefail

CACHE_DIR=@@CACHE_DIR@@
COMFY_ROOT=@@COMFY_ROOT@@
COMFY_PORT=@@COMFY_PORT@@
HOME_DIR=/opt/comfyfleet
STATE_DIR=/var/lib/comfyfleet
CONFIG_DIR=/etc/comfyfleet
ENVIRONMENT_FILE=$HOME_DIR/source/@@ENVIRONMENT_FILE@@
COMFYUI_GIT=https://github.com/comfyanonymous/ComfyUI
# What an install is: the environment and the agent's source. An image that holds another
# one (an older bake) is installed over at first boot, so a stale image is slow, never wrong.
INSTALL_ID="@@ENVIRONMENT_ID@@ @@SOURCE_KEY@@"
INSTALLED=$HOME_DIR/installed
BOOTED=$STATE_DIR/first-boot-done

# ---- functions (tests/infra source the script down to the "main" line) ----

# GPUs on this instance: one ComfyUI and one agent each. Only "GPU n:" lines count (MIG
# slices are listed under their GPU); no NVIDIA tools, or no answer from them: one.
gpu_count() {
  local count
  count=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU [0-9]' || true)
  if [ "${count:-0}" -ge 1 ] 2>/dev/null; then echo "$count"; else echo 1; fi
}

# GPU i's ComfyUI flags: its port, and its own output, temp and user folders (ComfyUI empties
# its temp folder at start, and two of them on one settings database race at its migrations).
# Models and input stay shared: every agent links the one cache into $COMFY_ROOT/models and
# $COMFY_ROOT/input. A release that lacks --user-directory or --database-url gets neither.
comfy_args() {
  local index=$1 dir=$STATE_DIR/gpu$1 cli=$COMFY_ROOT/comfy/cli_args.py
  printf -- '--listen 127.0.0.1 --port %s --disable-auto-launch' "$((COMFY_PORT + index))"
  printf -- ' --output-directory %s --temp-directory %s' "$dir/output" "$dir"
  if grep -q -- '"--user-directory"' "$cli" 2>/dev/null; then
    printf -- ' --user-directory %s' "$dir/user"
  fi
  if grep -q -- '"--database-url"' "$cli" 2>/dev/null; then
    printf -- ' --database-url sqlite:///%s' "$dir/user/comfyui.db"
  fi
}

# GPU i's variables ($CONFIG_DIR/gpu<i>.env), read by its ComfyUI and, after agent.env, by its
# agent. With one GPU there is no index, so the node id stays the instance id.
gpu_env() {
  local index=$1 count=$2 gpu_index=""
  if [ "$count" -gt 1 ]; then gpu_index=$index; fi
  echo "CUDA_VISIBLE_DEVICES=$index"
  echo "COMFYFLEET_GPU_INDEX=$gpu_index"
  echo "COMFYFLEET_COMFY_URL=http://127.0.0.1:$((COMFY_PORT + index))"
  echo "COMFYFLEET_COMFY_OUTPUT_DIR=$STATE_DIR/gpu$index/output"
  echo "COMFY_ARGS=$(comfy_args "$index")"
}

# The units of N GPUs, each GPU's ComfyUI before its agent.
gpu_units() {
  local index
  for index in $(seq 0 $(($1 - 1))); do
    echo "comfyui@$index.service comfyfleet-agent@$index.service"
  done
}

# One ComfyUI and one agent per GPU: template units, instance i serving GPU i.
write_units() {
  cat > "$1/comfyui@.service" <<UNIT
[Unit]
Description=ComfyUI on GPU %i
After=network-online.target comfyfleet-boot.service
Wants=network-online.target

[Service]
User=comfyfleet
EnvironmentFile=$CONFIG_DIR/gpu%i.env
WorkingDirectory=$COMFY_ROOT
ExecStart=$COMFY_ROOT/.venv/bin/python main.py \$COMFY_ARGS
Restart=always
RestartSec=5

[Install]
WantedBy=multi-user.target
UNIT
  cat > "$1/comfyfleet-agent@.service" <<UNIT
[Unit]
Description=comfyfleet GPU agent for GPU %i
After=comfyui@%i.service network-online.target
Wants=comfyui@%i.service

[Service]
User=comfyfleet
# The deployment's settings, then this GPU's (a later file wins).
EnvironmentFile=$CONFIG_DIR/agent.env
EnvironmentFile=$CONFIG_DIR/gpu%i.env
ExecStart=$HOME_DIR/venv/bin/comfyfleet agent
# The first SIGTERM drains: the running job gets the grace period to finish. When the
# instance stops, every GPU's agent gets it at once.
KillSignal=SIGTERM
TimeoutStopSec=@@STOP_TIMEOUT@@
Restart=always
RestartSec=5

[Install]
WantedBy=multi-user.target
UNIT
  cat > "$1/comfyfleet-boot.service" <<UNIT
[Unit]
Description=comfyfleet: the cache disk and settings of this boot, then InService
After=network-online.target
Wants=network-online.target
# Later boots only: the first one is the user data's (it writes this file when done).
ConditionPathExists=$BOOTED

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/bash $HOME_DIR/node.sh boot

[Install]
WantedBy=multi-user.target
UNIT
}

# ComfyUI at a tag (a shallow clone of it) or at a full commit (fetched by its hash).
clone_comfyui() {
  local root=$1 version=$2
  if [[ $version =~ ^[0-9a-f]{40}$ ]]; then
    git init -q "$root"
    git -C "$root" remote add origin "$COMFYUI_GIT"
    git -C "$root" fetch -q --depth 1 origin "$version"
    git -C "$root" -c advice.detachedHead=false checkout -q FETCH_HEAD
  else
    git clone -q --depth 1 --branch "$version" "$COMFYUI_GIT" "$root"
  fi
}

# Node setup and the prefetch run as the agents do: their user, their settings file.
as_agent() {
  systemd-run --quiet --wait --pipe --collect --uid=comfyfleet --gid=comfyfleet \
    --working-directory="$HOME_DIR" --property=EnvironmentFile="$CONFIG_DIR/agent.env" "$@"
}

# The lock node setup wrote must name the environment this launch template was synthesised
# for: a node whose checkout is something else must not take jobs under that name.
check_lock() {
  local lock=$COMFY_ROOT/comfyfleet-environment.lock.json locked
  locked=$("$HOME_DIR/venv/bin/python" -c \
    'import json, sys; print(json.load(open(sys.argv[1]))["environment_id"])' "$lock")
  if [ "$locked" != "$1" ]; then
    echo "comfyfleet: $lock names environment $locked, the stack expects $1" >&2
    return 1
  fi
}

# Three tries: a network blip at boot (git, pip) must not cost the node.
retry() {
  local attempt
  for attempt in 1 2 3; do
    if "$@"; then return 0; fi
    echo "comfyfleet: try $attempt of 3 failed: $*" >&2
    if [ "$attempt" -lt 3 ]; then sleep $((attempt * 10)); fi
  done
  return 1
}

# The model cache lives on the instance store when the type has one (fast, and free). A stopped
# instance's store comes back empty and unformatted, so every boot does this.
mount_cache() {
  local store
  mkdir -p "$CACHE_DIR"
  store=$(lsblk -dpno NAME,MODEL | awk '/Instance Storage/ {print $1; exit}')
  if [ -n "$store" ] && ! mountpoint -q "$CACHE_DIR"; then
    mkfs.ext4 -F -q "$store"
    mount -o noatime "$store" "$CACHE_DIR"
  fi
  chown comfyfleet:comfyfleet "$CACHE_DIR"
}

# Settings: the cache budget follows the disk it is on, unless the stack set one (later
# lines of an EnvironmentFile win). One budget for all the agents sharing the cache.
write_agent_env() {
  local available
  available=$(df --output=avail -B1 "$CACHE_DIR" | tail -1)
  echo "COMFYFLEET_CACHE_BUDGET_BYTES=$((available * @@CACHE_SHARE_PERCENT@@ / 100))" > "$CONFIG_DIR/agent.env"
  cat >> "$CONFIG_DIR/agent.env" <<'ENV'
@@AGENT_ENVIRONMENT@@
ENV
  chmod 0640 "$CONFIG_DIR/agent.env"
  chgrp comfyfleet "$CONFIG_DIR/agent.env"
}

# Whether this machine already holds this install (a baked image, or a reboot).
installed() {
  [ "$(cat "$INSTALLED" 2>/dev/null)" = "$INSTALL_ID" ]
}

# Everything that does not depend on the instance: packages, ComfyUI with CUDA PyTorch, the
# agent, the custom nodes, the units. What Image Builder bakes, or the first boot does.
install_node() {
  apt-get update -y
  apt-get install -y --no-install-recommends git curl ca-certificates unzip
  mkdir -p "$CACHE_DIR" "$HOME_DIR" "$STATE_DIR" "$CONFIG_DIR"
  id comfyfleet >/dev/null 2>&1 || useradd --system --home-dir "$HOME_DIR" --shell /usr/sbin/nologin comfyfleet

  # uv brings Python 3.12 whatever the image ships.
  curl -LsSf https://astral.sh/uv/@@UV_VERSION@@/install.sh | env UV_INSTALL_DIR=/usr/local/bin UV_NO_MODIFY_PATH=1 sh
  export UV_PYTHON_INSTALL_DIR=/opt/uv-python

  # ComfyUI, pinned, with CUDA wheels of PyTorch. --seed: node setup installs the custom
  # nodes' requirements with this venv's own pip.
  if [ ! -d "$COMFY_ROOT/.git" ]; then
    clone_comfyui "$COMFY_ROOT" @@COMFYUI_VERSION@@
  fi
  uv venv --allow-existing --seed --python 3.12 "$COMFY_ROOT/.venv"
  retry uv pip install --python "$COMFY_ROOT/.venv/bin/python" torch torchvision torchaudio \
    --index-url @@TORCH_INDEX@@
  retry uv pip install --python "$COMFY_ROOT/.venv/bin/python" -r "$COMFY_ROOT/requirements.txt"

  # The agent: this deployment's comfyfleet source, and its environment file, from the asset.
  uv venv --allow-existing --python 3.12 "$HOME_DIR/venv"
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
  chown -R comfyfleet:comfyfleet "$CACHE_DIR" "$COMFY_ROOT" "$HOME_DIR" "$STATE_DIR"
  write_agent_env

  # The custom nodes, pinned, and the lock with the environment id the agents report.
  retry as_agent "$HOME_DIR/venv/bin/comfyfleet" node setup --environment "$ENVIRONMENT_FILE" \
    --comfy-root "$COMFY_ROOT" --python "$COMFY_ROOT/.venv/bin/python" \
    --comfyui-version @@COMFYUI_DEFAULT_VERSION@@
  check_lock @@ENVIRONMENT_ID@@

  write_units /etc/systemd/system
  systemctl daemon-reload
  systemctl enable comfyfleet-boot.service
  echo "$INSTALL_ID" > "$INSTALLED"
}

# What every boot needs before the units start: the cache disk, the settings, each GPU's file.
prepare_boot() {
  local gpus index
  mount_cache
  write_agent_env
  gpus=$(gpu_count)
  for index in $(seq 0 $((gpus - 1))); do
    mkdir -p "$STATE_DIR/gpu$index/output" "$STATE_DIR/gpu$index/user"
    gpu_env "$index" "$gpus" > "$CONFIG_DIR/gpu$index.env"
  done
  chown -R comfyfleet:comfyfleet "$STATE_DIR"
}

# The environment's [[models]] into the shared cache (the mirror first, the origin on a miss,
# written through) while ComfyUI starts. Not fatal: the agents fetch what a job needs.
prefetch_models() {
  as_agent "$HOME_DIR/venv/bin/python" -m gpu_agent.prefetch --environment "$ENVIRONMENT_FILE" \
    || echo "comfyfleet: model prefetch failed; the agents fetch models on demand"
}

# The launch lifecycle hook holds the instance out of service (or out of the warm pool's
# stop) until this boot is done; the agents register only once it is InService.
complete_launch() {
  as_agent "$HOME_DIR/venv/bin/python" -m gpu_agent.lifecycle ready \
    || echo "comfyfleet: no launch hook completed; the hook's timeout decides"
}

# ---- main ----
MODE=${1:-first-boot}
exec > >(tee -a /var/log/comfyfleet-bootstrap.log) 2>&1
trap 'echo "comfyfleet: $MODE failed at line $LINENO; no agent starts"' ERR
export DEBIAN_FRONTEND=noninteractive

case "$MODE" in
  bake)
    install_node
    ;;
  boot)
    # The units are enabled and start after this one: starting them here would wait on it.
    prepare_boot
    complete_launch
    ;;
  *)
    if installed; then
      echo "comfyfleet: the image holds this install ($INSTALL_ID)"
    else
      install_node
    fi
    # This boot's copy, with this deployment's settings, for the boots that follow.
    install -m 0755 "$0" "$HOME_DIR/node.sh"
    prepare_boot
    # shellcheck disable=SC2046 # one unit name per word
    systemctl enable --now $(gpu_units "$(gpu_count)")
    touch "$BOOTED"
    # In service at once (the agents take jobs while the models come); a warm-pool instance
    # only once they are in its cache, since the hook's end stops it.
    if as_agent "$HOME_DIR/venv/bin/python" -m gpu_agent.lifecycle warming; then
      prefetch_models
      complete_launch
    else
      complete_launch
      prefetch_models
    fi
    ;;
esac
