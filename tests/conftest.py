"""Fixtures every tier shares: a clean environment, dummy AWS credentials, the recordings."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from comfyfleet.catalogue import NodeCatalogue
from comfyfleet.settings import Settings, get_settings
from tests.support import COMFYUI_FIXTURES


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test sees the developer's COMFYFLEET_* settings or real AWS credentials."""
    for name in list(os.environ):
        if name.startswith(("COMFYFLEET_", "AWS_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def settings() -> Settings:
    return Settings()


@pytest.fixture(scope="session")
def catalogue() -> NodeCatalogue:
    """The node catalogue recorded from a real ComfyUI 0.3.64 (no model files)."""
    return NodeCatalogue.from_file(COMFYUI_FIXTURES / "object_info_core.json")
