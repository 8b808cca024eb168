"""The console as an operator sees it, in headless Chromium against `comfyfleet dev`: every
account's jobs, the queues, accounts and keys (a key shown once, then revoked), a revoked
key's session sent back to the login, and the node drained after a confirmation (last:
the module's stack then takes no job)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from comfyfleet.api.auth import AUTHORIZER_CACHE_SECONDS
from comfyfleet.client import Client
from tests.browser.console_page import (
    log_in,
    no_horizontal_scroll,
    screenshot,
    wait_for,
    wait_text,
)
from tests.support import basic_graph

pytestmark = pytest.mark.slow


def confirm(driver: Any) -> None:
    dialog = wait_for(driver, "dialog#confirm")
    dialog.find_element(By.CSS_SELECTOR, "button[data-action=confirm]").click()


def test_an_admin_sees_every_accounts_jobs_and_opens_one(
    browser: Any, console_url: str, stack: Any, user: Client
) -> None:
    accepted = user.submit(basic_graph(), metadata={"who": "user"})
    user.wait(accepted["job_id"], timeout=60)
    log_in(browser, console_url, stack.admin_key, then="#/jobs")

    row = wait_for(browser, f"tr[data-job-id='{accepted['job_id']}']")
    assert row.find_element(By.CSS_SELECTOR, "[data-field=status]").text == "completed"
    row.find_element(By.CSS_SELECTOR, "a").click()
    wait_text(browser, "[data-field=status]", "completed")
    assert "user" in browser.find_element(By.CSS_SELECTOR, "[data-field=metadata]").text
    browser.get(console_url + "#/queues")
    wait_for(browser, "tr[data-queue]")
    names = [
        row.get_attribute("data-queue")
        for row in browser.find_elements(By.CSS_SELECTOR, "tr[data-queue]")
    ]
    assert any(name.endswith("shared.fifo") for name in names)


def test_a_key_is_created_shown_once_listed_and_revoked(
    browser: Any, console_url: str, stack: Any
) -> None:
    log_in(browser, console_url, stack.admin_key, then="#/keys")
    wait_for(browser, "button[data-action=create-account]").click()
    account_id = wait_for(browser, "[data-field=new-account]").text
    assert account_id.startswith("acct_")
    assert (
        browser.find_element(By.CSS_SELECTOR, "input[name=account_id]").get_attribute("value")
        == account_id
    )

    browser.find_element(By.CSS_SELECTOR, "button[data-action=create-key]").click()

    key = wait_for(browser, "[data-field=new-key]").text
    assert key.startswith("sk_live_")
    row = wait_for(browser, "tr[data-key-id]")
    key_id = row.get_attribute("data-key-id")
    assert key.startswith(key_id) and key_id in row.text
    assert row.find_element(By.CSS_SELECTOR, "[data-field=status]").text == "active"
    browser.get(console_url + "#/nodes")
    browser.get(console_url + "#/keys")
    wait_for(browser, "input[name=account_id]")
    assert not browser.find_elements(By.CSS_SELECTOR, "[data-field=new-key]")  # shown once
    browser.find_element(By.CSS_SELECTOR, "input[name=account_id]").send_keys(account_id)
    browser.find_element(By.CSS_SELECTOR, "button[data-action=list-keys]").click()
    wait_for(browser, f"tr[data-key-id='{key_id}'] button[data-action=revoke]").click()
    confirm(browser)
    wait_text(browser, f"tr[data-key-id='{key_id}'] [data-field=status]", "revoked")


def test_a_revoked_keys_session_goes_back_to_the_login_with_a_message(
    browser: Any, console_url: str, stack: Any, admin: Client
) -> None:
    account = admin.create_account(tier="free", name="revoked")
    created = admin.create_key(account["account_id"], scopes=("jobs",))
    log_in(browser, console_url, created["api_key"], then="#/usage")
    wait_for(browser, "[data-field=requests]")

    admin.revoke_key(created["key_id"])

    # The usage view asks again every 5 s; the dev gateway keeps an authorizer's answer as
    # long as API Gateway does (AUTHORIZER_CACHE_SECONDS, from the key's first request).
    wait_text(
        browser, ".login-status", "Your key was refused", timeout=AUTHORIZER_CACHE_SECONDS + 15
    )
    assert browser.current_url.endswith("#/login")
    assert browser.execute_script("return sessionStorage.length") == 0


def test_the_node_is_listed_and_drained_after_a_confirmation(
    browser: Any, console_url: str, stack: Any, tmp_path: Path
) -> None:
    log_in(browser, console_url, stack.admin_key)
    assert browser.current_url.endswith("#/nodes")
    node_id = stack.agents[0]["node_id"]
    row = wait_for(browser, f"tr[data-node-id='{node_id}']")
    assert row.find_element(By.CSS_SELECTOR, "[data-field=status]").text == "idle"
    heartbeat = row.find_element(By.CSS_SELECTOR, "[data-field=heartbeat] time")
    assert heartbeat.get_attribute("datetime") and heartbeat.get_attribute("title")  # exact time
    wait_text(browser, "[data-field=refreshed]", "Updated")
    screenshot(browser, tmp_path, "console-nodes.png")

    row.find_element(By.CSS_SELECTOR, "button[data-action=drain]").click()
    wait_for(browser, "dialog#confirm").find_element(
        By.CSS_SELECTOR, "[data-action=dismiss]"
    ).click()
    time.sleep(0.5)
    status = f"tr[data-node-id='{node_id}'] [data-field=status]"
    assert browser.find_element(By.CSS_SELECTOR, status).text == "idle"  # not asked: not done
    browser.find_element(
        By.CSS_SELECTOR, f"tr[data-node-id='{node_id}'] button[data-action=drain]"
    ).click()
    confirm(browser)

    wait_text(browser, status, "draining")
    browser.set_window_size(390, 844)
    assert no_horizontal_scroll(browser)  # the table scrolls inside its frame, not the page
    WebDriverWait(browser, 10).until(
        lambda driver: (
            not driver.find_elements(
                By.CSS_SELECTOR, f"tr[data-node-id='{node_id}'] button[data-action=drain]"
            )
        )
    )
