"""Evaluation datasets: questions with ground-truth boxes on one or more evidence pages.

Loaders:
- :func:`load_bbox_docvqa`: the BBox-DocVQA layout (``benchmark_v2.jsonl`` with ``query``,
  ``answer``, ``doc_name``, 1-based ``evidence_page`` list, per-page ``bbox`` lists,
  ``category``; page images ``<category>/<doc>/<doc>_<page>.png``), from a local folder or an
  ``s3://bucket/prefix``. Sample ids are the 0-based line numbers, as in the paper's runs.
- :func:`load_jsonl`: a generic format so users can bring their own set, one JSON object a line::

      {"id": "q1", "query": "...", "image": "pages/a.png", "boxes": [[x0,y0,x1,y1], ...],
       "mode": "all", "category": "forms"}
      {"id": "q2", "query": "...", "pages": [{"image": "b_1.png", "boxes": [...]},
                                             {"image": "b_2.png", "boxes": [...]}]}

  ``mode`` "all" (default) scores every box; "any" scores the best-found box. Relative image
  paths are resolved against the JSONL's folder (or its s3 prefix).
- :func:`load_hf`: the Hugging Face ``datasets`` id (only where ``datasets`` is installed and
  the network allows).
"""
from __future__ import annotations

import io
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

Mode = Literal["all", "any"]
BBOX_DOCVQA_ANNOTATIONS = ("benchmark_v2.jsonl", "data/benchmark_v2.jsonl", "benchmark.jsonl")
BBOX_DOCVQA_HF_ID = "Yuwh07/BBox_DocVQA_Bench"


class DatasetError(ValueError):
    """A dataset that cannot be read; the message names the file (and line) and the reason."""

    def __init__(self, source: str, reason: str):
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


@dataclass
class EvidencePage:
    page: int  # 1-based page number in its document
    image: Any  # local path / s3:// URI (str), a PIL image, or None when not available
    gt_boxes: np.ndarray  # [G, 4] page pixels


@dataclass
class EvalSample:
    sample_id: str
    query: str
    pages: list[EvidencePage]
    category: str = ""
    doc_name: str = ""
    answer: str = ""
    mode: Mode = "all"
    extra: dict = field(default_factory=dict)

    @property
    def multi_page(self) -> bool:
        return len(self.pages) > 1

    @property
    def gt_boxes(self) -> np.ndarray:
        """``[G, 4]`` GT boxes of all evidence pages, in page order (the paper's ``gt_bboxes``)."""
        return np.concatenate([p.gt_boxes for p in self.pages], axis=0) if self.pages else np.zeros((0, 4))


# ------------------------------------------------------------------ storage


def is_s3(uri: str) -> bool:
    return isinstance(uri, str) and uri.startswith("s3://")


def _split_s3(uri: str) -> tuple[str, str]:
    bucket, _, key = uri[len("s3://"):].partition("/")
    if not bucket:
        raise DatasetError(uri, "not an s3://bucket/key URI")
    return bucket, key


def s3_client(endpoint_url: str | None = None):
    """A boto3 S3 client (``AWS_ENDPOINT_URL`` / ``SNAPPY_S3_ENDPOINT`` name a non-AWS endpoint)."""
    import boto3

    endpoint_url = endpoint_url or os.environ.get("SNAPPY_S3_ENDPOINT") or os.environ.get("AWS_ENDPOINT_URL")
    return boto3.client("s3", endpoint_url=endpoint_url)


def read_bytes(uri: str, client=None) -> bytes:
    """Bytes of a local file or an ``s3://`` object; DatasetError naming it on failure."""
    if is_s3(uri):
        bucket, key = _split_s3(uri)
        client = client or s3_client()
        try:
            return client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except Exception as e:  # botocore ClientError / NoCredentialsError / EndpointConnectionError
            raise DatasetError(uri, f"cannot read S3 object ({e})") from e
    try:
        return Path(uri).read_bytes()
    except OSError as e:
        raise DatasetError(str(uri), f"cannot read file ({e.strerror or e})") from e


def exists(uri: str, client=None) -> bool:
    """Whether a local file or ``s3://`` object exists; DatasetError when S3 cannot say (no
    credentials, access denied, no endpoint): that is not "does not exist"."""
    if is_s3(uri):
        bucket, key = _split_s3(uri)
        client = client or s3_client()
        try:
            client.head_object(Bucket=bucket, Key=key)
            return True
        except Exception as e:  # botocore ClientError / NoCredentialsError / EndpointConnectionError
            code = str(getattr(e, "response", {}).get("Error", {}).get("Code", ""))
            if code in ("404", "NoSuchKey", "NotFound"):
                return False
            raise DatasetError(uri, f"cannot look up S3 object ({e})") from e
    return Path(uri).exists()


