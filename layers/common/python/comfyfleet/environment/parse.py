"""Reading an environment file: TOML into :class:`Environment`, every problem reported at once.

A problem names its place the way the file is read in Python: ``custom_nodes[0]`` is the
first ``[[custom_nodes]]`` table (0-based, like a TOML array), then the key, as in
``custom_nodes[2].rev: a full 40-hex commit is required, got 'main'``.
Model entries are checked by the same rules as a job's ``models`` list (the deployment's
URL policy and ComfyUI's model folders), so the file cannot name a model a job could not.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from comfyfleet.environment.spec import COMMIT, CustomNode, Environment, EnvironmentProblems
from comfyfleet.settings import Settings, get_settings
from comfyfleet.workflow.refs import INPUT_FOLDER, ModelRef, canonical_folder, parse_manifest
from comfyfleet.workflow.urls import UrlPolicy

_TOP_KEYS = ("comfyui", "custom_nodes", "models")
_COMFYUI_KEYS = ("version",)
_NODE_KEYS = ("name", "git", "rev", "pip")
_MODEL_KEYS = ("url", "folder", "sha256")

_ABBREVIATED_COMMIT = re.compile(r"^[0-9a-fA-F]{7,39}$")
_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,99}$")
# A folder name every file system and ComfyUI's loader accept as is.
_FOLDER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_TOML_KINDS = {
    str: "string",
    int: "integer",
    float: "float",
    bool: "boolean",
    list: "array",
    dict: "table",
}


def load_environment(
    path: str | Path,
    *,
    allow_local_urls: bool = False,
    settings: Settings | None = None,
    default_comfyui_version: str | None = None,
) -> Environment:
    """Read and validate an environment file; raise EnvironmentProblems listing every problem.

    ``allow_local_urls`` (tests and development) admits ``file://`` git URLs and model URLs
    on loopback http servers. ``settings`` gives the deployment's URL rules (default: this
    process's settings). ``default_comfyui_version`` stands in for a missing ``[comfyui]``.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise EnvironmentProblems([f"{path}: cannot read: {exc}"]) from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise EnvironmentProblems([f"{path}: not valid TOML: {exc}"]) from None
    return parse_environment(
        document,
        allow_local_urls=allow_local_urls,
        settings=settings,
        default_comfyui_version=default_comfyui_version,
    )


def parse_environment(
    document: dict[str, Any],
    *,
    allow_local_urls: bool = False,
    settings: Settings | None = None,
    default_comfyui_version: str | None = None,
) -> Environment:
    """Validate a parsed environment file (see :func:`load_environment`)."""
    problems = _unknown_keys(document, _TOP_KEYS, "")
    version = _comfyui_version(document, default_comfyui_version, problems)
    nodes = _custom_nodes(document.get("custom_nodes", []), allow_local_urls, problems)
    policy = UrlPolicy.from_settings(settings or get_settings())
    models = _models(document.get("models", []), _local(policy, allow_local_urls), problems)
    if problems:
        raise EnvironmentProblems(problems)
    return Environment(comfyui_version=version, custom_nodes=nodes, models=models)


def _local(policy: UrlPolicy, allow_local_urls: bool) -> UrlPolicy:
    return UrlPolicy(
        hosts=policy.hosts, model_bucket=policy.model_bucket, allow_local=allow_local_urls
    )


def _kind(value: Any) -> str:
    return next((name for cls, name in _TOML_KINDS.items() if type(value) is cls), "date/time")


def _unknown_keys(table: dict[str, Any], known: tuple[str, ...], where: str) -> list[str]:
    expected = ", ".join(known)
    return [f"{where}{key}: unknown key (expected {expected})" for key in table if key not in known]


def _string(table: dict[str, Any], key: str, where: str, problems: list[str]) -> str | None:
    """``table[key]`` if it is a non-empty string; a problem (and None) otherwise."""
    if key not in table:
        problems.append(f"{where}.{key}: missing")
        return None
    value = table[key]
    if not isinstance(value, str):
        problems.append(f"{where}.{key}: must be a string, got {_kind(value)}")
        return None
    if not value:
        problems.append(f"{where}.{key}: must not be empty")
        return None
    return value


def version_problem(version: str) -> str | None:
    """Why ``version`` is neither a tag nor a full commit, or None."""
    if COMMIT.match(version):
        return None
    if _ABBREVIATED_COMMIT.match(version):
        return f"an abbreviated commit is ambiguous: give all 40 hex digits, got {version!r}"
    if not _TAG.match(version) or ".." in version or version.endswith((".", ".lock")):
        return f"a ComfyUI tag or a full 40-hex commit is required, got {version!r}"
    return None


def _comfyui_version(
    document: dict[str, Any], default: str | None, problems: list[str]
) -> str | None:
    if "comfyui" not in document:
        if default is None:
            return None
        problem = version_problem(default)
        if problem is not None:
            problems.append(f"comfyui.version (the default): {problem}")
        return default.lower() if COMMIT.match(default) else default
    table = document["comfyui"]
    if not isinstance(table, dict):
        problems.append(f"comfyui: must be a table ([comfyui]), got {_kind(table)}")
        return None
    problems.extend(_unknown_keys(table, _COMFYUI_KEYS, "comfyui."))
    version = _string(table, "version", "comfyui", problems)
    if version is None:
        return None
    problem = version_problem(version)
    if problem is not None:
        problems.append(f"comfyui.version: {problem}")
        return None
    return version.lower() if COMMIT.match(version) else version


