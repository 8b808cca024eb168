"""The git commands node setup runs, as functions that raise :class:`GitFailed` with git's words."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

# Never wait for a password prompt: a private or mistyped repository fails at once.
_NO_PROMPT = {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "", "LC_ALL": "C"}
_QUIET = ("-c", "advice.detachedHead=false")


class GitFailed(Exception):
    """A git command failed; the message is its last lines of output."""


def run_git(*args: str, cwd: Path) -> str:
    """Run ``git -C cwd ARGS`` and return its stdout, stripped."""
    try:
        done = subprocess.run(
            ["git", *_QUIET, "-C", str(cwd), *args],
            capture_output=True,
            text=True,
            env={**os.environ, **_NO_PROMPT},
            check=False,
        )
    except FileNotFoundError:
        raise GitFailed("git is not installed") from None
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        detail = " / ".join(lines[-3:]) or f"exit code {done.returncode}"
        raise GitFailed(f"git {args[0]} failed: {detail}")
    return done.stdout.strip()


def is_checkout(folder: Path) -> bool:
    """Whether ``folder`` is the top of a git checkout (not merely inside one)."""
    return (folder / ".git").exists()


def head(folder: Path) -> str | None:
    """The commit checked out in ``folder``; None if it is not a checkout or has none."""
    if not is_checkout(folder):
        return None
    try:
        return run_git("rev-parse", "--verify", "-q", "HEAD^{commit}", cwd=folder)
    except GitFailed:
        return None


def resolve(folder: Path, ref: str) -> str | None:
    """The commit ``ref`` names in ``folder``'s repository, or None if it has no such commit."""
    try:
        return run_git("rev-parse", "--verify", "-q", f"{ref}^{{commit}}", cwd=folder)
    except GitFailed:
        return None


def init_clone(folder: Path, url: str) -> None:
    """An empty repository at ``folder`` with ``url`` as origin, to fetch one commit into."""
    folder.mkdir(parents=True)
    run_git("init", "-q", cwd=folder)
    run_git("remote", "add", "origin", url, cwd=folder)


def ensure_commit(folder: Path, url: str, commit: str) -> None:
    """Fetch ``commit`` from ``url`` (a URL or a remote's name) unless the repository has it.

    The commit is asked for by its hash first (GitHub and git's protocol v2 serve that): one
    commit deep into a new or shallow repository, with its history into a full one. Failing
    that, every branch and tag is fetched.
    """
    if resolve(folder, commit) is not None:
        return
    shallow = _is_shallow(folder) or resolve(folder, "HEAD") is None
    depth = ("--depth", "1") if shallow else ()
    try:
        run_git("fetch", "-q", *depth, url, commit, cwd=folder)
    except GitFailed:
        unshallow = ("--unshallow",) if _is_shallow(folder) else ()
        refs = ("+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*")
        run_git("fetch", "-q", *unshallow, url, *refs, cwd=folder)
    if resolve(folder, commit) is None:
        raise GitFailed(f"commit {commit} is not in {url}")


def ensure_tag(folder: Path, tag: str) -> str:
    """The commit of tag ``tag``, fetched from origin if the repository lacks it."""
    found = resolve(folder, f"refs/tags/{tag}")
    if found is None:
        run_git("fetch", "-q", "origin", f"+refs/tags/{tag}:refs/tags/{tag}", cwd=folder)
        found = resolve(folder, f"refs/tags/{tag}")
    if found is None:
        raise GitFailed(f"tag {tag} is not in origin")
    return found


def checkout(folder: Path, commit: str) -> None:
    """Check out ``commit`` detached; git refuses (and changes nothing) over local edits."""
    run_git("checkout", "-q", "--detach", commit, cwd=folder)


def set_origin(folder: Path, url: str) -> None:
    """Point origin at ``url``, so that tools reading it (ComfyUI-Manager) see the file's URL."""
    try:
        current = run_git("remote", "get-url", "origin", cwd=folder)
    except GitFailed:
        run_git("remote", "add", "origin", url, cwd=folder)
        return
    if current != url:
        run_git("remote", "set-url", "origin", url, cwd=folder)


def _is_shallow(folder: Path) -> bool:
    return run_git("rev-parse", "--is-shallow-repository", cwd=folder) == "true"
