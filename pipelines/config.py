"""Typed settings of an indexing run, and the command-line options that set them.

``python -m pipelines.index`` (argparse) and ``snappy index`` (typer) offer the same options, with
the defaults of :class:`IndexConfig` and the help of :data:`OPTIONS`; both build the config with
:meth:`IndexConfig.from_options`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Mapping, NamedTuple, get_args, get_type_hints

from snappy.candidates.settings import CandidateSettings
from snappy.storage.fs import S3Settings

TEXT_LAYER_MODES = ("auto", "off", "only")  # snappy.documents.textlayer.MODES (not imported here: the CLI starts fast)


@dataclass(frozen=True)
class IndexConfig:
    source: str  # local folder/file or s3://bucket/prefix
    index: str  # local folder or s3://bucket/prefix holding the Lance tables

    # What pages become (part of IndexSettings: a change re-indexes every document)
    encoder: str = "lexical"  # lexical | null | tiny[:family] | colqwen2.5 | <hf id or folder>
    ocr: str = "paddle"  # paddle (production default) | rapid | tesseract | none
    dpi: float = 150.0
    text_layer: str = "auto"  # auto | off | only: PDF text layer regions; OCR only where pixels hide the text

    # Limits
    max_pages: int | None = 2000  # per document; more -> a failed row
    max_pixels: int | None = 40_000_000  # per rendered page; more -> a failed row
    max_bytes: int | None = 1 << 30  # per document file; more -> a failed row, nothing read
    max_in_memory: int = 64 << 20  # larger documents are rendered from a file, never held in memory
    read_timeout_s: float | None = 600.0  # reading + hashing one document (hard: the worker is replaced)
    page_timeout_s: float | None = 300.0  # rendering / OCR / embedding one page (hard, as above)
    max_deaths: int = 3  # a page or document that kills its worker this often fails instead
    limit: int | None = None  # read at most this many documents this run (the rest: next run)
    image_quality: int = 85  # JPEG quality of the stored page images

    # Incremental behaviour
    incremental: bool = True  # skip documents whose fingerprint (or content hash) and settings are unchanged
    retry_failed: bool = False  # re-try unchanged documents that failed for a reason of their own
    max_attempts: int = 3  # transient failures in a row before a document waits for a change
    prune: bool = False  # delete documents that are no longer in the source

    # Commits: what finished is committed at least this often, so a crash loses at most one interval
    commit_every_docs: int = 2000
    commit_every_s: float = 600.0

    # One writer at a time (snappy/storage/lease.py)
    lease_wait_s: float = 0.0  # another run holds the index: wait this long, then exit naming it
    lease_ttl_s: float = 300.0  # a crashed run's lease lapses after this (same host: at once)

    # The search's candidate stage (snappy/candidates/maintain.py): codebook once the index is big enough
    candidates: CandidateSettings = field(default_factory=CandidateSettings)

    # Housekeeping after the run (snappy/storage/housekeeping.py)
    housekeeping: bool = True
    retain_s: float = 3600.0  # old table versions stay readable this long (readers refresh more often)

    # Stage resources. Actor pools reserve their CPUs for the whole run: keep
    # ocr_actors*ocr_num_cpus + embed_actors*embed_num_cpus below the cluster's CPUs.
    # Task stages (read + render; embedding with a weight-free encoder; writing) ask for the same
    # resources, so Ray Data fuses adjacent ones into one task; their memory request keeps them
    # from being fused into an actor stage (rendering scales with CPUs, not with OCR/GPU actors).
    task_num_cpus: float = 0.5  # per task (tasks scale with free CPUs; 0.5: two per core)
    task_memory: int = 512 << 20  # bytes reserved per task (a 150-dpi page is ~6 MB of pixels)
    ocr_actors: int = 1  # most OCR actors; the pool starts at ocr_min_actors and grows while OCR work waits
    ocr_min_actors: int = 1
    ocr_num_cpus: float = 1.0
    ocr_batch_size: int = 4  # pages per OCR call
    embed_actors: int = 1
    embed_num_gpus: float | None = None  # None: 1 if the cluster has GPUs, else 0 (CPU)
    embed_num_cpus: float | None = None  # None: 0.25 (the actor's real use is its own; this is only packing)
    embed_batch_size: int = 8  # pages per encoder call
    write_rows: int = 64  # most pages per Lance write task, i.e. per fragment before compaction (see write_batch_rows)
    block_bytes: int = 8 * 2**20  # Ray Data block target: ~1 page of 150-dpi pixels (small blocks never stall on budgets)

    # Ray
    ray_address: str | None = None  # None: $RAY_ADDRESS (set by `ray job submit`) else a local Ray
    ray_num_cpus: int | None = None  # local Ray only
    ray_num_gpus: int | None = None  # local Ray only (declared GPUs; fake ones work for testing)
    object_store_memory: int | None = None  # local Ray only, bytes
    object_store_limit: int | None = None  # bytes of object store Ray Data may use for this job
    progress: bool = False  # Ray Data progress bars

    # Storage
    s3: S3Settings = field(default_factory=S3Settings)  # endpoint/region/keys for s3:// source and index

    def __post_init__(self) -> None:
        for name in ("ocr_actors", "ocr_min_actors", "embed_actors", "ocr_batch_size", "embed_batch_size", "write_rows", "block_bytes",
                     "commit_every_docs", "max_attempts", "max_deaths"):
            if getattr(self, name) < 1:
                raise ValueError(f"IndexConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.text_layer not in TEXT_LAYER_MODES:
            raise ValueError(f"IndexConfig.text_layer must be one of {', '.join(TEXT_LAYER_MODES)}, "
                             f"got {self.text_layer!r}")
        if self.dpi <= 0:
            raise ValueError(f"IndexConfig.dpi must be > 0, got {self.dpi}")
        if self.limit is not None and self.limit < 0:
            raise ValueError(f"IndexConfig.limit must be >= 0, got {self.limit}")
        if self.commit_every_s <= 0 or self.lease_ttl_s <= 0:
            raise ValueError("IndexConfig.commit_every_s and lease_ttl_s must be > 0")

    def resolved(self, cluster_gpus: float) -> "IndexConfig":
        """Fill the automatic embed resources for a cluster with ``cluster_gpus`` GPUs."""
        gpus = self.embed_num_gpus if self.embed_num_gpus is not None else (1.0 if cluster_gpus >= 1 else 0.0)
        cpus = self.embed_num_cpus if self.embed_num_cpus is not None else 0.25
        return replace(self, embed_num_gpus=gpus, embed_num_cpus=cpus)

    def write_batch_rows(self, use_ocr: bool, embed_actors: bool) -> int | None:
        """Rows per write task (None: whole blocks, for a write fused into the read task).

        After an actor pool a write task waits for its batch to fill, and nothing is committed until
        it has written: so a batch is at most one round of the last pool's output (its actors x
        its batch), never ``write_rows`` of slow OCR pages (64 pages of OCR on one actor outlast any
        commit interval). Smaller fragments are merged by the run's compaction.
        """
        if embed_actors:
            return min(self.write_rows, self.embed_actors * self.embed_batch_size)
        if use_ocr:
            return min(self.write_rows, self.ocr_actors * self.ocr_batch_size)
        return None

    def reserved_cpus(self) -> float:
        return self.ocr_actors * self.ocr_num_cpus + self.embed_actors * (self.embed_num_cpus or 0.0)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["s3"] = {k: v for k, v in d["s3"].items() if v is not None and "secret" not in k and "token" not in k}
        return d

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_options(cls, values: Mapping) -> "IndexConfig":
        """From command-line option values by name (:data:`OPTIONS`; other names are ignored)."""
        names = set(cls.field_names()) - {"incremental", "candidates", "s3"}
        d = cls("", "")
        return cls(**{k: v for k, v in values.items() if k in names}, incremental=not values.get("full", False),
                   s3=S3Settings(endpoint=values.get("s3_endpoint"), region=values.get("s3_region")),
                   candidates=replace(d.candidates, enabled=values.get("candidates", d.candidates.enabled),
                                      min_pages=values.get("candidate_min_pages", d.candidates.min_pages)))


# The options of an indexing run: name (the IndexConfig field, or how from_options reads it) -> (help
# panel, help). Both command lines show them in this order; their defaults come from IndexConfig.
OPTIONS: dict[str, tuple[str, str]] = {
    "encoder": ("What pages become", "lexical | null | tiny[:family] | colqwen2.5 | <hf id or model folder>"),
    "ocr": ("What pages become", "paddle (PaddleOCR, the production default) | rapid | tesseract | none"),
    "dpi": ("What pages become", "PDF render resolution"),
    "text_layer": ("What pages become", "auto (PDF text layer where it is the page's text, OCR only where pixels "
                                        "hide text) | off (OCR every page) | only (text layer, never OCR)"),
    "full": ("Incremental runs", "re-index every document (not only new and changed ones)"),
    "retry_failed": ("Incremental runs", "re-try documents that failed for a reason of their own, and those "
                                         "that reached --max-attempts"),
    "max_attempts": ("Incremental runs", "transient failures in a row before a document waits for a change of its "
                                         "size or ETag"),
    "prune": ("Incremental runs", "delete documents no longer in the source"),
    "limit": ("Incremental runs", "read at most this many documents this run (the rest: next run)"),
    "max_pages": ("Limits", "pages per document; more -> a failed row"),
    "max_pixels": ("Limits", "pixels per rendered page; more -> a failed row"),
    "max_bytes": ("Limits", "bytes per document file; more -> a failed row, nothing read"),
    "max_in_memory": ("Limits", "larger documents are rendered from a file, never held in memory (bytes)"),
    "read_timeout_s": ("Limits", "reading + hashing one document (hard: the worker is replaced)"),
    "page_timeout_s": ("Limits", "rendering, OCR or embedding one page (hard: the worker is replaced)"),
    "max_deaths": ("Limits", "a page or document that kills its worker this often fails instead"),
    "image_quality": ("Limits", "JPEG quality of the stored page images"),
    "commit_every_docs": ("Commits and the writer lease", "commit at least every N finished documents"),
    "commit_every_s": ("Commits and the writer lease", "... or every N seconds (a crash loses at most one "
                                                       "interval)"),
    "lease_wait_s": ("Commits and the writer lease", "another run holds the index: wait this long, then exit "
                                                     "naming it"),
    "lease_ttl_s": ("Commits and the writer lease", "a crashed run's lease lapses after this (same host: at once)"),
    "candidates": ("Search candidates and housekeeping", "build the search's candidate stage (off: the search "
                                                         "scans every page exactly)"),
    "candidate_min_pages": ("Search candidates and housekeeping", "train the candidate codebook once the index has "
                                                                  "this many pages"),
    "housekeeping": ("Search candidates and housekeeping", "compaction, indexes and old-version cleanup after the "
                                                           "run"),
    "retain_s": ("Search candidates and housekeeping", "keep old table versions readable this long (seconds)"),
    "task_num_cpus": ("Stage resources", "CPUs per read/render/write task"),
    "task_memory": ("Stage resources", "bytes reserved per task"),
    "ocr_actors": ("Stage resources", "most OCR actors (the pool grows to this while pages wait for OCR)"),
    "ocr_min_actors": ("Stage resources", "OCR actors kept from the start (text-layer pages need none)"),
    "ocr_num_cpus": ("Stage resources", "CPUs per OCR actor (reserved for the whole run)"),
    "ocr_batch_size": ("Stage resources", "pages per OCR call"),
    "embed_actors": ("Stage resources", "embed actor pool size"),
    "embed_num_gpus": ("Stage resources", "GPUs per embed actor (unset: 1 if the cluster has GPUs, else 0)"),
    "embed_num_cpus": ("Stage resources", "CPUs per embed actor (unset: 0.25)"),
    "embed_batch_size": ("Stage resources", "pages per encoder call"),
    "write_rows": ("Stage resources", "most pages per Lance write task"),
    "block_bytes": ("Stage resources", "Ray Data block target (bytes)"),
    "ray_address": ("Ray", "Ray address (unset: $RAY_ADDRESS, else a local Ray on 127.0.0.1)"),
    "ray_num_cpus": ("Ray", "local Ray: CPUs"),
    "ray_num_gpus": ("Ray", "local Ray: GPUs (declared; fake ones work for testing)"),
    "object_store_memory": ("Ray", "local Ray: object store bytes"),
    "object_store_limit": ("Ray", "bytes of object store this job may use"),
    "progress": ("Ray", "Ray Data progress bars"),
    "s3_endpoint": ("Storage", "S3 endpoint, e.g. http://127.0.0.1:9000"),
    "s3_region": ("Storage", "S3 region"),
}


class Option(NamedTuple):
    name: str  # the option is --name with "-" for "_"; a flag whose default is True also has --no-name
    type: type  # int | float | str | bool
    default: Any
    panel: str
    help: str


def options() -> list[Option]:
    """The options of :data:`OPTIONS` with their types and defaults (from :class:`IndexConfig`)."""
    d, hints = IndexConfig("", ""), get_type_hints(IndexConfig)
    other = {"full": (bool, not d.incremental), "candidates": (bool, d.candidates.enabled),
             "candidate_min_pages": (int, d.candidates.min_pages), "s3_endpoint": (str, d.s3.endpoint),
             "s3_region": (str, d.s3.region)}
    out = []
    for name, (panel, text) in OPTIONS.items():
        if name in other:
            type_, default = other[name]
        else:
            type_, default = hints[name], getattr(d, name)
            if get_args(type_):  # X | None
                type_ = next(t for t in get_args(type_) if t is not type(None))
        out.append(Option(name, type_, default, panel, text))
    return out
