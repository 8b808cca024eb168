"""The browser tier: the web console in headless Chromium (Debian's chromium and
chromium-driver, which `make test` installs), driven by Selenium, against `comfyfleet dev`.

One dev stack for the tier (one agent, fakecomfy); each test gets a fresh browser profile.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from comfyfleet.dev.launch import RunningStack, launch_dev_stack
from tests.e2e.conftest import admin, checkpoint_url, origin, stack_env, user

# The e2e tier's model host on loopback and its clients of this module's `stack`.
__all__ = ["admin", "checkpoint_url", "origin", "user"]

pytestmark = pytest.mark.slow

CHROMIUM = Path(os.environ.get("COMFYFLEET_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("COMFYFLEET_CHROMEDRIVER", "/usr/bin/chromedriver"))
DOCS = Path(__file__).parents[2] / "docs"


def _browser_missing() -> str | None:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not path.exists():
            return f"{path} is missing: `make test` installs Debian's chromium and chromium-driver"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is missing: `make install` installs the dev extra"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    missing = _browser_missing()
    if missing is None:
        return
    if os.environ.get("CI"):
        raise pytest.UsageError(f"the browser tests cannot run in CI: {missing}")
    skip = pytest.mark.skip(reason=missing)
    for item in items:
        if "tests/browser/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(skip)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    """A dev stack per test module: the admin tests drain its node."""
    state = tmp_path_factory.mktemp("console-stack")
    with launch_dev_stack(state, agents=1, env=stack_env()) as running:
        yield running


@pytest.fixture
def console_url(stack: RunningStack) -> str:
    return stack.api_url + "/console"


_REFUSED = re.compile(r"status of 4\d\d")


def console_errors(driver: Any) -> list[str]:
    """What the page logged as errors since the last look: script errors, requests that
    failed or answered 5xx. Chromium also logs every 4xx answer as an error; those are the
    API refusing on purpose (a broken workflow), which the page shows: they are not counted."""
    return [
        entry["message"]
        for entry in driver.get_log("browser")
        if entry["level"] == "SEVERE"
        and not (
            entry.get("source") == "network" and re.search(r"status of 4\d\d", entry["message"])
        )
    ]


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """Headless Chromium; a test that leaves errors in the page's console fails."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,900",
        f"--user-data-dir={tmp_path / 'profile'}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.set_page_load_timeout(30)
    try:
        yield driver
        errors = console_errors(driver)
        assert not errors, f"the page logged errors: {errors}"
    finally:
        driver.quit()
        shutil.rmtree(tmp_path / "profile", ignore_errors=True)
