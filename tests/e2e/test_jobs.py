"""Jobs through the whole system over HTTP: the dev stack with one agent driving fakecomfy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from comfyfleet import webhooks
from comfyfleet.cli import main
from comfyfleet.client import Client, RateLimitExceeded
from comfyfleet.dev.launch import RunningStack
from fakecomfy import placeholder_safetensors
from tests.e2e.conftest import new_user, node_home
from tests.e2e.support import WebhookReceiver, eventually, fetch_png, loader_graph
from tests.origin_server import OriginServer
from tests.support import basic_graph

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).parents[2] / "examples"


def sd15(client: Client, checkpoint_url: str, *, steps: int, seed: int) -> str:
    accepted = client.submit_template(
        "sd15",
        prompt="a lighthouse",
        checkpoint_url=checkpoint_url,
        steps=steps,
        width=64,
        height=64,
        seed=seed,
    )
    return str(accepted["job_id"])


def test_a_model_free_job_completes_with_a_real_png_behind_its_link(user: Client) -> None:
    graph = basic_graph()
    graph["3"]["inputs"]["filename_prefix"] = "first"

    accepted = user.submit(graph)
    job = user.wait(accepted["job_id"], timeout=30)

    assert job["status"] == "completed", job
    (url,) = job["outputs"]["images"]
    assert url.startswith("http://127.0.0.1:")
    assert fetch_png(url).size == (64, 64)


def test_a_template_job_completes(user: Client, checkpoint_url: str) -> None:
    job_id = sd15(user, checkpoint_url, steps=2, seed=7)

    job = user.wait(job_id, timeout=30)

    assert job["status"] == "completed", job
    assert fetch_png(job["outputs"]["images"][0]).size == (64, 64)


def test_a_model_by_url_is_synced_once_linked_used_and_then_a_cache_hit(
    user: Client, stack: RunningStack, origin: OriginServer
) -> None:
    url = origin.add("/models/only-once.safetensors", placeholder_safetensors())

    first = user.wait(user.submit(loader_graph(url))["job_id"], timeout=30)
    fetched = len(origin.requests_for("/models/only-once.safetensors"))
    graph = loader_graph(url)
    graph["7"]["inputs"]["filename_prefix"] = "again"
    second = user.wait(user.submit(graph)["job_id"], timeout=30)

    assert first["status"] == "completed", first
    assert second["status"] == "completed", second
    assert fetched >= 1
    assert len(origin.requests_for("/models/only-once.safetensors")) == fetched  # a cache hit
    (link,) = (node_home(stack) / "models" / "checkpoints").glob("only-once*.safetensors")
    assert link.is_symlink() and Path(os.readlink(link)).is_file()


def preview_link(user: Client, job_id: str) -> str | None:
    """The preview route's redirect target, once the job has a preview frame."""
    answer = user.session.get(
        f"{user.api_url}/v1/jobs/{job_id}/preview",
        headers={"Authorization": f"Bearer {user.api_key}"},
        allow_redirects=False,
        timeout=10,
    )
    return answer.headers["Location"] if answer.status_code == 302 else None


def test_a_running_job_shows_a_preview_and_is_cancelled(user: Client, checkpoint_url: str) -> None:
    job_id = sd15(user, checkpoint_url, steps=150, seed=11)  # 7.5 s of sampling
    eventually(lambda: user.get(job_id)["status"] == "running", timeout=20)
    link = eventually(lambda: preview_link(user, job_id), timeout=6)
    frame = requests.get(link, timeout=10)

    answer = user.cancel(job_id)
    job = user.wait(job_id, timeout=10)

    assert frame.status_code == 200
    assert frame.content[:3] == b"\xff\xd8\xff" or frame.content[:4] == b"\x89PNG"
    assert answer["cancel_requested"] is True or answer["status"] == "cancelled"
    assert job["status"] == "cancelled", job


