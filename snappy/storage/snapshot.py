"""Published snapshots: the table versions readers use, so a query never sees half a commit.

Lance commits one table at a time; an index has several. After a writer has committed all of a
batch's tables it publishes a snapshot: ``<index>/_snapshots/<seq>.json`` naming one version per
table. Readers open the highest snapshot and read every table at its version, so they see either
everything a commit wrote or nothing of it, whatever the writer is doing meanwhile (Lance keeps
old versions readable until housekeeping removes them; see ``housekeeping.py`` for how long).

A snapshot file is created with ``put_if_absent``: two writers can never publish the same
sequence number, and a reader that lists the folder sees only complete files.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field

from snappy.storage.fs import Files

SNAPSHOT_DIR = "_snapshots"
KEEP_SNAPSHOTS = 100  # older snapshot files are deleted when a new one is published


class SnapshotConflict(RuntimeError):
    """Another writer published this sequence number first (the lease was lost)."""


class SnapshotCorrupt(ValueError):
    """A snapshot file that is not a snapshot (overwritten or edited by hand)."""

    def __init__(self, name: str, reason: str):
        super().__init__(f"{name}: not a readable snapshot ({reason})")
        self.name = name


@dataclass(frozen=True)
class Snapshot:
    seq: int  # 1, 2, ...; 0 for an index written before snapshots existed
    versions: dict[str, int]  # table -> Lance version
    run_id: str | None = None
    writer_epoch: int | None = None  # lease epoch of the writer that published it
    created_at: float = field(default_factory=time.time)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes, name: str = "snapshot") -> "Snapshot":
        try:
            d = json.loads(data)
            return cls(seq=int(d["seq"]), versions={k: int(v) for k, v in d["versions"].items()},
                       run_id=d.get("run_id"), writer_epoch=d.get("writer_epoch"),
                       created_at=float(d["created_at"]))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise SnapshotCorrupt(name, f"{type(e).__name__}: {e}") from e


def _name(seq: int) -> str:
    return f"{SNAPSHOT_DIR}/{seq:012d}.json"


def latest(files: Files) -> Snapshot | None:
    """The highest published snapshot, or None."""
    for name in reversed(files.list(SNAPSHOT_DIR)):
        data = files.get(f"{SNAPSHOT_DIR}/{name}")
        if data is not None:
            return Snapshot.from_json(data, f"{files.root}/{SNAPSHOT_DIR}/{name}")
    return None


def publish(files: Files, versions: dict[str, int], run_id: str | None = None,
            writer_epoch: int | None = None, after: Snapshot | None = None) -> Snapshot:
    """Publish ``versions`` as the next snapshot after ``after`` (default: the latest)."""
    prev = after if after is not None else latest(files)
    snap = Snapshot(seq=(prev.seq + 1) if prev else 1, versions=dict(versions), run_id=run_id,
                    writer_epoch=writer_epoch)
    if not files.put_if_absent(_name(snap.seq), snap.to_json()):
        raise SnapshotConflict(f"{files.root}: snapshot {snap.seq} was published by another writer")
    for name in files.list(SNAPSHOT_DIR)[:-KEEP_SNAPSHOTS]:
        files.delete(f"{SNAPSHOT_DIR}/{name}")
    return snap


def get(files: Files, seq: int) -> Snapshot | None:
    """Snapshot ``seq`` if it is still kept (the last ``KEEP_SNAPSHOTS`` are)."""
    data = files.get(_name(seq))
    return Snapshot.from_json(data, f"{files.root}/{_name(seq)}") if data is not None else None
