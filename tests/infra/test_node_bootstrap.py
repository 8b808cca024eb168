"""The node bootstrap's shell functions, run by bash: how many GPUs, what each GPU's
ComfyUI and agent are given, the systemd template units, the lock check. The script is
rendered as the stack renders it, and sourced down to its main part."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from comfyfleet_cdk.bootstrap import render_user_data
from comfyfleet_cdk.config import read_config

MAIN = "# ---- main ----"
BASH = shutil.which("bash") or "/bin/bash"


def rendered() -> str:
    """The bootstrap as the stack renders it, for the default deployment."""
    return render_user_data(
        read_config({}),
        {"COMFYFLEET_SHARED_QUEUE_URL": "https://sqs.example/shared.fifo"},
        source_bucket="bucket",
        source_key="source.zip",
        region="us-east-1",
    )


@pytest.fixture(scope="module")
def functions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    script = rendered()
    head, main, _ = script.partition(MAIN)
    assert main, "the script marks where its main part starts"
    path = tmp_path_factory.mktemp("bootstrap") / "functions.sh"
    path.write_text(head.replace("set -euxo pipefail", "set -euo pipefail"), encoding="utf-8")
    return path


def bash(functions: Path, commands: str, *, path: str | None = None) -> str:
    env = {**os.environ, "PATH": path if path is not None else os.environ["PATH"]}
    done = subprocess.run(
        [BASH, "-c", f'source "{functions}"\n{commands}'],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def fake_nvidia_smi(folder: Path, output: str, code: int = 0) -> str:
    """A PATH with an nvidia-smi that prints ``output`` for ``-L``, then the usual tools."""
    folder.mkdir(parents=True, exist_ok=True)
    tool = folder / "nvidia-smi"
    tool.write_text(f"#!/bin/sh\ncat <<'OUT'\n{output}\nOUT\nexit {code}\n", encoding="utf-8")
    tool.chmod(0o755)
    return f"{folder}:{os.environ['PATH']}"


def test_gpu_count_counts_gpus_not_mig_slices(functions: Path, tmp_path: Path) -> None:
    listing = "\n".join(
        [
            "GPU 0: NVIDIA A10G (UUID: GPU-0)",
            "  MIG 1g.5gb     Device  0: (UUID: MIG-0)",
            "GPU 1: NVIDIA A10G (UUID: GPU-1)",
            "GPU 2: NVIDIA A10G (UUID: GPU-2)",
            "GPU 3: NVIDIA A10G (UUID: GPU-3)",
        ]
    )
    assert bash(functions, "gpu_count", path=fake_nvidia_smi(tmp_path / "four", listing)) == "4\n"


def test_gpu_count_is_one_without_an_answer(functions: Path, tmp_path: Path) -> None:
    failing = fake_nvidia_smi(tmp_path / "failing", "NVIDIA-SMI has failed", code=9)
    assert bash(functions, "gpu_count", path=failing) == "1\n"
    empty = tmp_path / "no-tools"
    empty.mkdir()
    for tool in ("grep", "cat"):
        (empty / tool).symlink_to(shutil.which(tool) or f"/bin/{tool}")
    assert bash(functions, "gpu_count", path=str(empty)) == "1\n"


def test_each_gpu_gets_its_device_port_index_and_folders(functions: Path) -> None:
    lines = bash(functions, "gpu_env 1 2").splitlines()
    values = dict(line.split("=", 1) for line in lines)
    assert values["CUDA_VISIBLE_DEVICES"] == "1"
    assert values["COMFYFLEET_GPU_INDEX"] == "1"
    assert values["COMFYFLEET_COMFY_URL"] == "http://127.0.0.1:8189"
    assert values["COMFYFLEET_COMFY_OUTPUT_DIR"] == "/var/lib/comfyfleet/gpu1/output"
    args = values["COMFY_ARGS"].split()
    assert args[args.index("--port") + 1] == "8189"
    assert args[args.index("--output-directory") + 1] == "/var/lib/comfyfleet/gpu1/output"
    assert args[args.index("--temp-directory") + 1] == "/var/lib/comfyfleet/gpu1"


def test_one_gpu_keeps_the_instance_id_as_node_id(functions: Path) -> None:
    values = dict(line.split("=", 1) for line in bash(functions, "gpu_env 0 1").splitlines())
    assert values["COMFYFLEET_GPU_INDEX"] == "", "no -gpu0 suffix on a one-GPU instance"
    assert values["CUDA_VISIBLE_DEVICES"] == "0"
    assert values["COMFYFLEET_COMFY_URL"] == "http://127.0.0.1:8188"


def test_comfyui_flags_follow_what_the_release_supports(functions: Path, tmp_path: Path) -> None:
    root = tmp_path / "ComfyUI"
    (root / "comfy").mkdir(parents=True)
    cli = root / "comfy" / "cli_args.py"
    cli.write_text('parser.add_argument("--output-directory")\n', encoding="utf-8")
    old = bash(functions, f"COMFY_ROOT={root}\ncomfy_args 0")
    assert "--user-directory" not in old and "--database-url" not in old
    cli.write_text('add("--user-directory")\nadd("--database-url")\n', encoding="utf-8")
    new = bash(functions, f"COMFY_ROOT={root}\ncomfy_args 2").split()
    assert new[new.index("--user-directory") + 1] == "/var/lib/comfyfleet/gpu2/user"
    database = new[new.index("--database-url") + 1]
    assert database == "sqlite:////var/lib/comfyfleet/gpu2/user/comfyui.db"


def test_template_units_serve_gpu_i_each_comfyui_before_its_agent(
    functions: Path, tmp_path: Path
) -> None:
    bash(functions, f"write_units {tmp_path}")
    comfy = (tmp_path / "comfyui@.service").read_text()
    agent = (tmp_path / "comfyfleet-agent@.service").read_text()
    assert "EnvironmentFile=/etc/comfyfleet/gpu%i.env" in comfy
    assert "ExecStart=/opt/ComfyUI/.venv/bin/python main.py $COMFY_ARGS" in comfy
    assert "After=comfyui@%i.service network-online.target" in agent
    # The deployment's settings first, the GPU's after them (a later file wins).
    assert agent.index("agent.env") < agent.index("gpu%i.env")
    assert "Restart=always" in comfy and "Restart=always" in agent
    assert "KillSignal=SIGTERM" in agent
    units = bash(functions, "gpu_units 2").split()
    assert units == [
        "comfyui@0.service",
        "comfyfleet-agent@0.service",
        "comfyui@1.service",
        "comfyfleet-agent@1.service",
    ]


def test_the_lock_must_name_the_synthesised_environment(functions: Path, tmp_path: Path) -> None:
    home, root = tmp_path / "home", tmp_path / "comfy"
    (home / "venv" / "bin").mkdir(parents=True)
    (home / "venv" / "bin" / "python").symlink_to(sys.executable)
    root.mkdir()
    (root / "comfyfleet-environment.lock.json").write_text(
        json.dumps({"environment_id": "0123456789ab"}), encoding="utf-8"
    )
    setup = f"HOME_DIR={home}\nCOMFY_ROOT={root}\n"
    assert bash(functions, setup + "check_lock 0123456789ab && echo same") == "same\n"
    assert bash(functions, setup + "check_lock ba9876543210 || echo refused") == "refused\n"


def test_every_later_boot_runs_before_comfyui_and_not_on_the_first(
    functions: Path, tmp_path: Path
) -> None:
    bash(functions, f"write_units {tmp_path}")
    boot = (tmp_path / "comfyfleet-boot.service").read_text()
    comfy = (tmp_path / "comfyui@.service").read_text()
    assert "ExecStart=/bin/bash /opt/comfyfleet/node.sh boot" in boot
    assert "Type=oneshot" in boot and "WantedBy=multi-user.target" in boot
    # The first boot is the user data's: it writes this file when it is done.
    assert "ConditionPathExists=/var/lib/comfyfleet/first-boot-done" in boot
    assert "After=network-online.target comfyfleet-boot.service" in comfy
    # Ordering only: starting ComfyUI from the first boot must not wait on this unit.
    assert "Requires=comfyfleet-boot" not in comfy and "Wants=comfyfleet-boot" not in comfy


def test_an_image_holds_the_install_only_for_its_environment_and_source(
    functions: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "installed"
    check = f"INSTALLED={marker}\ninstalled && echo yes || echo no"
    assert bash(functions, check) == "no\n"
    marker.write_text("29f4d8a538e5 source.zip\n")  # what install_node writes
    assert bash(functions, 'INSTALL_ID="29f4d8a538e5 source.zip"\n' + check) == "yes\n"
    assert bash(functions, 'INSTALL_ID="0123456789ab source.zip"\n' + check) == "no\n"


MAIN_STUBS = """
install_node() { echo install_node; }
prepare_boot() { echo prepare_boot; }
complete_launch() { echo complete_launch; }
prefetch_models() { echo prefetch_models; }
as_agent() { echo as_agent; [ "${WARM:-no}" = yes ]; }  # asked whether the boot is warming
systemctl() { echo "systemctl $*"; }
install() { echo install; }
gpu_count() { echo 1; }
"""
START = ["install", "prepare_boot", "systemctl", "as_agent"]


@pytest.mark.parametrize(
    ("mode", "marked", "warm", "steps"),
    [
        ("bake", False, "no", ["install_node"]),
        # In service as soon as it is up; the models come while it takes jobs.
        ("first-boot", False, "no", ["install_node", *START, "complete_launch", "prefetch_models"]),
        # A baked image: no install at first boot, straight to the start.
        ("first-boot", True, "no", [*START, "complete_launch", "prefetch_models"]),
        # Into the warm pool: the models first, since the hook's end stops the instance.
        ("first-boot", True, "yes", [*START, "prefetch_models", "complete_launch"]),
        # A warm-pool instance waking: settings and disk, the hook; the units start themselves.
        ("boot", True, "no", ["prepare_boot", "complete_launch"]),
    ],
)
def test_each_mode_runs_its_half_of_the_one_script(
    functions: Path, tmp_path: Path, mode: str, marked: bool, warm: str, steps: list[str]
) -> None:
    script = rendered()
    main = MAIN + script.partition(MAIN)[2]
    main = main.replace("exec > >(tee -a /var/log/comfyfleet-bootstrap.log) 2>&1\n", "")
    marker, booted = tmp_path / "installed", tmp_path / "booted"
    if marked:
        marker.write_text(f"{read_config({}).node_environment.environment_id} source.zip\n")
    setup = f"INSTALLED={marker}\nBOOTED={booted}\nWARM={warm}\n{MAIN_STUBS}\nset -- {mode}\n"
    ran = [line.split()[0] for line in bash(functions, setup + main).splitlines()]
    ran = [step for step in ran if step != "comfyfleet:"]
    assert ran == steps
    assert booted.exists() == (mode == "first-boot")
