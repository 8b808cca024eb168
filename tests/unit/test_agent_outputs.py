"""A job's outputs: every file of ComfyUI's history with its content type, and its links."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from comfyfleet.resources import output_key, preview_key
from gpu_agent.comfy import Preview
from gpu_agent.outputs import (
    OutputPublisher,
    PreviewPublisher,
    content_type,
    link_signer,
    output_files,
)

BUCKET = "outputs-bucket"

# A history entry's outputs as ComfyUI's nodes write them: SaveImage, PreviewImage (temp),
# VHS_VideoCombine (gifs, with extra keys), SaveAudio, SaveAnimatedWEBP, a text node.
HISTORY_OUTPUTS: dict[str, Any] = {
    "9": {"images": [{"filename": "a_00001_.png", "subfolder": "job", "type": "output"}]},
    "10": {"images": [{"filename": "p_00001_.png", "subfolder": "", "type": "temp"}]},
    "11": {
        "gifs": [
            {
                "filename": "clip_00001.mp4",
                "subfolder": "job",
                "type": "output",
                "format": "video/h264-mp4",
                "frame_rate": 8.0,
            }
        ]
    },
    "12": {"audio": [{"filename": "sound_00001_.flac", "subfolder": "job", "type": "output"}]},
    "13": {
        "images": [{"filename": "anim_00001_.webp", "subfolder": "job", "type": "output"}],
        "animated": [True],
    },
    "14": {"text": ["a caption"]},
}


class FakeComfy:
    def view(self, filename: str, subfolder: str, kind: str) -> bytes:
        return f"{kind}/{subfolder}/{filename}".encode()


class RecordingS3:
    """put_object recorded; presigning by a real (offline) boto3 client."""

    def __init__(self) -> None:
        self.puts: list[dict[str, Any]] = []
        self._signer = link_signer("us-east-1")

    def put_object(self, **kwargs: Any) -> None:
        self.puts.append(kwargs)

    def generate_presigned_url(self, *args: Any, **kwargs: Any) -> str:
        url: str = self._signer.generate_presigned_url(*args, **kwargs)
        return url


def publisher(s3: RecordingS3, **kwargs: Any) -> OutputPublisher:
    return OutputPublisher(s3, BUCKET, FakeComfy(), **kwargs)  # type: ignore[arg-type]


def test_every_file_entry_is_an_output_and_temp_previews_only_when_asked() -> None:
    names = [f.filename for f in output_files(HISTORY_OUTPUTS, include_temp=False)]
    with_temp = [f.filename for f in output_files(HISTORY_OUTPUTS, include_temp=True)]

    assert names == ["a_00001_.png", "clip_00001.mp4", "sound_00001_.flac", "anim_00001_.webp"]
    assert with_temp == ["a_00001_.png", "p_00001_.png", *names[1:]]


def test_gifs_video_and_audio_are_uploaded_with_their_content_types() -> None:
    s3 = RecordingS3()
    files = output_files(HISTORY_OUTPUTS, include_temp=False)

    outputs = publisher(s3).publish("acct", "01JOB", files)

    uploaded = {put["Key"]: (put["ContentType"], put["Body"]) for put in s3.puts}
    assert uploaded == {
        output_key("acct", "01JOB", "a_00001_.png"): ("image/png", b"output/job/a_00001_.png"),
        output_key("acct", "01JOB", "clip_00001.mp4"): ("video/mp4", b"output/job/clip_00001.mp4"),
        output_key("acct", "01JOB", "sound_00001_.flac"): (
            "audio/flac",
            b"output/job/sound_00001_.flac",
        ),
        output_key("acct", "01JOB", "anim_00001_.webp"): (
            "image/webp",
            b"output/job/anim_00001_.webp",
        ),
    }
    assert {put["Bucket"] for put in s3.puts} == {BUCKET}
    kinds = {f["filename"]: f["content_type"] for f in outputs["files"]}
    assert kinds["clip_00001.mp4"] == "video/mp4" and kinds["sound_00001_.flac"] == "audio/flac"
    # "images" lists the pictures (an animated webp is one); every file is in "files".
    assert len(outputs["images"]) == 2 and len(outputs["files"]) == 4


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("x.PNG", "image/png"),
        ("x.gif", "image/gif"),
        ("x.webm", "video/webm"),
        ("x.wav", "audio/wav"),
        ("x.mp3", "audio/mpeg"),
        ("x.glb", "model/gltf-binary"),
        ("x.latent", "application/octet-stream"),
    ],
)
def test_content_types_do_not_depend_on_the_hosts_mime_table(filename: str, expected: str) -> None:
    assert content_type(filename) == expected


def test_links_use_the_cdn_domain_when_configured() -> None:
    s3 = RecordingS3()
    [file] = output_files(
        {"9": {"images": [{"filename": "my cat #1.png", "subfolder": "", "type": "output"}]}},
        include_temp=False,
    )

    outputs = publisher(s3, cdn_domain="https://d111.cloudfront.net/").publish(
        "acct", "01JOB", [file]
    )

    assert outputs["images"] == [
        "https://d111.cloudfront.net/outputs/acct/01JOB/my%20cat%20%231.png"
    ]


def test_links_are_presigned_s3_urls_without_a_cdn() -> None:
    s3 = RecordingS3()
    files = output_files(HISTORY_OUTPUTS, include_temp=False)[:1]

    [url] = publisher(s3, link_seconds=3600).publish("acct", "01JOB", files)["images"]

    parts = urlsplit(url)
    query = parse_qs(parts.query)
    assert parts.netloc == f"{BUCKET}.s3.amazonaws.com"
    assert parts.path == "/outputs/acct/01JOB/a_00001_.png"
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert query["X-Amz-Expires"] == ["3600"] and "X-Amz-Signature" in query


def test_previews_make_at_most_one_put_per_interval_to_the_latest_key() -> None:
    s3 = RecordingS3()
    now = [0.0]
    previews = PreviewPublisher(s3, BUCKET, "01JOB", interval=2.0, clock=lambda: now[0])

    for t in (0.0, 0.5, 1.9, 2.0, 2.1, 3.9, 4.5, 4.6):
        now[0] = t
        previews.offer(Preview(f"frame at {t}".encode(), "jpeg"))
    now[0] = 7.0
    previews.offer(Preview(b"png frame", "png"))

    assert [(p["Key"], p["Body"]) for p in s3.puts] == [
        (preview_key("01JOB", "jpeg"), b"frame at 0.0"),
        (preview_key("01JOB", "jpeg"), b"frame at 2.0"),
        (preview_key("01JOB", "jpeg"), b"frame at 4.5"),
        (preview_key("01JOB", "png"), b"png frame"),
    ]
    assert [p["ContentType"] for p in s3.puts] == ["image/jpeg"] * 3 + ["image/png"]
