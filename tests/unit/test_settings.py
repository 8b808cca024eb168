"""Settings: documented defaults, overrides, and start-up failures that name the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from comfyfleet.delivery import RETRY_CAP_SECONDS, RETRY_JITTER
from comfyfleet.resources import MESSAGE_RETENTION_SECONDS
from comfyfleet.settings import (
    MAX_RETRY_SCHEDULE_SECONDS,
    MAX_RETRY_STEP_SECONDS,
    Settings,
    SettingsError,
    get_settings,
    load_settings,
)

DOCS = Path(__file__).parents[2] / "docs" / "settings.md"


def test_defaults_are_cmfy_clouds_tiers() -> None:
    settings = load_settings()

    assert {
        name: (t.requests_per_minute, t.concurrency, t.queue_depth, t.weight)
        for name, t in settings.tiers.items()
    } == {
        "free": (60, 2, 100, 1.0),
        "pro": (300, 10, 100, 1.5),
        "enterprise": (1000, 50, 100, 2.0),
    }
    assert [settings.tiers[n].ring_slots for n in ("free", "pro", "enterprise")] == [2, 3, 4]
    assert settings.max_workflow_bytes == 1024 * 1024
    assert settings.max_workflow_nodes == 500
    assert settings.model_hosts == ["huggingface.co", "civitai.com"]
    assert settings.model_bucket_name == "comfyfleet-models"
    assert settings.allow_local_urls is False


def test_environment_overrides_merge_onto_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMFYFLEET_PREFIX", "acme-prod")
    monkeypatch.setenv("COMFYFLEET_TIERS__PRO__REQUESTS_PER_MINUTE", "600")
    monkeypatch.setenv("COMFYFLEET_MODEL_HOSTS", "huggingface.co, Models.Example.com")
    monkeypatch.setenv("COMFYFLEET_DENIED_CLASS_TYPES", '["A", "B"]')
    monkeypatch.setenv("COMFYFLEET_DEFAULT_MODEL_SIZES", '{"loras": 1000}')

    settings = load_settings()

    assert settings.tiers["pro"].requests_per_minute == 600
    assert settings.tiers["pro"].concurrency == 10
    assert settings.tiers["free"].requests_per_minute == 60
    assert settings.model_hosts == ["huggingface.co", "models.example.com"]
    assert settings.denied_class_types == ["A", "B"]
    assert settings.model_size_guess("loras") == 1000
    assert settings.model_size_guess("checkpoints") > settings.model_size_guess("loras")
    assert settings.model_size_guess("nowhere") == settings.default_model_sizes["other"]
    assert settings.model_bucket_name == "acme-prod-models"


def test_a_tier_can_be_added(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "COMFYFLEET_TIERS",
        '{"studio": {"requests_per_minute": 500, "concurrency": 20, '
        '"queue_depth": 200, "weight": 3}}',
    )

    settings = load_settings()

    assert settings.tier("studio").ring_slots == 6
    assert settings.tier("no-such-tier") == settings.tiers["free"]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("COMFYFLEET_MAX_WORKFLOW_BYTES", "lots"),
        ("COMFYFLEET_MAX_WORKFLOW_NODES", "0"),
        ("COMFYFLEET_HISTORY_RETENTION_DAYS", "-3"),
        ("COMFYFLEET_PREFIX", "Not A Prefix"),
        ("COMFYFLEET_TIERS__FREE__WEIGHT", "0"),
        ("COMFYFLEET_TIERS", "{not json"),
        ("COMFYFLEET_MODEL_HOSTS", "not a host"),
        ("COMFYFLEET_DEFAULT_MODEL_SIZES", '{"loras": -1}'),
        ("COMFYFLEET_ALLOW_LOCAL_URLS", "perhaps"),
        ("COMFYFLEET_DEFAULT_TIER", "platinum"),
    ],
)
def test_a_bad_value_fails_start_up_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)

    with pytest.raises(SettingsError, match=variable):
        load_settings()
    with pytest.raises(SettingsError, match=variable):
        get_settings()


def test_a_new_tier_missing_limits_names_each_missing_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COMFYFLEET_TIERS__GOLD__WEIGHT", "3")

    with pytest.raises(SettingsError, match="COMFYFLEET_TIERS__GOLD__REQUESTS_PER_MINUTE"):
        load_settings()


@pytest.mark.parametrize("value", ["[10, 60, 3600]", "10, 60, 3600", "10,60,3600"])
def test_a_webhook_retry_schedule_is_read_as_json_or_comma_separated(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("COMFYFLEET_WEBHOOK_RETRY_SCHEDULE", value)

    settings = load_settings()

    assert settings.webhook_retry_schedule == [10, 60, 3600]
    assert settings.webhook_attempts == 4  # the first, then one per retry


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("[]", "at least 1 item"),
        ("", "at least 1 item"),
        ("5, 0", "greater than 0"),
        ("-5", "greater than 0"),
        ("43201", "less than or equal to 43200"),  # over SQS's 12 h visibility cap
        ("5, soon", "valid integer"),
        (",".join(["43200"] * 7), "more than 259200 s"),  # past the queue's retention
    ],
)
def test_a_bad_webhook_retry_schedule_is_refused_at_start_up(
    monkeypatch: pytest.MonkeyPatch, value: str, reason: str
) -> None:
    monkeypatch.setenv("COMFYFLEET_WEBHOOK_RETRY_SCHEDULE", value)

    with pytest.raises(SettingsError, match=f"COMFYFLEET_WEBHOOK_RETRY_SCHEDULE: .*{reason}"):
        load_settings()


def test_a_whole_retry_schedule_ends_within_the_webhooks_queues_retention() -> None:
    # The longest schedule allowed, each step at +20 % jitter, before SQS drops the message.
    longest = MAX_RETRY_SCHEDULE_SECONDS * (1 + RETRY_JITTER)

    assert longest < MESSAGE_RETENTION_SECONDS
    assert RETRY_CAP_SECONDS == MAX_RETRY_STEP_SECONDS == 12 * 3600


def test_settings_are_read_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    first = get_settings()
    monkeypatch.setenv("COMFYFLEET_PREFIX", "changed")

    assert get_settings() is first


def test_every_setting_is_documented_with_its_variable() -> None:
    text = DOCS.read_text()

    for name in Settings.model_fields:
        assert f"`COMFYFLEET_{name.upper()}`" in text, name
