"""The lock file node setup writes and the agent reads: its shape, and a damaged one refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from comfyfleet.environment import LOCK_FILENAME, InvalidLock, Lock, LockedNode, read_lock
from comfyfleet.environment.lock import write_lock

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def a_lock() -> Lock:
    return Lock(
        environment_id="3f2a9c1b7d4e",
        comfyui_version="v0.3.64",
        comfyui_commit=COMMIT,
        python="/opt/comfy/.venv/bin/python",
        pip_freeze_sha256="ab" * 32,
        custom_nodes=(LockedNode(name="Helper", git="https://h/x", commit=COMMIT, pip=("a>=1",)),),
        models=({"url": "https://huggingface.co/a/b/resolve/main/m.safetensors"},),
    )


def test_no_lock_file_reads_as_none(tmp_path: Path) -> None:
    assert read_lock(tmp_path) is None


def test_a_written_lock_reads_back_equal(tmp_path: Path) -> None:
    write_lock(tmp_path, a_lock())

    assert read_lock(tmp_path) == a_lock()
    document = json.loads((tmp_path / LOCK_FILENAME).read_text())
    assert document["format"] == 1
    assert document["comfyui"] == {"version": "v0.3.64", "commit": COMMIT}
    assert document["custom_nodes"][0] == {
        "name": "Helper",
        "git": "https://h/x",
        "commit": COMMIT,
        "pip": ["a>=1"],
    }
    assert [p.name for p in tmp_path.iterdir()] == [LOCK_FILENAME]  # no partial file left


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "is not JSON: Expecting property name enclosed in double quotes"),
        ("[]", f"{LOCK_FILENAME}: not a lock file of format 1"),
        ('{"format": 2}', f"{LOCK_FILENAME}: not a lock file of format 1"),
        (
            '{"format": 1}',
            f"{LOCK_FILENAME}: a field is missing or malformed: KeyError('environment_id')",
        ),
    ],
)
def test_a_damaged_lock_is_refused_not_guessed(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / LOCK_FILENAME).write_text(text)

    with pytest.raises(InvalidLock) as raised:
        read_lock(tmp_path)

    assert message in str(raised.value)