def _tables(value: Any, where: str, problems: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """The entries of an array of tables with their places; problems for anything else."""
    if not isinstance(value, list):
        problems.append(f"{where}: must be an array of tables ([[{where}]]), got {_kind(value)}")
        return []
    entries = []
    for index, entry in enumerate(value):
        place = f"{where}[{index}]"
        if isinstance(entry, dict):
            entries.append((place, entry))
        else:
            problems.append(f"{place}: must be a table, got {_kind(entry)}")
    return entries


def _custom_nodes(value: Any, allow_local: bool, problems: list[str]) -> tuple[CustomNode, ...]:
    nodes: list[CustomNode] = []
    seen: dict[str, str] = {}  # folded name -> place, since some file systems ignore case
    for place, entry in _tables(value, "custom_nodes", problems):
        before = len(problems)
        problems.extend(_unknown_keys(entry, _NODE_KEYS, place + "."))
        name = _string(entry, "name", place, problems)
        if name is not None:
            problem = folder_name_problem(name)
            if problem is not None:
                problems.append(f"{place}.name: {problem}")
            elif name.casefold() in seen:
                problems.append(
                    f"{place}.name: {name!r} is already the name of {seen[name.casefold()]}"
                )
            else:
                seen[name.casefold()] = place
        git = _string(entry, "git", place, problems)
        if git is not None:
            problems.extend(f"{place}.git: {p}" for p in _git_url_problems(git, allow_local))
        rev = _string(entry, "rev", place, problems)
        if rev is not None and not COMMIT.match(rev):
            problems.append(f"{place}.rev: a full 40-hex commit is required, got {rev!r}")
        pip = _pip_list(entry.get("pip", []), place, problems)
        if len(problems) == before:
            assert name is not None and git is not None and rev is not None
            nodes.append(CustomNode(name=name, git=git, rev=rev.lower(), pip=pip))
    return tuple(nodes)


def folder_name_problem(name: str) -> str | None:
    """Why ``name`` is not a safe folder name under ``custom_nodes/``, or None."""
    if not _FOLDER_NAME.match(name) or ".." in name:
        return (
            "not a safe folder name (letters, digits, '.', '_' and '-', starting with a "
            f"letter or digit, no '..', at most 100 characters), got {name!r}"
        )
    if name.lower().endswith(".disabled"):
        return f"ComfyUI skips folders whose name ends in '.disabled', got {name!r}"
    return None


def _git_url_problems(url: str, allow_local: bool) -> list[str]:
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        return [f"not a URL ({exc}), got {url!r}"]
    if any(char.isspace() or ord(char) < 32 for char in url):
        return [f"must not contain whitespace or control characters, got {url!r}"]
    if parts.scheme == "file":
        if not allow_local:
            return [f"file:// URLs need --allow-local-urls (tests and development), got {url!r}"]
        return [] if parts.path else [f"a file:// URL needs a path, got {url!r}"]
    if parts.scheme != "https":
        return [f"must be an https:// URL, got {url!r}"]
    if not parts.hostname:
        return [f"an https:// URL needs a host, got {url!r}"]
    if "@" in parts.netloc:
        # It would be copied into the lock file and the environment id.
        return ["must not carry a user name or password"]
    return []


def _pip_list(value: Any, place: str, problems: list[str]) -> tuple[str, ...]:
    where = f"{place}.pip"
    if not isinstance(value, list):
        problems.append(f"{where}: must be an array of requirement strings, got {_kind(value)}")
        return ()
    requirements = []
    for index, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            got = repr(item) if isinstance(item, str) else _kind(item)
            problems.append(f"{where}[{index}]: must be a requirement string, got {got}")
        elif item.lstrip().startswith("-"):
            # An option here (--index-url, -e, -r) would change how every node installs.
            problems.append(f"{where}[{index}]: pip options are not allowed, got {item!r}")
        else:
            requirements.append(item.strip())
    return tuple(requirements)


def _models(value: Any, policy: UrlPolicy, problems: list[str]) -> tuple[ModelRef, ...]:
    refs: list[ModelRef] = []
    first: dict[tuple[str, str], str] = {}  # (folder, cache key) -> place
    for place, entry in _tables(value, "models", problems):
        problems.extend(_unknown_keys(entry, _MODEL_KEYS, place + "."))
        folder = entry.get("folder")
        if isinstance(folder, str) and canonical_folder(folder) == INPUT_FOLDER:
            problems.append(f"{place}.folder: {INPUT_FOLDER!r} holds job images, not models")
            continue
        known = {key: entry[key] for key in _MODEL_KEYS if key in entry}
        # One entry at a time, so that its errors (named models[0]) map to this place.
        parsed, errors = parse_manifest([known], policy)
        for error in errors:
            where = (error.input or "models[0]").replace("models[0]", place, 1)
            problems.append(f"{where}: {error.message}")
        for ref in parsed:
            if (ref.folder, ref.key) in first:
                problems.append(f"{place}.url: the same file as {first[(ref.folder, ref.key)]}")
            else:
                first[(ref.folder, ref.key)] = place
                refs.append(ref)
    return tuple(refs)
