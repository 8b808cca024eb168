"""Driving the console as a person does: open it, log in, wait for what the page shows.
Selectors are the console's contract (docs/console.md)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as seen
from selenium.webdriver.support.ui import WebDriverWait

DOCS = Path(__file__).parents[2] / "docs"
WAIT = 20
# Read at import: the tests' own environment has no COMFYFLEET_* variables (tests/conftest.py).
UPDATE_SCREENSHOTS = os.environ.get("COMFYFLEET_UPDATE_SCREENSHOTS") == "1"


def wait_for(driver: Any, css: str, timeout: float = WAIT) -> Any:
    """The first element ``css`` finds once it is visible."""
    return WebDriverWait(driver, timeout).until(
        seen.visibility_of_element_located((By.CSS_SELECTOR, css))
    )


def wait_text(driver: Any, css: str, text: str, timeout: float = WAIT) -> Any:
    WebDriverWait(driver, timeout).until(
        seen.text_to_be_present_in_element((By.CSS_SELECTOR, css), text)
    )
    return driver.find_element(By.CSS_SELECTOR, css)


def log_in(driver: Any, console_url: str, key: str, *, then: str = "") -> None:
    """Open the console, type the key and press Enter (the keyboard only)."""
    driver.get(console_url + then)
    field = wait_for(driver, "form#login input[name=api_key]")
    field.send_keys(key, Keys.ENTER)
    wait_for(driver, "[data-action=logout]")


def storage(driver: Any, kind: str) -> dict[str, str]:
    script = f"return Object.fromEntries(Object.entries(window.{kind}));"
    found: dict[str, str] = driver.execute_script(script)
    return found


def screenshot(driver: Any, tmp_path: Path, name: str) -> Path:
    """A PNG of the page; with COMFYFLEET_UPDATE_SCREENSHOTS=1 also docs/<name> (README)."""
    path = tmp_path / name
    driver.save_screenshot(str(path))
    if UPDATE_SCREENSHOTS:
        shutil.copyfile(path, DOCS / name)
    return path


def no_horizontal_scroll(driver: Any) -> bool:
    width: int = driver.execute_script("return document.documentElement.scrollWidth")
    viewport: int = driver.execute_script("return window.innerWidth")
    return width <= viewport
