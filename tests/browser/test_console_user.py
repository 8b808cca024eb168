"""The console as an API user sees it, in headless Chromium against `comfyfleet dev`: log in
with a jobs key, submit a pasted workflow and see its image, a broken workflow's error, a
template's form, the jobs list and usage; the key kept out of URLs, cookies and
localStorage; API text rendered as text; the CSP header; a phone-width screen."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import requests
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from comfyfleet.client import Client
from tests.browser.console_page import (
    log_in,
    no_horizontal_scroll,
    screenshot,
    storage,
    wait_for,
    wait_text,
)
from tests.support import basic_graph

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).parents[2] / "examples"
XSS = "<img src=x onerror=alert(1)>"


def submit_workflow(driver: Any, workflow: str) -> None:
    wait_for(driver, "select[name=template]")
    Select(driver.find_element(By.CSS_SELECTOR, "select[name=template]")).select_by_value(
        "workflow"
    )
    wait_for(driver, "textarea[name=workflow]").send_keys(workflow)
    driver.find_element(By.CSS_SELECTOR, "button[data-action=submit]").click()


def test_a_pasted_workflow_runs_and_its_image_shows(
    browser: Any, console_url: str, stack: Any, tmp_path: Path
) -> None:
    log_in(browser, console_url, stack.user_key)
    assert browser.current_url.endswith("#/playground")

    submit_workflow(browser, (EXAMPLES / "hello.json").read_text())

    wait_text(browser, "[data-field=status]", "completed", timeout=60)
    image = wait_for(browser, "img[data-output]")
    browser.execute_script("return arguments[0].decode()", image)
    assert browser.execute_script("return arguments[0].naturalWidth", image) == 512
    assert "#/jobs/" in browser.current_url
    link = browser.find_element(By.CSS_SELECTOR, "figure.output a[download]")
    assert link.text.startswith("Download hello_")
    assert not browser.find_elements(By.CSS_SELECTOR, "button[data-action=cancel]")
    screenshot(browser, tmp_path, "console-job.png")


def test_a_broken_workflow_shows_the_apis_error_with_its_node(
    browser: Any, console_url: str, stack: Any
) -> None:
    graph = basic_graph()
    graph["2"]["inputs"]["image"] = ["9", 0]  # a link to a node that is not there
    log_in(browser, console_url, stack.user_key, then="#/playground")

    submit_workflow(browser, json.dumps(graph))

    error = wait_for(browser, "[data-field=error]")
    assert error.find_element(By.CSS_SELECTOR, "[data-field=error-code]").text == "invalid_workflow"
    assert "node 2 · input image" in error.text and "link_to_missing_node" in error.text
    submit_workflow(browser, "{not json")
    wait_text(browser, "[data-field=error]", "not JSON")


def test_a_templates_parameters_are_a_form_and_a_refused_value_is_named(
    browser: Any, console_url: str, stack: Any
) -> None:
    log_in(browser, console_url, stack.user_key, then="#/playground")
    wait_for(browser, "textarea[name=prompt]").send_keys("a lighthouse at dusk")
    assert browser.find_element(By.CSS_SELECTOR, "input[name=width]").get_attribute("value")
    browser.find_element(By.CSS_SELECTOR, "[data-action=add-lora]").click()
    lora = wait_for(browser, "input[name='loras.url']")
    lora.send_keys("https://example.com/style.safetensors")  # not an allowed model host

    browser.find_element(By.CSS_SELECTOR, "button[data-action=submit]").click()

    error = wait_for(browser, "[data-field=error]")
    assert error.find_element(By.CSS_SELECTOR, "[data-field=error-code]").text == "invalid_workflow"
    assert "input lora_name" in error.text and "url_not_allowed" in error.text
    names = [
        option.get_attribute("value")
        for option in browser.find_elements(By.CSS_SELECTOR, "select[name=template] option")
    ]
    assert names[:4] == ["sd15", "sdxl", "flux", "workflow"]


def test_api_text_is_rendered_as_text_and_the_key_stays_in_session_storage(
    browser: Any, console_url: str, stack: Any, user: Client
) -> None:
    job = user.submit(basic_graph(), metadata={"note": XSS})
    log_in(browser, console_url, stack.user_key, then=f"#/jobs/{job['job_id']}")

    shown = wait_for(browser, "[data-field=metadata]")

    assert XSS in shown.text
    assert not browser.find_elements(By.CSS_SELECTOR, "[data-field=metadata] img")
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text  # noqa: B018 - raises when there is none
    key = stack.user_key
    assert key not in browser.current_url
    assert all(key not in cookie["value"] for cookie in browser.get_cookies())
    assert storage(browser, "localStorage") == {}
    assert key in storage(browser, "sessionStorage").values()
    browser.find_element(By.CSS_SELECTOR, "[data-action=logout]").click()
    wait_text(browser, ".login-status", "Logged out")
    assert storage(browser, "sessionStorage") == {}


def test_the_page_is_served_with_a_content_security_policy(console_url: str) -> None:
    page = requests.get(console_url, timeout=10)
    redirect = requests.get(
        console_url.replace("/console", "/admin"), timeout=10, allow_redirects=False
    )

    policy = page.headers["Content-Security-Policy"]
    assert page.status_code == 200 and "text/html" in page.headers["Content-Type"]
    for directive in ("default-src 'self'", "script-src 'self'", "frame-ancestors 'none'"):
        assert directive in policy
    assert "unsafe-inline" not in policy and "<script>" not in page.text
    assert redirect.status_code == 302 and redirect.headers["Location"].endswith("/console")


def test_jobs_usage_and_the_playground_fit_a_phone_width_screen(
    browser: Any, console_url: str, stack: Any, user: Client
) -> None:
    accepted = user.submit(basic_graph())
    user.wait(accepted["job_id"], timeout=60)
    browser.set_window_size(390, 844)
    log_in(browser, console_url, stack.user_key, then="#/jobs")

    row = wait_for(browser, f"tr[data-job-id='{accepted['job_id']}']")
    assert row.find_element(By.CSS_SELECTOR, "[data-field=status]").text == "completed"
    assert no_horizontal_scroll(browser)
    browser.get(console_url + "#/usage")
    assert wait_for(browser, "[data-field=tier]").text == "free"
    for view, shown in (("#/usage", "[data-field=requests]"), ("#/playground", "[name=prompt]")):
        browser.get(console_url + view)
        wait_for(browser, shown)
        assert no_horizontal_scroll(browser), view


def test_a_rate_limited_submit_shows_when_to_retry(
    browser: Any, console_url: str, admin: Client
) -> None:
    account = admin.create_account(tier="tiny", name="limited")  # 3 requests a minute
    key = admin.create_key(account["account_id"], scopes=("jobs",))["api_key"]
    with Client(admin.api_url, key, max_retries=0) as limited:
        for _ in range(3):
            limited.submit(basic_graph())
    log_in(browser, console_url, key, then="#/playground")

    submit_workflow(browser, json.dumps(basic_graph()))

    error = wait_for(browser, "[data-field=error]")
    assert error.find_element(By.CSS_SELECTOR, "[data-field=error-code]").text == (
        "rate_limit_exceeded"
    )
    assert "Retry in" in error.text and "Retry-After" in error.text


def test_a_running_job_shows_its_progress_and_live_preview_and_is_cancelled(
    browser: Any, console_url: str, stack: Any, user: Client, checkpoint_url: str
) -> None:
    accepted = user.submit_template(
        "sd15", prompt="slow", checkpoint_url=checkpoint_url, steps=150, width=64, height=64
    )
    log_in(browser, console_url, stack.user_key, then=f"#/jobs/{accepted['job_id']}")

    wait_text(browser, "[data-field=status]", "running", timeout=60)
    wait_for(browser, "progress")
    preview = wait_for(browser, "img[data-preview]", timeout=30)
    assert "previews/" in (preview.get_attribute("src") or "")
    browser.find_element(By.CSS_SELECTOR, "button[data-action=cancel]").click()

    wait_text(browser, "[data-field=status]", "cancelled", timeout=60)
    assert not browser.find_elements(By.CSS_SELECTOR, "button[data-action=cancel]")
    assert user.get(accepted["job_id"])["status"] == "cancelled"
