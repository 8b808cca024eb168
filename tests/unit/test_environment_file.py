"""The environment file: what it accepts, and the exact words of every problem it reports."""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path

import pytest

from comfyfleet.environment import (
    CustomNode,
    Environment,
    EnvironmentProblems,
    load_environment,
    parse_environment,
)
from comfyfleet.settings import Settings

EXAMPLES = Path(__file__).parents[2] / "examples"
REV = "0123456789abcdef0123456789abcdef01234567"
OTHER_REV = "fedcba9876543210fedcba9876543210fedcba98"
GIT = "https://github.com/example/ComfyUI-Example"
MODEL = "https://huggingface.co/org/repo/resolve/main/model.safetensors"
SHA = "ab" * 32


def node(name: str = "ComfyUI-Example", **fields: object) -> str:
    values = {"name": name, "git": GIT, "rev": REV, **fields}
    body = "\n".join(f"{key} = {json.dumps(value)}" for key, value in values.items())
    return f"[[custom_nodes]]\n{body}\n"


def parse(text: str, *, allow_local_urls: bool = False, default: str | None = None) -> Environment:
    return parse_environment(
        tomllib.loads(text),
        allow_local_urls=allow_local_urls,
        settings=Settings(),
        default_comfyui_version=default,
    )


def problems(text: str, *, allow_local_urls: bool = False, default: str | None = None) -> list[str]:
    with pytest.raises(EnvironmentProblems) as raised:
        parse(text, allow_local_urls=allow_local_urls, default=default)
    assert str(raised.value) == "; ".join(raised.value.problems)
    return raised.value.problems


def test_a_full_file_becomes_the_environment_it_describes() -> None:
    text = f"""
[comfyui]
version = "v0.3.64"
{node(rev=REV.upper())}pip = ["imageio-ffmpeg>=0.5", " numpy "]
[[models]]
url = "{MODEL}"
folder = "clip"
sha256 = "{SHA.upper()}"
"""
    env = parse(text)

    assert env.comfyui_version == "v0.3.64"
    assert env.custom_nodes == (
        CustomNode(name="ComfyUI-Example", git=GIT, rev=REV, pip=("imageio-ffmpeg>=0.5", "numpy")),
    )
    [model] = env.models
    assert (model.url, model.folder, model.sha256) == (MODEL, "text_encoders", SHA)
    assert model.filename.endswith(".safetensors")


def test_every_table_is_optional() -> None:
    env = parse("")

    assert (env.comfyui_version, env.custom_nodes, env.models) == (None, (), ())


def test_a_missing_comfyui_table_takes_the_callers_default() -> None:
    assert parse(node(), default="v0.3.60").comfyui_version == "v0.3.60"
    assert parse(node(), default=REV.upper()).comfyui_version == REV
    assert parse('[comfyui]\nversion = "v1.0"\n', default="v0.3.60").comfyui_version == "v1.0"


def test_a_bad_default_version_is_reported_as_the_default() -> None:
    assert problems("", default="main branch") == [
        "comfyui.version (the default): a ComfyUI tag or a full 40-hex commit is required, "
        "got 'main branch'"
    ]


def test_an_unpinned_rev_is_refused_naming_its_place_0_based() -> None:
    text = node("A") + node("B") + node("C", rev="main")

    assert problems(text) == ["custom_nodes[2].rev: a full 40-hex commit is required, got 'main'"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("colour = 1\n", "colour: unknown key (expected comfyui, custom_nodes, models)"),
        (
            '[comfyui]\nversion = "v1"\nbranch = "x"\n',
            "comfyui.branch: unknown key (expected version)",
        ),
        (
            node(branch="main"),
            "custom_nodes[0].branch: unknown key (expected name, git, rev, pip)",
        ),
        (
            f'[[models]]\nurl = "{MODEL}"\nfolder = "loras"\nfilename = "x.safetensors"\n',
            "models[0].filename: unknown key (expected url, folder, sha256)",
        ),
    ],
)
def test_unknown_keys_are_refused_at_every_level(text: str, message: str) -> None:
    assert problems(text) == [message]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('comfyui = "v1"\n', "comfyui: must be a table ([comfyui]), got string"),
        ("[comfyui]\n", "comfyui.version: missing"),
        ("[comfyui]\nversion = 3\n", "comfyui.version: must be a string, got integer"),
        ('[comfyui]\nversion = ""\n', "comfyui.version: must not be empty"),
        (
            '[comfyui]\nversion = "abc1234"\n',
            "comfyui.version: an abbreviated commit is ambiguous: give all 40 hex digits, "
            "got 'abc1234'",
        ),
        (
            '[comfyui]\nversion = "v1 beta"\n',
            "comfyui.version: a ComfyUI tag or a full 40-hex commit is required, got 'v1 beta'",
        ),
        (
            '[comfyui]\nversion = "v1..2"\n',
            "comfyui.version: a ComfyUI tag or a full 40-hex commit is required, got 'v1..2'",
        ),
    ],
)
def test_comfyui_version_problems(text: str, message: str) -> None:
    assert problems(text) == [message]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            'custom_nodes = "x"\n',
            "custom_nodes: must be an array of tables ([[custom_nodes]]), got string",
        ),
        ("custom_nodes = [1]\n", "custom_nodes[0]: must be a table, got integer"),
        (
            'models = {url = "x"}\n',
            "models: must be an array of tables ([[models]]), got table",
        ),
        ("[[custom_nodes]]\nname = 7\n", "custom_nodes[0].name: must be a string, got integer"),
        (node(rev=1), "custom_nodes[0].rev: must be a string, got integer"),
    ],
)
def test_wrong_types_are_named(text: str, message: str) -> None:
    assert message in problems(text)


