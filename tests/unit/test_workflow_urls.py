"""URL identity (normalisation, keys), the URL policy, and local file names."""

from __future__ import annotations

import hashlib

import pytest

from comfyfleet.settings import Settings
from comfyfleet.workflow.urls import (
    UrlNotAllowed,
    UrlPolicy,
    derive_filename,
    model_key,
    normalise_url,
    unsafe_name_reason,
)

HF = "https://huggingface.co/org/repo/resolve/main/model.safetensors"


@pytest.mark.parametrize(
    "spelling",
    [
        HF,
        "HTTPS://HuggingFace.CO/org/repo/resolve/main/model.safetensors",
        "https://huggingface.co:443/org/repo/resolve/main/model.safetensors",
        "https://huggingface.co/org/repo/blob/main/model.safetensors",
        "https://huggingface.co/org/repo/resolve/main/model.safetensors?download=true",
        "https://huggingface.co/org/repo/resolve/main/model.safetensors#section",
        "https://huggingface.co./org/repo/resolve/main/model.safetensors",
    ],
)
def test_spellings_of_one_file_share_a_key(spelling: str) -> None:
    assert normalise_url(spelling) == HF
    assert model_key(spelling) == hashlib.sha256(HF.encode()).hexdigest()


def test_queries_that_select_content_are_kept_and_ordered() -> None:
    a = "https://civitai.com/api/download/models/1?type=Model&format=SafeTensor"
    b = "https://civitai.com/api/download/models/1?format=SafeTensor&type=Model&token=secret"

    assert model_key(a) == model_key(b)
    assert "secret" not in normalise_url(b)
    assert model_key(a) != model_key("https://civitai.com/api/download/models/1?type=VAE")


def test_different_files_have_different_keys() -> None:
    assert model_key(HF) != model_key(HF.replace("main", "v2"))
    assert model_key(HF) != model_key(HF.replace("/org/", "/ORG/"))  # paths are case-sensitive


def test_a_dataset_blob_url_is_normalised_too() -> None:
    url = "https://huggingface.co/datasets/org/set/blob/main/a.png"
    assert normalise_url(url) == "https://huggingface.co/datasets/org/set/resolve/main/a.png"


def test_normalise_never_raises_on_garbage() -> None:
    for junk in ["https://[::1", "", "://", "https://huggingface.co:99999/x"]:
        normalise_url(junk)
        model_key(junk)


@pytest.fixture
def policy(settings: Settings) -> UrlPolicy:
    return UrlPolicy.from_settings(settings)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://huggingface.co/x", "scheme"),
        ("ftp://huggingface.co/x", "scheme"),
        ("https://example.com/x", "allowlist"),
        ("https://user@huggingface.co/x", "user name"),
        ("https://127.0.0.1/x", "IP address"),
        ("https://[fd00:ec2::254]/x", "IP address"),
        ("https://0x7f000001/x", "IP address"),
        ("https://127.1/x", "IP address"),
        ("https://huggingface.co:22/x", "port"),
        ("https://huggingface.co:notaport/x", "parsed"),
        ("https:///x", "no host"),
        ("https://hugging_face.co/x", "valid DNS"),
        ("https://huggingface.co/" + "a" * 2100, "longer"),
        ("https://huggingface.co/a\nb", "control"),
        ("s3://other-bucket/x", "model bucket"),
    ],
)
def test_policy_refuses_with_a_reason(policy: UrlPolicy, url: str, reason: str) -> None:
    with pytest.raises(UrlNotAllowed, match=reason):
        policy.check(url)


def test_s3_urls_must_name_an_object_in_the_model_bucket(policy: UrlPolicy) -> None:
    policy.check(f"s3://{policy.model_bucket}/models/x.safetensors")
    with pytest.raises(UrlNotAllowed):
        policy.check(f"s3://{policy.model_bucket}/")


def test_local_urls_only_when_the_dev_stack_allows_them(settings: Settings) -> None:
    url = "http://127.0.0.1:8765/model.safetensors"
    with pytest.raises(UrlNotAllowed):
        UrlPolicy.from_settings(settings).check(url)

    local = UrlPolicy.from_settings(settings.model_copy(update={"allow_local_urls": True}))
    local.check(url)
    local.check("http://localhost:9/x.png")
    with pytest.raises(UrlNotAllowed):
        local.check("http://10.1.2.3/x")  # private is still private


@pytest.mark.parametrize(
    ("url", "folder", "expected"),
    [
        (HF, "checkpoints", "model-{k}.safetensors"),
        ("https://civitai.com/api/download/models/123", "loras", "123-{k}.safetensors"),
        (
            "https://huggingface.co/a/b/resolve/main/we%20ird%2F..name.ckpt",
            "checkpoints",
            "we_ird_..name-{k}.ckpt",
        ),
        ("https://huggingface.co/a/b/resolve/main/cat.JPG", "input", "cat-{k}.jpg"),
        ("https://huggingface.co/a/b/resolve/main/cat", "input", "cat-{k}.png"),
        ("https://huggingface.co/", "vae", "file-{k}.safetensors"),
    ],
)
def test_derived_file_names_are_readable_unique_and_never_paths(
    url: str, folder: str, expected: str
) -> None:
    key = model_key(url)
    name = derive_filename(url, folder, key)

    assert name == expected.format(k=key[:12])
    assert unsafe_name_reason(name, allow_subfolders=False) is None


@pytest.mark.parametrize(
    "name", ["..", "../x", "a/../b", "/etc/passwd", "C:\\x", "a\\b", "a//b", "./a", "x\x00y"]
)
def test_unsafe_names(name: str) -> None:
    assert unsafe_name_reason(name) is not None


@pytest.mark.parametrize("name", ["model.safetensors", "sd15/model v2.safetensors", "a..b.png"])
def test_safe_names(name: str) -> None:
    assert unsafe_name_reason(name) is None
