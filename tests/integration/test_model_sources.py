"""Model sources against moto's S3 and a loopback origin: mirror, resume, write-through, caps."""

from __future__ import annotations

import hashlib
import logging
import socket
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from comfyfleet.netguard import OutboundClient
from comfyfleet.workflow.refs import ModelRef, ref_for_url
from gpu_agent.cache import ModelCache
from gpu_agent.mirror import ModelMirror, mirror_client, transfer_config_for
from gpu_agent.origin import OriginDownloader
from gpu_agent.sources import (
    DownloadRefused,
    IntegrityMismatch,
    ModelSources,
    ModelTooLarge,
    OriginRejected,
    OriginUnavailable,
    Source,
)
from tests.origin_server import OriginServer, fake_resolver

BUCKET = "comfyfleet-models"
MiB = 1024 * 1024


def blob(size: int, seed: int = 0) -> bytes:
    """``size`` bytes that differ per seed and per position (so splices would show)."""
    block = b"".join(hashlib.sha256(f"{seed}:{i}".encode()).digest() for i in range(2048))
    return (block * (size // len(block) + 1))[:size]


def ref_at(url: str, **fields: Any) -> ModelRef:
    return replace(ref_for_url(url, "checkpoints"), **fields)


@pytest.fixture
def s3() -> Iterator[Any]:
    with mock_aws():
        client = mirror_client(region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client


@pytest.fixture
def origin() -> Iterator[OriginServer]:
    with OriginServer() as server:
        yield server


@pytest.fixture
def downloader() -> Iterator[OriginDownloader]:
    with OutboundClient(allow_loopback=True, timeout=(5, 5)) as client:
        yield OriginDownloader(client, sleep=lambda seconds: None)


@pytest.fixture
def sources(s3: Any, downloader: OriginDownloader) -> Iterator[ModelSources]:
    chain = ModelSources(downloader, ModelMirror(s3, BUCKET))
    yield chain
    chain.close()


def test_a_model_in_the_mirror_comes_from_s3(
    s3: Any, origin: OriginServer, sources: ModelSources, tmp_path: Path
) -> None:
    data = blob(20 * MiB)  # above the 8 MiB part size: a parallel ranged download
    ref = ref_at(origin.url("/m.safetensors"), size=len(data))
    s3.put_object(Bucket=BUCKET, Key=f"models/{ref.key}", Body=data)
    calls: list[str] = []
    s3.meta.events.register("before-call.s3", lambda model, **kw: calls.append(model.name))

    fetched = sources.fetch(ref, tmp_path / "m.part")

    assert fetched.source is Source.MIRROR
    assert (tmp_path / "m.part").read_bytes() == data
    assert origin.seen == []
    assert calls == ["HeadObject"] + ["GetObject"] * 3  # one HEAD, then 8 MiB ranges


def test_an_absent_mirror_object_is_none(s3: Any, tmp_path: Path) -> None:
    ref = ref_at("https://huggingface.co/o/r/resolve/main/x.safetensors")
    assert ModelMirror(s3, BUCKET).download(ref, tmp_path / "x") is None
    assert not (tmp_path / "x").exists()


def test_a_declared_hash_is_checked_on_a_mirror_copy(
    s3: Any, origin: OriginServer, sources: ModelSources, tmp_path: Path
) -> None:
    good = blob(3 * MiB, seed=1)
    url = origin.add("/m.safetensors", good)
    ref = ref_at(url, sha256=hashlib.sha256(good).hexdigest())
    s3.put_object(Bucket=BUCKET, Key=f"models/{ref.key}", Body=blob(3 * MiB, seed=2))

    fetched = sources.fetch(ref, tmp_path / "m.part")  # the bad copy is skipped

    assert fetched.source is Source.ORIGIN
    assert (tmp_path / "m.part").read_bytes() == good


def test_origin_download_resumes_after_a_dropped_connection(
    origin: OriginServer, downloader: OriginDownloader, tmp_path: Path
) -> None:
    data = blob(5 * MiB)
    url = origin.add("/m.safetensors", data, drop_after=2 * MiB + 123)
    ref = ref_at(url, sha256=hashlib.sha256(data).hexdigest(), size=len(data))

    fetched = downloader.download(ref, tmp_path / "m.part")

    assert (tmp_path / "m.part").read_bytes() == data
    assert fetched.sha256 == ref.sha256
    first, second = origin.requests_for("/m.safetensors")
    assert "Range" not in first.headers
    # It continues from the bytes on disk (a partly read chunk at the drop is re-read).
    start = int(second.headers["Range"].removeprefix("bytes=").removesuffix("-"))
    assert MiB <= start <= 2 * MiB + 123
    assert second.headers["If-Range"].startswith('"')


def test_a_server_ignoring_range_makes_the_download_restart(
    origin: OriginServer, downloader: OriginDownloader, tmp_path: Path
) -> None:
    data = blob(3 * MiB)
    url = origin.add("/m.safetensors", data, drop_after=MiB, ignore_range=True)

    fetched = downloader.download(ref_at(url), tmp_path / "m.part")

    assert (tmp_path / "m.part").read_bytes() == data
    assert fetched.sha256 == hashlib.sha256(data).hexdigest()
    assert len(origin.requests_for("/m.safetensors")) == 2


def test_server_errors_are_retried_and_client_errors_are_not(
    origin: OriginServer, downloader: OriginDownloader, tmp_path: Path
) -> None:
    url = origin.add("/flaky.safetensors", b"ok", statuses=[503, 502])
    assert downloader.download(ref_at(url), tmp_path / "a").size == 2

    with pytest.raises(OriginRejected) as caught:
        downloader.download(ref_at(origin.url("/missing.safetensors")), tmp_path / "b")
    assert caught.value.status == 404 and caught.value.permanent
    assert len(origin.requests_for("/missing.safetensors")) == 1

    url = origin.add("/down.safetensors", b"x", statuses=[503] * 10)
    with pytest.raises(OriginUnavailable, match="6 times"):
        downloader.download(ref_at(url), tmp_path / "c")
    assert not (tmp_path / "c").exists()


def test_write_through_puts_the_model_in_the_mirror_for_the_next_node(
    s3: Any, origin: OriginServer, sources: ModelSources, tmp_path: Path
) -> None:
    data = blob(2 * MiB)
    url = origin.add("/m.safetensors", data) + "?token=SECRET-TOKEN"
    ref = ref_at(url)

    assert sources.fetch(ref, tmp_path / "first").source is Source.ORIGIN
    assert sources.wait_for_uploads(timeout=30)

    head = s3.head_object(Bucket=BUCKET, Key=f"models/{ref.key}")
    assert head["ContentLength"] == len(data)
    assert head["Metadata"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert head["Metadata"]["size"] == str(len(data))
    assert "SECRET" not in head["Metadata"]["url"]
    assert head["Metadata"]["url"].endswith("/m.safetensors")
    assert list(tmp_path.iterdir()) == [tmp_path / "first"]  # the upload link is gone

    again = sources.fetch(ref, tmp_path / "second")
    assert again.source is Source.MIRROR
    assert (tmp_path / "second").read_bytes() == data
    assert len(origin.requests_for("/m.safetensors")) == 1


def test_a_failed_write_through_is_logged_not_raised(
    s3: Any,
    origin: OriginServer,
    downloader: OriginDownloader,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    chain = ModelSources(downloader, ModelMirror(s3, "no-such-bucket"))
    url = origin.add("/m.safetensors", b"weights")
    with caplog.at_level(logging.WARNING):
        assert chain.fetch(ref_at(url), tmp_path / "m").size == 7
        assert chain.wait_for_uploads(timeout=30)
    chain.close()
    assert "write-through to the mirror failed" in caplog.text


def test_an_unreachable_mirror_falls_back_to_the_origin(
    origin: OriginServer, downloader: OriginDownloader, tmp_path: Path
) -> None:
    dead = boto3.client(
        "s3",
        endpoint_url="http://127.0.0.1:9",  # discard port: connection refused
        region_name="us-east-1",
        config=boto3.session.Config(retries={"max_attempts": 1}, connect_timeout=1),
    )
    chain = ModelSources(downloader, ModelMirror(dead, BUCKET), write_through=False)
    url = origin.add("/m.safetensors", b"from origin")

    assert chain.fetch(ref_at(url), tmp_path / "m").source is Source.ORIGIN
    chain.close()


def test_the_size_cap_stops_a_download_early(origin: OriginServer, tmp_path: Path) -> None:
    with OutboundClient(allow_loopback=True) as client:
        capped = OriginDownloader(client, max_bytes=MiB, sleep=lambda seconds: None)
        declared = origin.add("/big.safetensors", blob(2 * MiB))
        with pytest.raises(ModelTooLarge, match="offers"):
            capped.download(ref_at(declared), tmp_path / "a")
        streamed = origin.add("/chunked.safetensors", blob(2 * MiB), chunked=True)
        with pytest.raises(ModelTooLarge, match="more than the cap"):
            capped.download(ref_at(streamed), tmp_path / "b")
    assert list(tmp_path.iterdir()) == []


def test_a_mirror_object_over_the_cap_is_refused(s3: Any, tmp_path: Path) -> None:
    ref = ref_at("https://huggingface.co/o/r/resolve/main/x.safetensors")
    s3.put_object(Bucket=BUCKET, Key=f"models/{ref.key}", Body=blob(2 * MiB))
    with pytest.raises(ModelTooLarge):
        ModelMirror(s3, BUCKET, max_bytes=MiB).download(ref, tmp_path / "x")


@pytest.mark.parametrize("field", ["size", "sha256"])
def test_a_mismatch_with_the_reference_discards_the_file(
    field: str, s3: Any, origin: OriginServer, sources: ModelSources, tmp_path: Path
) -> None:
    url = origin.add("/m.safetensors", blob(MiB))
    wrong = {"size": MiB + 1} if field == "size" else {"sha256": "0" * 64}
    ref = ref_at(url, **wrong)

    with pytest.raises(IntegrityMismatch):
        sources.fetch(ref, tmp_path / "m")

    assert list(tmp_path.iterdir()) == []
    sources.wait_for_uploads(timeout=30)
    assert s3.list_objects_v2(Bucket=BUCKET).get("KeyCount") == 0


def test_an_ssrf_url_is_refused_with_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, sources: ModelSources, tmp_path: Path
) -> None:
    resolver, _ = fake_resolver({"models.evil.example": ["169.254.169.254"]})
    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    ref = ref_at("https://models.evil.example/latest/meta-data/x.safetensors?token=SECRET")

    with pytest.raises(DownloadRefused) as caught:
        sources.fetch(ref, tmp_path / "m")

    message = str(caught.value)
    assert "models.evil.example" in message and "cloud metadata" in message
    assert "SECRET" not in message
    assert caught.value.permanent


def test_query_strings_never_reach_the_logs(
    origin: OriginServer,
    downloader: OriginDownloader,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = origin.add("/m.safetensors", blob(3 * MiB), drop_after=MiB) + "?token=SECRET"
    with caplog.at_level(logging.DEBUG):
        downloader.download(ref_at(url), tmp_path / "m")
        with pytest.raises(OriginRejected) as caught:
            downloader.download(ref_at(origin.url("/nope?token=SECRET")), tmp_path / "n")
    records = " ".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert "resuming" in records
    assert "SECRET" not in records and "SECRET" not in str(caught.value)


def test_s3_urls_in_the_model_bucket_are_fetched_from_s3(
    s3: Any, sources: ModelSources, tmp_path: Path
) -> None:
    s3.put_object(Bucket=BUCKET, Key="uploads/lora.safetensors", Body=b"lora")
    ref = ref_at(f"s3://{BUCKET}/uploads/lora.safetensors")
    assert sources.fetch(ref, tmp_path / "l").source is Source.ORIGIN
    assert (tmp_path / "l").read_bytes() == b"lora"
    with pytest.raises(DownloadRefused):
        sources.fetch(ref_at("s3://someone-elses-bucket/x.safetensors"), tmp_path / "x")


def test_the_on_fetched_hook_sees_each_fetch_and_cannot_break_it(
    s3: Any, origin: OriginServer, downloader: OriginDownloader, tmp_path: Path
) -> None:
    seen: list[tuple[str, int, str | None, Source]] = []

    def record(ref: ModelRef, size: int, sha256: str | None, source: Source) -> None:
        seen.append((ref.key, size, sha256, source))
        raise RuntimeError("catalogue unavailable")

    chain = ModelSources(downloader, ModelMirror(s3, BUCKET), on_fetched=record)
    ref = ref_at(origin.add("/m.safetensors", b"abc"))
    chain.fetch(ref, tmp_path / "m")
    chain.close()
    assert seen == [(ref.key, 3, hashlib.sha256(b"abc").hexdigest(), Source.ORIGIN)]


def test_two_nodes_share_a_model_through_the_mirror(
    s3: Any, origin: OriginServer, sources: ModelSources, tmp_path: Path
) -> None:
    data = blob(4 * MiB)
    ref = ref_at(origin.add("/m.safetensors", data), size=len(data))
    first = ModelCache(tmp_path / "n1" / "cache", 64 * MiB, tmp_path / "n1" / "comfy", sources)
    second = ModelCache(tmp_path / "n2" / "cache", 64 * MiB, tmp_path / "n2" / "comfy", sources)

    assert first.ensure([ref], pin="job-1") == {ref.url: ref.filename}
    sources.wait_for_uploads(timeout=30)
    second.ensure([ref], pin="job-2")

    link = tmp_path / "n2" / "comfy" / "models" / "checkpoints" / ref.filename
    assert link.read_bytes() == data
    assert len(origin.requests_for("/m.safetensors")) == 1
    assert first.report().downloaded_bytes == second.report().downloaded_bytes == len(data)


@pytest.mark.parametrize(
    ("size", "part"), [(150 * MiB, 8 * MiB), (1024 * MiB, 32 * MiB), (6144 * MiB, 64 * MiB)]
)
def test_transfer_parts_scale_with_the_object(size: int, part: int) -> None:
    config = transfer_config_for(size)
    assert config.multipart_chunksize == part
    assert config.max_concurrency == 16
