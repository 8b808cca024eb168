"""Git repositories and a ComfyUI folder for the node setup tests, and a way to run it.

pip never reaches an index: every run passes --no-index with PIP_CONFIG_FILE emptied.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from comfyfleet.cli import main
from comfyfleet.environment import LOCK_FILENAME

MISSING_PACKAGE = "comfyfleet-test-no-such-package"


def git(*args: str, cwd: Path) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=test", "-c", "user.email=test@example.invalid", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip()


@dataclass
class Repo:
    path: Path
    commits: list[str]

    @property
    def url(self) -> str:
        return self.path.as_uri()


def node_repo(base: Path, name: str) -> Repo:
    """A tiny custom node with two commits; the second adds a class and a requirements.txt."""
    path = base / "origins" / name
    path.mkdir(parents=True)
    git("init", "-q", "-b", "main", cwd=path)
    commits = []
    for number, classes in enumerate((["One"], ["One", "Two"]), start=1):
        mapping = ", ".join(f'"{name}{c}": object' for c in classes)
        (path / "__init__.py").write_text(f"NODE_CLASS_MAPPINGS = {{{mapping}}}\n")
        if number == 2:
            (path / "requirements.txt").write_text("requests\n")
        git("add", ".", cwd=path)
        git("commit", "-q", "-m", f"commit {number}", cwd=path)
        commits.append(git("rev-parse", "HEAD", cwd=path))
    return Repo(path, commits)


def entry(name: str, repo: Repo, rev: str, pip: list[str] | None = None) -> str:
    lines = [f'name = "{name}"', f'git = "{repo.url}"', f'rev = "{rev}"']
    if pip is not None:
        lines.append(f"pip = {json.dumps(pip)}")
    return "[[custom_nodes]]\n" + "\n".join(lines) + "\n"


class Setup:
    """One ComfyUI folder and the environment file node setup is run with."""

    def __init__(
        self, root: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # no find-links, no index
        self.root = root
        self.root.mkdir(exist_ok=True)
        self.file = root.parent / "environment.toml"
        self.capsys = capsys

    def run(self, text: str, *extra: str) -> tuple[int, str, str]:
        self.file.write_text(text)
        code = main(
            [
                "node", "setup", "--environment", str(self.file), "--comfy-root", str(self.root),
                "--python", sys.executable, "--allow-local-urls", "--pip-arg=--no-index", *extra,
            ]
        )  # fmt: skip
        out, err = self.capsys.readouterr()
        return code, out, err

    def head(self, name: str) -> str:
        return git("rev-parse", "HEAD", cwd=self.root / "custom_nodes" / name)

    def lock_text(self) -> str:
        return (self.root / LOCK_FILENAME).read_text()

    def tree(self) -> dict[str, int]:
        """Every path under the root with its modification time: any change shows."""
        return {str(p.relative_to(self.root)): p.lstat().st_mtime_ns for p in self.root.rglob("*")}
