"""One filesystem layer for local paths and ``s3://`` URIs.

Every index and source location goes through here, so callers never branch on the scheme:

- :func:`join` builds child URIs (``/a/b`` + ``pages.lance``; ``s3://bkt/pre`` + ``pages.lance``);
- :func:`lance_options` gives Lance/LanceDB ``storage_options`` (S3 endpoint, keys, ``allow_http``
  for a local S3 such as moto on 127.0.0.1), from explicit settings or the usual ``AWS_*`` env vars;
- :func:`filesystem` gives the matching ``pyarrow.fs.FileSystem`` and the path inside it (what Ray
  Data and pyarrow readers take), :func:`list_files` / :func:`read_bytes` / :func:`write_bytes`
  use it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping
from urllib.parse import urlparse

import pyarrow.fs as pafs

REMOTE_SCHEMES = ("s3",)

# Lance storage option keys (object_store names) <- environment variables.
_ENV_KEYS = {
    "aws_access_key_id": ("AWS_ACCESS_KEY_ID",),
    "aws_secret_access_key": ("AWS_SECRET_ACCESS_KEY",),
    "aws_session_token": ("AWS_SESSION_TOKEN",),
    "aws_region": ("AWS_REGION", "AWS_DEFAULT_REGION"),
    "aws_endpoint": ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ENDPOINT"),
}


def scheme(uri: str | os.PathLike) -> str:
    """``"s3"`` for ``s3://...``, ``""`` for a local path (``file://`` is local too)."""
    s = str(uri)
    if "://" not in s:
        return ""
    sch = urlparse(s).scheme.lower()
    if sch == "file":
        return ""
    if sch not in REMOTE_SCHEMES:
        raise ValueError(f"{s}: unsupported URI scheme {sch!r}; use a local path or s3://bucket/prefix")
    return sch


def is_remote(uri: str | os.PathLike) -> bool:
    return scheme(uri) != ""


def normalize(uri: str | os.PathLike) -> str:
    """Absolute local path (``file://`` stripped, ``~`` expanded) or the remote URI without a trailing ``/``."""
    s = str(uri)
    if is_remote(s):
        return s.rstrip("/")
    if s.startswith("file://"):
        s = s[len("file://"):]
    return str(Path(s).expanduser().resolve())


def join(base: str | os.PathLike, *parts: str) -> str:
    base = normalize(base)
    if is_remote(base):
        return "/".join([base, *(p.strip("/") for p in parts)])
    return str(Path(base, *parts))


def basename(uri: str) -> str:
    return str(uri).rstrip("/").rsplit("/", 1)[-1]


@dataclass(frozen=True)
class S3Settings:
    """Explicit S3 settings; unset fields fall back to the ``AWS_*`` environment."""

    endpoint: str | None = None  # e.g. "http://127.0.0.1:9000" for a local S3
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None
    allow_http: bool | None = None  # default: True when the endpoint is http://

    def storage_options(self) -> dict[str, str]:
        opts = {
            "aws_endpoint": self.endpoint, "aws_region": self.region,
            "aws_access_key_id": self.access_key_id, "aws_secret_access_key": self.secret_access_key,
            "aws_session_token": self.session_token,
        }
        out = {k: v for k, v in opts.items() if v}
        if self.allow_http is not None:
            out["allow_http"] = "true" if self.allow_http else "false"
        return out


def lance_options(uri: str | os.PathLike, storage_options: Mapping[str, str] | S3Settings | None = None,
                  env: Mapping[str, str] | None = None) -> dict[str, str] | None:
    """Lance/LanceDB ``storage_options`` for ``uri``: None for local paths.

    For ``s3://`` the explicit options win over the environment; ``allow_http`` is set when the
    endpoint is plain http (a local S3), since Lance refuses http endpoints otherwise.
    """
    if not is_remote(uri):
        return dict(storage_options) if isinstance(storage_options, Mapping) and storage_options else None
    env = os.environ if env is None else env
    given = storage_options.storage_options() if isinstance(storage_options, S3Settings) else dict(storage_options or {})
    opts: dict[str, str] = {}
    for key, names in _ENV_KEYS.items():
        val = next((env[n] for n in names if env.get(n)), None)
        if val:
            opts[key] = val
    opts.update({k: str(v) for k, v in given.items() if v is not None})
    if "endpoint" in opts and "aws_endpoint" not in opts:  # accept the short spelling
        opts["aws_endpoint"] = opts.pop("endpoint")
    if opts.get("aws_endpoint", "").startswith("http://"):
        opts.setdefault("allow_http", "true")
    return opts


