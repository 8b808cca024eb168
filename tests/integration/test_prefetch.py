"""``python -m gpu_agent.prefetch``: an environment's [[models]] into the node's cache, against
moto's S3 and DynamoDB and a loopback origin that counts GETs."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from comfyfleet.aws import client
from comfyfleet.resources import MODEL_MIRROR_PREFIX, Provisioned
from comfyfleet.settings import Settings
from comfyfleet.store.dynamo import dynamo_stores
from comfyfleet.workflow.refs import ref_for_url
from gpu_agent import prefetch
from tests.integration.conftest import REGION
from tests.origin_server import OriginServer

BASE = b"base model weights " * 4096
LORA = b"lora weights " * 1024


@pytest.fixture
def origin() -> Iterator[OriginServer]:
    with OriginServer() as server:
        yield server


@pytest.fixture
def node(aws: Provisioned, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The agent's settings as the bootstrap gives them (its EnvironmentFile)."""
    for name, value in {
        "COMFYFLEET_CACHE_DIR": str(tmp_path / "cache"),
        "COMFYFLEET_COMFY_ROOT": str(tmp_path / "ComfyUI"),
        "COMFYFLEET_ALLOW_LOCAL_URLS": "true",
        "COMFYFLEET_ON_EC2": "false",
        "COMFYFLEET_NODE_ID": "i-0123456789abcdef0",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(name, value)
    yield tmp_path


def linked(root: Path, url: str, folder: str) -> Path:
    """Where the cache links a model into ComfyUI's folders (its name carries the key)."""
    return root / "models" / folder / ref_for_url(url, folder).filename


def environment(path: Path, *models: tuple[str, str, bytes | None]) -> Path:
    """An environment file naming ``models`` (url, folder, the bytes to check, if any)."""
    lines = ['[comfyui]\nversion = "v0.3.64"\n']
    for url, folder, body in models:
        lines.append(f'[[models]]\nurl = "{url}"\nfolder = "{folder}"\n')
        if body is not None:
            lines.append(f'sha256 = "{hashlib.sha256(body).hexdigest()}"\n')
    path.write_text("".join(lines), encoding="utf-8")
    return path


def test_models_land_in_the_cache_the_mirror_and_the_catalogue(
    node: Path, origin: OriginServer, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    base = origin.add("/sd_base.safetensors", BASE)
    lora = origin.add("/detail.safetensors", LORA)
    file = environment(node / "env.toml", (base, "checkpoints", BASE), (lora, "loras", None))

    assert prefetch.main(["--environment", str(file)]) == prefetch.EXIT_OK

    out = capsys.readouterr().out
    assert "2 of 2 models in the cache" in out
    assert linked(node / "ComfyUI", base, "checkpoints").read_bytes() == BASE
    assert linked(node / "ComfyUI", lora, "loras").read_bytes() == LORA
    key = ref_for_url(base, "checkpoints").key
    mirrored = client("s3").get_object(
        Bucket=settings.model_bucket_name, Key=f"{MODEL_MIRROR_PREFIX}{key}"
    )
    assert mirrored["Body"].read() == BASE, "written through for the next node"
    record = dynamo_stores(settings).models.get_many([key])[key]
    assert record.size == len(BASE) and record.sha256 == hashlib.sha256(BASE).hexdigest()

    # Again (a reboot): the cache has them, the origin is not asked.
    assert prefetch.main(["--environment", str(file)]) == prefetch.EXIT_OK
    assert len(origin.requests_for("/sd_base.safetensors")) == 1
    assert len(origin.requests_for("/detail.safetensors")) == 1


def test_the_next_node_fetches_from_the_mirror_not_the_origin(
    node: Path, origin: OriginServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = origin.add("/sd_base.safetensors", BASE)
    file = environment(node / "env.toml", (base, "checkpoints", BASE))
    assert prefetch.main(["--environment", str(file)]) == prefetch.EXIT_OK

    monkeypatch.setenv("COMFYFLEET_CACHE_DIR", str(tmp_path / "second-cache"))
    monkeypatch.setenv("COMFYFLEET_COMFY_ROOT", str(tmp_path / "second-ComfyUI"))
    assert prefetch.main(["--environment", str(file)]) == prefetch.EXIT_OK

    assert len(origin.requests_for("/sd_base.safetensors")) == 1
    assert linked(tmp_path / "second-ComfyUI", base, "checkpoints").read_bytes() == BASE


def test_a_model_that_cannot_be_fetched_is_reported_and_the_rest_still_come(
    node: Path, origin: OriginServer, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = origin.url("/gone.safetensors")  # the origin answers 404
    wrong = origin.add("/wrong.safetensors", LORA)
    base = origin.add("/sd_base.safetensors", BASE)
    file = environment(
        node / "env.toml",
        (missing, "checkpoints", None),
        (wrong, "loras", BASE),  # the declared hash is another file's
        (base, "checkpoints", None),
    )

    assert prefetch.main(["--environment", str(file)]) == prefetch.EXIT_SOME_FAILED

    captured = capsys.readouterr()
    assert "1 of 3 models in the cache" in captured.out
    assert captured.err.count("not fetched:") == 2
    assert linked(node / "ComfyUI", base, "checkpoints").exists()
    assert not linked(node / "ComfyUI", wrong, "loras").exists()


def test_a_bad_file_exits_2_naming_its_problems(
    node: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = node / "bad.toml"
    bad.write_text('[[models]]\nurl = "ftp://example.com/x.bin"\nfolder = "../up"\n')

    assert prefetch.main(["--environment", str(bad)]) == prefetch.EXIT_USAGE

    err = capsys.readouterr().err
    assert f"{bad} is not a valid environment" in err
    assert "models[0].url" in err and "models[0].folder" in err
    assert not (node / "cache").exists(), "nothing touched"


def test_an_environment_without_models_does_nothing(
    node: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = environment(node / "env.toml")
    assert prefetch.main(["--environment", str(file)]) == prefetch.EXIT_OK
    assert "no models to prefetch" in capsys.readouterr().out