def test_missing_fields_are_each_reported() -> None:
    assert problems('[[custom_nodes]]\npip = ["x"]\n') == [
        "custom_nodes[0].name: missing",
        "custom_nodes[0].git: missing",
        "custom_nodes[0].rev: missing",
    ]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://github.com/a/b", "must be an https:// URL, got 'http://github.com/a/b'"),
        ("git@github.com:a/b.git", "must be an https:// URL, got 'git@github.com:a/b.git'"),
        ("ssh://git@github.com/a/b", "must be an https:// URL, got 'ssh://git@github.com/a/b'"),
        ("https:///a/b", "an https:// URL needs a host, got 'https:///a/b'"),
        ("https://user:secret@github.com/a/b", "must not carry a user name or password"),
        (
            "https://github.com/a b",
            "must not contain whitespace or control characters, got 'https://github.com/a b'",
        ),
        (
            "file:///srv/nodes/a",
            "file:// URLs need --allow-local-urls (tests and development), "
            "got 'file:///srv/nodes/a'",
        ),
    ],
)
def test_git_urls_must_be_https(url: str, message: str) -> None:
    assert problems(node(git=url)) == [f"custom_nodes[0].git: {message}"]


def test_file_urls_are_accepted_with_allow_local_urls() -> None:
    env = parse(node(git="file:///srv/nodes/a"), allow_local_urls=True)

    assert env.custom_nodes[0].git == "file:///srv/nodes/a"
    assert problems(node(git="file://"), allow_local_urls=True) == [
        "custom_nodes[0].git: a file:// URL needs a path, got 'file://'"
    ]


NAME_RULE = (
    "not a safe folder name (letters, digits, '.', '_' and '-', starting with a letter or "
    "digit, no '..', at most 100 characters), got "
)


@pytest.mark.parametrize("name", ["../up", "a/b", ".hidden", "-dash", "a..b", "a b", "x" * 101])
def test_names_must_be_safe_folder_names(name: str) -> None:
    assert problems(node(name)) == [f"custom_nodes[0].name: {NAME_RULE}{name!r}"]


def test_a_name_comfyui_would_skip_is_refused() -> None:
    assert problems(node("Helper.disabled")) == [
        "custom_nodes[0].name: ComfyUI skips folders whose name ends in '.disabled', "
        "got 'Helper.disabled'"
    ]


def test_duplicate_names_are_refused_ignoring_case() -> None:
    text = node("Helper") + node("Other") + node("helper")

    assert problems(text) == [
        "custom_nodes[2].name: 'helper' is already the name of custom_nodes[0]"
    ]


@pytest.mark.parametrize(
    ("pip", "message"),
    [
        (
            'pip = "numpy"',
            "custom_nodes[0].pip: must be an array of requirement strings, got string",
        ),
        ("pip = [3]", "custom_nodes[0].pip[0]: must be a requirement string, got integer"),
        ('pip = ["ok", " "]', "custom_nodes[0].pip[1]: must be a requirement string, got ' '"),
        (
            'pip = ["--index-url=https://evil.example/simple"]',
            "custom_nodes[0].pip[0]: pip options are not allowed, "
            "got '--index-url=https://evil.example/simple'",
        ),
        ('pip = ["-e ."]', "custom_nodes[0].pip[0]: pip options are not allowed, got '-e .'"),
    ],
)
def test_pip_lists_hold_requirements_only(pip: str, message: str) -> None:
    assert problems(node() + pip + "\n") == [message]


def model(**fields: str) -> str:
    values = {"url": MODEL, "folder": "checkpoints", **fields}
    return "[[models]]\n" + "\n".join(f"{k} = {json.dumps(v)}" for k, v in values.items()) + "\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            model(url="https://example.com/m.safetensors"),
            "models[0].url: host 'example.com' is not on the model host allowlist "
            "(civitai.com, huggingface.co)",
        ),
        (
            model(url="http://127.0.0.1:9000/m.safetensors"),
            "models[0].url: scheme 'http' is not allowed; use https",
        ),
        ('[[models]]\nfolder = "loras"\n', "models[0].url: url must be a non-empty string"),
        (model(sha256="abc"), "models[0].sha256: sha256 must be 64 hex digits"),
        (model(folder="input"), "models[0].folder: 'input' holds job images, not models"),
    ],
)
def test_model_entries_follow_the_deployments_rules(text: str, message: str) -> None:
    assert problems(text) == [message]