def join(base: str, rel: str) -> str:
    if is_s3(rel) or os.path.isabs(rel):
        return rel
    if is_s3(base):
        return base.rstrip("/") + "/" + rel.lstrip("/")
    return str(Path(base) / rel)


def open_image(ref: Any, client=None) -> Image.Image:
    """RGB image of an evidence page (path, s3 URI or PIL image)."""
    if isinstance(ref, Image.Image):
        return ref.convert("RGB")
    if ref is None:
        raise DatasetError("<page>", "this sample carries no page image")
    data = read_bytes(str(ref), client)
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except Exception as e:
        raise DatasetError(str(ref), f"not a readable image ({e})") from e
    return img.convert("RGB")


def iter_jsonl(text: str, source: str, skip_bad: bool = False) -> Iterator[tuple[int, dict]]:
    """``(0-based line number, object)`` for each non-blank line of JSON-lines ``text``. A line that
    is not a JSON object is a DatasetError naming ``source:line``, or (``skip_bad``: a run's own
    file, whose last line an interrupted run may have cut) skipped with a warning."""
    for i, line in enumerate(text.splitlines()):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            if not isinstance(rec, dict):
                raise ValueError("a line must be a JSON object")
        except (json.JSONDecodeError, ValueError) as e:
            reason = f"invalid JSON ({e.msg})" if isinstance(e, json.JSONDecodeError) else str(e)
            if skip_bad:
                log.warning("%s:%d: skipping a bad line (%s; an interrupted run?)", source, i + 1, reason)
                continue
            raise DatasetError(f"{source}:{i + 1}", reason) from e
        yield i, rec


def _iter_jsonl(uri: str, client=None) -> Iterator[tuple[int, dict]]:
    return iter_jsonl(read_bytes(uri, client).decode("utf-8"), uri)


def _boxes(value: Any, where: str) -> np.ndarray:
    try:
        a = np.asarray(value, dtype=np.float64)
        if a.size == 0:
            return np.zeros((0, 4))
        if a.ndim != 2 or a.shape[1] != 4:
            raise ValueError(f"shape {a.shape}")
    except (ValueError, TypeError) as e:
        raise DatasetError(where, f"boxes must be a list of [x0, y0, x1, y1] ({e})") from e
    if not np.isfinite(a).all() or (a[:, 2] < a[:, 0]).any() or (a[:, 3] < a[:, 1]).any():
        raise DatasetError(where, f"invalid box (need x0<=x1, y0<=y1): {a.tolist()}")
    return a


# ------------------------------------------------------------------ BBox-DocVQA


def bbox_docvqa_image(root: str, category: str, doc: str, page: int) -> str:
    return join(root, f"{category}/{doc}/{doc}_{page}.png")


def _find_annotations(root: str, client=None) -> str:
    for name in BBOX_DOCVQA_ANNOTATIONS:
        uri = join(root, name)
        if exists(uri, client):
            return uri
    if not is_s3(root):
        found = sorted(Path(root).glob("*.jsonl"))
        if len(found) == 1:
            return str(found[0])
    raise DatasetError(root, f"no BBox-DocVQA annotation file (looked for {', '.join(BBOX_DOCVQA_ANNOTATIONS)})")


def parse_bbox_docvqa_record(rec: dict, index: int, root: str | None, where: str) -> EvalSample:
    missing = [k for k in ("query", "doc_name", "evidence_page", "bbox") if k not in rec]
    if missing:
        raise DatasetError(where, f"missing field(s) {missing}")
    pages_no, bboxes = rec["evidence_page"], rec["bbox"]
    if not isinstance(pages_no, list) or not isinstance(bboxes, list) or len(pages_no) != len(bboxes):
        raise DatasetError(where, f"evidence_page ({pages_no!r}) and bbox must be lists of equal length")
    category, doc = str(rec.get("category", "")), str(rec["doc_name"])
    pages = []
    for p, b in zip(pages_no, bboxes):
        p = int(p)
        img = bbox_docvqa_image(root, category, doc, p) if root is not None else None
        pages.append(EvidencePage(page=p, image=img, gt_boxes=_boxes(b, where)))
    return EvalSample(sample_id=str(index), query=str(rec["query"]), pages=pages, category=category,
                      doc_name=doc, answer=str(rec.get("answer", "")), mode="all",
                      extra={"subimg_type": rec.get("subimg_tpye", rec.get("subimg_type"))})