def filesystem(uri: str | os.PathLike,
               storage_options: Mapping[str, str] | S3Settings | None = None) -> tuple[pafs.FileSystem, str]:
    """``(pyarrow filesystem, path inside it)`` for ``uri``; S3 paths are ``bucket/key`` (no scheme)."""
    if not is_remote(uri):
        return pafs.LocalFileSystem(), normalize(uri)
    opts = lance_options(uri, storage_options) or {}
    kwargs: dict = {}
    if opts.get("aws_access_key_id"):
        kwargs["access_key"] = opts["aws_access_key_id"]
        kwargs["secret_key"] = opts.get("aws_secret_access_key")
    if opts.get("aws_session_token"):
        kwargs["session_token"] = opts["aws_session_token"]
    if opts.get("aws_region"):
        kwargs["region"] = opts["aws_region"]
    endpoint = opts.get("aws_endpoint")
    if endpoint:
        parsed = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
        kwargs["endpoint_override"] = parsed.netloc
        kwargs["scheme"] = parsed.scheme
        kwargs["allow_bucket_creation"] = True
    return pafs.S3FileSystem(**kwargs), normalize(uri)[len("s3://"):]


def to_uri(fs_path: str, like: str) -> str:
    """Turn a path returned by a pyarrow filesystem back into a URI of ``like``'s scheme."""
    return f"s3://{fs_path.lstrip('/')}" if is_remote(like) else fs_path


@dataclass(frozen=True)
class FileEntry:
    uri: str
    size: int


def list_files(uri: str | os.PathLike, suffixes: Iterable[str] | None = None,
               storage_options: Mapping[str, str] | S3Settings | None = None) -> list[FileEntry]:
    """Files under ``uri`` (recursive; ``uri`` may itself be a file), sorted, with sizes.

    ``suffixes`` (e.g. ``{".pdf", ".png"}``) filters case-insensitively; hidden files are skipped.
    """
    fs, path = filesystem(uri, storage_options)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"{uri}: no such file or folder")
    if info.type == pafs.FileType.File:
        infos = [info]
    else:
        infos = [i for i in fs.get_file_info(pafs.FileSelector(path, recursive=True))
                 if i.type == pafs.FileType.File]
    wanted = {s.lower() for s in suffixes} if suffixes is not None else None
    out = []
    for i in infos:
        if i.base_name.startswith("."):
            continue
        if wanted is not None and Path(i.base_name).suffix.lower() not in wanted:
            continue
        out.append(FileEntry(to_uri(i.path, str(uri)), int(i.size or 0)))
    return sorted(out, key=lambda e: e.uri)


def read_bytes(uri: str | os.PathLike, storage_options: Mapping[str, str] | S3Settings | None = None) -> bytes:
    fs, path = filesystem(uri, storage_options)
    try:
        with fs.open_input_stream(path) as f:
            return f.read()
    except (FileNotFoundError, OSError) as e:
        raise FileNotFoundError(f"{uri}: cannot read ({e})") from e


def write_bytes(uri: str | os.PathLike, data: bytes,
                storage_options: Mapping[str, str] | S3Settings | None = None) -> None:
    fs, path = filesystem(uri, storage_options)
    if not is_remote(uri):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    with fs.open_output_stream(path) as f:
        f.write(data)


def exists(uri: str | os.PathLike, storage_options: Mapping[str, str] | S3Settings | None = None) -> bool:
    fs, path = filesystem(uri, storage_options)
    return fs.get_file_info(path).type != pafs.FileType.NotFound