def test_an_unknown_model_folder_lists_the_known_ones() -> None:
    [message] = problems(model(folder="weights"))

    assert message.startswith("models[0].folder: folder must be one of: audio_encoders, ")
    assert "checkpoints" in message and "loras" in message


def test_the_model_host_allowlist_is_the_deployments() -> None:
    text = model(url="https://models.example.org/m.safetensors")
    settings = Settings(model_hosts=["models.example.org"])

    env = parse_environment(tomllib.loads(text), settings=settings)

    assert env.models[0].url == "https://models.example.org/m.safetensors"


def test_loopback_model_urls_need_allow_local_urls() -> None:
    text = model(url="http://127.0.0.1:9000/m.safetensors")

    assert parse(text, allow_local_urls=True).models[0].folder == "checkpoints"


def test_the_same_model_twice_is_refused() -> None:
    twice = model() + model(url=MODEL + "?download=true")

    assert problems(twice) == ["models[1].url: the same file as models[0]"]


def test_a_place_counts_entries_as_the_file_does() -> None:
    text = "models = [1, {url = 'https://example.com/m.safetensors', folder = 'loras'}]\n"

    assert problems(text) == [
        "models[0]: must be a table, got integer",
        "models[1].url: host 'example.com' is not on the model host allowlist "
        "(civitai.com, huggingface.co)",
    ]


def test_every_problem_is_reported_at_once() -> None:
    text = f"""
extra = true
[comfyui]
version = "abc1234"
{node("../x", git="http://h/x", rev="main")}{node("ok")}{node("OK")}
[[models]]
url = "https://example.com/m.safetensors"
folder = "weights"
"""
    found = problems(text)

    assert [problem.split(":")[0] for problem in found] == [
        "extra",
        "comfyui.version",
        "custom_nodes[0].name",
        "custom_nodes[0].git",
        "custom_nodes[0].rev",
        "custom_nodes[2].name",
        "models[0].url",
        "models[0].folder",
    ]


def test_load_environment_reports_a_file_it_cannot_read(tmp_path: Path) -> None:
    missing = tmp_path / "absent.toml"

    with pytest.raises(EnvironmentProblems) as raised:
        load_environment(missing)

    [problem] = raised.value.problems
    assert problem.startswith(f"{missing}: cannot read: [Errno 2]")


def test_load_environment_reports_bad_toml_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "env.toml"
    path.write_text('[comfyui]\nversion = "v1\n')

    with pytest.raises(EnvironmentProblems) as raised:
        load_environment(path)

    assert raised.value.problems == [
        f"{path}: not valid TOML: Illegal character '\\n' (at line 2, column 14)"
    ]


def test_the_example_file_validates_without_local_urls() -> None:
    env = load_environment(
        EXAMPLES / "environment.toml", allow_local_urls=False, settings=Settings()
    )

    assert env.comfyui_version == "v0.3.64"
    assert [n.name for n in env.custom_nodes] == ["ComfyUI-VideoHelperSuite"]
    assert env.custom_nodes[0].pip == ("imageio-ffmpeg>=0.5",)
    assert env.models[0].folder == "checkpoints"


# -- the environment id -----------------------------------------------------------------------


def test_the_id_is_the_documented_hash_of_the_canonical_form() -> None:
    env = parse('[comfyui]\nversion = "v0.3.64"\n' + node("B") + node("A") + model(sha256=SHA))
    canonical = {
        "format": 1,
        "comfyui": {"version": "v0.3.64"},
        "custom_nodes": [
            {"name": "A", "git": GIT, "rev": REV, "pip": []},
            {"name": "B", "git": GIT, "rev": REV, "pip": []},
        ],
        "models": [{"url": MODEL, "folder": "checkpoints", "sha256": SHA}],
    }
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    assert env.canonical() == canonical
    assert env.environment_id == hashlib.sha256(text.encode()).hexdigest()[:12]


def test_layout_comments_and_order_do_not_change_the_id() -> None:
    one = parse(node("A") + node("B") + model() + model(url=MODEL.replace("model", "other")))
    two = parse(
        "# a comment\n"
        + model(url=MODEL.replace("model", "other"))
        + node("B")
        + "\n\n"
        + node("A")
        + model()
    )

    assert one.environment_id == two.environment_id


@pytest.mark.parametrize(
    "changed",
    [
        node("A", rev=OTHER_REV),
        node("A", git=GIT + "-fork"),
        node("A") + 'pip = ["numpy"]\n',
        node("A") + '[comfyui]\nversion = "v0.3.65"\n',
        node("A") + model(),
    ],
)
def test_any_value_changes_the_id(changed: str) -> None:
    assert parse(changed).environment_id != parse(node("A")).environment_id


def test_without_settings_the_processs_own_are_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "env.toml"
    path.write_text(model(url="https://models.example.org/m.safetensors"))
    monkeypatch.setenv("COMFYFLEET_MODEL_HOSTS", "models.example.org")

    assert load_environment(path).models[0].url == "https://models.example.org/m.safetensors"