def load_bbox_docvqa(root: str, annotations: str | None = None, client=None) -> list[EvalSample]:
    """BBox-DocVQA samples from a folder / s3 prefix (``annotations`` overrides the JSONL path;
    if ``root`` is the JSONL itself its folder is taken as the image root)."""
    root = str(root)
    if root.endswith(".jsonl") and annotations is None:
        annotations = root
        root = root.rsplit("/", 1)[0] if is_s3(root) else str(Path(root).parent)
    client = client or (s3_client() if is_s3(root) or is_s3(annotations or "") else None)
    ann = annotations or _find_annotations(root, client)
    return [parse_bbox_docvqa_record(rec, i, root, f"{ann}:{i + 1}") for i, rec in _iter_jsonl(ann, client)]


# ------------------------------------------------------------------ generic JSONL


def load_jsonl(path: str, client=None) -> list[EvalSample]:
    """Samples in the generic format (see the module docstring)."""
    path = str(path)
    client = client or (s3_client() if is_s3(path) else None)
    base = path.rsplit("/", 1)[0] if is_s3(path) else str(Path(path).parent)
    out, seen = [], set()
    for i, rec in _iter_jsonl(path, client):
        where = f"{path}:{i + 1}"
        if "query" not in rec:
            raise DatasetError(where, "missing field 'query'")
        if "pages" in rec:
            specs = rec["pages"]
            if not isinstance(specs, list) or not specs:
                raise DatasetError(where, "'pages' must be a non-empty list")
        elif "image" in rec:
            specs = [{"image": rec["image"], "boxes": rec.get("boxes", []), "page": rec.get("page", 1)}]
        else:
            raise DatasetError(where, "need 'image' (+ 'boxes') or 'pages'")
        pages = []
        for k, spec in enumerate(specs):
            if not isinstance(spec, dict) or "image" not in spec:
                raise DatasetError(where, f"page {k + 1}: need an 'image'")
            pages.append(EvidencePage(page=int(spec.get("page", k + 1)), image=join(base, str(spec["image"])),
                                      gt_boxes=_boxes(spec.get("boxes", []), where)))
        if all(len(p.gt_boxes) == 0 for p in pages):
            raise DatasetError(where, "no ground-truth boxes")
        mode = rec.get("mode", "all")
        if mode not in ("all", "any"):
            raise DatasetError(where, f"mode must be 'all' or 'any', not {mode!r}")
        sid = str(rec.get("id", i))
        if sid in seen:
            raise DatasetError(where, f"duplicate id {sid!r}")
        seen.add(sid)
        out.append(EvalSample(sample_id=sid, query=str(rec["query"]), pages=pages,
                              category=str(rec.get("category", "")), doc_name=str(rec.get("doc", "")),
                              answer=str(rec.get("answer", "")), mode=mode))
    return out


# ------------------------------------------------------------------ Hugging Face


def load_hf(dataset_id: str = BBOX_DOCVQA_HF_ID, split: str = "train") -> list[EvalSample]:
    """A BBox-DocVQA-style Hugging Face dataset (needs ``datasets`` and network access).

    Rows need the BBox-DocVQA fields; page images come from an ``image``/``images`` column
    (one image per evidence page) when present.
    """
    try:
        import datasets  # noqa: F401
    except ImportError as e:
        raise DatasetError(dataset_id, "the Hugging Face `datasets` package is not installed; "
                                       "download the dataset and pass its folder instead") from e
    try:
        ds = datasets.load_dataset(dataset_id, split=split)
    except Exception as e:
        raise DatasetError(dataset_id, f"cannot load from the Hugging Face hub ({e})") from e
    out = []
    for i, rec in enumerate(ds):
        s = parse_bbox_docvqa_record(rec, i, None, f"{dataset_id}[{i}]")
        imgs = rec.get("images", rec.get("image"))
        imgs = imgs if isinstance(imgs, list) else [imgs]
        for p, img in zip(s.pages, imgs):
            p.image = img
        out.append(s)
    return out


def load_dataset(spec: str, fmt: str = "auto", annotations: str | None = None) -> list[EvalSample]:
    """Dispatch: ``fmt`` "bbox-docvqa" | "jsonl" | "hf" | "auto" (a ``.jsonl`` whose first record
    has ``evidence_page`` is BBox-DocVQA; another ``.jsonl`` is generic; ``hf:ID`` is the hub)."""
    if fmt == "hf" or spec.startswith("hf:"):
        return load_hf(spec[3:] if spec.startswith("hf:") else spec)
    if fmt == "auto":
        if spec.endswith(".jsonl"):
            first = next(_iter_jsonl(spec), (0, {}))[1]
            fmt = "bbox-docvqa" if "evidence_page" in first else "jsonl"
        else:
            fmt = "bbox-docvqa"
    if fmt == "bbox-docvqa":
        return load_bbox_docvqa(spec, annotations)
    if fmt == "jsonl":
        return load_jsonl(spec)
    raise DatasetError(spec, f"unknown dataset format {fmt!r} (bbox-docvqa, jsonl, hf, auto)")