def test_submits_over_the_rate_limit_get_429_with_its_headers(admin: Client) -> None:
    tiny, account = new_user(admin, "tiny", max_retries=0)
    body = {"prompt": basic_graph()}
    headers = {"Authorization": f"Bearer {tiny.api_key}"}
    answers = [
        requests.post(f"{tiny.api_url}/v1/jobs", json=body, headers=headers, timeout=10)
        for _ in range(4)
    ]

    assert [a.status_code for a in answers] == [202, 202, 202, 429]
    refused = answers[-1]
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.headers["X-RateLimit-Limit"] == "3"
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    with pytest.raises(RateLimitExceeded) as raised:
        tiny.submit(basic_graph())
    assert raised.value.retry_after >= 1
    for accepted in answers[:3]:
        assert tiny.wait(accepted.json()["job_id"], timeout=30)["status"] == "completed"


def test_a_light_user_is_served_before_a_heavy_users_backlog(
    admin: Client, checkpoint_url: str
) -> None:
    heavy, _ = new_user(admin)
    light, _ = new_user(admin)
    # The first job samples for 3 s, so the light user submits while it runs however slow
    # the machine; the others take 0.6 s each.
    heavy_jobs = [
        sd15(heavy, checkpoint_url, steps=60 if i == 0 else 12, seed=100 + i) for i in range(10)
    ]
    light_jobs = [sd15(light, checkpoint_url, steps=12, seed=200 + i) for i in range(2)]

    heavy_done = sorted(heavy.wait(j, timeout=90)["completed_at"] for j in heavy_jobs)
    light_done = [light.wait(j, timeout=90)["completed_at"] for j in light_jobs]

    assert max(light_done) < heavy_done[4]  # both light jobs before the heavy user's fifth


def test_a_webhook_is_received_and_verified(admin: Client, stack: RunningStack) -> None:
    assert "webhooks" not in stack.info["absent_functions"]
    client, account = new_user(admin)
    with WebhookReceiver() as receiver:
        graph = basic_graph()
        graph["3"]["inputs"]["filename_prefix"] = "hooked"
        accepted = client.submit(graph, webhook_url=receiver.url("/hook"))
        job = client.wait(accepted["job_id"], timeout=30)
        (delivery,) = eventually(lambda: receiver.received("/hook"), timeout=30)

    webhooks.verify(delivery.headers, delivery.body, account["webhook_secret"])
    event = json.loads(delivery.body)
    assert job["status"] == "completed"
    assert event["type"] == "job.completed" and event["job_id"] == accepted["job_id"]
    assert event["outputs"]["images"]


def test_the_cli_submits_follows_and_downloads_with_the_dev_stacks_key(
    stack: RunningStack, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    finished = subprocess.run(
        [sys.executable, "-m", "comfyfleet.cli", "submit", str(EXAMPLES / "hello.json")]
        + ["--out", str(out), "--state-dir", str(stack.state_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("COMFYFLEET_")},
    )

    assert finished.returncode == 0, finished.stderr
    (image,) = out.glob("*_hello_00001_.png")
    assert str(image) in finished.stdout
    assert image.read_bytes()[:4] == b"\x89PNG"


def test_the_admin_cli_creates_accounts_and_keys_lists_and_revokes_them(
    stack: RunningStack, capsys: pytest.CaptureFixture[str]
) -> None:
    state = ["--state-dir", str(stack.state_dir)]
    assert main(["accounts", "create", "--tier", "pro", "--name", "cli", "--with-key", *state]) == 0
    account = json.loads(capsys.readouterr().out)
    assert main(["keys", "create", "--account", account["account_id"], *state]) == 0
    key = json.loads(capsys.readouterr().out)
    assert main(["keys", "revoke", key["key_id"], *state]) == 0
    capsys.readouterr()

    assert main(["keys", "ls", "--account", account["account_id"], *state]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert main(["nodes", "ls", *state]) == 0
    nodes = capsys.readouterr().out

    assert account["tier"] == "pro" and account["api_key"].startswith("sk_live_")
    assert len(listed) == 2
    assert any(line.startswith(key["key_id"]) and "revoked" in line for line in listed)
    assert nodes.startswith("dev-node-1  ")
    with Client(stack.api_url, account["api_key"]) as client:
        assert client.usage()["tier"] == "pro"
