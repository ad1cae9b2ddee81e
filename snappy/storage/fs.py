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


# ---------------------------------------------------------------------------- small objects
def s3_client(storage_options: Mapping[str, str], timeout_s: float | None = 60.0, attempts: int = 5):
    """A boto3 S3 client from Lance-style storage options (endpoint, keys, region); one per caller."""
    import boto3
    from botocore.config import Config

    o = storage_options
    timeouts = {} if timeout_s is None else {"connect_timeout": min(timeout_s, 10.0), "read_timeout": timeout_s}
    return boto3.client(
        "s3", endpoint_url=o.get("aws_endpoint"), region_name=o.get("aws_region") or "us-east-1",
        aws_access_key_id=o.get("aws_access_key_id"), aws_secret_access_key=o.get("aws_secret_access_key"),
        aws_session_token=o.get("aws_session_token"),
        config=Config(retries={"max_attempts": max(1, attempts), "mode": "standard"}, **timeouts),
    )


def split_s3(uri: str) -> tuple[str, str]:
    """``("bucket", "key/inside")`` of ``s3://bucket/key/inside``."""
    bucket, _, key = normalize(uri)[len("s3://"):].partition("/")
    if not bucket:
        raise ValueError(f"{uri}: no bucket in S3 URI")
    return bucket, key


class Files:
    """Small objects (JSON) under one location, local or ``s3://``: what the lease, the published
    snapshots and the run log are made of.

    ``put_if_absent`` is the one atomic primitive: a local hard link of a complete temporary file
    (fails if the name exists), or an S3 conditional put (``If-None-Match: *``, HTTP 412 if the
    key exists). ``put`` replaces atomically (rename; a single S3 PUT).
    """

    def __init__(self, root: str, storage_options: Mapping[str, str] | S3Settings | None = None):
        self.root = normalize(root)
        self.remote = is_remote(self.root)
        self.options = lance_options(self.root, storage_options) or {}
        self._client = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_client": None}

    def _s3(self):
        if self._client is None:
            self._client = s3_client(self.options)
        return self._client

    def _key(self, name: str) -> tuple[str, str]:
        bucket, prefix = split_s3(self.root)
        parts = [p for p in (prefix.strip("/"), name.strip("/")) if p]
        return bucket, "/".join(parts)

    def _folder_key(self, folder: str) -> tuple[str, str]:
        bucket, key = self._key(folder)
        return bucket, key + "/" if key else ""

    def put_if_absent(self, name: str, data: bytes) -> bool:
        """Create ``name`` with ``data`` unless it exists; True if this call created it."""
        if self.remote:
            from botocore.exceptions import ClientError

            bucket, key = self._key(name)
            try:
                self._s3().put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
                return True
            except ClientError as e:
                if e.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict") \
                        or e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") in (409, 412):
                    return False
                raise
        path = Path(self.root, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
        tmp.write_bytes(data)
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)

    def put(self, name: str, data: bytes) -> None:
        if self.remote:
            bucket, key = self._key(name)
            self._s3().put_object(Bucket=bucket, Key=key, Body=data)
            return
        path = Path(self.root, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def get(self, name: str) -> bytes | None:
        """The object's bytes, or None if it does not exist."""
        if self.remote:
            from botocore.exceptions import ClientError

            bucket, key = self._key(name)
            try:
                return self._s3().get_object(Bucket=bucket, Key=key)["Body"].read()
            except ClientError as e:
                if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                    return None
                raise
        try:
            return Path(self.root, name).read_bytes()
        except FileNotFoundError:
            return None

    def list(self, folder: str) -> list[str]:
        """Names of the objects directly in ``folder`` (sorted; no temporary files)."""
        if self.remote:
            bucket, key = self._folder_key(folder)
            names = []
            for page in self._s3().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key, Delimiter="/"):
                names.extend(o["Key"][len(key):] for o in page.get("Contents", []))
            return sorted(n for n in names if n and not n.startswith("."))
        try:
            return sorted(n for n in os.listdir(Path(self.root, folder)) if not n.startswith("."))
        except FileNotFoundError:
            return []

    def delete(self, name: str) -> None:
        if self.remote:
            bucket, key = self._key(name)
            self._s3().delete_object(Bucket=bucket, Key=key)
            return
        Path(self.root, name).unlink(missing_ok=True)

    def delete_tree(self, folder: str) -> int:
        """Delete every object under ``folder`` (recursively); returns how many."""
        if self.remote:
            bucket, key = self._folder_key(folder)
            n = 0
            for page in self._s3().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key):
                keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
                if keys:
                    self._s3().delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
                    n += len(keys)
            return n
        import shutil

        path = Path(self.root, folder)
        if not path.exists():
            return 0
        n = sum(1 for p in path.rglob("*") if p.is_file())
        shutil.rmtree(path, ignore_errors=True)
        return n
