"""Starting and stopping fakecomfy: fast, on loopback, leaving no thread or port behind."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from comfyfleet.cli import build_parser, cmd_fakecomfy
from fakecomfy import placeholder_safetensors, start_fakecomfy
from tests.fakecomfy_support import ComfySocket, post_prompt, sd15_graph


def fakecomfy_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("fakecomfy")]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_it_starts_on_an_ephemeral_loopback_port_in_well_under_a_second(tmp_path: Path) -> None:
    # when
    began = time.monotonic()
    comfy = start_fakecomfy(tmp_path / "comfy")
    elapsed = time.monotonic() - began

    # then: ready (the port answers) and the ComfyUI folders exist
    try:
        assert elapsed < 1.0
        assert comfy.host == "127.0.0.1" and comfy.port > 0
        assert requests.get(f"{comfy.url}/system_stats", timeout=5).status_code == 200
        assert all((comfy.root / name).is_dir() for name in ("input", "output", "temp"))
        assert (comfy.root / "models" / "checkpoints").is_dir()
    finally:
        comfy.stop()


def test_stopping_mid_run_with_a_socket_open_leaves_no_thread_or_port(tmp_path: Path) -> None:
    # given: a client connected and a long prompt sampling
    comfy = start_fakecomfy(tmp_path / "comfy", step_seconds=0.01)
    (comfy.root / "models" / "checkpoints" / "m.safetensors").write_bytes(placeholder_safetensors())
    client = ComfySocket(comfy)
    post_prompt(comfy, sd15_graph("m.safetensors", 1, "long", steps=1000), client.client_id)
    client.wait_for("progress", value=1)

    # when
    began = time.monotonic()
    comfy.stop()
    elapsed = time.monotonic() - began
    client.close()

    # then: quick, no threads left, the port refuses connections
    assert elapsed < 3.0
    assert fakecomfy_threads() == []
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{comfy.url}/system_stats", timeout=1)


def test_starting_on_a_taken_port_raises(tmp_path: Path) -> None:
    # given
    with start_fakecomfy(tmp_path / "first") as first:
        # when / then
        with pytest.raises(OSError):
            start_fakecomfy(tmp_path / "second", port=first.port)
    assert fakecomfy_threads() == []


def test_the_cli_subcommand_takes_port_root_host_step_seconds_and_previews() -> None:
    # when
    args = build_parser().parse_args(
        [
            "fakecomfy",
            "--port",
            "8188",
            "--root",
            "/srv/comfy",
            "--step-seconds",
            "0.5",
            "--previews",
        ]
    )

    # then
    assert (args.port, args.root, args.host) == (8188, "/srv/comfy", "127.0.0.1")
    assert (args.step_seconds, args.previews, args.handler) == (0.5, True, cmd_fakecomfy)


def test_the_cli_serves_until_interrupted(tmp_path: Path) -> None:
    # given
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "comfyfleet.cli",
        "fakecomfy",
        "--port",
        str(port),
        "--root",
        str(tmp_path / "comfy"),
    ]
    log = tmp_path / "fakecomfy.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
    try:
        # when: it is up, then gets Ctrl-C
        deadline = time.monotonic() + 20
        while True:
            try:
                stats = requests.get(f"http://127.0.0.1:{port}/system_stats", timeout=1)
                break
            except requests.ConnectionError:
                alive = process.poll() is None and time.monotonic() < deadline
                assert alive, log.read_text()
                time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()

    # then
    assert stats.json()["system"]["comfyui_version"] == "0.3.64"
    assert code == 0, log.read_text()
