"""The API commands of ``comfyfleet``: submit, status, wait, cancel, ls, usage, keys, accounts,
nodes, on :class:`comfyfleet.client.Client`.

Where to call and with which key: ``--api-url``/``--api-key``, else ``COMFYFLEET_API_URL``/
``COMFYFLEET_API_KEY``, else the running dev stack's ``<state-dir>/dev.json`` (its user key
for job commands, its admin key for keys, accounts and nodes). API errors end the command
with exit code 1 and ``status code: message`` on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from comfyfleet.cli_common import EXIT_FAILED, EXIT_OK, CliError, read_json
from comfyfleet.client import JSON, TERMINAL, ApiError, Client, ConnectionFailed, JobTimeout

DEFAULT_STATE_DIR = ".comfyfleet"


def resolve_endpoint(args: argparse.Namespace, *, admin: bool) -> tuple[str, str]:
    """The API URL and key from flags, the environment or dev.json, in that order."""
    url = args.api_url or os.environ.get("COMFYFLEET_API_URL")
    key = args.api_key or os.environ.get("COMFYFLEET_API_KEY")
    if not url or not key:
        state = Path(args.state_dir) / "dev.json"
        try:
            dev = json.loads(state.read_text())
        except (OSError, ValueError):
            dev = None
        if dev is None and (not url or not key):
            raise CliError(
                "no API to call: pass --api-url and --api-key, set COMFYFLEET_API_URL and "
                f"COMFYFLEET_API_KEY, or start `comfyfleet dev` (no {state})"
            )
        if dev is not None:
            url = url or dev["api_url"]
            key = key or dev["admin_key" if admin else "user_key"]
    assert url and key
    return url, key


def api_client(args: argparse.Namespace, *, admin: bool = False) -> Client:
    url, key = resolve_endpoint(args, admin=admin)
    return Client(url, key)


def print_json(document: Any) -> None:
    print(json.dumps(document, indent=2))


# -- following jobs ---------------------------------------------------------------------------


def follow(client: Client, job_ids: Iterable[str], *, out: Path | None = None) -> list[JSON]:
    """Wait for jobs with a progress bar each (rich), download their outputs to ``out``."""
    ids = list(job_ids)
    try:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    except ImportError:  # the cli extra is not installed: plain lines
        return [_finish(client, client.wait(i, on_progress=_plain_progress), out) for i in ids]
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns) as progress:
        tasks = {job_id: progress.add_task(job_id, total=100, status="queued") for job_id in ids}

        def follow_one(job_id: str) -> JSON:
            task = tasks[job_id]

            def show(job: JSON) -> None:
                status = str(job.get("status"))
                if status == "queued" and job.get("queue_position"):
                    status = f"queued (#{job['queue_position']})"
                progress.update(task, completed=_percent(job), status=status)

            return client.wait(job_id, on_progress=show)

        # One poller per job, so every bar moves at once (rich's Progress is thread-safe).
        with ThreadPoolExecutor(max_workers=min(8, len(ids) or 1)) as pool:
            finals = list(pool.map(follow_one, ids))
    return [_finish(client, job, out) for job in finals]


def _percent(job: JSON) -> float:
    if job.get("status") == "completed":
        return 100.0
    progress = job.get("progress") or {}
    return float(progress.get("percent") or 0.0)


def _plain_progress(job: JSON) -> None:
    print(f"{job.get('job_id')} {job.get('status')} {_percent(job):.0f}%", file=sys.stderr)


def _finish(client: Client, job: JSON, out: Path | None) -> JSON:
    """Report how a job ended; download its files to ``out``."""
    status = job.get("status")
    if status != "completed":
        error = job.get("error") or {}
        reason = f"{error.get('code', '')} {error.get('message', '')}".strip()
        print(f"{job['job_id']} {status}: {reason}", file=sys.stderr)
        return job
    files = (job.get("outputs") or {}).get("files") or []
    for index, entry in enumerate(files):
        if out is None:
            print(entry["url"])
            continue
        name = entry.get("filename") or f"output_{index}"
        path = client.download(entry["url"], out / f"{job['job_id']}_{Path(name).name}")
        print(path)
    return job


# -- commands -----------------------------------------------------------------------------------


def cmd_submit(args: argparse.Namespace) -> int:
    document = read_json(args.file)
    with api_client(args) as client:
        accepted = client.submit(document, webhook_url=args.webhook)
        if not args.wait and args.out is None:
            print_json(accepted)
            return EXIT_OK
        print(accepted["job_id"], file=sys.stderr)
        (job,) = follow(client, [accepted["job_id"]], out=out_dir(args))
    return EXIT_OK if job.get("status") == "completed" else EXIT_FAILED


def out_dir(args: argparse.Namespace) -> Path | None:
    return Path(args.out) if args.out else None


def cmd_status(args: argparse.Namespace) -> int:
    with api_client(args) as client:
        print_json(client.get(args.job_id))
    return EXIT_OK


def cmd_wait(args: argparse.Namespace) -> int:
    with api_client(args) as client:
        jobs = follow(client, args.job_ids, out=out_dir(args))
    return EXIT_OK if all(job.get("status") == "completed" for job in jobs) else EXIT_FAILED


def cmd_cancel(args: argparse.Namespace) -> int:
    with api_client(args) as client:
        job = client.cancel(args.job_id)
    pending = job.get("cancel_requested") and job["status"] not in TERMINAL
    print(f"{job['job_id']} {job['status']}" + (" (cancel requested)" if pending else ""))
    return EXIT_OK


def cmd_ls(args: argparse.Namespace) -> int:
    with api_client(args) as client:
        page = client.list(status=args.status, limit=args.limit)
    for job in page.get("jobs", []):
        images = len((job.get("outputs") or {}).get("images") or [])
        print(f"{job['job_id']}  {job['status']:<9}  {job['created_at']}  {images} image(s)")
    if page.get("next_cursor"):
        print(f"(more: --limit {args.limit * 2})", file=sys.stderr)
    return EXIT_OK


def cmd_usage(args: argparse.Namespace) -> int:
    with api_client(args) as client:
        print_json(client.usage())
    return EXIT_OK


def cmd_accounts_create(args: argparse.Namespace) -> int:
    with api_client(args, admin=True) as client:
        account = client.create_account(tier=args.tier, name=args.name)
        if args.with_key:
            account["api_key"] = client.create_key(
                account["account_id"], scopes=("jobs",), name=args.name or "default"
            )["api_key"]
    print_json(account)
    return EXIT_OK


def cmd_keys_create(args: argparse.Namespace) -> int:
    scopes = tuple(part.strip() for part in args.scopes.split(",") if part.strip())
    with api_client(args, admin=True) as client:
        print_json(client.create_key(args.account, scopes=scopes, name=args.name))
    return EXIT_OK


def cmd_keys_ls(args: argparse.Namespace) -> int:
    with api_client(args, admin=True) as client:
        keys = client.list_keys(args.account).get("keys", [])
    for key in keys:
        revoked = f"revoked {key['revoked_at']}" if key.get("revoked_at") else "active"
        print(f"{key['key_id']}  {','.join(key['scopes']):<10}  {revoked:<8}  {key['name']}")
    return EXIT_OK


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    with api_client(args, admin=True) as client:
        print_json(client.revoke_key(args.key_id))
    return EXIT_OK


def cmd_nodes_ls(args: argparse.Namespace) -> int:
    with api_client(args, admin=True) as client:
        nodes = client.nodes().get("nodes", [])
    for node in nodes:
        job = node.get("current_job") or "-"
        print(
            f"{node['node_id']}  {node['status']:<9}  job {job}  queued {node['queued']}  "
            f"models {node['cached_models']}  heartbeat {node.get('heartbeat_at')}"
        )
    return EXIT_OK


def cmd_nodes_drain(args: argparse.Namespace) -> int:
    with api_client(args, admin=True) as client:
        print_json(client.drain_node(args.node_id))
    return EXIT_OK


def guarded(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """API errors and timeouts end the command with exit code 1, unreachable APIs with 2."""

    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except ApiError as exc:
            print(f"comfyfleet: {exc}", file=sys.stderr)
            if exc.details:
                print(json.dumps(exc.details, indent=2), file=sys.stderr)
            return EXIT_FAILED
        except JobTimeout as exc:
            print(f"comfyfleet: {exc}", file=sys.stderr)
            return EXIT_FAILED
        except ConnectionFailed as exc:
            raise CliError(str(exc)) from None

    return run


def endpoint_options() -> argparse.ArgumentParser:
    """The parent parser of every API command: where to call, with which key."""
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("endpoint")
    group.add_argument("--api-url", help="API base URL (env COMFYFLEET_API_URL)")
    group.add_argument("--api-key", help="API key (env COMFYFLEET_API_KEY)")
    group.add_argument(
        "--state-dir", default=DEFAULT_STATE_DIR, help="the dev stack's folder (dev.json)"
    )
    return common


def api_command(parent: Any, name: str, help_text: str, run: Callable[..., int]) -> Any:
    """A subcommand that calls the API (its errors handled by :func:`guarded`)."""
    parser = parent.add_parser(name, help=help_text, parents=[endpoint_options()])
    parser.set_defaults(handler=guarded(run))
    return parser


def add_client_commands(commands: Any) -> None:
    """Register the API commands on the ``comfyfleet`` parser's subcommands."""
    add = api_command

    submit = add(commands, "submit", "submit a workflow (or a POST /v1/jobs body)", cmd_submit)
    submit.add_argument("file", metavar="FILE", help="workflow JSON file, or - for stdin")
    submit.add_argument("--webhook", metavar="URL", help="notify this URL when the job ends")
    submit.add_argument("--wait", action="store_true", help="follow the job to its end")
    submit.add_argument("--out", metavar="DIR", help="download the outputs here (implies --wait)")

    status = add(commands, "status", "show a job", cmd_status)
    status.add_argument("job_id", metavar="ID")
    wait = add(commands, "wait", "follow jobs to their end with a progress bar", cmd_wait)
    wait.add_argument("job_ids", metavar="ID", nargs="+")
    wait.add_argument("--out", metavar="DIR", help="download the outputs here")
    cancel = add(commands, "cancel", "cancel a job", cmd_cancel)
    cancel.add_argument("job_id", metavar="ID")
    ls = add(commands, "ls", "list your jobs, newest first", cmd_ls)
    ls.add_argument("--status", choices=["queued", "running", "completed", "failed", "cancelled"])
    ls.add_argument("--limit", type=int, default=20)
    add(commands, "usage", "your limits and current use", cmd_usage)

    accounts = commands.add_parser("accounts", help="accounts (admin key)").add_subparsers(
        dest="accounts_command", metavar="COMMAND", required=True
    )
    create = add(accounts, "create", "create an account", cmd_accounts_create)
    create.add_argument("--tier", default="free")
    create.add_argument("--name", default="")
    create.add_argument("--with-key", action="store_true", help="also create a jobs key")

    keys = commands.add_parser("keys", help="API keys (admin key)").add_subparsers(
        dest="keys_command", metavar="COMMAND", required=True
    )
    key_create = add(keys, "create", "create a key (shown once)", cmd_keys_create)
    key_create.add_argument("--account", required=True, metavar="ACCOUNT_ID")
    key_create.add_argument("--scopes", default="jobs", help="comma separated: jobs,admin")
    key_create.add_argument("--name", default="")
    key_ls = add(keys, "ls", "an account's keys", cmd_keys_ls)
    key_ls.add_argument("--account", required=True, metavar="ACCOUNT_ID")
    revoke = add(keys, "revoke", "revoke a key", cmd_keys_revoke)
    revoke.add_argument("key_id", metavar="KEY_ID")

    nodes = commands.add_parser("nodes", help="GPU nodes (admin key)").add_subparsers(
        dest="nodes_command", metavar="COMMAND", required=True
    )
    add(nodes, "ls", "list the nodes", cmd_nodes_ls)
    drain = add(nodes, "drain", "stop routing to a node; its waiting jobs move", cmd_nodes_drain)
    drain.add_argument("node_id", metavar="NODE_ID")
